"""Keepalive pings from one shared timer per loop (virtwire.keepalive): deadlines are kept,
connections that answer stay open, silent ones are dropped, nothing is left behind."""

from __future__ import annotations

import asyncio
import math
import struct
from typing import Any

import virtwire_example
from virtwire.keepalive import Keepalive, members_of
from virtwire.testing import make_settings, run_server
from wirekit import RawClient, masked_frame, until, ws_handshake

PLUGINS = [("example", virtwire_example)]


class _Wheel(Keepalive):
    """Counts its wake-ups."""

    wakeups = 0

    def _fire(self) -> None:
        self.wakeups += 1
        super()._fire()


class _Member:
    def __init__(self, wheel: _Wheel, name: int, served: list[Any]) -> None:
        self.keepalive_slot: int | None = None
        self.wheel = wheel
        self.name = name
        self.served = served

    def keepalive_due(self) -> None:
        self.served.append((self.name, self.wheel.loop.time(), self.wheel.wakeups))


async def test_deadlines_are_served_not_early_and_grouped_by_tick() -> None:
    loop = asyncio.get_running_loop()
    tick = 0.05
    wheel = _Wheel(loop, tick)
    served: list[tuple[int, float, int]] = []
    start = loop.time()
    asked = {}
    members = [_Member(wheel, i, served) for i in range(60)]
    for i, member in enumerate(members):
        asked[i] = start + 0.02 + (i % 6) * 0.013  # six deadlines over ~4 ticks
        wheel.at(member, asked[i])
    cancelled = members[7]
    wheel.cancel(cancelled)
    assert cancelled.keepalive_slot is None
    moved = members[8]
    asked[8] = start + 0.3
    wheel.at(moved, asked[8])  # replaces its earlier deadline
    assert len(wheel) == 59

    await until(lambda: len(served) >= 59)
    names = [name for name, _, _ in served]
    assert sorted(names) == sorted(set(range(60)) - {7})  # each once, the cancelled one never
    for name, when, _ in served:
        assert when >= asked[name] - 0.01 * tick  # never (meaningfully) early
    # members whose deadlines fall in one tick are served in one wake-up
    by_slot: dict[int, set[int]] = {}
    for name, _, wakeup in served:
        by_slot.setdefault(math.ceil(asked[name] / tick), set()).add(wakeup)
    assert all(len(wakeups) == 1 for wakeups in by_slot.values())
    assert wheel.wakeups <= len(by_slot)  # one per tick at most, none wasted
    assert len(wheel) == 0


async def _answer_pings(client: RawClient, pings: int) -> list[int]:
    """Answer pings (masked pongs with the same payload) until ``pings`` were answered;
    returns the opcodes seen."""
    seen: list[int] = []
    answered = 0
    while answered < pings:
        head = await client.reader.readexactly(2)
        opcode, length = head[0] & 0x0F, head[1] & 0x7F
        if length == 126:
            length = struct.unpack("!H", await client.reader.readexactly(2))[0]
        payload = await client.reader.readexactly(length)
        seen.append(opcode)
        if opcode == 0x8:
            raise AssertionError(f"closed by the server: {payload!r}")
        if opcode == 0x9:
            client.writer.write(masked_frame(payload, opcode=0xA))
            answered += 1
    return seen


async def test_clients_that_answer_stay_connected_and_deadlines_are_released() -> None:
    settings = make_settings({"server": {"ping_interval": 0.1, "ping_timeout": 0.2}})
    loop = asyncio.get_running_loop()
    async with run_server(settings, plugins=PLUGINS) as server:
        token = server.token()
        before = members_of(loop)
        clients = [await ws_handshake(server.port, token) for _ in range(20)]
        # every connection has one keepalive deadline in the loop's shared wheel
        assert members_of(loop) - before == 20
        # each is pinged again and again (well past ping_timeout) and stays open
        seen = await asyncio.wait_for(asyncio.gather(*(_answer_pings(c, 4) for c in clients)), 30)
        assert all(opcodes.count(0x9) == 4 and 0x8 not in opcodes for opcodes in seen)
        assert members_of(loop) - before == 20
        for client in clients:
            client.close()
        await until(lambda: members_of(loop) <= before)  # closed connections leave no deadline
        assert members_of(loop) == before
