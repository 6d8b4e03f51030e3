"""The quick email check gives email_validator's normal form, or leaves the address to it."""

from __future__ import annotations

import email_validator
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from people.domain.emails import quick_normal_form

ATEXT = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+/=?^_`{|}~-."
#: Addresses built from the pieces the quick check looks at, with its corner cases.
built = st.builds(
    lambda local, labels, tld: f"{local}@{'.'.join([*labels, tld])}",
    st.text(alphabet=ATEXT, min_size=0, max_size=70),
    st.lists(st.text(alphabet="abcXYZ019-_", min_size=0, max_size=65), min_size=1, max_size=4),
    st.sampled_from(["com", "COM", "io", "x", "123", "test", "local", "org", "xn--p1ai", "c0m"]),
)


def validated(address: str) -> str | None:
    """email_validator's normal form of ``address``, or None if it rejects it."""
    try:
        return email_validator.validate_email(address, check_deliverability=False).normalized
    except email_validator.EmailNotValidError:
        return None


class TestAgreement:
    @settings(max_examples=2000)
    @given(st.one_of(st.emails(), built, st.text(max_size=80)))
    @example("Ada@Example.COM")
    @example("a..b@example.com")
    @example("x@a-.example.com")
    @example("x@localhost")
    @example("x@mail.test")
    @example(".x@example.com")
    def test_same_normal_form(self, address: str) -> None:
        """Whenever the quick check answers, email_validator accepts with the same normal form."""
        quick = quick_normal_form(address)
        if quick is not None:
            assert validated(address) == quick

    @pytest.mark.parametrize(
        "address",
        ["ada@example.com", "Ada.Lovelace@Example.COM", "user+tag@mail.example.org", "a@b.co"],
    )
    def test_everyday_addresses_take_it(self, address: str) -> None:
        """Ordinary addresses are answered quickly (the check is not vacuous)."""
        assert quick_normal_form(address) == validated(address)
        assert quick_normal_form(address) is not None
