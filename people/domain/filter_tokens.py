"""The tokens of a filter (see :mod:`people.domain.filtering` for the language)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, cast

from people.domain.errors import InvalidField

_OPERATORS = ("!=", "<=", ">=", "=", "<", ">", ":")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
#: What may follow a backslash in a string.
_ESCAPABLE = ("\\", '"', "'", "*")

Kind = Literal["word", "string", "operator", "(", ")", "-", "end"]


@dataclass(frozen=True, slots=True)
class Token:
    """One token of a filter and where it starts (counted from 1)."""

    kind: Kind
    text: str
    position: int
    #: For strings: the positions (in ``text``) of unescaped asterisks.
    stars: tuple[int, ...] = ()


def tokenize(text: str) -> list[Token]:
    """Split a filter into tokens, ending with an ``end`` token.

    Raises:
        InvalidField: an unterminated string, an unknown escape or a stray character.
    """
    tokens: list[Token] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char.isspace():
            index += 1
        elif char in "()-":
            tokens.append(Token(cast(Kind, char), char, index + 1))
            index += 1
        elif char in "\"'":
            token, index = _string(text, index)
            tokens.append(token)
        elif operator := next((op for op in _OPERATORS if text.startswith(op, index)), None):
            tokens.append(Token("operator", operator, index + 1))
            index += len(operator)
        elif match := _WORD.match(text, index):
            tokens.append(Token("word", match[0], index + 1))
            index = match.end()
        else:
            raise error(index + 1, f"unexpected character {char!r}")
    tokens.append(Token("end", "", len(text) + 1))
    return tokens


def _string(text: str, start: int) -> tuple[Token, int]:
    quote = text[start]
    chars: list[str] = []
    stars: list[int] = []
    index = start + 1
    while index < len(text):
        char = text[index]
        if char == quote:
            return Token("string", "".join(chars), start + 1, tuple(stars)), index + 1
        if char == "\\":
            escaped = text[index + 1 : index + 2]
            if escaped not in _ESCAPABLE:
                raise error(index + 1, f"unknown escape \\{escaped}; use \\\\, \\\", \\' or \\*")
            chars.append(escaped)
            index += 2
            continue
        if char == "*":
            stars.append(len(chars))
        chars.append(char)
        index += 1
    raise error(start + 1, "this string has no closing quote")


def error(position: int, problem: str) -> InvalidField:
    """The error for a filter that is wrong at ``position`` (counted from 1)."""
    return InvalidField("filter", f"at position {position}: {problem}")
