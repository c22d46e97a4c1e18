"""Three gateways on three ports sharing one real redis-server."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rd_kit import Hypervisor, RedisServer, fresh_prefix, gateway


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_status_from_a_reaches_subscribers_on_b_and_c(redis_server: RedisServer) -> None:
    hv = Hypervisor("alpha", "beta")
    prefix = fresh_prefix()
    async with (
        gateway(redis_server, hv, prefix=prefix) as a,
        gateway(redis_server, prefix=prefix) as b,
        gateway(redis_server, prefix=prefix) as c,
    ):
        async with a.client() as ca, b.client() as cb, c.client() as cc:
            # a fresh subscriber on any gateway gets the current status of every VM first
            for client in (ca, cb, cc):
                reply = await client.request("subscribe", {"topic": "vm-status-all"})
                assert reply["type"] == "subscribe-response", reply
                assert reply["data"]["count"] == 2
                first = [await client.expect("vm-status") for _ in range(2)]
                assert {f["data"]["vmId"] for f in first} == {"alpha", "beta"}
                assert all(f["data"]["status"] == "running" for f in first)

            hv.set("alpha", "paused", "vm-paused", None)  # a change on A's hypervisor
            frames = {}
            for name, client in (("a", ca), ("b", cb), ("c", cc)):
                frames[name] = await client.expect(
                    "vm-status", where=lambda f: f["data"]["status"] == "paused"
                )
                event = await client.expect("system-event")
                assert event["data"]["event"] == "vm-paused"
                assert event["data"]["vmId"] == "alpha"
            # the same frame on every gateway: one position, encoded once by its publisher
            assert frames["a"] == frames["b"] == frames["c"]
            assert frames["a"]["data"]["vmId"] == "alpha"
            assert isinstance(frames["a"]["offset"], int) and frames["a"]["epoch"]

        async with httpx.AsyncClient() as http:
            for server in (a, b, c):
                health = (await http.get(f"{server.http_url}/healthz")).json()
                assert health["broker"]["name"] == "redis"
                assert health["broker"]["state"] == "connected"
            health_a = (await http.get(f"{a.http_url}/healthz")).json()["broker"]
            assert health_a["owned"] == 2 and health_a["published"] >= 2

            # /metrics of every gateway shows the traffic it carried
            for server in (a, b, c):
                token = server.token("ops", ["metrics:read"])
                reply = await http.get(
                    f"{server.http_url}/metrics", headers={"Authorization": f"Bearer {token}"}
                )
                got = samples(reply.text)
                # two current values and one push, to one subscriber on each gateway
                assert got[("virtwire_frames_out_total", (("type", "vm-status"),))] >= 3
                assert got[("virtwire_frames_out_total", (("type", "system-event"),))] == 1
                assert got[("virtwire_frames_in_total", (("type", "subscribe"),))] == 1
                assert got[("virtwire_broker_connected", (("broker", "redis"),))] == 1
                assert got[("virtwire_broker_lag_seconds_count", ())] >= 2  # the push, the event
            events = {
                dict(labels)["event"]: value
                for (name, labels), value in samples(reply.text).items()  # C's scrape
                if name == "virtwire_broker_events_total"
            }
            assert events["received"] >= 2 and events["published"] == 0


async def test_vm_control_sent_to_c_runs_on_the_owner_a(redis_server: RedisServer) -> None:
    hv = Hypervisor("alpha")
    prefix = fresh_prefix()
    async with (
        gateway(redis_server, hv, prefix=prefix) as a,
        gateway(redis_server, prefix=prefix) as c,
    ):
        async with c.client(c.token("alice")) as alice, c.client(c.token("bob")) as bob:
            await bob.request("subscribe", {"topic": "vm-status", "vmId": "alpha"})
            current = await bob.expect("vm-status")
            assert current["data"]["status"] == "running"

            reply = await alice.request("vm-control", {"vmId": "alpha", "action": "pause"})
            assert reply["type"] == "vm-control-response", reply
            assert reply["data"] == {"vmId": "alpha", "action": "pause", "status": "success"}
            assert hv.controls == [("alpha", "pause", "alice")]
            assert hv.vms["alpha"] == "paused"

            paused = await bob.expect("vm-status", where=lambda f: f["data"]["status"] == "paused")
            assert paused["data"]["vmId"] == "alpha"
            event = await bob.expect("system-event")  # (status first, as the backend reports)
            assert event["data"]["event"] == "vm-paused"
            assert event["data"]["userId"] == "alice"  # the caller, across gateways

            # the owner's errors come back as they are
            reply = await alice.request("vm-control", {"vmId": "alpha", "action": "explode"})
            assert reply["type"] == "error" and reply["data"]["code"] == "INVALID_MESSAGE"
            reply = await alice.request("vm-control", {"vmId": "nope", "action": "start"})
            assert reply["type"] == "error" and reply["data"]["code"] == "VM_NOT_FOUND"
        # the audit stream: recorded once, by the gateway the caller is connected to
        records = await c.audit_records("vm-control", count=2)
        assert [(r["user"], r["vmId"], r["action"], r["outcome"]) for r in records] == [
            ("alice", "alpha", "pause", "ok"),
            ("alice", "nope", "start", "VM_NOT_FOUND"),
        ]
        assert "backend" not in records[0]  # another gateway's backend ran it
        a.gateway.audit("marker")  # written after anything A recorded before
        await a.audit_records("marker")
        assert await a.audit_records("vm-control", count=0) == []
        assert a.gateway.hub.broker is not None
