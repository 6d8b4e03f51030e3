"""What a listing asks for: a filter (a small typed tree) and an order.

:mod:`people.domain.filtering` parses the text of ``ListUsersRequest.filter``
and ``order_by`` into a :class:`Query`. The memory store evaluates it with
:meth:`Query.matches`; the SQL stores translate it at their own edge
(:mod:`people.store.sql_filter`). Every text value in the tree is already in
the form the stores keep beside each user (``User.name_key`` for names,
``User.email_key`` for emails, ids as they are), so each store compares plain
strings in code point order and all three agree.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from people.domain.model import User

TextField = Literal["id", "name", "email"]
TimeField = Literal["create_time", "update_time"]
OrderField = Literal["create_time", "update_time", "name", "email"]
#: How a text value is compared: the whole key, its start, its end, or anywhere in it.
Shape = Literal["equals", "prefix", "suffix", "contains"]
TimeOperator = Literal["<", "<=", ">", ">=", "="]
#: A sort key value: a time for the time orders, a folded string for name and email.
SortValue = datetime | str


@dataclass(frozen=True, slots=True)
class TextMatch:
    """``field`` compared with ``value`` (already folded like the stored key) by ``shape``."""

    field: TextField
    shape: Shape
    value: str


@dataclass(frozen=True, slots=True)
class TimeMatch:
    """``field`` compared with ``moment`` by ``operator``."""

    field: TimeField
    operator: TimeOperator
    moment: datetime


@dataclass(frozen=True, slots=True)
class Not:
    """Users that ``part`` does not match."""

    part: Node


@dataclass(frozen=True, slots=True)
class AllOf:
    """Users every one of ``parts`` matches (AND)."""

    parts: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    """Users at least one of ``parts`` matches (OR)."""

    parts: tuple[Node, ...]


Node = TextMatch | TimeMatch | Not | AllOf | AnyOf


@dataclass(frozen=True, slots=True)
class Order:
    """Users sorted by ``field`` (then by id, in the same direction), ascending unless told."""

    field: OrderField = "create_time"
    descending: bool = False

    def key(self, user: User) -> SortValue:
        """The value of ``user`` this order sorts on."""
        return sort_value(user, self.field)

    def __str__(self) -> str:
        return f"{self.field} desc" if self.descending else self.field


@dataclass(frozen=True, slots=True)
class Query:
    """A filter (None: every user) and an order."""

    filter: Node | None = None
    order: Order = field(default_factory=Order)

    @property
    def is_default(self) -> bool:
        """True for every user in creation order: the listing before filters existed."""
        return self.filter is None and self.order == Order()

    @property
    def binding(self) -> str:
        """A short digest of the normalised filter and order, which page tokens carry.

        Filters that differ only in spacing, quoting or the letter case of a
        name or email have the same digest; any other difference changes it.
        """
        canonical = json.dumps(
            [_canonical(self.filter), str(self.order)], ensure_ascii=False, separators=(",", ":")
        )
        return hashlib.sha256(canonical.encode()).hexdigest()[:24]

    def matches(self, user: User) -> bool:
        """True if ``user`` passes the filter."""
        return self.filter is None or matches(self.filter, user)

    def sort_key(self, user: User) -> tuple[SortValue, str]:
        """Where ``user`` sorts in this order (the page cursor's form)."""
        return (self.order.key(user), user.id)


DEFAULT_QUERY = Query()


def sort_value(user: User, order_field: OrderField) -> SortValue:
    """``user``'s value of ``order_field``: a time, or a folded name or email."""
    if order_field == "create_time":
        return user.create_time
    if order_field == "update_time":
        return user.update_time
    if order_field == "name":
        return user.name_key
    return user.email_key


def text_of(user: User, text_field: TextField) -> str:
    """The stored form of ``text_field`` that filters compare."""
    if text_field == "id":
        return user.id
    if text_field == "name":
        return user.name_key
    return user.email_key


def matches(node: Node, user: User) -> bool:
    """True if ``user`` satisfies ``node`` (the memory store's evaluator)."""
    if isinstance(node, TextMatch):
        text = text_of(user, node.field)
        if node.shape == "equals":
            return text == node.value
        if node.shape == "prefix":
            return text.startswith(node.value)
        if node.shape == "suffix":
            return text.endswith(node.value)
        return node.value in text
    if isinstance(node, TimeMatch):
        moment = user.create_time if node.field == "create_time" else user.update_time
        return _compare(moment, node.operator, node.moment)
    if isinstance(node, Not):
        return not matches(node.part, user)
    if isinstance(node, AllOf):
        return all(matches(part, user) for part in node.parts)
    return any(matches(part, user) for part in node.parts)


def _compare(left: datetime, operator: TimeOperator, right: datetime) -> bool:
    if operator == "<":
        return left < right
    if operator == "<=":
        return left <= right
    if operator == ">":
        return left > right
    if operator == ">=":
        return left >= right
    return left == right


def _canonical(node: Node | None) -> object:
    if node is None:
        return None
    if isinstance(node, TextMatch):
        return [node.field, node.shape, node.value]
    if isinstance(node, TimeMatch):
        return [node.field, node.operator, node.moment.astimezone(UTC).isoformat()]
    if isinstance(node, Not):
        return ["NOT", _canonical(node.part)]
    return ["AND" if isinstance(node, AllOf) else "OR", [_canonical(p) for p in node.parts]]
