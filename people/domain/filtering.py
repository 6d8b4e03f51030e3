"""The filter language of ListUsers (a subset of AIP-160) and its order_by (AIP-132).

Grammar (``AND``, ``OR`` and ``NOT`` in capitals; as in AIP-160, ``OR`` binds
tighter than ``AND``, so ``a AND b OR c`` means ``a AND (b OR c)``)::

    filter      = [ expression ]
    expression  = factor { "AND" factor }
    factor      = term { "OR" term }
    term        = ( "NOT" | "-" ) term | "(" expression ")" | restriction
    restriction = FIELD ( "=" | "!=" | ":" | "<" | "<=" | ">" | ">=" ) STRING
    STRING      = '"' ... '"' | "'" ... "'"   (escapes: \\\\ \\" \\' \\*)

A value is always quoted. In ``=`` and ``!=`` an unescaped ``*`` at the start
or end of a value is a wildcard (``"*@acme.com"``, ``"Ada*"``); ``\\*`` is a
literal asterisk. ``:`` is "contains", case-insensitively, on ``name`` and
``email``. Times (``create_time``, ``update_time``) take RFC 3339 values and
every comparison operator but ``:``. Names and emails compare
case-insensitively (emails in their stored normal form), ids exactly.

Every mistake is an :class:`~people.domain.errors.InvalidField` naming the
filter (or order_by) and, for a filter, the position (counted in characters
from 1) and the problem.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import cast, get_args

from people.domain.errors import InvalidField
from people.domain.filter_tokens import Token, error, tokenize
from people.domain.model import email_lookup_key, name_key
from people.domain.query import (
    AllOf,
    AnyOf,
    Node,
    Not,
    Order,
    OrderField,
    Query,
    Shape,
    TextField,
    TextMatch,
    TimeField,
    TimeMatch,
    TimeOperator,
)

#: Longest filter accepted, in characters, and most comparisons in one.
MAX_FILTER_LENGTH = 20_000
MAX_RESTRICTIONS = 500
#: Deepest nesting of parentheses and negations.
MAX_DEPTH = 50

TEXT_FIELDS: tuple[str, ...] = get_args(TextField)
TIME_FIELDS: tuple[str, ...] = get_args(TimeField)
ORDER_FIELDS: tuple[str, ...] = get_args(OrderField)
_FIELDS_HELP = "id, name, email, create_time or update_time"
_KEYWORDS = ("AND", "OR", "NOT")
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)


def parse_query(filter_text: str, order_by: str) -> Query:
    """Parse both halves of a listing request.

    Raises:
        InvalidField: ``filter`` or ``order_by`` is malformed; the message says where and why.
    """
    return Query(filter=parse_filter(filter_text), order=parse_order_by(order_by))


def parse_filter(text: str) -> Node | None:
    """The tree a filter stands for; None for an empty filter (every user).

    Raises:
        InvalidField: (field ``filter``) at position N: what is wrong.
    """
    if len(text) > MAX_FILTER_LENGTH:
        raise InvalidField("filter", f"must be at most {MAX_FILTER_LENGTH} characters")
    tokens = tokenize(text)
    if tokens[0].kind == "end":
        return None
    return _Parser(tokens).filter()


def parse_order_by(text: str) -> Order:
    """The order an ``order_by`` names: one field, optionally followed by ``asc`` or ``desc``.

    Raises:
        InvalidField: (field ``order_by``) an unknown field or a malformed order.
    """
    words = text.split()
    if not words:
        return Order()
    order_field, *direction = words
    if order_field not in ORDER_FIELDS:
        raise InvalidField(
            "order_by",
            f"cannot order by {order_field!r}; use create_time, update_time, name or email,"
            " optionally followed by desc",
        )
    if len(direction) > 1 or (direction and direction[0].lower() not in ("asc", "desc")):
        raise InvalidField(
            "order_by", f"expected one field and an optional asc or desc, not {text.strip()!r}"
        )
    descending = bool(direction) and direction[0].lower() == "desc"
    return Order(field=cast(OrderField, order_field), descending=descending)


class _Parser:
    """Recursive descent over the tokens, building the tree and checking fields and values."""

    def __init__(self, tokens: list[Token]) -> None:
        self._tokens = tokens
        self._index = 0
        self._depth = 0
        self._restrictions = 0

    def filter(self) -> Node:
        node = self._expression()
        token = self._peek()
        if token.kind != "end":
            if token.kind == ")":
                raise error(token.position, "this ) closes no (")
            raise error(
                token.position, f"expected AND, OR or the end of the filter, not {_shown(token)}"
            )
        return node

    def _expression(self) -> Node:
        parts = [self._factor()]
        while self._keyword("AND"):
            parts.append(self._factor())
        return parts[0] if len(parts) == 1 else AllOf(tuple(parts))

    def _factor(self) -> Node:
        parts = [self._term()]
        while self._keyword("OR"):
            parts.append(self._term())
        return parts[0] if len(parts) == 1 else AnyOf(tuple(parts))

    def _term(self) -> Node:
        token = self._peek()
        if token.kind == "-" or (token.kind == "word" and token.text == "NOT"):
            self._index += 1
            return Not(self._nested(token, self._term))
        if token.kind == "(":
            self._index += 1
            node = self._nested(token, self._expression)
            closing = self._peek()
            if closing.kind != ")":
                raise error(
                    closing.position, f"expected ) to close the ( at position {token.position}"
                )
            self._index += 1
            return node
        return self._restriction()

    def _nested(self, opening: Token, parse: Callable[[], Node]) -> Node:
        # Bounded, so a hostile filter cannot exhaust the interpreter's stack.
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise error(opening.position, f"nested more than {MAX_DEPTH} deep")
        node = parse()
        self._depth -= 1
        return node

    def _restriction(self) -> Node:
        name = self._take()
        if name.kind != "word" or name.text in _KEYWORDS:
            raise error(name.position, f"expected a field ({_FIELDS_HELP}), not {_shown(name)}")
        if name.text not in TEXT_FIELDS and name.text not in TIME_FIELDS:
            hint = (
                " (AND, OR and NOT are written in capitals)"
                if name.text.upper() in _KEYWORDS
                else ""
            )
            raise error(name.position, f"unknown field {name.text!r}; use {_FIELDS_HELP}{hint}")
        operator = self._take()
        if operator.kind != "operator":
            raise error(
                operator.position, f"expected an operator after {name.text}, not {_shown(operator)}"
            )
        value = self._take()
        if value.kind != "string":
            raise error(
                value.position,
                f"expected a quoted value after {operator.text}, not {_shown(value)}",
            )
        self._restrictions += 1
        if self._restrictions > MAX_RESTRICTIONS:
            raise error(name.position, f"a filter holds at most {MAX_RESTRICTIONS} comparisons")
        if name.text in TIME_FIELDS:
            return _time_match(cast(TimeField, name.text), operator, value)
        return _text_match(cast(TextField, name.text), operator, value)

    def _keyword(self, word: str) -> bool:
        token = self._peek()
        if token.kind == "word" and token.text == word:
            self._index += 1
            return True
        return False

    def _peek(self) -> Token:
        return self._tokens[self._index]

    def _take(self) -> Token:
        token = self._tokens[self._index]
        if token.kind != "end":
            self._index += 1
        return token


def _shown(token: Token) -> str:
    if token.kind == "end":
        return "the end of the filter"
    if token.kind == "string":
        return "a string"
    return repr(token.text)


def _text_match(text_field: TextField, operator: Token, value: Token) -> Node:
    if operator.text not in ("=", "!=", ":"):
        raise error(operator.position, f"{text_field} takes =, != or :, not {operator.text}")
    if operator.text == ":":
        if text_field == "id":
            raise error(operator.position, "id takes = or != (: works on name and email)")
        if value.stars:
            raise error(
                value.position, "a * wildcard works with = and != only; write \\* for a literal *"
            )
        return _folded(text_field, "contains", value.text)
    raw, last = value.text, len(value.text) - 1
    if any(star not in (0, last) for star in value.stars):
        raise error(value.position, "a * wildcard may only start or end a value; write \\* for a *")
    leading = 0 in value.stars
    trailing = last > 0 and last in value.stars
    core = raw[int(leading) : len(raw) - int(trailing)]
    shape: Shape = "equals"
    if leading and trailing:
        shape = "contains"
    elif leading:
        shape = "suffix"
    elif trailing:
        shape = "prefix"
    node = _folded(text_field, shape, core)
    return Not(node) if operator.text == "!=" else node


def _folded(text_field: TextField, shape: Shape, value: str) -> TextMatch:
    """The match with ``value`` in the form the stores keep for ``text_field``."""
    if shape != "equals" and not value:
        # "*", "**" and ": ''" match every user: one shape for them all.
        return TextMatch(text_field, "prefix", "")
    if text_field == "id":
        return TextMatch(text_field, shape, value)
    if text_field == "name":
        return TextMatch(text_field, shape, name_key(value))
    if shape == "equals":
        return TextMatch(text_field, shape, email_lookup_key(value))
    return TextMatch(text_field, shape, name_key(value))


def _time_match(time_field: TimeField, operator: Token, value: Token) -> Node:
    if operator.text == ":":
        raise error(operator.position, f"{time_field} takes =, !=, <, <=, > or >=, not :")
    moment = _rfc3339(value.text)
    if moment is None:
        raise error(
            value.position,
            f'{time_field} needs an RFC 3339 time such as "2024-05-17T12:00:00Z",'
            f" not {value.text!r}",
        )
    if operator.text == "!=":
        return Not(TimeMatch(time_field, "=", moment))
    return TimeMatch(time_field, cast(TimeOperator, operator.text), moment)


def _rfc3339(text: str) -> datetime | None:
    match = _RFC3339.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(match[n]) for n in range(1, 7))
    micros = int((match[7] or "0")[:6].ljust(6, "0"))
    try:
        zone = UTC
        if match[9]:
            offset = timedelta(hours=int(match[10]), minutes=int(match[11]))
            zone = timezone(-offset if match[9] == "-" else offset)
        moment = datetime(year, month, day, hour, minute, min(second, 59), micros, tzinfo=zone)
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
