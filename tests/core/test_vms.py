"""What the core does for backends (virtwire/builtins/vms.py): attributing events to the user
whose vm-control caused them, VMs that appear at run time, a backend whose start() raises."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from structlog.testing import capture_logs
from virtwire import VirtwireError, VmNotFound, hookimpl
from virtwire.backends import VmEvents, VmStatus
from virtwire.builtins import vms
from virtwire.builtins.attribution import PendingActions
from virtwire.testing import run_server


class MemoryBackend:
    """A backend whose VMs live in a dict; a hypervisor reports events on its own, later."""

    name = "memory"

    def __init__(self, vm_ids: list[str], *, reachable: bool = True) -> None:
        self.vms = {vm_id: "stopped" for vm_id in vm_ids}
        self.events: VmEvents | None = None
        self.reachable = reachable
        self.start_calls = 0
        self.attempts: asyncio.Queue[int] = asyncio.Queue()
        self.up = asyncio.Event()
        self.refuse: set[str] = set()

    async def start(self, events: VmEvents) -> None:
        self.start_calls += 1
        self.attempts.put_nowait(self.start_calls)
        if not self.reachable:
            raise ConnectionError("hypervisor not reachable yet")
        self.events = events
        self.up.set()

    async def close(self) -> None:
        self.events = None

    async def list_vms(self) -> list[VmStatus]:
        return [VmStatus(vmId=k, status=v) for k, v in self.vms.items()]

    async def get_vm(self, vm_id: str) -> VmStatus:
        if vm_id not in self.vms:
            raise VmNotFound(vm_id)
        return VmStatus(vmId=vm_id, status=self.vms[vm_id])

    async def control(
        self, vm_id: str, action: str, *, force: bool = False, user_id: str | None = None
    ) -> None:
        if action in self.refuse:
            raise VirtwireError(f"VM_{action.upper()}_FAILED", "refused", vm_id=vm_id)
        word = {"start": "running", "stop": "stopped", "pause": "paused"}[action]
        self.vms[vm_id] = word
        # the hypervisor's event arrives on its own, a moment later, without a user
        asyncio.get_running_loop().call_later(0.01, self.hypervisor_event, vm_id, action)

    def hypervisor_event(self, vm_id: str, action: str) -> None:
        assert self.events is not None
        event = {"start": "vm-started", "stop": "vm-stopped", "pause": "vm-paused"}[action]
        self.events.event(event, vm_id)
        self.events.status(VmStatus(vmId=vm_id, status=self.vms[vm_id]))

    def set_watching(self, watching: bool) -> None:
        pass


def plugin_for(backend: MemoryBackend) -> SimpleNamespace:
    @hookimpl
    def register_backends(register: Any, gateway: Any) -> None:
        register(backend)

    return SimpleNamespace(register_backends=register_backends)


async def test_the_core_attributes_an_event_to_the_user_whose_action_caused_it() -> None:
    backend = MemoryBackend(["web-1"])
    async with run_server(plugins=[("memory", plugin_for(backend))]) as server:
        async with server.client(server.token("alice")) as alice:
            reply = await alice.request("vm-control", {"vmId": "web-1", "action": "start"})
            assert reply["type"] == "vm-control-response"
            ev = await alice.expect("system-event")
            assert ev["data"]["event"] == "vm-started"
            assert ev["data"]["userId"] == "alice"
            assert ev["data"]["message"] == server.gateway.catalogue("vm.event.vm-started")

            # an event nobody asked for carries no user
            backend.vms["web-1"] = "paused"
            backend.hypervisor_event("web-1", "pause")
            ev = await alice.expect("system-event")
            assert ev["data"]["event"] == "vm-paused" and "userId" not in ev["data"]

            # a failed action is withdrawn: a later event of that kind is not alice's
            backend.refuse.add("stop")
            reply = await alice.request("vm-control", {"vmId": "web-1", "action": "stop"})
            assert reply["data"]["code"] == "VM_STOP_FAILED"
            backend.vms["web-1"] = "stopped"
            backend.hypervisor_event("web-1", "stop")
            ev = await alice.expect("system-event")
            assert ev["data"]["event"] == "vm-stopped" and "userId" not in ev["data"]
            assert len(server.gateway.vms.pending) == 0


def test_pending_actions_expire_and_match_the_oldest_first() -> None:
    now = [0.0]
    pending = PendingActions(ttl=10.0, limit=3, clock=lambda: now[0])
    pending.expect("vm", "vm-started", "alice")
    pending.expect("vm", "vm-started", "bob")
    assert pending.claim("vm", "vm-stopped") is None
    assert pending.claim("vm", "vm-started") == "alice"
    now[0] = 11.0
    assert pending.claim("vm", "vm-started") is None  # bob's expired
    for user in ("a", "b", "c", "d"):
        pending.expect("vm", "vm-paused", user)
    assert len(pending) == 3  # bounded: the oldest went first
    assert pending.claim("vm", "vm-paused", "c") == "c"
    assert pending.claim("vm", "vm-paused") == "b"


async def test_added_announces_a_vm_that_appears_at_run_time() -> None:
    backend = MemoryBackend(["web-1"])
    async with run_server(plugins=[("memory", plugin_for(backend))]) as server:
        async with server.client() as client:
            sub = await client.request("subscribe", {"topic": "vm-status-all"})
            assert sub["data"]["count"] == 1
            await client.expect("vm-status", where=lambda f: f["data"]["vmId"] == "web-1")

            backend.vms["web-2"] = "running"
            assert backend.events is not None
            backend.events.added(VmStatus(vmId="web-2", status="running"))
            status = await client.expect("vm-status")
            assert status["data"]["vmId"] == "web-2"
            assert status["data"]["status"] == "running"
            ev = await client.expect("system-event")
            assert (ev["data"]["event"], ev["data"]["vmId"]) == ("vm-created", "web-2")

            one = await client.request("subscribe", {"topic": "vm-status", "vmId": "web-2"})
            assert one["type"] == "subscribe-response"
            assert server.gateway.vms.owner["web-2"] is backend


async def test_a_backend_whose_start_raises_is_reported_and_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(vms, "START_RETRY", (0.05, 0.1))
    backend = MemoryBackend(["web-1"], reachable=False)
    with capture_logs() as logs:
        async with run_server(plugins=[("memory", plugin_for(backend))]) as server:
            await _down_then_up(server, backend)
    failures = [e for e in logs if e["event"] == "backend failed to start"]
    attempts = [e["attempt"] for e in failures]
    assert attempts == list(range(1, len(attempts) + 1)) and len(attempts) >= 3
    assert {e["backend"] for e in failures} == {"memory"}
    assert "hypervisor not reachable yet" in failures[0]["error"]
    started = [e for e in logs if e["event"] == "backend started"]
    assert [(e["backend"], e["attempt"]) for e in started] == [("memory", len(attempts) + 1)]


async def _down_then_up(server: Any, backend: MemoryBackend) -> None:
    async with server.client() as client:
        # while down, requests say so (and name the backend)
        reply = await client.request("subscribe", {"topic": "vm-status-all"})
        assert reply["data"]["code"] == "BACKEND_UNAVAILABLE"
        assert reply["data"]["message"] == server.gateway.catalogue(
            "backend.unavailable", name="memory"
        )
        async with asyncio.timeout(10):  # retried with backoff
            while await backend.attempts.get() < 3:
                pass
        backend.reachable = True
        await asyncio.wait_for(backend.up.wait(), 10)
        assert backend not in server.gateway.vms.down
        reply = await client.request("subscribe", {"topic": "vm-status-all"})
        assert reply["data"]["count"] == 1
