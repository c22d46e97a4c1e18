"""``/metrics``: the gateway in the Prometheus text format (``prometheus_client``).

Hot paths add to plain counters and cheap histograms (a dictionary update per publish or per
client frame, never per subscriber); everything that is a state (connections, backends, the
broker, consoles) is read when the endpoint is scraped. Each gateway has its own registry.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .errors import ErrorCode, VirtwireError

if TYPE_CHECKING:
    from .gateway import Gateway

#: Buckets (seconds) for fan-out and broker latencies: 50 µs .. 1 s.
BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)


class Histogram:
    """A latency histogram cheap enough for every publish (a bisect and three additions);
    exposed in the Prometheus format at scrape time."""

    __slots__ = ("buckets", "count", "counts", "help", "name", "sum")

    def __init__(self, name: str, help: str, buckets: tuple[float, ...] = BUCKETS) -> None:
        self.name = name
        self.help = help
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.count += 1
        self.sum += value

    def family(self) -> HistogramMetricFamily:
        cumulative = []
        total = 0
        for bound, n in zip((*self.buckets, float("inf")), self.counts, strict=True):
            total += n
            cumulative.append((str(bound) if bound != float("inf") else "+Inf", total))
        family = HistogramMetricFamily(self.name, self.help)
        family.add_metric([], cumulative, sum_value=self.sum)
        return family


class Metrics:
    """The metrics of one gateway (``gateway.hub.metrics``). Hot paths only add to plain
    counters (``sent``, ``received``, ``coalesced``, ``overflows``) and histograms; the
    registry reads them, and every state, when ``/metrics`` is scraped."""

    def __init__(self) -> None:
        #: Client frames received, by type.
        self.frames_in: dict[str, int] = {}
        #: Frames queued for clients, by type (a publish counts once per subscriber).
        self.frames_out: dict[str, int] = {}
        self.coalesced = 0
        self.overflows = 0
        self.fanout = Histogram(
            "virtwire_fanout_seconds",
            "Time to queue one published frame for every local subscriber",
        )
        self.broker_publish = Histogram(
            "virtwire_broker_publish_seconds",
            "Time for a batch of frames to be published through the broker",
        )
        self.broker_lag = Histogram(
            "virtwire_broker_lag_seconds",
            "From publish on any gateway to delivery here, through the broker",
        )
        self.registry = CollectorRegistry(auto_describe=False)

    def sent(self, type_: str, n: int = 1) -> None:
        out = self.frames_out
        out[type_] = out.get(type_, 0) + n

    def received(self, type_: str) -> None:
        inp = self.frames_in
        inp[type_] = inp.get(type_, 0) + 1

    def attach(self, gateway: Gateway) -> None:
        """Add the values read at scrape time (connections, backends, broker, consoles)."""
        self.registry.register(_StateCollector(gateway, self))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def collect(self) -> Iterator[Metric]:
        for name, help, values in (
            ("virtwire_frames_in", "Client frames received, by type", self.frames_in),
            (
                "virtwire_frames_out",
                "Frames queued for clients, by type (a publish counts once per subscriber)",
                self.frames_out,
            ),
        ):
            family = CounterMetricFamily(name, help, labels=["type"])
            for type_, value in sorted(values.items()):
                family.add_metric([type_], value)
            yield family
        coalesced = CounterMetricFamily(
            "virtwire_queue_coalesced",
            "Latest-value frames that replaced an older one still queued for a slow client",
        )
        coalesced.add_metric([], self.coalesced)
        yield coalesced
        overflows = CounterMetricFamily(
            "virtwire_queue_overflows",
            "Connections closed because their send queue overflowed (4008)",
        )
        overflows.add_metric([], self.overflows)
        yield overflows
        for histogram in (self.fanout, self.broker_publish, self.broker_lag):
            yield histogram.family()


class _StateCollector:
    def __init__(self, gateway: Gateway, metrics: Metrics) -> None:
        self.gateway = gateway
        self.metrics = metrics

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        yield from self.metrics.collect()
        gateway = self.gateway
        states = GaugeMetricFamily(
            "virtwire_connections", "Open /ws connections, by state", labels=["state"]
        )
        counts: dict[str, int] = {}
        for session in list(gateway.sessions):
            counts[session.state.value] = counts.get(session.state.value, 0) + 1
        for state in ("authenticating", "open", "closing"):
            states.add_metric([state], counts.get(state, 0))
        yield states

        backends = GaugeMetricFamily(
            "virtwire_backend_up",
            "1 while a backend is started, 0 while it is down",
            labels=["backend"],
        )
        vms = getattr(gateway, "vms", None)
        down: set[Any] = getattr(vms, "down", set())
        for backend in gateway.backends:
            backends.add_metric([getattr(backend, "name", "?")], 0 if backend in down else 1)
        yield backends

        audit = gateway.audit_log
        records = CounterMetricFamily(
            "virtwire_audit_records", "Records written to the audit stream (docs/audit.md)"
        )
        records.add_metric([], audit.records)
        yield records
        dropped = CounterMetricFamily(
            "virtwire_audit_dropped",
            "Audit records lost: the writer's queue was full, or the file could not be written",
        )
        dropped.add_metric([], audit.dropped + audit.lost)
        yield dropped

        consoles = GaugeMetricFamily("virtwire_console_sessions", "Open console sessions")
        consoles.add_metric([], len(gateway.console_sessions))
        yield consoles

        broker = gateway.hub.broker
        health: dict[str, Any] = broker.health() if broker is not None else {"name": "memory"}
        name = str(health.get("name", "?"))
        connected = GaugeMetricFamily(
            "virtwire_broker_connected",
            "1 while the broker is connected (always 1 alone: the in-memory broker)",
            labels=["broker"],
        )
        connected.add_metric(
            [name], 1 if broker is None or health.get("state") == "connected" else 0
        )
        yield connected
        events = CounterMetricFamily(
            "virtwire_broker_events",
            "Broker counters (see the broker's docs)",
            labels=["broker", "event"],
        )
        for key, value in sorted(health.items()):
            if (
                isinstance(value, int)
                and not isinstance(value, bool)
                and key not in ("owned", "queued")
            ):
                events.add_metric([name, key], value)
        yield events
        gauges = GaugeMetricFamily(
            "virtwire_broker_state",
            "Broker gauges: keys owned, frames queued",
            labels=["broker", "what"],
        )
        for key in ("owned", "queued"):
            if isinstance(health.get(key), int):
                gauges.add_metric([name, key], health[key])
        yield gauges


async def metrics_endpoint(gateway: Gateway, request: Request) -> Response:
    """``GET /metrics``: with ``server.metrics = "token"`` a Bearer token with the
    ``metrics:read`` scope is required; ``"open"`` serves anyone (bind to a private address)."""
    mode = gateway.settings.server.metrics
    if mode == "off":
        return Response(status_code=404)
    if mode == "token":
        auth = request.headers.get("authorization", "")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        try:
            if not token:
                raise VirtwireError(ErrorCode.AUTH_REQUIRED, gateway.catalogue("auth.required"))
            principal = gateway.auth.verify(token)
            if not principal.has_scope("metrics:read"):
                raise VirtwireError(
                    ErrorCode.FORBIDDEN, gateway.catalogue("forbidden.scope", scope="metrics:read")
                )
        except VirtwireError as exc:
            status = 403 if exc.code == ErrorCode.FORBIDDEN else 401
            return JSONResponse(exc.to_data(), status_code=status)
    return Response(gateway.hub.metrics.render(), media_type=CONTENT_TYPE_LATEST)
