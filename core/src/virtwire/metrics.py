"""``/metrics``: the gateway in the Prometheus text format (``prometheus_client``).

Hot paths bump a few cheap metrics (one label lookup per publish or per client frame, never per
subscriber); everything that is a state (connections, backends, the broker, consoles) is read
when the endpoint is scraped. Each gateway has its own registry.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
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


class Metrics:
    """The metrics of one gateway (``gateway.hub.metrics``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.frames_in = Counter(
            "virtwire_frames_in", "Client frames received, by type", ["type"], registry=r
        )
        self.frames_out = Counter(
            "virtwire_frames_out",
            "Frames queued for clients, by type (a publish counts once per subscriber)",
            ["type"],
            registry=r,
        )
        self.coalesced = Counter(
            "virtwire_queue_coalesced",
            "Latest-value frames that replaced an older one still queued for a slow client",
            registry=r,
        )
        self.overflows = Counter(
            "virtwire_queue_overflows",
            "Connections closed because their send queue overflowed (4008)",
            registry=r,
        )
        self.fanout = Histogram(
            "virtwire_fanout_seconds",
            "Time to queue one published frame for every local subscriber",
            buckets=BUCKETS,
            registry=r,
        )
        self.broker_publish = Histogram(
            "virtwire_broker_publish_seconds",
            "Time for a batch of frames to be published through the broker",
            buckets=BUCKETS,
            registry=r,
        )
        self.broker_lag = Histogram(
            "virtwire_broker_lag_seconds",
            "From publish on any gateway to delivery here, through the broker",
            buckets=BUCKETS,
            registry=r,
        )

    def attach(self, gateway: Gateway) -> None:
        """Add the values read at scrape time (connections, backends, broker, consoles)."""
        self.registry.register(_StateCollector(gateway))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
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
