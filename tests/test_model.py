"""The field rules of people.domain.model: names, emails, ids and etags."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from people.domain.errors import InvalidField, UserNotFound
from people.domain.model import (
    MAX_EMAIL_LENGTH,
    MAX_ID_LENGTH,
    MAX_NAME_LENGTH,
    check_id,
    email_key,
    email_lookup_key,
    format_etag,
    normalise_email,
    normalise_name,
    parse_etag,
)

CONTROL_CATEGORIES = ("Cc", "Cs")


def outcome(rule: Callable[[str], str], raw: str) -> str | InvalidField:
    """Apply a field rule, returning its InvalidField instead of raising it."""
    try:
        return rule(raw)
    except InvalidField as exc:
        return exc


class TestNormaliseName:
    """normalise_name trims, bounds and screens display names."""

    def test_trims_surrounding_whitespace(self) -> None:
        """Leading and trailing whitespace (spaces, tabs, newlines) is removed."""
        assert normalise_name("  \t Ada Lovelace \n") == "Ada Lovelace"

    def test_keeps_inner_spaces(self) -> None:
        """Spaces inside a name are kept as they are."""
        assert normalise_name("Ada  King") == "Ada  King"

    @pytest.mark.parametrize("raw", ["", " ", "\t\n ", "\u3000"])
    def test_rejects_empty_after_trimming(self, raw: str) -> None:
        """A name that is empty once trimmed is an InvalidField naming `name`."""
        with pytest.raises(InvalidField) as caught:
            normalise_name(raw)
        assert caught.value.field == "name"
        assert "empty" in caught.value.reason

    def test_accepts_one_character(self) -> None:
        """A single character is the shortest valid name."""
        assert normalise_name("A") == "A"

    def test_accepts_exactly_the_maximum(self) -> None:
        """A name of exactly 200 characters is accepted."""
        assert normalise_name("x" * MAX_NAME_LENGTH) == "x" * MAX_NAME_LENGTH

    def test_rejects_one_over_the_maximum(self) -> None:
        """A name of 201 characters is rejected with a reason that gives the limit."""
        with pytest.raises(InvalidField) as caught:
            normalise_name("x" * (MAX_NAME_LENGTH + 1))
        assert caught.value.field == "name"
        assert str(MAX_NAME_LENGTH) in caught.value.reason

    def test_length_is_counted_after_trimming(self) -> None:
        """Whitespace around a 200-character name does not count towards the limit."""
        assert normalise_name("  " + "y" * MAX_NAME_LENGTH + "  ") == "y" * MAX_NAME_LENGTH

    @pytest.mark.parametrize("char", ["\x00", "\x07", "\n", "\r", "\x1b", "\x7f", "\x85", "\x9f"])
    def test_rejects_inner_control_characters(self, char: str) -> None:
        """A control character inside a name is rejected, and the message says so."""
        with pytest.raises(InvalidField) as caught:
            normalise_name(f"Ada{char}Lovelace")
        assert caught.value.field == "name"
        assert "control" in caught.value.reason
        assert "name" in str(caught.value)

    def test_accepts_non_latin_letters(self) -> None:
        """Names in any script are welcome."""
        assert normalise_name("Ада Лавлейс") == "Ада Лавлейс"
        assert normalise_name("李小龍") == "李小龍"

    def test_composes_to_nfc(self) -> None:
        """A decomposed accent is stored in its composed (NFC) form."""
        assert normalise_name("Re\u0301my") == "R\u00e9my"

    @given(st.text(max_size=260))
    def test_is_idempotent(self, raw: str) -> None:
        """Normalising an accepted name again changes nothing."""
        try:
            once = normalise_name(raw)
        except InvalidField:
            return
        assert normalise_name(once) == once

    @given(st.text(max_size=260))
    def test_accepted_names_obey_every_rule(self, raw: str) -> None:
        """Any accepted name is 1-200 characters, trimmed, and free of control characters."""
        name = outcome(normalise_name, raw)
        if isinstance(name, InvalidField):
            assert name.field == "name"
            return
        assert 1 <= len(name) <= MAX_NAME_LENGTH
        assert name == name.strip()
        assert not any(unicodedata.category(char) in CONTROL_CATEGORIES for char in name)


class TestNormaliseEmail:
    """normalise_email validates addresses without DNS and normalises them."""

    def test_accepts_a_plain_address(self) -> None:
        """An ordinary address comes back unchanged."""
        assert normalise_email("ada@example.com") == "ada@example.com"

    def test_lowercases_the_domain_but_keeps_the_local_part(self) -> None:
        """The domain is normalised to lower case; the local part keeps its case."""
        assert normalise_email("Ada@Example.COM") == "Ada@example.com"

    def test_trims_whitespace(self) -> None:
        """Whitespace around an address is ignored."""
        assert normalise_email("  ada@example.com \n") == "ada@example.com"

    def test_needs_no_dns(self) -> None:
        """A syntactically valid address on a domain that does not resolve is accepted."""
        domain = "no-such-domain-for-people-tests.com"
        assert normalise_email(f"x@{domain}") == f"x@{domain}"

    @pytest.mark.parametrize(
        "raw",
        ["", "   ", "ada", "ada@", "@example.com", "ada@@example.com", "ada example@x.com"],
    )
    def test_rejects_malformed_addresses(self, raw: str) -> None:
        """A malformed address is an InvalidField naming `email`."""
        with pytest.raises(InvalidField) as caught:
            normalise_email(raw)
        assert caught.value.field == "email"
        assert str(caught.value).startswith("invalid email")

    def test_rejects_addresses_over_254_characters(self) -> None:
        """An address longer than 254 characters is rejected with the limit in the reason."""
        local = "a" * 60
        domain = ".".join(["b" * 60] * 4) + ".com"  # 248 characters
        raw = f"{local}@{domain}"
        assert len(raw) > MAX_EMAIL_LENGTH
        with pytest.raises(InvalidField) as caught:
            normalise_email(raw)
        assert caught.value.field == "email"

    def test_accepts_an_internationalised_address(self) -> None:
        """Unicode local parts and domains are valid (SMTPUTF8)."""
        assert normalise_email("用户@例子.广告") == "用户@例子.广告"

    @given(st.text(max_size=300))
    def test_accepted_addresses_are_bounded_and_stable(self, raw: str) -> None:
        """Any accepted address is at most 254 characters and normalises to itself."""
        email = outcome(normalise_email, raw)
        if isinstance(email, InvalidField):
            assert email.field == "email"
            return
        assert len(email) <= MAX_EMAIL_LENGTH
        assert normalise_email(email) == email

    @given(st.emails())
    def test_generated_addresses_are_stable(self, raw: str) -> None:
        """Normalising an accepted generated address twice gives the same result."""
        try:
            email = normalise_email(raw)
        except InvalidField:
            return
        assert normalise_email(email) == email


class TestEmailKey:
    """email_key decides uniqueness case-insensitively."""

    def test_folds_case(self) -> None:
        """Addresses that differ only in letter case share a key."""
        assert email_key(normalise_email("Ada@Example.com")) == email_key("ada@example.com")

    def test_distinct_addresses_keep_distinct_keys(self) -> None:
        """Different addresses do not collide."""
        assert email_key("ada@example.com") != email_key("bob@example.com")


#: Address-like text: plain ASCII addresses, and the characters that make them not so.
address_like = st.one_of(
    st.emails(),
    st.from_regex(r"[ A-Za-z0-9.@\-\"\\!#*_+]{0,30}", fullmatch=True),
    st.builds(
        lambda local, labels, tld: f"{local}@{'.'.join(labels)}.{tld}",
        st.from_regex(r"[A-Za-z0-9.!#+-]{1,70}", fullmatch=True),
        st.lists(st.from_regex(r"[A-Za-z0-9-]{1,70}", fullmatch=True), min_size=1, max_size=4),
        st.sampled_from(["com", "COM", "test", "localhost", "local", "invalid", "a1", "123"]),
    ),
)


class TestEmailLookupKey:
    """email_lookup_key: what filters compare emails by, without email_validator when it can."""

    @given(address_like)
    def test_agrees_with_the_stored_key(self, value: str) -> None:
        """A valid address gets the key its user would be stored under; an invalid one a key
        that no valid address folds to."""
        key = email_lookup_key(value)
        stored = outcome(normalise_email, value)
        if isinstance(stored, str):
            assert key == email_key(stored)
        else:
            refolded = outcome(normalise_email, key)
            assert isinstance(refolded, InvalidField) or email_key(refolded) != key

    @pytest.mark.parametrize(
        ("value", "key"),
        [
            ("ADA@Example.COM", "ada@example.com"),
            ("  Ada.King@acme.com ", "ada.king@acme.com"),
            ('"quoted"@example.com', '"quoted"@example.com'),  # refused: matches nobody
            ("user@xn--fsq.com", "user@例.com"),
            ("Zoë@example.com", "zoë@example.com"),
        ],
    )
    def test_examples(self, value: str, key: str) -> None:
        """Plain addresses fold directly; IDNA and non-ASCII ones are normalised first."""
        assert email_lookup_key(value) == key


class TestEtag:
    """Etags render a version and parse back to it; anything else names no version."""

    def test_format(self) -> None:
        """An etag is a weak entity tag around the version number."""
        assert format_etag(7) == 'W/"7"'

    @given(st.integers(min_value=0, max_value=10**18 - 1))
    def test_round_trip(self, version: int) -> None:
        """Parsing a formatted etag gives back the version."""
        assert parse_etag(format_etag(version)) == version

    @pytest.mark.parametrize(
        "etag",
        [
            'W/"',
            'W/""',
            '"1"',
            "W/1",
            'W/"-1"',
            'W/"1.0"',
            'W/"x"',
            'W/" 1"',
            'W/"\uff11"',
            'W/"' + "9" * 19 + '"',
            "garbage",
        ],
    )
    def test_rejects_what_was_never_issued(self, etag: str) -> None:
        """Strings that are not an etag we issue parse to None."""
        assert parse_etag(etag) is None

    @given(st.text(max_size=30))
    def test_parse_never_raises(self, etag: str) -> None:
        """parse_etag returns a non-negative version or None for any text."""
        version = parse_etag(etag)
        assert version is None or (version >= 0 and etag.startswith('W/"'))


class TestCheckId:
    """check_id passes any id some user could have; the rest match nobody."""

    def test_accepts_a_uuid(self) -> None:
        """A UUID string passes unchanged."""
        raw = "4f9c5a52-6f53-4c57-9a0e-3c2cfc4c2f0e"
        assert check_id(raw) == raw

    def test_rejects_empty(self) -> None:
        """An empty id is an InvalidField naming `id`."""
        with pytest.raises(InvalidField) as caught:
            check_id("")
        assert caught.value.field == "id"

    def test_accepts_the_longest(self) -> None:
        """An id of exactly the limit passes."""
        assert check_id("x" * MAX_ID_LENGTH) == "x" * MAX_ID_LENGTH

    def test_too_long_matches_nobody(self) -> None:
        """An id longer than the limit is UserNotFound, carrying the whole id."""
        raw = "x" * (MAX_ID_LENGTH + 1)
        with pytest.raises(UserNotFound) as caught:
            check_id(raw)
        assert caught.value.user_id == raw

    @pytest.mark.parametrize(
        "char", ["\x00", "\x07", "\n", "\x1b", "\x7f", "\x85", "\x9f", "\ud800"]
    )
    def test_control_characters_match_nobody(self, char: str) -> None:
        """An id holding a control character or a lone surrogate is UserNotFound."""
        with pytest.raises(UserNotFound):
            check_id(f"abc{char}def")

    @given(st.text(min_size=1, max_size=MAX_ID_LENGTH))
    def test_printable_ids_pass(self, raw: str) -> None:
        """Any non-empty id of at most the limit without Cc or Cs characters passes unchanged."""
        clean = "".join(c for c in raw if unicodedata.category(c) not in CONTROL_CATEGORIES) or "x"
        assert check_id(clean) == clean
