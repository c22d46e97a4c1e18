"""Latest values and ``since`` recovery through Redis, and what a Redis outage does."""

from __future__ import annotations

from typing import Any

import httpx
from rd_kit import Hypervisor, RedisServer, fresh_prefix, gateway, until


def changed(status: str, vm: str = "alpha") -> Any:
    return lambda f: f["data"]["vmId"] == vm and f["data"]["status"] == status


async def test_since_after_reconnecting_to_another_gateway(redis_server: RedisServer) -> None:
    hv = Hypervisor("alpha", "beta")
    prefix = fresh_prefix()
    async with gateway(redis_server, hv, prefix=prefix) as a:
        async with a.client() as client:
            await client.request("subscribe", {"topic": "vm-status-all"})
            hv.set("alpha", "paused", None, None)
            seen = await client.expect("vm-status", where=changed("paused"))
            position = {"offset": seen["offset"], "epoch": seen["epoch"]}
        # missed while disconnected: one change of each VM
        hv.set("alpha", "stopped", None, None)
        hv.set("beta", "paused", None, None)
        # B starts after those frames: it has no history of its own, Redis has
        async with (
            gateway(redis_server, prefix=prefix) as b,
            b.client() as again,
        ):
            reply = await again.request("subscribe", {"topic": "vm-status-all", "since": position})
            assert reply["data"]["recovered"] is True, reply
            assert reply["data"]["epoch"] == position["epoch"]
            missed = [await again.expect("vm-status") for _ in range(2)]
            assert [m["offset"] for m in missed] == [position["offset"] + 1, position["offset"] + 2]
            assert [(m["data"]["vmId"], m["data"]["status"]) for m in missed] == [
                ("alpha", "stopped"),
                ("beta", "paused"),
            ]
            # and live frames follow in order
            hv.set("alpha", "running", None, None)
            live = await again.expect("vm-status")
            assert live["offset"] == position["offset"] + 3

            # a position older than the stream holds is not recoverable
            async with b.client() as stale:
                reply = await stale.request(
                    "subscribe",
                    {"topic": "vm-status-all", "since": {"offset": 1, "epoch": "other"}},
                )
                assert reply["data"]["recovered"] is False
                currents = [await stale.expect("vm-status") for _ in range(2)]
                assert {(c["data"]["vmId"], c["data"]["status"]) for c in currents} == {
                    ("alpha", "running"),
                    ("beta", "paused"),
                }


async def test_history_is_bounded(redis_server: RedisServer) -> None:
    hv = Hypervisor("alpha")
    prefix = fresh_prefix()

    async with gateway(redis_server, hv, prefix=prefix) as a, a.client() as client:
        await client.request("subscribe", {"topic": "vm-status-all"})
        size = a.settings.server.history_size
        # Redis trims whole stream nodes (up to 100 entries): it keeps at least `size`
        extra = 250
        for i in range(size + extra):
            hv.set("alpha", "paused" if i % 2 else "running", None, None)
        hv.set("alpha", "crashed", None, None)
        last = await client.expect("vm-status", where=changed("crashed"))
        assert last["offset"] == size + extra + 2  # the announcement, the changes, the crash
        async with a.client() as late:
            reply = await late.request(
                "subscribe",
                {"topic": "vm-status-all", "since": {"offset": 1, "epoch": last["epoch"]}},
            )
            assert reply["data"]["recovered"] is False


async def test_redis_killed_and_restarted(redis_server: RedisServer) -> None:
    hv = Hypervisor("alpha")
    prefix = fresh_prefix()
    async with (
        gateway(redis_server, hv, prefix=prefix) as a,
        gateway(redis_server, prefix=prefix) as b,
        a.client() as ca,
        b.client() as cb,
        httpx.AsyncClient() as http,
    ):
        for client in (ca, cb):
            await client.request("subscribe", {"topic": "vm-status-all"})
        hv.set("alpha", "paused", None, None)
        before = await cb.expect("vm-status", where=changed("paused"))
        await ca.expect("vm-status", where=changed("paused"))

        redis_server.stop()
        await until(lambda: a.gateway.hub.broker.health()["state"] == "disconnected")  # type: ignore[union-attr]
        health = (await http.get(f"{a.http_url}/healthz")).json()
        assert health["status"] == "ok" and health["broker"]["state"] == "disconnected"

        # local delivery keeps working, without a position
        hv.set("alpha", "stopped", None, None)
        local = await ca.expect("vm-status", where=changed("stopped"))
        assert "offset" not in local
        # B cannot reach A's VM now: a clear error, not "no such VM"
        reply = await cb.request("vm-control", {"vmId": "alpha", "action": "start"})
        assert reply["data"]["code"] == "BACKEND_UNAVAILABLE", reply
        # A still runs its own VM's actions
        reply = await ca.request("vm-control", {"vmId": "alpha", "action": "start"})
        assert reply["type"] == "vm-control-response", reply
        await ca.expect("vm-status", where=changed("running"))
        hv.set("alpha", "stopped", None, None)
        await ca.expect("vm-status", where=changed("stopped"))

        redis_server.start()
        for server in (a, b):
            broker = server.gateway.hub.broker
            await until(lambda broker=broker: broker.health()["state"] == "connected")  # type: ignore[misc]
        hv.set("alpha", "running", None, None)
        after_a = await ca.expect("vm-status", where=changed("running"))
        after_b = await cb.expect("vm-status", where=changed("running"))
        assert after_a == after_b
        # the gap is reported: the history behind the old position is gone
        assert after_b["epoch"] != before["epoch"]
        async with b.client() as again:
            reply = await again.request(
                "subscribe",
                {
                    "topic": "vm-status-all",
                    "since": {"offset": before["offset"], "epoch": before["epoch"]},
                },
            )
            assert reply["data"]["recovered"] is False
            current = await again.expect("vm-status")
            assert current["data"]["status"] == "running"
        health = (await http.get(f"{b.http_url}/healthz")).json()["broker"]
        assert health["state"] == "connected" and health["reconnects"] >= 1
