"""What the runtime tells observers: calls started and finished, connections, refusals.

The access log, the Prometheus metrics and the traces all watch calls the same
way: an observer gets each call's :class:`CallRecord` when it starts (with its
metadata) and when it ends, plus the events no single call owns. Observers are
called on the event loop and must not block.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from grpclib.const import Status

#: Why a call or connection was turned away: the concurrency cap, a limit
#: (message size, request timeout, streams per connection, the connection
#: cap), a draining server, or an abusive peer.
RefusalReason = Literal["cap", "limits", "drain", "abuse"]
#: go-grpc-prometheus's names for a method's shape.
GrpcType = Literal["unary", "client_stream", "server_stream", "bidi_stream"]


def service_and_method(path: str) -> tuple[str, str]:
    """``("package.Service", "Method")`` from a call's ``:path``."""
    service, _, name = path.lstrip("/").partition("/")
    return service, name


@dataclass(eq=False)
class CallRecord:
    """One call, filled in as it proceeds; compared by identity."""

    #: The ``:path`` as the client sent it (``/package.Service/Method``).
    method: str
    peer: tuple[str, int] | Any | None
    start: float = field(default_factory=time.monotonic)
    status: Status | None = None
    #: Set once the path names a method the server serves.
    grpc_type: GrpcType | None = None
    #: Set when observers were told the call started (then they hear of its end too).
    started: bool = False
    received: int = 0
    sent: int = 0
    #: The name of the token that authenticated the call, never the token.
    caller: str | None = None
    #: The W3C trace id, when the call is traced.
    trace_id: str | None = None

    @property
    def final_status(self) -> Status:
        """The status the call ended with (CANCELLED if it never sent one)."""
        return self.status if self.status is not None else Status.CANCELLED

    @property
    def service_and_method(self) -> tuple[str, str]:
        """``("package.Service", "Method")`` from the path."""
        return service_and_method(self.method)


class CallObserver(Protocol):
    """Something that watches calls; every method has a do-nothing default in NullObserver."""

    #: True if it must be told of a call from inside the call's own task (a tracer
    #: making its span current); such observers keep calls off the fast lane.
    needs_task: bool

    def call_started(self, record: CallRecord, metadata: Mapping[str, Any]) -> None:
        """A call to a served method is about to be authenticated and read."""
        ...

    def call_finished(self, record: CallRecord) -> None:
        """A call ended (answered, failed, refused or cancelled); exactly once per call."""
        ...

    def refused(self, reason: RefusalReason) -> None:
        """A call or a connection was turned away."""
        ...

    def connections_changed(self, delta: int) -> None:
        """A connection opened (+1) or closed (-1)."""
        ...

    def queue_changed(self, delta: int) -> None:
        """A call started (+1) or stopped (-1) waiting for a handler slot."""
        ...


class NullObserver:
    """Watches nothing."""

    needs_task = False

    def call_started(self, record: CallRecord, metadata: Mapping[str, Any]) -> None:
        """Nothing."""

    def call_finished(self, record: CallRecord) -> None:
        """Nothing."""

    def refused(self, reason: RefusalReason) -> None:
        """Nothing."""

    def connections_changed(self, delta: int) -> None:
        """Nothing."""

    def queue_changed(self, delta: int) -> None:
        """Nothing."""


class Observers:
    """Several observers as one, called in order."""

    def __init__(self, observers: Sequence[CallObserver]) -> None:
        self._observers = tuple(observers)
        self.needs_task = any(observer.needs_task for observer in self._observers)

    def call_started(self, record: CallRecord, metadata: Mapping[str, Any]) -> None:
        """Tell each observer."""
        for observer in self._observers:
            observer.call_started(record, metadata)

    def call_finished(self, record: CallRecord) -> None:
        """Tell each observer."""
        for observer in self._observers:
            observer.call_finished(record)

    def refused(self, reason: RefusalReason) -> None:
        """Tell each observer."""
        for observer in self._observers:
            observer.refused(reason)

    def connections_changed(self, delta: int) -> None:
        """Tell each observer."""
        for observer in self._observers:
            observer.connections_changed(delta)

    def queue_changed(self, delta: int) -> None:
        """Tell each observer."""
        for observer in self._observers:
            observer.queue_changed(delta)
