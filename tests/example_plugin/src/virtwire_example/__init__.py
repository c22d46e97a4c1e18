"""An example third-party virtwire plugin.

It adds a message type ``greet`` (``{"name": ...}`` → ``{"greeting": "<prefix>, <name>!"}``)
and a topic ``ticks`` (scope ``vm:read``) that pushes ``{"n": 1, 2, ...}`` every ``interval`` ms
while anyone subscribes (one ticker per interval, shared; at most ``MAX_TICKERS`` intervals run
at once). Its config section::

    [plugins.example]
    greeting = "Hello"
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Any

import msgspec
from virtwire import VirtwireError, hookimpl
from virtwire.topics import Subscription


class Settings(msgspec.Struct, forbid_unknown_fields=True):
    greeting: str = "Hello"


class Greet(msgspec.Struct, forbid_unknown_fields=True):
    name: str


#: Distinct intervals that may tick at once (each is a task waking up on its own).
MAX_TICKERS = 16


class TicksTopic:
    name = "ticks"
    scope = "vm:read"

    def __init__(self, gateway: Any) -> None:
        self.gateway = gateway
        self.tickers: dict[int, asyncio.Task[None]] = {}
        self.hooked: set[int] = set()

    def key(self, data: dict[str, Any]) -> Hashable:
        return (self.name, data.get("interval", 1000))

    async def _tick(self, interval: int) -> None:
        channel = self.gateway.hub.channel(f"ticks:{interval}")
        n = 0
        while True:
            await asyncio.sleep(interval / 1000)
            n += 1
            channel.publish("ticks", {"n": n, "interval": interval})

    async def subscribe(self, session: Any, data: dict[str, Any]) -> Subscription:
        interval = data.get("interval", 1000)
        if (
            not isinstance(interval, int)
            or isinstance(interval, bool)
            or not 10 <= interval <= 60000
        ):
            raise VirtwireError(
                "INVALID_MESSAGE",
                "invalid data.interval: expected an integer of milliseconds in 10..60000",
                details={"field": "data.interval"},
            )
        if interval not in self.tickers and len(self.tickers) >= MAX_TICKERS:
            raise VirtwireError(
                "RATE_LIMITED",
                f"too many tick intervals running (limit {MAX_TICKERS}); use a running one",
                details={"limit": MAX_TICKERS, "running": len(self.tickers)},
            )
        channel = self.gateway.hub.channel(f"ticks:{interval}")
        if interval not in self.hooked:
            # one ticker per interval: started with the first subscriber, stopped with the last
            def active(on: bool, interval: int = interval) -> None:
                if on:
                    self.tickers[interval] = asyncio.get_running_loop().create_task(
                        self._tick(interval)
                    )
                else:
                    self.tickers.pop(interval).cancel()

            channel.on_active(active)
            self.hooked.add(interval)
        return Subscription.to_channel(
            channel, session.outbox, (self.name, interval), reply={"interval": interval}
        )


@hookimpl
def register_settings(register: Any) -> None:
    register("example", Settings)


@hookimpl
def register_handlers(register: Any, gateway: Any) -> None:
    prefix = gateway.plugin_config("example").greeting

    async def greet(session: Any, data: Greet) -> dict[str, Any]:
        return {"greeting": f"{prefix}, {data.name}!", "userId": session.user_id}

    register("greet", greet, schema=Greet)


@hookimpl
def register_topics(register: Any, gateway: Any) -> None:
    register(TicksTopic(gateway))
