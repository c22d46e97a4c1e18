"""The libvirt backend on libvirt's built-in test driver (no daemon)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import libvirt
import pytest
from lv_helpers import backend_of, is_status, libvirt_server
from virtwire.errors import ConfigError, VmNotFound

DOMAINS_XML = """<?xml version="1.0"?>
<node xmlns:test="http://libvirt.org/schemas/domain/test/1.0">
  <cpu><nodes>1</nodes><sockets>1</sockets><cores>2</cores><threads>1</threads></cpu>
  <memory>4194304</memory>
  {domains}
</node>
"""
DOMAIN = """<domain type="test">
    <name>{name}</name>
    <memory>131072</memory>
    <vcpu>1</vcpu>
    <os><type>hvm</type></os>
    <devices>
      <interface type="network"><source network="default"/><target dev="testnet0"/></interface>
    </devices>
    <test:runstate>{state}</test:runstate>
  </domain>"""


def write_node(tmp_path: Path, domains: dict[str, int]) -> str:
    body = "\n".join(DOMAIN.format(name=n, state=s) for n, s in domains.items())
    path = tmp_path / "node.xml"
    path.write_text(DOMAINS_XML.format(domains=body))
    return f"test://{path}"


async def test_default_uri_shows_the_test_domain_with_figures() -> None:
    async with libvirt_server(stats_interval=0.2) as server, server.client() as client:
        reply = await client.request("subscribe", {"topic": "vm-status-all"})
        assert reply["type"] == "subscribe-response"
        assert reply["data"]["count"] == 1
        first = await client.expect("vm-status")
        assert first["data"]["vmId"] == "test" and first["data"]["status"] == "running"
        # Periodic pushes while subscribed carry real figures from the driver's counters:
        # its cpu time advances with wall time on 2 vCPUs (50 %), its interface counters too.
        later = await client.expect("vm-status", where=lambda f: f["data"]["cpu"] > 0)
        data = later["data"]
        assert 45 <= data["cpu"] <= 55
        assert 0 < data["memory"] <= 100
        assert data["network"]["rx"] > 0 and data["network"]["tx"] > 0


async def test_file_driver_lists_domains_in_their_states(tmp_path: Path) -> None:
    # runstate: 1 running, 3 paused, 5 shut off, 6 crashed
    uri = write_node(tmp_path, {"web": 1, "db": 3, "old": 5, "bad": 6})
    async with libvirt_server(uri=uri) as server, server.client() as client:
        await client.request("subscribe", {"topic": "vm-status-all"})
        got = {}
        while len(got) < 4:
            frame = await client.expect("vm-status")
            got[frame["data"]["vmId"]] = frame["data"]["status"]
        assert got == {"web": "running", "db": "paused", "old": "stopped", "bad": "crashed"}
        stopped = await client.request("subscribe", {"topic": "vm-status", "vmId": "old"})
        assert stopped["data"]["vmId"] == "old"
        assert isinstance(stopped["data"]["offset"], int)  # the position, for a later since


async def test_every_control_action_with_events_and_pushes() -> None:
    async with libvirt_server() as server, server.client(server.token("alice")) as client:
        await client.request("subscribe", {"topic": "vm-status", "vmId": "test"})
        await client.expect("vm-status", where=is_status("test", "running"))
        steps = [
            ("pause", "vm-paused", "paused"),
            ("resume", "vm-resumed", "running"),
            ("stop", "vm-stopped", "stopped"),
            ("start", "vm-started", "running"),
            ("reset", "vm-rebooted", "running"),
            ("restart", "vm-rebooted", "running"),
        ]
        for action, event, status in steps:
            reply = await client.request("vm-control", {"vmId": "test", "action": action})
            assert reply["type"] == "vm-control-response", reply
            assert reply["data"] == {"vmId": "test", "action": action, "status": "success"}
            # the status the event implies comes first, then the event
            await client.expect("vm-status", where=is_status("test", status))
            ev = await client.expect("system-event")
            assert ev["data"]["event"] == event
            assert ev["data"]["vmId"] == "test"
            assert ev["data"]["userId"] == "alice"
            assert ev["data"]["level"] == "info"
            assert ev["data"]["message"]
        reply = await client.request(
            "vm-control", {"vmId": "test", "action": "stop", "force": True}
        )
        assert reply["data"]["status"] == "success"
        ev = await client.expect("system-event")
        assert (ev["data"]["event"], ev["data"]["userId"]) == ("vm-stopped", "alice")


async def test_the_reply_comes_before_the_frames_of_the_event_it_caused() -> None:
    """On the caller's own connection, in the order frames arrive: the vm-control reply,
    then the status and the system-event the action caused (the events wait for it)."""
    # no stats ticks in between: every frame after a request is the reply or its event's
    async with libvirt_server(stats_interval=3600) as server:
        async with server.text_client("/ws", token=server.token("alice")) as ws:
            subscribe = {"type": "subscribe", "id": 0, "data": {"topic": "vm-status-all"}}
            await ws.send(json.dumps(subscribe))
            await ws.expect('"subscribe-response"')
            await ws.expect('"vm-status"')
            for i in range(1, 21):
                action = "pause" if i % 2 else "resume"
                request = {
                    "type": "vm-control",
                    "id": i,
                    "data": {"vmId": "test", "action": action},
                }
                await ws.send(json.dumps(request))
                frames = [json.loads(await ws.recv()) for _ in range(3)]
                types = [f["type"] for f in frames]
                assert types[0] == "vm-control-response", types
                assert frames[0]["id"] == i
                assert sorted(types[1:]) == ["system-event", "vm-status"], types


async def test_libvirt_failures_carry_libvirt_message() -> None:
    async with libvirt_server() as server, server.client() as client:
        reply = await client.request("vm-control", {"vmId": "test", "action": "start"})
        assert reply["type"] == "error"
        assert reply["data"]["code"] == "VM_START_FAILED"
        assert reply["data"]["message"] == "failed to start the VM"
        assert reply["data"]["vmId"] == "test"
        assert "already running" in reply["data"]["details"]
        reply = await client.request("vm-control", {"vmId": "test", "action": "resume"})
        assert reply["data"]["code"] == "VM_RESUME_FAILED"
        assert "not paused" in reply["data"]["details"]
        for action in ("start", "stop", "pause"):
            reply = await client.request("vm-control", {"vmId": "ghost", "action": action})
            assert reply["data"]["code"] == "VM_NOT_FOUND"
            assert reply["data"]["vmId"] == "ghost"
        reply = await client.request("subscribe", {"topic": "vm-status", "vmId": "ghost"})
        assert reply["data"]["code"] == "VM_NOT_FOUND"


async def test_scopes_and_vm_patterns_guard_every_action() -> None:
    async with libvirt_server() as server:
        reader = server.token("reader", ["vm:read"])
        async with server.client(reader) as client:
            reply = await client.request("vm-control", {"vmId": "test", "action": "pause"})
            assert reply["data"]["code"] == "FORBIDDEN"
        other = server.token("bob", vms=["web-*"])
        async with server.client(other) as client:
            for action in ("start", "stop", "pause", "resume", "restart", "reset"):
                reply = await client.request("vm-control", {"vmId": "test", "action": action})
                assert reply["data"]["code"] == "FORBIDDEN"
            reply = await client.request("subscribe", {"topic": "vm-status-all"})
            assert reply["data"]["count"] == 0
        # Nothing ran: the domain is still running.
        async with server.client() as client:
            await client.request("subscribe", {"topic": "vm-status", "vmId": "test"})
            first = await client.expect("vm-status")
            assert first["data"]["status"] == "running"


async def test_outside_changes_become_events_without_user() -> None:
    xml = """<domain type='test'><name>extra</name><memory>65536</memory>
             <os><type>hvm</type></os></domain>"""
    async with libvirt_server() as server, server.client() as client:
        await client.request("subscribe", {"topic": "vm-status-all"})
        # Another client of the same hypervisor (the test driver shares state in-process).
        conn = await asyncio.to_thread(libvirt.open, "test:///default")
        try:
            dom = await asyncio.to_thread(conn.defineXML, xml)
            ev = await client.expect("system-event")
            assert ev["data"]["event"] == "vm-created" and ev["data"]["vmId"] == "extra"
            assert "userId" not in ev["data"]
            await client.expect("vm-status", where=is_status("extra", "stopped"))
            await asyncio.to_thread(dom.create)
            await client.expect("vm-status", where=is_status("extra", "running"))
            ev = await client.expect("system-event")
            assert ev["data"]["event"] == "vm-started" and "userId" not in ev["data"]
            await asyncio.to_thread(dom.destroy)
            await asyncio.to_thread(dom.undefine)
            ev = await client.expect(
                "system-event", where=lambda f: f["data"]["event"] == "vm-deleted"
            )
            assert ev["data"]["vmId"] == "extra"
            reply = await client.request("vm-control", {"vmId": "extra", "action": "start"})
            assert reply["data"]["code"] == "VM_NOT_FOUND"
        finally:
            await asyncio.to_thread(conn.close)


async def test_events_behind_a_refresh_keep_libvirt_order() -> None:
    """DEFINED carries no state: the backend reads the VM afresh, and the events after it
    wait for that read. A define and a start back to back end with the VM running and the
    events in libvirt's order (the refresh's answer must not overtake the start)."""
    xml = """<domain type='test'><name>quick</name><memory>65536</memory>
             <os><type>hvm</type></os></domain>"""

    def define_and_start() -> None:
        conn = libvirt.open("test:///default")
        try:
            conn.defineXML(xml).create()
        finally:
            conn.close()

    async with libvirt_server() as server, server.client() as client:
        await client.request("subscribe", {"topic": "vm-status-all"})
        await asyncio.to_thread(define_and_start)
        seen: list[tuple[str, str]] = []
        while ("system-event", "vm-started") not in seen:
            frame = await client.expect(where=lambda f: f.get("data", {}).get("vmId") == "quick")
            key = "event" if frame["type"] == "system-event" else "status"
            seen.append((frame["type"], frame["data"][key]))
        events = [v for t, v in seen if t == "system-event"]
        assert events == ["vm-created", "vm-started"], seen
        statuses = [v for t, v in seen if t == "vm-status"]
        assert statuses[-1] == "running", seen
        # the status the start implies comes right before its event
        assert seen[-2:] == [("vm-status", "running"), ("system-event", "vm-started")], seen
        # a VM like any other from here on
        reply = await client.request(
            "vm-control", {"vmId": "quick", "action": "stop", "force": True}
        )
        assert reply["type"] == "vm-control-response", reply
        await client.expect("vm-status", where=is_status("quick", "stopped"))
        conn = await asyncio.to_thread(libvirt.open, "test:///default")
        try:
            await asyncio.to_thread(conn.lookupByName("quick").undefine)
        finally:
            await asyncio.to_thread(conn.close)


async def test_stats_are_polled_only_while_someone_listens() -> None:
    async with libvirt_server(stats_interval=0.1) as server:
        backend = backend_of(server)
        assert backend._ticker is None
        async with server.client() as client:
            await client.request("subscribe", {"topic": "vm-status", "vmId": "test"})
            assert backend._ticker is not None and not backend._ticker.done()
            first = await client.expect("vm-status")
            second = await client.expect("vm-status")
            assert first["timestamp"] != second["timestamp"]
            await client.request("unsubscribe", {"topic": "vm-status", "vmId": "test"})
            assert backend._ticker is None


async def test_uuid_names_vms() -> None:
    async with libvirt_server(vm_id="uuid") as server, server.client() as client:
        reply = await client.request("subscribe", {"topic": "vm-status-all"})
        assert reply["data"]["count"] == 1
        frame = await client.expect("vm-status")
        vm_id = frame["data"]["vmId"]
        assert len(vm_id) == 36 and vm_id.count("-") == 4
        reply = await client.request("vm-control", {"vmId": vm_id, "action": "pause"})
        assert reply["data"]["status"] == "success"


async def test_unreachable_hypervisor_gives_backend_unavailable(tmp_path: Path) -> None:
    uri = f"qemu:///system?socket={tmp_path}/absent-sock"
    async with libvirt_server(uri=uri, reconnect_max=0.5) as server, server.client() as client:
        for request in (
            ("subscribe", {"topic": "vm-status-all"}),
            ("subscribe", {"topic": "vm-status", "vmId": "test"}),
            ("vm-control", {"vmId": "test", "action": "start"}),
        ):
            reply = await client.request(*request, timeout=5)
            assert reply["type"] == "error"
            assert reply["data"]["code"] == "BACKEND_UNAVAILABLE"
            assert "absent-sock" in reply["data"]["details"]


def test_config_is_validated() -> None:
    from virtwire.testing import make_settings
    from virtwire_libvirt.settings import LibvirtSettings

    settings = make_settings({"plugins": {"libvirt": {"urii": "x"}}})
    with pytest.raises(ConfigError, match=r"plugins\.libvirt\.urii"):
        settings.plugin("libvirt", LibvirtSettings)
    settings = make_settings({"plugins": {"libvirt": {"stats_interval": 0}}})
    with pytest.raises(ConfigError, match="stats_interval"):
        settings.plugin("libvirt", LibvirtSettings)
    assert LibvirtSettings().uri == "test:///default"


async def test_requests_for_one_vm_run_in_the_order_sent() -> None:
    # pause then resume sent back to back, without waiting for the replies: each must find
    # the VM in the state the previous one left (libvirt refuses to pause a paused VM).
    async with libvirt_server() as server, server.client() as client:
        for batch in range(10):  # 16 requests in flight: max_concurrent_requests
            ids = [f"o{batch}-{i}" for i in range(16)]
            replies = [client.replies.setdefault(i, asyncio.Future()) for i in ids]
            for n, id_ in enumerate(ids):
                action = "pause" if n % 2 == 0 else "resume"
                await client.send("vm-control", {"vmId": "test", "action": action}, id_)
            got = await asyncio.wait_for(asyncio.gather(*replies), 30)
            failed = [f["data"] for f in got if f["type"] != "vm-control-response"]
            assert failed == []
        status = await client.request("subscribe", {"topic": "vm-status", "vmId": "test"})
        assert status["type"] == "subscribe-response"
        first = await client.expect("vm-status")
        assert first["data"]["status"] == "running"


async def test_vm_addresses_for_ssh_terminals() -> None:
    """The addresses the ssh plugin uses when its config names none (the test driver reports
    192.168.122.3 on its interface)."""
    async with libvirt_server() as server:
        backend = backend_of(server)
        assert await backend.vm_addresses("test") == ["192.168.122.3"]
        with pytest.raises(VmNotFound):
            await backend.vm_addresses("no-such-vm")
