"""Status and events of the Proxmox backend against the stand-in Proxmox server."""

from __future__ import annotations

import pytest
from pve_fixtures import new_cluster
from pve_helpers import backend_of, is_event, is_status, proxmox_server, until
from pve_standin import Cluster, StandIn


async def test_status_of_every_vm_with_figures(standin: StandIn) -> None:
    async with proxmox_server(standin) as server, server.client() as client:
        reply = await client.request("subscribe", {"topic": "vm-status-all"})
        assert reply["data"]["count"] == 3  # the template (900) is not a VM
        got = {}
        while len(got) < 3:
            frame = await client.expect("vm-status")
            got[frame["data"]["vmId"]] = frame["data"]
        # 102 is paused: cluster/resources says "running", status/current's qmpstatus tells
        assert {k: v["status"] for k, v in got.items()} == {
            "pve:100": "running",
            "pve:101": "stopped",
            "pve:102": "paused",
        }
        web = got["pve:100"]
        assert web["cpu"] == pytest.approx(25.0)  # cpu 0.25 of its vCPUs
        assert web["memory"] == pytest.approx(50.0)  # mem / maxmem
        assert got["pve:101"]["cpu"] == 0 and got["pve:101"]["memory"] == 0
        # network rates come from the counters' deltas: 1000 B/s in, 500 B/s out
        later = await client.expect(
            "vm-status",
            where=lambda f: f["data"]["vmId"] == "pve:100" and f["data"]["network"]["rx"] > 0,
        )
        assert later["data"]["network"]["rx"] == pytest.approx(1000, rel=0.35)
        assert later["data"]["network"]["tx"] == pytest.approx(500, rel=0.35)
        one = await client.request("subscribe", {"topic": "vm-status", "vmId": "pve:101"})
        assert one["type"] == "subscribe-response"
        missing = await client.request("subscribe", {"topic": "vm-status", "vmId": "pve:999"})
        assert missing["data"]["code"] == "VM_NOT_FOUND"


async def test_changes_made_elsewhere_become_events(standin: StandIn, cluster: Cluster) -> None:
    async with proxmox_server(standin) as server, server.client() as client:
        await client.request("subscribe", {"topic": "vm-status-all"})
        steps = [
            (lambda: cluster.set_state(101, "running"), "vm-started", "pve:101", "running"),
            (lambda: cluster.set_state(100, "paused"), "vm-paused", "pve:100", "paused"),
            (lambda: cluster.set_state(100, "running"), "vm-resumed", "pve:100", "running"),
            (lambda: cluster.set_state(101, "stopped"), "vm-stopped", "pve:101", "stopped"),
        ]
        for change, event, vm, status in steps:
            change()
            frame = await client.expect("system-event", where=is_event(event, vm))
            assert "userId" not in frame["data"]  # nobody here caused it
            await client.expect("vm-status", where=is_status(vm, status))
        cluster.add_vm(103, "new", "running")
        await client.expect("system-event", where=is_event("vm-created", "pve:103"))
        await client.expect("vm-status", where=is_status("pve:103", "running"))
        cluster.remove_vm(103)
        await client.expect("system-event", where=is_event("vm-deleted", "pve:103"))
        gone = await client.request("vm-control", {"vmId": "pve:103", "action": "start"})
        assert gone["data"]["code"] == "VM_NOT_FOUND"


async def test_one_poller_per_gateway_whatever_the_clients(
    standin: StandIn, cluster: Cluster
) -> None:
    async with proxmox_server(standin, interval=0.1) as server:
        backend = backend_of(server)
        clients = [server.client() for _ in range(5)]
        opened = [await c.__aenter__() for c in clients]
        try:
            for c in opened:
                await c.request("subscribe", {"topic": "vm-status-all"})
            polls, calls = backend.polls, cluster.calls.get("resources", 0)
            await until(lambda: backend.polls >= polls + 10)
            made = cluster.calls["resources"] - calls
            # one request per poll (±1 for a request in flight at either end), not per client
            assert abs(made - (backend.polls - polls)) <= 1
        finally:
            for c in clients:
                await c.__aexit__(None, None, None)


async def test_a_lagging_resource_list_gives_no_false_events(pve_cert: tuple) -> None:
    # pvestatd refreshes cluster/resources every 10 s: rows lag behind what was done
    cluster = new_cluster(resource_lag=60.0)
    standin = StandIn(cluster, *pve_cert)
    standin.start()
    try:
        async with proxmox_server(standin) as server, server.client() as client:
            await client.request("subscribe", {"topic": "vm-status-all"})
            backend = backend_of(server)
            cluster.resources()  # the rows are frozen from here on
            for action, status in (("start", "running"), ("pause", "paused")):
                reply = await client.request("vm-control", {"vmId": "pve:101", "action": action})
                assert reply["type"] == "vm-control-response"
                await client.expect("vm-status", where=is_status("pve:101", status))
            polls = backend.polls
            await until(lambda: backend.polls >= polls + 5)
            # the stale rows ("stopped") were checked with status/current, not reported
            status = await client.request("subscribe", {"topic": "vm-status", "vmId": "pve:101"})
            assert status["type"] == "subscribe-response"
            frame = await client.expect("vm-status", where=lambda f: f["data"]["vmId"] == "pve:101")
            assert frame["data"]["status"] == "paused"
            while not client.frames.empty():
                extra = client.frames.get_nowait()
                assert extra["type"] != "system-event", extra
    finally:
        standin.stop()


async def test_vm_id_template_and_node_filter(standin: StandIn, cluster: Cluster) -> None:
    cluster.add_vm(200, "far", "running", node="pve2")
    async with proxmox_server(standin, vm_id="{cluster}-{node}-{name}", cluster="lab") as server:
        async with server.client() as client:
            await client.request("subscribe", {"topic": "vm-status-all"})
            ids = set()
            while len(ids) < 4:
                ids.add((await client.expect("vm-status"))["data"]["vmId"])
            assert ids == {"lab-pve1-web", "lab-pve1-db", "lab-pve1-batch", "lab-pve2-far"}
    async with proxmox_server(standin, nodes=["pve2"]) as server, server.client() as client:
        reply = await client.request("subscribe", {"topic": "vm-status-all"})
        assert reply["data"]["count"] == 1
        assert (await client.expect("vm-status"))["data"]["vmId"] == "pve:200"
