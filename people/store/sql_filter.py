"""A listing query as SQL: WHERE, ORDER BY and LIMIT with parameters, for SQLite and PostgreSQL.

Every value travels as a parameter, never in the SQL text. Text comparisons
run on the keys stored beside each user (``name_key``, ``email_key``,
``email_reversed``) in code point order (SQLite's BINARY collation,
PostgreSQL's ``COLLATE "C"``), so both agree with the memory store, and no
``LIKE`` is used, so no wildcard in a value needs escaping:

- ``equals`` is ``=``: an index lookup on id, email_key or name_key;
- ``prefix`` is a range, ``key >= 'ada' AND key < 'adb'``, which any B-tree
  index on the key serves;
- ``suffix`` of an email is a prefix of the reversed email (``email_reversed``,
  indexed), so ``email = "*@acme.com"`` is a range too; a suffix of a name or
  an id compares the end of each one (a scan);
- ``contains`` (``:``) searches each key (a scan).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from people.domain.ports import Cursor
from people.domain.query import AllOf, AnyOf, Node, Not, Query, TextMatch, TimeMatch

#: The highest code point; a prefix ending in it has no next string of the same length.
_MAX_CODE_POINT = 0x10FFFF
_SURROGATES = range(0xD800, 0xE000)


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one database spells what a query needs.

    Attributes:
        columns: The column for each field (``id``, ``name``, ``email``,
            ``email_reversed``, ``create_time``, ``update_time``).
        placeholder: The parameter marker for parameter number n (from 1).
        contains: SQL true when ``{column}`` contains ``{value}``.
        ends_with: SQL true when ``{column}`` ends with ``{value}`` of ``{length}`` characters.
        time: A time as the database stores it.
    """

    columns: Mapping[str, str]
    placeholder: Callable[[int], str]
    contains: str
    ends_with: str
    time: Callable[[datetime], object]


@dataclass
class _Statement:
    dialect: Dialect
    params: list[object] = field(default_factory=list)

    def param(self, value: object) -> str:
        self.params.append(value)
        return self.dialect.placeholder(len(self.params))

    def condition(self, node: Node) -> str:
        if isinstance(node, TextMatch):
            return self._text(node)
        if isinstance(node, TimeMatch):
            column = self.dialect.columns[node.field]
            return f"{column} {node.operator} {self.param(self.dialect.time(node.moment))}"
        if isinstance(node, Not):
            return f"NOT ({self.condition(node.part)})"
        joiner = " AND " if isinstance(node, AllOf) else " OR "
        assert isinstance(node, AllOf | AnyOf)
        return "(" + joiner.join(self.condition(part) for part in node.parts) + ")"

    def _text(self, node: TextMatch) -> str:
        column = self.dialect.columns[node.field]
        if node.shape == "equals":
            return f"{column} = {self.param(node.value)}"
        if node.shape == "prefix":
            return self._prefix(column, node.value)
        if node.shape == "suffix" and node.field == "email":
            return self._prefix(self.dialect.columns["email_reversed"], node.value[::-1])
        template = self.dialect.contains if node.shape == "contains" else self.dialect.ends_with
        return template.format(column=column, value=self.param(node.value), length=len(node.value))

    def _prefix(self, column: str, prefix: str) -> str:
        lower = f"{column} >= {self.param(prefix)}"
        upper = prefix_upper_bound(prefix)
        return lower if upper is None else f"{lower} AND {column} < {self.param(upper)}"


def select_page(
    dialect: Dialect, query: Query, after: Cursor | None, limit: int
) -> tuple[str, list[object]]:
    """``WHERE ... ORDER BY ... LIMIT ...`` for one page of ``query``, and its parameters.

    The order is the query's key, then id, both in the same direction, so a
    page resumes after ``after`` with one row-value comparison that the order's
    index serves (the email order, whose keys are unique, needs no id).
    """
    statement = _Statement(dialect)
    conditions = [] if query.filter is None else [statement.condition(query.filter)]
    column = dialect.columns[query.order.field]
    direction = "DESC" if query.order.descending else "ASC"
    # Email keys are unique, so the email order needs no tie-break, and its one
    # unique index serves it alone (PostgreSQL would otherwise sort by id again).
    unique = query.order.field == "email"
    if after is not None:
        value, user_id = after
        shown = dialect.time(value) if isinstance(value, datetime) else value
        beyond = "<" if query.order.descending else ">"
        if unique:
            conditions.append(f"{column} {beyond} {statement.param(shown)}")
        else:
            conditions.append(
                f"({column}, id) {beyond} ({statement.param(shown)}, {statement.param(user_id)})"
            )
    where = f"WHERE {' AND '.join(conditions)} " if conditions else ""
    order = f"ORDER BY {column} {direction}" + ("" if unique else f", id {direction}")
    return f"{where}{order} LIMIT {statement.param(limit)}", statement.params


def prefix_upper_bound(prefix: str) -> str | None:
    """The least string greater than every string starting with ``prefix``; None if none is.

    Strings compare by code point, as SQLite's BINARY and PostgreSQL's "C"
    collations compare UTF-8 bytes. Surrogates are skipped: no stored text
    holds one, and no driver would send one.
    """
    chars = list(prefix)
    while chars:
        last = ord(chars.pop())
        if last < _MAX_CODE_POINT:
            following = last + 1
            if following in _SURROGATES:
                following = _SURROGATES.stop
            return "".join(chars) + chr(following)
    return None
