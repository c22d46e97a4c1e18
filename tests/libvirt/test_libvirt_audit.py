"""The audit stream (docs/audit.md) of ``vm-control`` on libvirt's test driver: one record per
request with who, what and the outcome, refusals with their error code, no token in the file,
and nothing lost when the gateway stops right after."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from lv_helpers import PLUGIN, libvirt_server
from virtwire.testing import run_server


async def test_vm_control_success_and_refusals_are_recorded_once_each(tmp_path: Path) -> None:
    async with libvirt_server() as server:
        token = server.token("alice")
        reader = server.token("bob", ["vm:read"])
        elsewhere = server.token("carol", ["vm:read", "vm:control"], vms=["web-*"])
        async with server.client(token) as alice:
            reply = await alice.request("vm-control", {"vmId": "test", "action": "pause"})
            assert reply["type"] == "vm-control-response", reply
            # resuming twice: libvirt refuses the second (the VM is already running)
            await alice.request("vm-control", {"vmId": "test", "action": "resume"})
            again = await alice.request("vm-control", {"vmId": "test", "action": "resume"})
            assert again["data"]["code"] == "VM_RESUME_FAILED"
            missing = await alice.request("vm-control", {"vmId": "nope", "action": "stop"})
            assert missing["data"]["code"] == "VM_NOT_FOUND"
        async with server.client(reader) as bob:
            refused = await bob.request("vm-control", {"vmId": "test", "action": "stop"})
            assert refused["data"]["code"] == "FORBIDDEN"
        async with server.client(elsewhere) as carol:
            refused = await carol.request("vm-control", {"vmId": "test", "action": "stop"})
            assert refused["data"]["code"] == "FORBIDDEN"

        records = await server.audit_records("vm-control", count=6)
        path = server.gateway.audit_log.path
        assert path is not None
        text = path.read_text()
        mode = stat.S_IMODE(path.stat().st_mode)

    assert len(records) == 6  # one per request, no more
    first = records[0]
    assert first["user"] == "alice"
    assert first["vmId"] == "test" and first["action"] == "pause" and first["force"] is False
    assert first["backend"] == "libvirt" and first["outcome"] == "ok"
    assert first["id"].startswith("t")  # the request's id
    assert first["address"].startswith("127.0.0.1:")
    assert first["time"].endswith("Z") and len(first["time"]) == len("2026-01-01T00:00:00.000Z")
    assert first["durationMs"] >= 0
    outcomes = [(r["user"], r["vmId"], r["action"], r["outcome"]) for r in records]
    assert outcomes == [
        ("alice", "test", "pause", "ok"),
        ("alice", "test", "resume", "ok"),
        ("alice", "test", "resume", "VM_RESUME_FAILED"),
        ("alice", "nope", "stop", "VM_NOT_FOUND"),
        ("bob", "test", "stop", "FORBIDDEN"),
        ("carol", "test", "stop", "FORBIDDEN"),
    ]
    for secret in (token, reader, elsewhere):
        assert secret not in text
    assert mode == 0o600
    for line in text.splitlines():  # one JSON object per line
        assert isinstance(json.loads(line), dict)


async def test_actions_just_before_shutdown_are_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "audit.log"
    config = {"audit": {"path": str(path)}}
    async with (
        run_server(plugins=[PLUGIN], config=config) as server,
        server.client(server.token("dave")) as client,
    ):
        for action in ("pause", "resume") * 25:
            await client.request("vm-control", {"vmId": "test", "action": action})
        # the last ones without waiting for their replies: the server stops at once
        for action in ("pause", "resume") * 4:
            await client.send("vm-control", {"vmId": "test", "action": action})
        reply = await client.request("vm-control", {"vmId": "test", "action": "pause"})
        assert reply["type"] == "vm-control-response"
    # the gateway has stopped: everything it recorded is in the file
    records = [json.loads(line) for line in path.read_text().splitlines()]
    controls = [r for r in records if r["event"] == "vm-control"]
    assert len(controls) == 59
    assert all(r["user"] == "dave" for r in controls)
    assert sum(r["outcome"] == "ok" for r in controls) >= 51
