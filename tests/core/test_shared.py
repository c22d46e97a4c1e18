"""Shared channels on one gateway: positions on every vm-status frame, ``since`` recovery from
the in-memory history."""

from __future__ import annotations

from typing import Any

from virtwire import hookimpl
from virtwire.backends import VmStatus
from virtwire.errors import VmNotFound
from virtwire.testing import make_settings, run_server


class Backend:
    name = "mem"

    def __init__(self) -> None:
        self.events: Any = None
        self.state = "running"

    async def start(self, events: Any) -> None:
        self.events = events

    async def close(self) -> None:
        pass

    async def list_vms(self) -> list[VmStatus]:
        return [VmStatus(vmId="vm1", status=self.state)]

    async def get_vm(self, vm_id: str) -> VmStatus:
        if vm_id != "vm1":
            raise VmNotFound(vm_id)
        return VmStatus(vmId="vm1", status=self.state)

    async def control(self, vm_id: str, action: str, **_: Any) -> None:
        raise NotImplementedError

    def set_watching(self, watching: bool) -> None:
        pass

    def change(self, state: str, cpu: float = 0.0) -> None:
        self.state = state
        self.events.status(VmStatus(vmId="vm1", status=state, cpu=cpu))


class Plugin:
    def __init__(self) -> None:
        self.backend = Backend()

    @hookimpl
    def register_backends(self, register: Any, gateway: Any) -> None:
        register(self.backend)


async def test_since_recovers_missed_frames_or_says_it_cannot() -> None:
    plugin = Plugin()
    settings = make_settings({"server": {"history_size": 3, "access_log": False}})
    async with run_server(settings, plugins=[plugin]) as server:
        async with server.client() as first:
            reply = await first.request("subscribe", {"topic": "vm-status-all"})
            epoch = reply["data"]["epoch"]
            assert reply["data"]["offset"] == 0 and epoch
            await first.expect("vm-status")  # the current status
            plugin.backend.change("paused", 1.0)
            seen = await first.expect("vm-status")
            assert seen["offset"] == 1 and seen["epoch"] == epoch
        # while nobody listens: two more frames
        plugin.backend.change("running", 2.0)
        plugin.backend.change("running", 3.0)
        async with server.client() as again:
            reply = await again.request(
                "subscribe", {"topic": "vm-status-all", "since": {"offset": 1, "epoch": epoch}}
            )
            assert reply["data"]["recovered"] is True
            assert reply["data"]["offset"] == 3
            missed = await again.expect("vm-status")
            # latest-value topic: the missed frames of one VM coalesce to the newest
            assert (missed["offset"], missed["data"]["cpu"]) in ((2, 2.0), (3, 3.0))
            if missed["offset"] == 2:
                missed = await again.expect("vm-status")
            assert missed["offset"] == 3 and missed["data"]["cpu"] == 3.0
            plugin.backend.change("stopped")
            live = await again.expect("vm-status")
            assert live["offset"] == 4 and live["data"]["status"] == "stopped"

        # another epoch (e.g. the gateway restarted): recovered false, then the current value
        async with server.client() as other:
            reply = await other.request(
                "subscribe", {"topic": "vm-status-all", "since": {"offset": 1, "epoch": "gone"}}
            )
            assert reply["data"]["recovered"] is False
            current = await other.expect("vm-status")
            assert current["data"]["status"] == "stopped"

        # history trimmed (history_size 3 keeps offsets 2..4): offset 0 cannot be recovered
        async with server.client() as old:
            reply = await old.request(
                "subscribe", {"topic": "vm-status-all", "since": {"offset": 0, "epoch": epoch}}
            )
            assert reply["data"]["recovered"] is False

        # a bad since is refused with the field named, and the connection stays usable
        async with server.client() as bad:
            reply = await bad.request(
                "subscribe", {"topic": "vm-status-all", "since": {"offset": "x"}}
            )
            assert reply["type"] == "error"
            assert reply["data"]["code"] == "INVALID_MESSAGE"
            assert reply["data"]["details"]["field"] == "data.since"
            reply = await bad.request("subscribe", {"topic": "vm-status-all"})
            assert reply["type"] == "subscribe-response"


async def test_system_events_carry_positions() -> None:
    plugin = Plugin()
    async with run_server(plugins=[plugin]) as server:
        async with server.client() as client:
            await client.request("subscribe", {"topic": "vm-status-all"})
            plugin.backend.events.event("vm-paused", "vm1", user_id="alice")
            event = await client.expect("system-event")
            assert event["data"]["userId"] == "alice"
            assert event["offset"] == 1 and isinstance(event["epoch"], str)
