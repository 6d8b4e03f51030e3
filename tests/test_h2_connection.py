"""send_unary_answer sends what h2's own API sends, and leaves h2's state as that API does."""

from __future__ import annotations

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import DataReceived, ResponseReceived, StreamEnded, TrailersReceived
from h2.settings import SettingCodes
from h2.stream import StreamState

from people.rpc.internals import RefusingH2Connection
from tests.inprocess import RawH2

#: A GetUserById request's headers, as a gRPC client sends them.
REQUEST = RawH2.request_headers("/people.UserService/GetUserById")
HEADERS = [(":status", "200"), ("content-type", "application/grpc+proto")]
TRAILERS = [("grpc-status", "0")]


def as_bytes(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """The same headers as bytes, as the fast lane passes them."""
    return [(name.encode(), value.encode()) for name, value in headers]


class Pair:
    """A client and two servers that have seen the same bytes: one answers through h2's
    API, the other through ``send_unary_answer``."""

    def __init__(self, client_window: int = 65535) -> None:
        self.client = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
        self.client.local_settings.initial_window_size = client_window
        self.client.initiate_connection()
        config = H2Configuration(client_side=False, header_encoding="ascii")
        self.servers = [
            RefusingH2Connection(config, max_concurrent_streams=100),
            RefusingH2Connection(config, max_concurrent_streams=100),
        ]
        for server in self.servers:
            server.initiate_connection()
        # Room on the connection for several large answers (each stream has its own).
        self.client.increment_flow_control_window(2**20)
        self.exchange()

    def exchange(self) -> None:
        """Deliver the client's bytes to both servers and the h2-API server's to the client."""
        sent = self.client.data_to_send()
        for server in self.servers:
            server.receive_data(sent)
        answers = [server.data_to_send() for server in self.servers]
        assert answers[0] == answers[1]
        self.client.receive_data(answers[0])

    def request(self, body: bytes) -> int:
        """Send one unary request (HEADERS, DATA, END_STREAM) from the client; its stream id."""
        stream_id = self.client.get_next_available_stream_id()
        self.client.send_headers(stream_id, REQUEST)
        self.client.send_data(stream_id, body, end_stream=True)
        self.exchange()
        return stream_id


def state(server: H2Connection, stream_id: int) -> tuple[object, ...]:
    """What h2 knows about the connection and one stream after an answer (counting open
    streams forgets closed ones, so it comes last)."""
    stream = server.streams[stream_id]
    return (
        stream.state_machine.state,
        stream.state_machine.headers_sent,
        stream.state_machine.trailers_sent,
        stream.outbound_flow_control_window,
        server.outbound_flow_control_window,
        server.state_machine.state,
        server.open_inbound_streams,
        len(server.encoder.header_table.dynamic_entries),
    )


class TestSameAsH2:
    @pytest.mark.parametrize("size", [0, 1, 100, 16384, 16385, 50000])
    def test_same_bytes_and_state(self, size: int) -> None:
        """Three answers in a row (HPACK indexing the second and third), in one DATA frame or
        several, give the same bytes and stream, window and HPACK state as h2's own API."""
        pair = Pair()
        through_h2, direct = pair.servers
        for call in range(3):
            stream_id = pair.request(b"\x00\x00\x00\x00\x00")
            message = bytes([call]) * size
            through_h2.send_headers(stream_id, HEADERS)
            frame_size = through_h2.max_outbound_frame_size
            for start in range(0, size, frame_size) if size else (0,):
                through_h2.send_data(stream_id, message[start : start + frame_size])
            through_h2.send_headers(stream_id, TRAILERS, end_stream=True)
            assert direct.send_unary_answer(
                stream_id, as_bytes(HEADERS), message, as_bytes(TRAILERS)
            )
            assert direct.data_to_send() == through_h2.data_to_send()
            after = state(direct, stream_id)
            assert after == state(through_h2, stream_id)
            assert after[0] is StreamState.CLOSED

    def test_the_client_reads_a_whole_answer(self) -> None:
        """A client reads the direct answer as headers, the message, trailers and the end."""
        pair = Pair()
        direct = pair.servers[1]
        stream_id = pair.request(b"\x00\x00\x00\x00\x00")
        assert direct.send_unary_answer(stream_id, as_bytes(HEADERS), b"answer", as_bytes(TRAILERS))
        events = pair.client.receive_data(direct.data_to_send())
        assert [type(event) for event in events] == [
            ResponseReceived,
            DataReceived,
            TrailersReceived,
            StreamEnded,
        ]
        assert isinstance(events[1], DataReceived)
        assert events[1].data == b"answer"

    def test_what_does_not_fit_is_not_sent(self) -> None:
        """A message larger than the client's stream window sends nothing and changes nothing."""
        pair = Pair(client_window=10)
        pair.client.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 10})
        pair.exchange()
        direct = pair.servers[1]
        stream_id = pair.request(b"\x00\x00\x00\x00\x00")
        before = state(direct, stream_id)
        assert not direct.send_unary_answer(
            stream_id, as_bytes(HEADERS), b"x" * 11, as_bytes(TRAILERS)
        )
        assert direct.data_to_send() == b""
        assert state(direct, stream_id) == before
