"""The user value object and the rules for its fields.

Pure functions only: no I/O, no clock, no wire types. Everything that reaches a
store has passed through :func:`normalise_name` and :func:`normalise_email`.
"""

from __future__ import annotations

import dataclasses
import unicodedata
from datetime import datetime

import email_validator

from people.domain.errors import InvalidField

MAX_NAME_LENGTH = 200
MAX_EMAIL_LENGTH = 254
MAX_ID_LENGTH = 128


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
    try:
        valid = email_validator.validate_email(candidate, check_deliverability=False)
    except email_validator.EmailNotValidError as exc:
        raise InvalidField("email", str(exc)) from exc
    if len(valid.normalized) > MAX_EMAIL_LENGTH:
        raise InvalidField("email", f"must be at most {MAX_EMAIL_LENGTH} characters")
    return valid.normalized


def check_id(raw: str) -> str:
    """Check that a user id is present and of a sane size (ids are opaque otherwise).

    Raises:
        InvalidField: the id is empty or absurdly long.
    """
    if not raw:
        raise InvalidField("id", "must not be empty")
    if len(raw) > MAX_ID_LENGTH:
        raise InvalidField("id", f"must be at most {MAX_ID_LENGTH} characters")
    return raw
