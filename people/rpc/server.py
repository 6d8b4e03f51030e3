"""The server: a cap on connections, and a drain that lets accepted calls finish.

grpclib accepts any number of connections, and its ``Server.close()`` cancels
running calls. :class:`RpcServer` keeps grpclib's machinery, builds a
:class:`people.rpc.connection.ServerProtocol` per connection, turns away
connections past the cap, and drains as gRPC's own servers do: stop accepting
(serving the connections accepted until then), send every connection the
two-phase GOAWAY, wait for the accepted calls up to a grace period, then close.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from typing import Any

from grpclib.config import Configuration
from grpclib.encoding.base import CodecBase, StatusDetailsCodecBase
from h2.config import H2Configuration

from people.rpc.accesslog import AccessLog
from people.rpc.auth import TokenAuth
from people.rpc.calls import CallHandler
from people.rpc.connection import ServerProtocol
from people.rpc.defaults import DEFAULT_GRACE_PERIOD, DEFAULT_MAX_CONNECTIONS
from people.rpc.fast_lane import FastLane, collect_handlers
from people.rpc.internals import DispatchServerEvents, H2Protocol, Handler, ServerHooks
from people.rpc.observe import CallObserver, Observers
from people.rpc.policy import CallPolicy, ConnectionLimits

log = logging.getLogger("people.rpc.server")

#: How long streaming calls get to flush their last messages on drain.
STREAM_SETTLE_SECONDS = 0.1


class RpcServer(ServerHooks):
    """A grpclib server whose connections are :class:`ServerProtocol` s.

    Args:
        handlers: The servicers.
        codec: The message codec.
        policy: Limits shared by every call.
        limits: Limits every connection is held to.
        max_connections: Connections past this are closed at once.
        observers: What watches calls besides the access log (metrics, traces).
        auth: The bearer-token check every call passes, if any (``auth`` may be
            set later too, e.g. swapped on reload).
        fast_lane: Answer calls whose answer is already known inside
            ``data_received`` (:mod:`people.rpc.fast_lane`).
        config: grpclib's HTTP/2 settings.
    """

    def __init__(
        self,
        handlers: Any,
        *,
        codec: Any,
        policy: CallPolicy,
        limits: ConnectionLimits | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        observers: tuple[CallObserver, ...] = (),
        auth: TokenAuth | None = None,
        fast_lane: bool = True,
        config: Configuration | None = None,
    ) -> None:
        super().__init__(handlers, codec=codec, config=config)
        self.auth = auth
        self.observer = Observers([AccessLog(), *observers])
        self.policy = policy
        self.fast_lane = FastLane(
            collect_handlers(handlers) if fast_lane else {},
            policy=policy,
            observer=self.observer,
            auth=lambda: self.auth,
        )
        self.limits = limits or ConnectionLimits()
        self.max_connections = max_connections
        self.protocols: set[ServerProtocol] = set()
        self.draining = False
        self.stopped = False

    def new_handler(
        self,
        mapping: dict[str, Any],
        codec: CodecBase,
        status_details_codec: StatusDetailsCodecBase | None,
        dispatch: DispatchServerEvents,
    ) -> Handler:
        """Serve each call with :class:`people.rpc.calls.CallHandler` under the shared policy."""
        return CallHandler(
            mapping,
            codec,
            status_details_codec,
            dispatch,
            policy=self.policy,
            observer=self.observer,
            auth=lambda: self.auth,
        )

    def new_protocol(
        self, handler: Handler, config: Configuration, h2_config: H2Configuration
    ) -> H2Protocol:
        """Each connection is a :class:`ServerProtocol` that reports to this server."""
        return ServerProtocol(handler, config, h2_config, owner=self)

    def admit(self, protocol: ServerProtocol) -> bool:
        """Register a new connection; False when it must be turned away.

        While the server drains, a connection it had accepted (or the kernel had
        queued) is still admitted: its client has likely sent a call already,
        which the connection serves before its GOAWAY; once the drain is over,
        none is.
        """
        if self.stopped:
            self.observer.refused("drain")
            return False
        if len(self.protocols) >= self.max_connections:
            log.warning("refusing a connection: %d connections open", len(self.protocols))
            self.observer.refused("limits")
            return False
        self.protocols.add(protocol)
        self.observer.connections_changed(1)
        return True

    def forget(self, protocol: ServerProtocol) -> None:
        """A connection closed."""
        if protocol in self.protocols:
            self.protocols.discard(protocol)
            self.observer.connections_changed(-1)

    async def start_on(self, sock: socket.socket, *, ssl: ssl.SSLContext | None = None) -> None:
        """Serve on an already bound, listening socket."""
        await self.listen_on(sock, ssl=ssl, handshake_timeout=self.limits.handshake_timeout)

    async def drain(self, grace_period: float = DEFAULT_GRACE_PERIOD) -> None:
        """Stop accepting, GOAWAY every connection, let accepted calls finish, then close.

        Connections accepted as the listener closes are served too (see
        :meth:`stop_listening`). Calls still running after ``grace_period``
        seconds are cancelled.
        """
        self.draining = True
        deadline = time.monotonic() + grace_period
        await self.stop_listening()
        for protocol in list(self.protocols):
            protocol.go_away()
        # Streams the clients sent before they saw the first GOAWAY still count, and
        # so do the calls of connections admitted as the listener closed (each got
        # its GOAWAY when admitted): wait until every final GOAWAY is out and no
        # unary call runs, looking again after each wait.
        while (pending := self._unfinished()) and (left := deadline - time.monotonic()) > 0:
            await asyncio.wait(pending, timeout=left)
        self.stopped = True
        # Long-lived streams (health Watch) get a moment to send what the drain
        # changed (NOT_SERVING) before they are cancelled.
        if self.policy.running:
            await asyncio.sleep(STREAM_SETTLE_SECONDS)
        else:
            await asyncio.sleep(0)  # the last trailers reach the sockets
        for protocol in list(self.protocols):
            protocol.close_if_done()
        if self.listening:
            self.close()  # cancels the calls that outlived the grace period
            # Since Python 3.12 asyncio's Server.wait_closed() also waits for
            # every connection to end, and clients may hold theirs open forever.
            for protocol in list(self.protocols):
                protocol.force_close()
            await self.wait_closed()
        for protocol in list(self.protocols):
            protocol.close_if_done()

    def _unfinished(self) -> list[asyncio.Future[None]]:
        """What the drain still waits for: final GOAWAYs not yet sent, then unary calls."""
        goaways = [p.goaway.sent for p in self.protocols if not p.goaway.sent.done()]
        if goaways:
            return goaways
        return list(self.policy.unary_calls())
