"""HPACK coders that remember header blocks which leave their dynamic table as it was.

A gRPC client sends the same request headers call after call; once they are in
the decoder's dynamic table, each block is a run of indexes, the same bytes
every time, and decoding it again gives the same headers. The same holds for
the answer headers and trailers the server sends. Each coder here counts the
changes to its table; a block that changed nothing is kept, by its bytes (or by
its headers), for as long as the table stays at that count. Blocks holding
never-indexed (sensitive) headers are never kept, and each cache is bounded.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from hpack import NeverIndexedHeaderTuple
from hpack.hpack import Decoder, Encoder
from hpack.table import HeaderTable

#: Header blocks kept per connection and direction.
MAX_KEPT = 64


class CountingHeaderTable(HeaderTable):
    """HPACK's dynamic table, counting every change made to it."""

    def __init__(self) -> None:
        super().__init__()
        self.changes = 0

    def add(self, name: bytes, value: bytes) -> None:
        """Add an entry (one change)."""
        self.changes += 1
        super().add(name, value)

    @property
    def maxsize(self) -> int:
        """The table's size limit."""
        return HeaderTable.maxsize.fget(self)  # type: ignore[no-any-return,attr-defined] # property object

    @maxsize.setter
    def maxsize(self, value: int) -> None:
        self.changes += 1
        HeaderTable.maxsize.fset(self, value)  # type: ignore[attr-defined] # property object


class CachingDecoder(Decoder):
    """An HPACK decoder that reuses the decoding of a block that changed nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.header_table = CountingHeaderTable()
        self._kept: dict[tuple[bytes, bool], tuple[int, list[Any]]] = {}

    def decode(self, data: bytes, raw: bool = False) -> list[Any]:
        """Decode ``data``; a block seen before with the table unchanged is not decoded again."""
        table = self.header_table
        assert isinstance(table, CountingHeaderTable)
        key = (bytes(data), raw)
        kept = self._kept.get(key)
        if kept is not None and kept[0] == table.changes:
            return list(kept[1])
        before = table.changes
        headers = list(super().decode(data, raw))
        if table.changes == before and not any(
            isinstance(header, NeverIndexedHeaderTuple) for header in headers
        ):
            if len(self._kept) >= MAX_KEPT:
                self._kept.clear()
            self._kept[key] = (before, headers)
        return headers


class CachingEncoder(Encoder):
    """An HPACK encoder that reuses the block of a plain header list that changed nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.header_table = CountingHeaderTable()
        self._kept: dict[tuple[tuple[Any, ...], bool], tuple[int, bytes]] = {}

    def encode(self, headers: Iterable[Any], huffman: bool = True) -> bytes:
        """Encode ``headers``; a list of plain pairs seen before is not encoded again."""
        table = self.header_table
        assert isinstance(table, CountingHeaderTable)
        listed = list(headers)
        cacheable = not table.resized and all(
            type(header) is tuple and len(header) == 2 for header in listed
        )
        if not cacheable:
            return super().encode(listed, huffman)
        key = (tuple(listed), huffman)
        kept = self._kept.get(key)
        if kept is not None and kept[0] == table.changes:
            return kept[1]
        before = table.changes
        block = super().encode(listed, huffman)
        if table.changes == before:
            if len(self._kept) >= MAX_KEPT:
                self._kept.clear()
            self._kept[key] = (before, block)
        return block
