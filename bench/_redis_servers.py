"""Gateways for bench_redis.py: virtwire with a bench plugin whose topic is a shared channel,
alone (in-memory broker) or with the Redis plugin.

    python _redis_servers.py PORT [REDIS_URL PREFIX]
"""

from __future__ import annotations

import asyncio
import resource
import sys
from typing import Any

from virtwire import hookimpl
from virtwire.topics import Subscription

STATUS = {"vmId": "vm-001", "status": "running", "cpu": 45.2, "memory": 75.0}


class BenchPlugin:
    """``bench`` topic on the shared channel ``bench``; ``bench-broadcast`` publishes N frames
    on it (each carries the sender's ``t`` for latency); ``echo`` answers."""

    @hookimpl
    def register_topics(self, register: Any, gateway: Any) -> None:
        hub = gateway.hub
        self.channel = hub.shared("bench")

        class Topic:
            name = "bench"
            scope = None

            def key(self, data: dict[str, Any]) -> Any:
                return ("bench",)

            async def subscribe(self, session: Any, data: dict[str, Any]) -> Subscription:
                return Subscription.to_channel(hub.shared("bench"), session.outbox, ("bench",))

        register(Topic())

    @hookimpl
    def register_handlers(self, register: Any, gateway: Any) -> None:
        async def broadcast(session: Any, data: dict[str, Any]) -> dict[str, Any]:
            for i in range(int(data["n"])):
                self.channel.publish("vm-status", {**STATUS, "seq": i, "t": data.get("t", 0)})
                if i % 10 == 9:
                    await asyncio.sleep(0)
            return {}

        async def echo(session: Any, data: dict[str, Any]) -> dict[str, Any]:
            return data

        register("bench-broadcast", broadcast)
        register("echo", echo)


def main() -> None:
    from virtwire.app import Server, create_app, uvicorn_config
    from virtwire.log import configure as configure_logging
    from virtwire.testing import make_settings

    port = int(sys.argv[1])
    config: dict[str, Any] = {
        "server": {
            "port": port,
            "access_log": False,
            "log_level": "warning",
            "rate_limit": 1e9,
            "rate_burst": 10**9,
            "history_size": 1000,
            # the load generator opens thousands of connections from one address
            "max_connections": 0,
            "max_connections_per_address": 0,
        }
    }
    plugins: list[Any] = [("bench", BenchPlugin())]
    if len(sys.argv) > 2:
        import virtwire_redis

        config["plugins"] = {"redis": {"url": sys.argv[2], "prefix": sys.argv[3]}}
        plugins.append(("redis", virtwire_redis))
    settings = make_settings(config)
    # logging as `virtwire serve` sets it up (unconfigured, structlog prints every line)
    configure_logging(settings.server.log_format, settings.server.log_level)
    app = create_app(settings, plugins=plugins)
    Server(uvicorn_config(app, settings, log_level="warning")).run()


if __name__ == "__main__":
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    main()
