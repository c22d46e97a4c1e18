"""The system-monitor topic: intervals, sharing, start/stop, scope, unsubscribe."""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from typing import Any

import pytest
import virtwire_monitor
from virtwire import hookimpl
from virtwire.errors import ConfigError
from virtwire.testing import run_server

FRAME = "system-monitor"


def _topic(server: Any) -> virtwire_monitor.MonitorTopic:
    topic = server.gateway.topics[FRAME]
    assert isinstance(topic, virtwire_monitor.MonitorTopic)
    return topic


async def test_interval_is_clamped_and_defaulted(monitor_server: Any) -> None:
    async with (
        monitor_server(max_interval=60_000, max_intervals_per_user=8) as server,
        server.client() as client,
    ):
        cases: list[tuple[dict[str, Any], int]] = [
            ({}, 5000),
            ({"interval": 10}, 500),
            ({"interval": 10**12}, 60_000),
            ({"interval": 1500.4}, 2000),  # snapped to 1, 2, 5 x 10^n ms
            ({"interval": 1400}, 1000),
            ({"interval": 7000}, 5000),
            ({"interval": 40_000}, 50_000),
            ({"interval": -3}, 500),
        ]
        for extra, expected in cases:
            reply = await client.request("subscribe", {"topic": FRAME, **extra})
            assert reply["type"] == "subscribe-response"
            assert reply["data"] == {"topic": FRAME, "interval": expected}
        for bad in ("1000", True, [1000], {"ms": 1}):
            reply = await client.request("subscribe", {"topic": FRAME, "interval": bad})
            assert reply["type"] == "error"
            assert reply["data"]["code"] == "INVALID_MESSAGE"
            assert reply["data"]["details"]["field"] == "data.interval"


async def test_first_frame_is_prompt_even_for_a_long_interval(monitor_server: Any) -> None:
    async with monitor_server() as server, server.client() as first:
        started = time.monotonic()
        await first.request("subscribe", {"topic": FRAME, "interval": 3_600_000})
        frame = await first.expect(FRAME, timeout=5)
        assert time.monotonic() - started < 5
        assert frame["data"]["interval"] == 3_600_000
        # a later subscriber of the running sampler gets the latest values at once
        async with server.client() as second:
            reply = await second.request("subscribe", {"topic": FRAME, "interval": 3_600_000})
            assert reply["data"]["interval"] == 3_600_000
            late = await second.expect(FRAME, timeout=5)
        assert late["data"] == frame["data"]
        assert len(_topic(server).loops) == 1


async def test_one_sampler_per_interval_shared_by_its_subscribers(monitor_server: Any) -> None:
    async with monitor_server() as server, server.client() as a, server.client() as b:
        await a.request("subscribe", {"topic": FRAME, "interval": 500})
        await b.request("subscribe", {"topic": FRAME, "interval": 500})
        topic = _topic(server)
        assert list(topic.loops) == [500]
        loop = topic.loops[500]
        fa = await a.expect(FRAME, where=lambda f: True, timeout=5)
        fb = await b.expect(FRAME, where=lambda f: f["timestamp"] == fa["timestamp"], timeout=5)
        assert fa == fb  # the same frame, encoded once
        await a.expect(FRAME, timeout=5)
        # one sample per tick however many subscribers (plus the baseline)
        assert loop.samples == loop.frames + 1


async def test_two_intervals_each_at_its_own_pace(monitor_server: Any) -> None:
    async with monitor_server(warmup=100) as server, server.client() as client:
        await client.request("subscribe", {"topic": FRAME, "interval": 500})
        await client.request("subscribe", {"topic": FRAME, "interval": 1000})
        assert sorted(_topic(server).loops) == [500, 1000]
        arrivals: dict[int, list[float]] = {500: [], 1000: []}
        while len(arrivals[1000]) < 3:
            frame = await client.expect(FRAME, timeout=5)
            arrivals[frame["data"]["interval"]].append(time.monotonic())
    fast, slow = arrivals[500], arrivals[1000]
    # 1000 ms frames at ~0.1 s, 1.1 s, 2.1 s; 500 ms ones every 0.5 s meanwhile
    assert 3 <= len(fast) <= 6, len(fast)
    fast_gap = statistics.median(b - a for a, b in itertools.pairwise(fast))
    slow_gap = statistics.median(b - a for a, b in itertools.pairwise(slow))
    assert 0.35 <= fast_gap <= 0.65, fast_gap
    assert 0.85 <= slow_gap <= 1.15, slow_gap


async def test_sampler_stops_with_its_last_subscriber(monitor_server: Any) -> None:
    async with monitor_server() as server:
        topic = _topic(server)
        hub_name = f"{FRAME}:500"
        async with server.client() as a:
            async with server.client() as b:
                await a.request("subscribe", {"topic": FRAME, "interval": 500})
                await b.request("subscribe", {"topic": FRAME, "interval": 500})
                loop = topic.loops[500]
                await b.expect(FRAME, timeout=5)
            # b disconnected: a still gets frames from the same sampler
            await a.expect(FRAME, timeout=5)
            assert topic.loops.get(500) is loop
            reply = await a.request("unsubscribe", {"topic": FRAME, "interval": 500})
            assert reply["data"] == {"topic": FRAME, "removed": 1}
            assert 500 not in topic.loops
            await asyncio.wait_for(loop.wait_stopped(), 5)
            assert loop.task is not None and loop.task.done()
            assert hub_name not in server.gateway.hub._channels
            samples = loop.samples
            # a new subscriber starts a fresh sampler (with its own previous counters)
            await a.request("subscribe", {"topic": FRAME, "interval": 500})
            await a.expect(FRAME, timeout=5)
            fresh = topic.loops[500]
            assert fresh is not loop
            assert loop.samples == samples
        # disconnecting the last subscriber stops it as well
        await asyncio.wait_for(fresh.wait_stopped(), 5)
        assert topic.loops == {}


async def test_unsubscribe(monitor_server: Any) -> None:
    async with monitor_server() as server, server.client() as client:
        topic = _topic(server)
        await client.request("subscribe", {"topic": FRAME, "interval": 500})
        await client.request("subscribe", {"topic": FRAME, "interval": 1000})
        # the interval is clamped the same way as in subscribe: 100 means 500
        reply = await client.request("unsubscribe", {"topic": FRAME, "interval": 100})
        assert reply["data"] == {"topic": FRAME, "removed": 1}
        assert sorted(topic.loops) == [1000]
        reply = await client.request("unsubscribe", {"topic": FRAME, "interval": 500})
        assert reply["type"] == "error" and reply["data"]["code"] == "NOT_SUBSCRIBED"
        await client.request("subscribe", {"topic": FRAME, "interval": 2000})
        # a bare unsubscribe ends every system-monitor subscription of the connection
        reply = await client.request("unsubscribe", {"topic": FRAME})
        assert reply["data"] == {"topic": FRAME, "removed": 2}
        assert topic.loops == {}


async def test_scope_monitor_read_is_required(monitor_server: Any) -> None:
    async with monitor_server() as server:
        token = server.token("viewer", ["vm:read"])
        async with server.client(token) as client:
            reply = await client.request("subscribe", {"topic": FRAME, "interval": 500})
        assert reply["type"] == "error"
        assert reply["data"]["code"] == "FORBIDDEN"
        assert _topic(server).loops == {}
        async with server.client(server.token("ops", ["monitor:read"])) as client:
            reply = await client.request("subscribe", {"topic": FRAME, "interval": 500})
            assert reply["type"] == "subscribe-response"
            await client.expect(FRAME, timeout=5)


class DenyUser:
    """A plugin whose ``authorize`` hook keeps one user away from host metrics."""

    @hookimpl
    def authorize(self, principal: Any, action: str, resource: str | None) -> bool | None:
        if action == "monitor:read" and principal.user_id == "intern":
            return False
        return None


async def test_authorize_hook_can_deny_monitor_read(monitor_server: Any) -> None:
    async with monitor_server(plugins=[("deny", DenyUser())]) as server:
        async with server.client(server.token("intern", ["monitor:read"])) as client:
            reply = await client.request("subscribe", {"topic": FRAME})
            assert reply["data"]["code"] == "FORBIDDEN"
        async with server.client(server.token("admin", ["monitor:read"])) as client:
            reply = await client.request("subscribe", {"topic": FRAME})
            assert reply["data"] == {"topic": FRAME, "interval": 5000}


async def test_distinct_intervals_are_bounded(monitor_server: Any) -> None:
    async with monitor_server(max_samplers=2) as server, server.client() as a:
        await a.request("subscribe", {"topic": FRAME, "interval": 500})
        await a.request("subscribe", {"topic": FRAME, "interval": 1000})
        reply = await a.request("subscribe", {"topic": FRAME, "interval": 2000})
        assert reply["type"] == "error"
        assert reply["data"]["code"] == "RATE_LIMITED"
        assert reply["data"]["details"] == {"limit": 2}
        async with server.client() as b:  # a running interval always fits
            reply = await b.request("subscribe", {"topic": FRAME, "interval": 1000})
            assert reply["type"] == "subscribe-response"


async def test_one_user_cannot_lock_others_out_nor_see_their_intervals(
    monitor_server: Any,
) -> None:
    async with monitor_server() as server:
        mallory = server.token("mallory", ["monitor:read"])
        async with server.client(mallory) as m1, server.client(mallory) as m2:
            # many odd intervals over two connections: they snap to few steps, and one
            # user holds at most max_intervals_per_user (4) of them
            got = set()
            refused = []
            for n, interval in enumerate(range(501, 40_000, 1237)):
                client = m1 if n % 2 else m2
                reply = await client.request("subscribe", {"topic": FRAME, "interval": interval})
                if reply["type"] == "subscribe-response":
                    got.add(reply["data"]["interval"])
                else:
                    refused.append(reply["data"])
            assert len(got) == 4
            assert refused and all(r["code"] == "RATE_LIMITED" for r in refused)
            assert refused[0]["details"] == {"limit": 4, "yours": sorted(got)}
            alice = server.token("alice", ["monitor:read"])
            async with server.client(alice) as a:
                for interval in (3_600_000, 60_000, 200_000):
                    reply = await a.request("subscribe", {"topic": FRAME, "interval": interval})
                    assert reply["type"] == "subscribe-response", reply
                reply = await a.request("subscribe", {"topic": FRAME, "interval": 20_000})
                assert reply["type"] == "subscribe-response"
                reply = await a.request("subscribe", {"topic": FRAME, "interval": 100_000})
                # alice's own refusal names alice's intervals only
                assert reply["data"]["details"] == {
                    "limit": 4,
                    "yours": [20_000, 50_000, 200_000, 3_600_000],
                }
        # their subscriptions ended with their connections: mallory starts afresh
        async with server.client(mallory) as m3:
            reply = await m3.request("subscribe", {"topic": FRAME, "interval": 100_000})
            assert reply["type"] == "subscribe-response"


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"min_interval": 1000, "max_interval": 10}, "max_interval"),
        ({"default_interval": 100}, "default_interval"),
        ({"sample_every": 1}, "sample_every"),
    ],
)
async def test_bad_settings_stop_the_gateway_with_the_key(options: Any, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        async with run_server(
            plugins=[("monitor", virtwire_monitor)], config={"plugins": {"monitor": options}}
        ):
            pass
