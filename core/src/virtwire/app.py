"""The Starlette application factory, its lifespan, and the uvicorn server around it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from types import ModuleType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route, WebSocketRoute

from . import __version__
from .builtins import builtin_plugins
from .config import Settings, load_settings
from .connection import WebSocketEndpoint
from .errors import CloseCode
from .gateway import Gateway
from .hosts import HostCheck, default_hosts
from .log import get_logger, install_redaction
from .metrics import metrics_endpoint
from .wire import HttpProtocol, Limits, WebSocketProtocol


def create_app(
    settings: Settings | None = None,
    *,
    plugins: list[ModuleType | object] | None = None,
    log: Any = None,
) -> VirtwireApp:
    """Build the gateway app.

    :param settings: validated settings (default: :func:`load_settings` from the
        environment).
    :param plugins: an explicit list of plugin modules/objects to register instead of the
        installed entry points (tests use this); the built-in plugins are always loaded.
    """
    settings = settings or load_settings()
    install_redaction()
    gateway = Gateway(settings, log or get_logger("virtwire"))
    gateway.check_audit()
    gateway.load_plugins(plugins, builtin_plugins())

    async def healthz(request: Request) -> JSONResponse:
        body: dict[str, Any] = {
            "status": "ok" if gateway.started else "starting",
            "version": __version__,
            "connections": len(gateway.sessions),
        }
        broker = gateway.hub.broker
        body["broker"] = broker.health() if broker is not None else {"name": "memory"}
        return JSONResponse(body, status_code=200 if gateway.started else 503)

    async def metrics(request: Request) -> Response:
        return await metrics_endpoint(gateway, request)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.startup()
        try:
            yield
        finally:
            await gateway.shutdown()

    routes = [
        WebSocketRoute("/ws", WebSocketEndpoint(gateway)),
        Route("/healthz", healthz),
        Route("/metrics", metrics),
        *gateway.routes,
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.gateway = gateway
    server = settings.server
    hosts = server.allowed_hosts if server.allowed_hosts is not None else default_hosts(server.host)
    if "*" in hosts:
        gateway.log.warning(
            "any Host name is served (bound to every interface); list the gateway's names "
            "in server.allowed_hosts to refuse DNS rebinding"
        )
    direct = [
        r
        for r in gateway.routes
        if isinstance(r, WebSocketRoute) and getattr(r.endpoint, "direct", False)
    ]
    return VirtwireApp(app, WebSocketEndpoint(gateway), HostCheck(hosts), direct)


class VirtwireApp:
    """The ASGI app: requests whose ``Host`` is not allowed get 403; ``/ws`` goes straight to
    the gateway's endpoint (no router, no middleware wrapping ``send``, so frames can take the
    direct write path), and so do the WebSocket routes whose endpoint sets ``direct = True``
    (relays such as ``/ws/vnc/{ticket}``); everything else, lifespan included, to the
    Starlette app."""

    def __init__(
        self,
        starlette: Starlette,
        ws: WebSocketEndpoint,
        hosts: HostCheck,
        direct: list[WebSocketRoute] | None = None,
    ) -> None:
        self.starlette = starlette
        self.ws = ws
        self.hosts = hosts
        self.direct = direct or []
        self.state = starlette.state

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind != "lifespan" and not self.hosts(_host(scope)):
            await self._refuse_host(scope, receive, send)
        elif kind == "websocket" and scope["path"] == "/ws":
            await self.ws(scope, receive, send)
        elif kind == "websocket" and (route := self._direct(scope)) is not None:
            await route[0].endpoint({**scope, **route[1]}, receive, send)
        else:
            await self.starlette(scope, receive, send)

    def _direct(self, scope: Any) -> tuple[WebSocketRoute, Any] | None:
        for route in self.direct:
            match, child = route.matches(scope)
            if match is Match.FULL:
                return route, child
        return None

    async def _refuse_host(self, scope: Any, receive: Any, send: Any) -> None:
        self.state.gateway.log.warning("request refused: Host not allowed", host=_host(scope))
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.close", "code": CloseCode.POLICY_VIOLATION})
            return
        body = b"Host not allowed\n"
        await send(
            {
                "type": "http.response.start",
                "status": 403,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _host(scope: Any) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == b"host":
            return str(value.decode("latin-1"))
    return None


def uvicorn_config(app: Any, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """uvicorn configured as virtwire runs it: uvloop, httptools and the sans-I/O websockets
    implementation through virtwire's protocols (:mod:`virtwire.wire`: connection caps,
    handshake and close deadlines, the direct write path), keepalive pings, no
    permessage-deflate unless configured."""
    server = settings.server
    options: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "loop": "uvloop",
        "http": HttpProtocol,
        "ws": WebSocketProtocol,
        # The app checks max_message_bytes itself and answers with a precise error; this is
        # the hard cap beyond which the protocol layer drops the connection (1009).
        "ws_max_size": server.max_message_bytes * 2,
        "ws_ping_interval": server.ping_interval or None,
        "ws_ping_timeout": server.ping_timeout or None,
        "ws_per_message_deflate": server.per_message_deflate,
        "log_config": None,
        "access_log": server.access_log,
        "lifespan": "on",
        "timeout_graceful_shutdown": server.shutdown_timeout,
        "server_header": False,
    }
    options.update(overrides)
    config = uvicorn.Config(app, **options)
    config.virtwire_limits = Limits(  # type: ignore[attr-defined]
        max_connections=server.max_connections,
        max_per_address=server.max_connections_per_address,
        handshake_timeout=server.handshake_timeout,
        close_timeout=server.close_timeout,
    )
    return config


class Server(uvicorn.Server):
    """uvicorn's server, closing every WebSocket with 1001 (going away) on shutdown before
    uvicorn's own connection shutdown."""

    async def shutdown(self, sockets: Any = None) -> None:
        app = self.config.app
        gateway: Gateway | None = getattr(getattr(app, "state", None), "gateway", None)
        if gateway is not None:
            for server in self.servers:
                server.close()
            await gateway.close_all(
                CloseCode.GOING_AWAY, self.config.timeout_graceful_shutdown or 5
            )
        await super().shutdown(sockets)
