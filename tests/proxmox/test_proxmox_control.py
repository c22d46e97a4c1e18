"""vm-control through the Proxmox backend: each action, its task, failures."""

from __future__ import annotations

from pve_helpers import is_event, is_status, proxmox_server
from pve_standin import Cluster, StandIn


def commands(cluster: Cluster) -> list[str]:
    """The task types the stand-in ran, in order (qmstart, qmshutdown...)."""
    with cluster.lock:
        return [upid.split(":")[5] for upid in cluster.tasks]


async def test_every_action_waits_for_its_task_and_reports_the_user(
    standin: StandIn, cluster: Cluster
) -> None:
    async with proxmox_server(standin) as server, server.client(server.token("alice")) as client:
        await client.request("subscribe", {"topic": "vm-status", "vmId": "pve:100"})
        await client.expect("vm-status", where=is_status("pve:100", "running"))
        steps = [
            ({"action": "pause"}, "qmsuspend", "vm-paused", "paused"),
            ({"action": "resume"}, "qmresume", "vm-resumed", "running"),
            ({"action": "stop"}, "qmshutdown", "vm-stopped", "stopped"),
            ({"action": "start"}, "qmstart", "vm-started", "running"),
            ({"action": "restart"}, "qmreboot", "vm-rebooted", "running"),
            ({"action": "restart", "force": True}, "qmreset", "vm-rebooted", "running"),
            ({"action": "reset"}, "qmreset", "vm-rebooted", "running"),
            ({"action": "stop", "force": True}, "qmstop", "vm-stopped", "stopped"),
        ]
        for data, task_type, event, status in steps:
            reply = await client.request("vm-control", {"vmId": "pve:100", **data})
            assert reply["type"] == "vm-control-response", reply
            assert reply["data"]["status"] == "success"
            assert commands(cluster)[-1] == task_type
            with cluster.lock:  # answered only once the task had finished
                assert all(t.exitstatus == "OK" for t in cluster.tasks.values())
            frame = await client.expect("system-event", where=is_event(event, "pve:100"))
            assert frame["data"]["userId"] == "alice"
            if status != "running" or event != "vm-rebooted":
                await client.expect("vm-status", where=is_status("pve:100", status))
        # one event per action: the poller does not report the reboots again
        extra = [client.frames.get_nowait() for _ in range(client.frames.qsize())]
        assert not [f for f in extra if f["type"] == "system-event"]


async def test_a_failing_task_gives_its_exit_status_and_log(
    standin: StandIn, cluster: Cluster
) -> None:
    async with proxmox_server(standin) as server, server.client() as client:
        # Proxmox refuses in the task: "VM 100 already running"
        reply = await client.request("vm-control", {"vmId": "pve:100", "action": "start"})
        assert reply["type"] == "error"
        data = reply["data"]
        assert data["code"] == "VM_START_FAILED" and data["vmId"] == "pve:100"
        assert data["details"]["exitstatus"] == "VM 100 already running"
        assert data["details"]["upid"].startswith("UPID:pve1:")
        assert data["details"]["log"][-1] == "TASK ERROR: VM 100 already running"
        cluster.fail_next(
            101, "start", "start failed: QEMU exited with code 1", ["kvm: -drive: no such file"]
        )
        reply = await client.request("vm-control", {"vmId": "pve:101", "action": "start"})
        details = reply["data"]["details"]
        assert reply["data"]["code"] == "VM_START_FAILED"
        assert details["exitstatus"] == "start failed: QEMU exited with code 1"
        assert details["log"][-2:] == [
            "kvm: -drive: no such file",
            "TASK ERROR: start failed: QEMU exited with code 1",
        ]
        # the backend keeps serving after failures
        ok = await client.request("vm-control", {"vmId": "pve:101", "action": "start"})
        assert ok["type"] == "vm-control-response"


async def test_graceful_stop_that_the_guest_ignores(standin: StandIn, cluster: Cluster) -> None:
    cluster.vms[100].ignore_acpi = True
    async with proxmox_server(standin) as server, server.client() as client:
        reply = await client.request("vm-control", {"vmId": "pve:100", "action": "stop"})
        assert reply["data"]["code"] == "VM_STOP_FAILED"
        assert reply["data"]["details"]["exitstatus"] == "VM quit/powerdown failed - got timeout"
    async with proxmox_server(standin, task_timeout=0.2) as server, server.client() as client:
        reply = await client.request("vm-control", {"vmId": "pve:100", "action": "stop"})
        assert reply["data"]["code"] == "VM_STOP_FAILED"
        assert reply["data"]["details"] == "task still running after 0.2 s"
        forced = await client.request(
            "vm-control", {"vmId": "pve:100", "action": "stop", "force": True}
        )
        assert forced["type"] == "vm-control-response"
