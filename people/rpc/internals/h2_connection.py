"""h2's connection state: one stream past the limit refused alone, and less work per frame."""

from __future__ import annotations

from typing import Any

import h2.connection
from h2.config import DummyLogger, H2Configuration
from h2.connection import ConnectionInputs
from h2.errors import ErrorCodes
from h2.events import Event as H2Event
from h2.exceptions import StreamClosedError, StreamIDTooLowError
from h2.settings import SettingCodes, Settings
from h2.stream import StreamInputs
from hyperframe.frame import DataFrame, HeadersFrame, RstStreamFrame

from people.rpc.internals.hpack_caches import CachingDecoder, CachingEncoder

#: Frame type and flags bytes (RFC 9113 §6.1, §6.2): DATA without flags; HEADERS with
#: END_HEADERS, and with END_HEADERS and END_STREAM.
_DATA = b"\x00\x00"
_HEADERS_END_HEADERS = b"\x01\x04"
_HEADERS_END_STREAM = b"\x01\x05"


class RefusingH2Connection(h2.connection.H2Connection):
    """h2's connection state, refusing a stream past the concurrency limit alone.

    h2 ends the whole connection when the peer opens more streams than
    SETTINGS_MAX_CONCURRENT_STREAMS allows; RFC 9113 §5.1.2 makes that a stream
    error. Such a stream is opened as usual, so HPACK's table and flow control
    stay in step, then reset at once with REFUSED_STREAM; none of its events
    reach grpclib, and the client may retry it.

    Args:
        config: h2's configuration.
        max_concurrent_streams: The limit advertised to, and enforced on, the peer.
    """

    #: Closed streams h2 remembers (to tell late frames' errors apart); h2's own
    #: 2**16 costs about 5 MiB on every long-lived connection.
    MAX_CLOSED_STREAMS = 4096

    def __init__(self, config: H2Configuration, *, max_concurrent_streams: int) -> None:
        super().__init__(config=config)
        # As h2 sets up its own coders, but remembering blocks that change nothing.
        self.encoder = CachingEncoder()
        self.decoder = CachingDecoder()
        self.decoder.max_header_list_size = self.DEFAULT_MAX_HEADER_LIST_SIZE
        self.local_settings = Settings(
            client=False,
            initial_values={
                SettingCodes.MAX_CONCURRENT_STREAMS: max_concurrent_streams,
                SettingCodes.MAX_HEADER_LIST_SIZE: self.DEFAULT_MAX_HEADER_LIST_SIZE,
            },
        )
        self._admitting_one_more = False
        #: Streams refused for exceeding the limit, over the connection's life.
        self.refused_streams = 0
        #: DATA frames that arrived on streams already closed (h2 answers each with RST_STREAM).
        self.frames_on_closed_streams = 0

    @property
    def open_inbound_streams(self) -> int:
        """Open streams the peer started (one fewer than the limit while admitting one)."""
        count = super().open_inbound_streams
        if self._admitting_one_more:
            return min(count, self.local_settings.max_concurrent_streams - 1)
        return count

    def _receive_headers_frame(self, frame: HeadersFrame) -> tuple[list[Any], list[H2Event]]:
        over_limit = (
            frame.stream_id not in self.streams
            and self.open_inbound_streams >= self.local_settings.max_concurrent_streams
        )
        if not over_limit:
            return super()._receive_headers_frame(frame)
        self._admitting_one_more = True
        try:
            frames, events = super()._receive_headers_frame(frame)
        finally:
            self._admitting_one_more = False
        self.reset_stream(frame.stream_id, error_code=ErrorCodes.REFUSED_STREAM)
        self.refused_streams += 1
        kept = [event for event in events if getattr(event, "stream_id", None) != frame.stream_id]
        return frames, kept

    def _receive_frame(self, frame: Any) -> list[H2Event]:
        """h2 4.4.1's ``_receive_frame``, without formatting ``repr(frame)`` for a no-op logger."""
        if not isinstance(self.config.logger, DummyLogger):
            return super()._receive_frame(frame)
        events: list[H2Event]
        try:
            frames, events = self._frame_dispatch_table[frame.__class__](frame)
        except StreamClosedError as exc:
            if not self._stream_is_closed_by_reset(exc.stream_id):
                raise
            reset = RstStreamFrame(exc.stream_id)
            reset.error_code = exc.error_code
            self._prepare_for_sending([reset])
            events = exc._events
        except StreamIDTooLowError as exc:
            if self._stream_is_closed_by_reset(exc.stream_id):
                reset = RstStreamFrame(exc.stream_id)
                reset.error_code = ErrorCodes.STREAM_CLOSED
                self._prepare_for_sending([reset])
                events = []
            elif self._stream_is_closed_by_end(exc.stream_id):
                raise StreamClosedError(exc.stream_id) from exc
            else:
                raise
        else:
            self._prepare_for_sending(frames)
        return events

    def send_unary_answer(
        self,
        stream_id: int,
        headers: list[tuple[bytes, bytes]],
        message: bytes,
        trailers: list[tuple[bytes, bytes]],
    ) -> bool:
        """Answer an open stream with HEADERS, ``message`` in DATA frames, and trailers ending it.

        The same frames and the same state as ``send_headers``, then ``send_data``
        once per frame-sized piece, then ``send_headers(end_stream=True)``
        (``tests/test_h2_connection.py`` compares the two), without h2's per-call
        header normalisation and validation and its frame objects: ``headers``
        and ``trailers`` must already be lower-case, valid and plain
        (never-indexed values go through h2's own API). False, and nothing sent,
        if ``message`` does not fit the flow-control windows.
        """
        size = len(message)
        if size > self.local_flow_control_window(stream_id):
            return False
        stream = self.streams[stream_id]
        connection, machine = self.state_machine, stream.state_machine
        connection.process_input(ConnectionInputs.SEND_HEADERS)
        machine.process_input(StreamInputs.SEND_HEADERS)
        block = self.encoder.encode(headers)
        tail = stream_id.to_bytes(4, "big")
        frame_size = self.max_outbound_frame_size
        out = [len(block).to_bytes(3, "big") + _HEADERS_END_HEADERS + tail, block]
        for start in range(0, size, frame_size) if size else (0,):
            piece = message[start : start + frame_size]
            connection.process_input(ConnectionInputs.SEND_DATA)
            machine.process_input(StreamInputs.SEND_DATA)
            out += (len(piece).to_bytes(3, "big") + _DATA + tail, piece)
        stream.outbound_flow_control_window -= size
        self.outbound_flow_control_window -= size
        connection.process_input(ConnectionInputs.SEND_HEADERS)
        machine.process_input(StreamInputs.SEND_HEADERS)
        machine.process_input(StreamInputs.SEND_END_STREAM)
        trailer_block = self.encoder.encode(trailers)
        out += (len(trailer_block).to_bytes(3, "big") + _HEADERS_END_STREAM + tail, trailer_block)
        # Header blocks this small always fit one frame (the minimum frame size is 16 KiB).
        assert max(len(block), len(trailer_block)) <= frame_size
        self._data_to_send += b"".join(out)
        return True

    def _handle_data_on_closed_stream(
        self, events: list[H2Event], exc: StreamClosedError, frame: DataFrame
    ) -> tuple[list[Any], list[H2Event]]:
        self.frames_on_closed_streams += 1
        return super()._handle_data_on_closed_stream(events, exc, frame)
