"""What watches a server besides its access log: Prometheus metrics and OpenTelemetry traces.

Both are optional and imported only when switched on (``--metrics-address``,
``--tracing``), so a server without them loads neither prometheus_client nor
OpenTelemetry. :func:`open_instruments` builds what the settings ask for; the
composition root hands the result's observers to the runtime, wraps the store
with it, and gives the service its cache hook.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from people.domain.ports import UserStore
from people.rpc.observe import CallObserver
from people.server.compose import StartupError
from people.server.instrumented_store import InstrumentedStore
from people.server.settings import Settings

if TYPE_CHECKING:
    from people.server.metrics import PeopleMetrics
    from people.server.tracing import CallTracer
    from people.server.user_count import UserCount


@dataclass
class Instruments:
    """The metrics and the tracer one server process reports to (either may be off)."""

    metrics: PeopleMetrics | None = None
    tracer: CallTracer | None = None
    #: Where the metrics are registered, for the endpoint that serves them.
    registry: Any = None
    #: Keeps the metrics' user count, once a store is wrapped.
    user_count: UserCount | None = None
    #: Run at shutdown (flushes spans).
    closers: list[Callable[[], None]] = field(default_factory=list)

    @property
    def observers(self) -> tuple[CallObserver, ...]:
        """What the runtime should tell about calls."""
        found: list[CallObserver] = []
        if self.metrics is not None:
            found.append(self.metrics.grpc)
        if self.tracer is not None:
            found.append(self.tracer)
        return tuple(found)

    @property
    def on_cache_lookup(self) -> Callable[[bool], None] | None:
        """The read cache's hook, when metrics are on."""
        return None if self.metrics is None else self.metrics.cache_lookup

    def wrap(self, store: UserStore) -> UserStore:
        """``store``, timed and traced as the instruments need (itself when both are off)."""
        if self.metrics is None and self.tracer is None:
            return store
        if self.metrics is not None:
            from people.server.user_count import UserCount

            self.user_count = UserCount(store, self.metrics.users)
        return InstrumentedStore(
            store,
            on_operation=None if self.metrics is None else self.metrics.store_operation,
            span=None if self.tracer is None else self.tracer.store_span,
            on_write=None if self.user_count is None else self.user_count.written,
        )

    def close(self) -> None:
        """Flush and stop what needs it."""
        for close in self.closers:
            close()


def open_instruments(settings: Settings) -> Instruments:
    """The instruments ``settings`` switch on.

    Raises:
        StartupError: tracing is on but the ``otel`` extra is not installed.
    """
    instruments = Instruments()
    store = store_label(settings.database)
    if settings.metrics_address is not None:
        from prometheus_client import CollectorRegistry

        from people.server.metrics import PeopleMetrics

        instruments.registry = CollectorRegistry()
        instruments.metrics = PeopleMetrics(instruments.registry, store=store)
        instruments.closers.append(instruments.metrics.grpc.flush)  # the last counts
    if settings.tracing != "off":
        try:
            from people.server.tracing import CallTracer, tracer_provider
        except ImportError:
            raise StartupError(
                "--tracing needs OpenTelemetry: pip install 'people[otel]'"
            ) from None
        provider = tracer_provider(settings.tracing)
        instruments.tracer = CallTracer(provider, store=store)
        instruments.closers.append(provider.shutdown)
    return instruments


def store_label(database: str) -> str:
    """A database URL's store, as a label: its scheme, ``postgres`` spelled ``postgresql``."""
    scheme = database.partition("://")[0]
    return "postgresql" if scheme == "postgres" else scheme
