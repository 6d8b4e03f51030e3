"""The upb encoding of responses is byte-for-byte what betterproto2 would send."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from people._gen.people import ListUsersResponse, UserList
from people._gen.people import User as UserMessage
from people.api.answers import (
    EncodedMessage,
    encode_list_users_response,
    encode_user,
    encode_user_list,
)
from people.api.messages import user_message
from people.domain.model import User

moments = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(UTC)
)
users = st.builds(
    User,
    id=st.uuids().map(str),
    name=st.text(max_size=20),
    email=st.emails(),
    version=st.integers(min_value=1, max_value=10**9),
    create_time=moments,
    update_time=moments,
)


class TestEncoding:
    @given(users)
    def test_user_matches_betterproto(self, user: User) -> None:
        """One user encodes to the same bytes as the generated message."""
        assert bytes(encode_user(user)) == bytes(user_message(user))

    @given(st.lists(users, max_size=5))
    def test_user_list_matches_betterproto(self, batch: list[User]) -> None:
        """A UserList encodes to the same bytes as the generated message."""
        expected = UserList(user=[user_message(user) for user in batch])
        assert bytes(encode_user_list(batch)) == bytes(expected)

    @given(st.lists(users, max_size=5), st.text(max_size=30))
    def test_page_matches_betterproto(self, batch: list[User], token: str) -> None:
        """A ListUsersResponse encodes to the same bytes as the generated message."""
        expected = ListUsersResponse(
            users=[user_message(user) for user in batch], next_page_token=token
        )
        assert bytes(encode_list_users_response(batch, token)) == bytes(expected)

    @given(users)
    def test_round_trips_through_the_generated_parser(self, user: User) -> None:
        """The generated message class reads the encoded bytes back to the same user."""
        parsed = UserMessage.parse(bytes(encode_user(user)))
        assert (parsed.id, parsed.name, parsed.email, parsed.etag) == (
            user.id,
            user.name,
            user.email,
            user.etag,
        )
        assert parsed.create_time == user.create_time


class TestEncodedMessage:
    def test_serialises_to_its_bytes(self) -> None:
        """Both codec entry points (SerializeToString and bytes()) give the stored bytes."""
        message = EncodedMessage(b"\x0a\x01x")
        assert message.SerializeToString() == bytes(message) == b"\x0a\x01x"
        assert len(message) == 3
