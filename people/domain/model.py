"""The user value object and the rules for its fields.

Pure functions only: no I/O, no clock, no wire types. Everything that reaches a
store has passed through :func:`normalise_name` and :func:`normalise_email`.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from datetime import datetime

import email_validator

from people.domain.emails import quick_normal_form
from people.domain.errors import InvalidField, UserNotFound

MAX_NAME_LENGTH = 200
MAX_EMAIL_LENGTH = 254
MAX_ID_LENGTH = 128
#: Unicode's control characters (category Cc) and lone surrogates (Cs): no id holds one.
_UNSTORABLE_ID_CHARACTER = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


@dataclasses.dataclass(frozen=True, slots=True)
class User:
    """A user as the directory knows it.

    Attributes:
        id: The server-assigned identifier (a UUID4 string).
        name: The trimmed display name.
        email: The normalised email address, as shown to people.
        version: Starts at 1 and grows by one with every update.
        create_time: When the user was created (UTC).
        update_time: When the user last changed (UTC).
    """

    id: str
    name: str
    email: str
    version: int
    create_time: datetime
    update_time: datetime

    @property
    def email_key(self) -> str:
        """The form of the email that uniqueness is decided on."""
        return email_key(self.email)

    @property
    def name_key(self) -> str:
        """The form of the name that filters and the name order compare."""
        return name_key(self.name)

    @property
    def etag(self) -> str:
        """An opaque token that changes whenever the user changes (AIP-154)."""
        return format_etag(self.version)


def format_etag(version: int) -> str:
    """Render a version as the etag clients see."""
    return f'W/"{version}"'


def parse_etag(etag: str) -> int | None:
    """Return the version an etag names, or None if it names none we ever issued."""
    if not (etag.startswith('W/"') and etag.endswith('"')):
        return None
    digits = etag[3:-1]
    if not digits.isascii() or not digits.isdigit() or len(digits) > 18:
        return None
    return int(digits)


def email_key(email: str) -> str:
    """Fold an email for the case-insensitive uniqueness rule."""
    return email.casefold()


#: An address of plain ASCII: dot-atom local part, LDH domain labels, no IDNA label.
#: Normalising such an address only lower-cases its domain (email_validator).
_PLAIN_EMAIL = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+"
)


def email_lookup_key(value: str) -> str:
    """The email key a user with email ``value`` would have; a key no user has if none could.

    Filters compare this with stored keys. A plain ASCII address is folded
    directly, as normalising it only lower-cases the domain: the same key as
    ``email_key(normalise_email(value))`` when the address is valid, and when it
    is not (too long, a reserved domain), a key no valid address folds to,
    since validity does not depend on letter case. Anything else goes through
    :func:`normalise_email`, some forty microseconds.
    """
    candidate = value.strip()
    if _PLAIN_EMAIL.fullmatch(candidate) and "xn--" not in candidate.lower():
        return candidate.lower()
    try:
        return email_key(normalise_email(value))
    except InvalidField:
        return name_key(value)  # no address at all: it can only match nobody


def name_key(name: str) -> str:
    """Fold a name (or a piece of one) for case-insensitive comparison and ordering."""
    return unicodedata.normalize("NFC", name).casefold()


def normalise_name(raw: str) -> str:
    """Trim and check a display name.

    Raises:
        InvalidField: the name is empty, longer than 200 characters or holds
            control characters.
    """
    name = unicodedata.normalize("NFC", raw).strip()
    if not name:
        raise InvalidField("name", "must not be empty")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidField("name", f"must be at most {MAX_NAME_LENGTH} characters")
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in name):
        raise InvalidField("name", "must not contain control characters")
    return name


def normalise_email(raw: str) -> str:
    """Validate an email address and return its normalised form (no DNS lookups).

    Raises:
        InvalidField: the address is not a valid email or longer than 254 characters.
    """
    candidate = raw.strip()
    if not candidate:
        raise InvalidField("email", "must not be empty")
    if len(candidate) > MAX_EMAIL_LENGTH:
        raise InvalidField("email", f"must be at most {MAX_EMAIL_LENGTH} characters")
    quick = quick_normal_form(candidate)
    if quick is not None:
        return quick
    try:
        valid = email_validator.validate_email(candidate, check_deliverability=False)
    except email_validator.EmailNotValidError as exc:
        raise InvalidField("email", str(exc)) from exc
    if len(valid.normalized) > MAX_EMAIL_LENGTH:
        raise InvalidField("email", f"must be at most {MAX_EMAIL_LENGTH} characters")
    return valid.normalized


def check_id(raw: str) -> str:
    """Check a user id before any store sees it (ids are opaque otherwise).

    Every id people issues is a UUID4, so an id longer than 128 characters or
    holding control characters matches nobody; it is answered as such here,
    the same on every store, because not every store could even look it up
    (PostgreSQL refuses text holding NUL).

    Raises:
        InvalidField: the id is empty.
        UserNotFound: the id is longer than 128 characters or holds control characters.
    """
    if not raw:
        raise InvalidField("id", "must not be empty")
    if len(raw) > MAX_ID_LENGTH or _UNSTORABLE_ID_CHARACTER.search(raw):
        raise UserNotFound(raw)
    return raw
