"""Servers for bench_core.py and bench_idle.py: virtwire with a bench plugin, a bare Starlette app
doing the same things without virtwire, and the `websockets` library's own server (idle
connections only). Run: python _core_servers.py virtwire|bare|websockets PORT.

BENCH_PING_INTERVAL / BENCH_PING_TIMEOUT (seconds) set the keepalive pings of all three (default:
virtwire's defaults, 20 s and 20 s)."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
from typing import Any

from _kit import bare_server
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from virtwire import hookimpl
from virtwire.topics import ChannelTopic

PING_INTERVAL = float(os.environ.get("BENCH_PING_INTERVAL", "20"))
PING_TIMEOUT = float(os.environ.get("BENCH_PING_TIMEOUT", "20"))

STATUS = {
    "vmId": "vm-001",
    "status": "running",
    "cpu": 45.2,
    "memory": 75.0,
    "network": {"rx": 1024, "tx": 512},
}


class BenchPlugin:
    """bench-broadcast publishes N frames on a channel; echo answers with its data."""

    @hookimpl
    def register_topics(self, register: Any, gateway: Any) -> None:
        self.topic = ChannelTopic("bench", gateway.hub.channel("bench"))
        register(self.topic)

    @hookimpl
    def register_handlers(self, register: Any, gateway: Any) -> None:
        async def broadcast(session: Any, data: dict[str, Any]) -> dict[str, Any]:
            for i in range(int(data["n"])):
                self.topic.channel.publish("vm-status", {**STATUS, "seq": i})
                await asyncio.sleep(0)
            return {}

        async def echo(session: Any, data: dict[str, Any]) -> dict[str, Any]:
            return data

        register("bench-broadcast", broadcast)
        register("echo", echo)


def virtwire_app(port: int) -> Any:
    from virtwire.app import Server, create_app, uvicorn_config
    from virtwire.log import configure as configure_logging
    from virtwire.testing import make_settings

    settings = make_settings(
        {
            "server": {
                "port": port,
                "access_log": False,
                "log_level": "warning",
                "rate_limit": 1e9,
                "rate_burst": 10**9,
                "ping_interval": PING_INTERVAL,
                "ping_timeout": PING_TIMEOUT,
                # the load generator opens thousands of connections from one address
                "max_connections": 0,
                "max_connections_per_address": 0,
            }
        }
    )
    # logging as `virtwire serve` sets it up (unconfigured, structlog prints every line)
    configure_logging(settings.server.log_format, settings.server.log_level)
    app = create_app(settings, plugins=[("bench", BenchPlugin())])
    return Server(uvicorn_config(app, settings, log_level="warning"))


def bare_app(port: int) -> Any:
    clients: set[WebSocket] = set()

    async def endpoint(ws: WebSocket) -> None:
        await ws.accept()
        try:
            while True:
                text = await ws.receive_text()
                msg = json.loads(text)
                if msg["type"] == "subscribe":
                    clients.add(ws)
                    await ws.send_text(
                        json.dumps({"type": "subscribe-response", "id": msg.get("id")})
                    )
                elif msg["type"] == "bench-broadcast":
                    for i in range(int(msg["data"]["n"])):
                        frame = json.dumps({"type": "vm-status", "data": {**STATUS, "seq": i}})
                        for c in list(clients):
                            await c.send_text(frame)
                        await asyncio.sleep(0)
                    await ws.send_text(
                        json.dumps({"type": "bench-broadcast-response", "id": msg.get("id")})
                    )
                elif msg["type"] == "echo":
                    await ws.send_text(
                        json.dumps({"type": "echo-response", "data": msg["data"], "id": msg["id"]})
                    )
        except WebSocketDisconnect:
            clients.discard(ws)

    app = Starlette(routes=[WebSocketRoute("/ws", endpoint)])
    return bare_server(app, port, ws_ping_interval=PING_INTERVAL, ws_ping_timeout=PING_TIMEOUT)


def websockets_server(port: int) -> None:
    """The `websockets` library's own asyncio server (on uvloop, as the others): each
    connection waits for messages and answers echo requests."""
    import uvloop
    from websockets.asyncio.server import ServerConnection, serve

    async def handler(ws: ServerConnection) -> None:
        async for text in ws:
            msg = json.loads(text)
            if msg.get("type") == "echo":
                await ws.send(json.dumps({"type": "echo-response", "id": msg.get("id")}))

    async def main() -> None:
        async with serve(
            handler,
            "127.0.0.1",
            port,
            compression=None,
            ping_interval=PING_INTERVAL,
            ping_timeout=PING_TIMEOUT,
            max_size=2**20,
        ) as server:
            await server.serve_forever()

    uvloop.run(main())


if __name__ == "__main__":
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    kind, port = sys.argv[1], int(sys.argv[2])
    if kind == "websockets":
        websockets_server(port)
    else:
        server = virtwire_app(port) if kind == "virtwire" else bare_app(port)
        server.run()
