"""HPACK coders that reuse blocks which leave their table unchanged, and nothing else."""

from __future__ import annotations

import asyncio
import io
import logging

from hpack import Decoder, Encoder, HeaderTuple, NeverIndexedHeaderTuple

from people.rpc.internals.hpack_caches import MAX_KEPT, CachingDecoder, CachingEncoder
from people.server.logs import TurnBufferedHandler
from tests.inprocess import RawH2

#: A GetUserById request's headers, as a gRPC client sends them.
REQUEST = RawH2.request_headers("/people.UserService/GetUserById")


class TestDecoder:
    def test_same_headers_as_hpack(self) -> None:
        """Decoding a client's blocks, call after call, gives exactly what hpack gives."""
        client = Encoder()
        caching, plain = CachingDecoder(), Decoder()
        for number in range(20):
            headers = [*REQUEST, ("x-call", str(number % 3))]
            block = client.encode(headers)
            assert caching.decode(block, raw=True) == plain.decode(block, raw=True)

    def test_unchanged_blocks_are_reused(self) -> None:
        """Once the client's headers are indexed, the same block is decoded once."""
        client = Encoder()
        decoder = CachingDecoder()
        decoder.decode(client.encode(REQUEST), raw=True)  # fills the dynamic table
        block = client.encode(REQUEST)
        first = decoder.decode(block, raw=True)
        assert (block, True) in decoder._kept
        assert decoder.decode(block, raw=True) == first

    def test_a_table_change_invalidates(self) -> None:
        """After the table changes, a kept block is decoded afresh against the new table."""
        client = Encoder()
        caching, plain = CachingDecoder(), Decoder()
        blocks = [client.encode(REQUEST), client.encode(REQUEST)]
        blocks.append(client.encode([("x-new", "value")]))  # adds a dynamic entry
        blocks.append(blocks[1])  # the old bytes now index other entries
        answers = [(caching.decode(b, raw=True), plain.decode(b, raw=True)) for b in blocks]
        assert all(ours == theirs for ours, theirs in answers)
        assert answers[3][0] != answers[1][0]

    def test_never_indexed_headers_are_never_kept(self) -> None:
        """A block with a never-indexed (sensitive) header, a token say, is not remembered."""
        client = Encoder()
        decoder = CachingDecoder()
        headers: list[HeaderTuple] = [HeaderTuple(name, value) for name, value in REQUEST]
        headers.append(NeverIndexedHeaderTuple("authorization", "Bearer secret"))
        decoder.decode(client.encode(REQUEST), raw=True)
        block = client.encode(headers)
        decoder.decode(block, raw=True)
        assert (block, True) not in decoder._kept

    def test_bounded(self) -> None:
        """No more than MAX_KEPT blocks are kept."""
        decoder = CachingDecoder()
        client = Encoder()
        for number in range(MAX_KEPT * 3):
            decoder.decode(client.encode([(":path", f"/{number}")], huffman=False), raw=True)
        assert len(decoder._kept) <= MAX_KEPT


class TestEncoder:
    def test_same_blocks_as_hpack(self) -> None:
        """Encoding the answer headers again and again gives exactly hpack's bytes."""
        caching, plain = CachingEncoder(), Encoder()
        answer = [(":status", "200"), ("content-type", "application/grpc+proto")]
        for _ in range(5):
            assert caching.encode(answer) == plain.encode(answer)

    def test_resized_table_is_announced(self) -> None:
        """A table size change is still written at the start of the next block."""
        caching, plain = CachingEncoder(), Encoder()
        answer = [(":status", "200")]
        caching.encode(answer)
        plain.encode(answer)
        caching.header_table_size = 256
        plain.header_table_size = 256
        assert caching.encode(answer) == plain.encode(answer)


class TestTurnBufferedHandler:
    async def test_one_write_per_turn_in_order(self) -> None:
        """Lines logged in one loop turn are written together, in order, at its end."""
        stream = io.StringIO()
        handler = TurnBufferedHandler(stream)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger = logging.getLogger("tests.turn")
        logger.addHandler(handler)
        logger.propagate = False
        try:
            for number in range(3):
                logger.warning("line %d", number)
            assert stream.getvalue() == ""
            await asyncio.sleep(0)
            assert stream.getvalue() == "line 0\nline 1\nline 2\n"
        finally:
            logger.removeHandler(handler)

    def test_without_a_loop_at_once(self) -> None:
        """Outside a running loop a line is written at once."""
        stream = io.StringIO()
        handler = TurnBufferedHandler(stream)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.emit(logging.makeLogRecord({"msg": "now"}))
        assert stream.getvalue() == "now\n"
