"""Read answers encoded straight from domain users with upb, and the requests they answer.

betterproto2 builds a Python object per message and encodes it in Python: about
34 ms for a list of 1,000 users. protobuf's upb (C) encodes the same bytes from
the same descriptors in a few milliseconds, so the read answers are encoded
here. The bytes are identical to betterproto2's (the tests compare them), and
:class:`EncodedMessage` lets any grpclib codec send them as they are.

The read RPCs' requests are decoded into upb's objects too; :class:`UserIdFields`
and :class:`ListUsersFields` say which of their fields the read path uses.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from google.protobuf import message_factory
from google.protobuf.message import DecodeError, Message

from people._gen.google_proto_descriptor_pool import default_google_proto_descriptor_pool
from people._gen.people import PEOPLE_PROTO_DESCRIPTOR
from people.domain.model import User


class UserIdFields(Protocol):
    """A decoded ``people.UserIdRequest`` as the read path sees it (upb's object)."""

    @property
    def id(self) -> str:
        """The requested user's id."""
        ...


class ListUsersFields(Protocol):
    """A decoded ``people.ListUsersRequest`` as the read path sees it (upb's object)."""

    @property
    def page_size(self) -> int:
        """Users per page; 0 means the default."""
        ...

    @property
    def page_token(self) -> str:
        """Empty for the first page, else a previous answer's ``next_page_token``."""
        ...

    @property
    def filter(self) -> str:
        """Which users; empty for every user."""
        ...

    @property
    def order_by(self) -> str:
        """In which order; empty for creation order."""
        ...


class CreateUserFields(Protocol):
    """A decoded ``people.CreateUserRequest`` (upb's object)."""

    @property
    def name(self) -> str:
        """The new user's name."""
        ...

    @property
    def email(self) -> str:
        """The new user's email."""
        ...


class BatchCreateFields(Protocol):
    """A decoded ``people.BatchCreateUsersRequest`` (upb's object)."""

    @property
    def requests(self) -> Sequence[CreateUserFields]:
        """The users to create, in order."""
        ...


class EncodedMessage:
    """A response message already serialised; codecs write its bytes unchanged."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def SerializeToString(self) -> bytes:
        """Return the bytes: the method grpclib's ProtoCodec calls."""
        return self.data

    def __bytes__(self) -> bytes:
        return self.data

    def __len__(self) -> int:
        return len(self.data)


def message_class(name: str) -> type[Message]:
    """The upb class of people message ``name``, made from the embedded descriptor.

    The read RPCs decode their requests into these (the strict codec validates
    straight into them), skipping the betterproto2 object a generated handler
    would get.
    """
    descriptor = PEOPLE_PROTO_DESCRIPTOR.message_types_by_name[name]
    assert descriptor.file.pool is default_google_proto_descriptor_pool
    return message_factory.GetMessageClass(descriptor)


def parsed(message_type: type[Message], data: bytes) -> Any:
    """``data`` parsed strictly by upb into ``message_type``; None if upb rejects it.

    Any: the fields of upb's classes are known only at run time (see
    :class:`UserIdFields` and :class:`ListUsersFields` for those the reads use).
    """
    try:
        return message_type.FromString(data)
    except DecodeError:
        return None


# Any below: upb makes these classes at run time from descriptors, so mypy
# knows none of their fields; the tests hold the bytes against betterproto2's.
_USER_LIST: Any = message_class("UserList")
_LIST_USERS_RESPONSE: Any = message_class("ListUsersResponse")
_USER: Any = message_class("User")


def _fill(target: Any, user: User) -> None:
    target.id = user.id
    target.name = user.name
    target.email = user.email
    target.etag = user.etag
    _set_time(target.create_time, user.create_time)
    _set_time(target.update_time, user.update_time)


def _set_time(target: Any, moment: datetime) -> None:
    micros = _micros(moment)
    target.seconds = micros // 1_000_000
    target.nanos = (micros % 1_000_000) * 1000


def _micros(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def encode_user(user: User) -> EncodedMessage:
    """``people.User`` for one user."""
    message = _USER()
    _fill(message, user)
    return EncodedMessage(message.SerializeToString())


def encode_user_list(users: Iterable[User]) -> EncodedMessage:
    """``people.UserList`` holding ``users`` in order.

    The same bytes are a ``BatchCreateUsersResponse`` or a ``BatchGetUsersResponse``:
    each is one repeated User field numbered 1, and names are not on the wire.
    """
    message = _USER_LIST()
    add = message.user.add
    for user in users:
        _fill(add(), user)
    return EncodedMessage(message.SerializeToString())


def encode_list_users_response(users: Iterable[User], next_page_token: str) -> EncodedMessage:
    """``people.ListUsersResponse`` for one page."""
    message = _LIST_USERS_RESPONSE(next_page_token=next_page_token)
    add = message.users.add
    for user in users:
        _fill(add(), user)
    return EncodedMessage(message.SerializeToString())
