"""The libvirt backend against a real libvirtd running QEMU guests under TCG.

The guest is guest/guest.S: it idles in ``hlt`` and powers off on the ACPI power button, so
a graceful stop is real; its busy variant keeps its vCPU busy. One libvirtd serves the
whole session (conftest.py); each test defines its own domains.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import libvirt
from lv_daemon import PREFIX, Daemon, banners, domain_xml
from lv_helpers import backend_of, is_status, libvirt_server


def event_is(name: str, vm: str) -> Any:
    return lambda f: f["data"]["event"] == name and f["data"]["vmId"] == vm


@contextlib.asynccontextmanager
async def hypervisor(daemon: Daemon) -> AsyncIterator[libvirt.virConnect]:
    """The test's own libvirt connection (calls run in threads: the server shares the loop)."""
    conn = await asyncio.to_thread(libvirt.open, daemon.uri)
    try:
        yield conn
    finally:
        await asyncio.to_thread(conn.close)


async def define(conn: libvirt.virConnect, name: str, image: Path, tmp: Path, **kw: Any) -> Any:
    disk = tmp / f"{name}.img"
    shutil.copy(image, disk)  # IDE disks are writable: one copy per domain
    return await asyncio.to_thread(conn.defineXML, domain_xml(name, disk, **kw))


async def booted(disk: Path, count: int, within: float = 20.0) -> None:
    """Wait until the guest has printed its banner ``count`` times (it handles the ACPI
    power button only once booted, like any OS). A file has no event to wait on: poll."""
    async with asyncio.timeout(within):
        while banners(disk) < count:  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def remove(dom: Any) -> None:
    def gone() -> None:
        with contextlib.suppress(libvirt.libvirtError):
            if dom.isActive():
                dom.destroy()
        with contextlib.suppress(libvirt.libvirtError):
            dom.undefine()

    await asyncio.to_thread(gone)


async def test_lifecycle_of_a_real_domain(
    libvirtd: Daemon, guest_images: dict[str, Path], tmp_path: Path
) -> None:
    name = f"{PREFIX}life"
    async with (
        libvirt_server(uri=libvirtd.uri, shutdown_timeout=30) as server,
        server.client(server.token("carol")) as client,
        hypervisor(libvirtd) as conn,
    ):
        await client.request("subscribe", {"topic": "vm-status-all"})
        dom = await define(conn, name, guest_images["idle"], tmp_path)
        try:
            ev = await client.expect("system-event", where=event_is("vm-created", name))
            assert "userId" not in ev["data"]
            await client.expect("vm-status", where=is_status(name, "stopped"))

            async def act(action: str, event: str, status: str, **extra: Any) -> dict[str, Any]:
                reply = await client.request(
                    "vm-control", {"vmId": name, "action": action, **extra}, timeout=40
                )
                assert reply["type"] == "vm-control-response", reply
                assert reply["data"] == {"vmId": name, "action": action, "status": "success"}
                ev = await client.expect("system-event", where=lambda f: f["data"]["vmId"] == name)
                assert ev["data"]["event"] == event, ev
                assert ev["data"]["userId"] == "carol"
                await client.expect("vm-status", where=is_status(name, status))
                return ev

            disk = tmp_path / f"{name}.img"
            await act("start", "vm-started", "running")
            await booted(disk, 1)
            await act("pause", "vm-paused", "paused")
            assert (await asyncio.to_thread(dom.state))[0] == libvirt.VIR_DOMAIN_PAUSED
            await act("resume", "vm-resumed", "running")
            # QEMU sends a REBOOT event for a reset: reported once, with the user.
            await act("reset", "vm-rebooted", "running")
            await booted(disk, 2)
            # Graceful stop: the ACPI power button; the guest powers itself off and the
            # reply comes once it has.
            await act("stop", "vm-stopped", "stopped")
            assert (await asyncio.to_thread(dom.state))[0] == libvirt.VIR_DOMAIN_SHUTOFF
            await act("start", "vm-started", "running")
            await act("stop", "vm-stopped", "stopped", force=True)
            reply = await client.request("vm-control", {"vmId": name, "action": "stop"})
            assert reply["data"]["code"] == "VM_STOP_FAILED"
            assert "not running" in reply["data"]["details"]
            await asyncio.to_thread(dom.undefine)
            ev = await client.expect("system-event", where=event_is("vm-deleted", name))
            assert "userId" not in ev["data"]
        finally:
            await remove(dom)


def _send_frames(tap: str, count: int) -> None:
    """Put Ethernet broadcast frames on the host side of the guest's tap device."""
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
        sock.bind((tap, 0))
        frame = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x88\xb5" + b"virtwire" * 100
        for _ in range(count):
            with contextlib.suppress(OSError):
                sock.send(frame)


async def test_real_cpu_and_network_figures(
    libvirtd: Daemon, guest_images: dict[str, Path], tmp_path: Path
) -> None:
    name, tap = f"{PREFIX}busy", f"vwtap{os.getpid() % 10000}"
    async with (
        libvirt_server(uri=libvirtd.uri, stats_interval=0.5) as server,
        server.client() as client,
        hypervisor(libvirtd) as conn,
    ):
        dom = await define(conn, name, guest_images["busy"], tmp_path, tap=tap)
        try:
            await asyncio.to_thread(dom.create)
            await client.request("subscribe", {"topic": "vm-status", "vmId": name})
            # A spinning vCPU under TCG uses most of a core.
            busy = await client.expect("vm-status", where=lambda f: f["data"]["cpu"] > 30)
            assert busy["data"]["status"] == "running"
            assert busy["data"]["cpu"] <= 100
            assert 0 < busy["data"]["memory"] <= 100

            async def traffic() -> None:
                while True:
                    await asyncio.to_thread(_send_frames, tap, 50)
                    await asyncio.sleep(0.05)

            sender = asyncio.create_task(traffic())
            try:
                frame = await client.expect(
                    "vm-status", where=lambda f: f["data"]["network"]["rx"] > 1000
                )
            finally:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sender
            assert frame["data"]["vmId"] == name
        finally:
            await remove(dom)


async def test_libvirtd_restart_in_the_middle_of_a_session(
    libvirtd: Daemon, guest_images: dict[str, Path], tmp_path: Path
) -> None:
    name = f"{PREFIX}restart"
    async with (
        libvirt_server(uri=libvirtd.uri, reconnect_min=0.1, reconnect_max=0.5) as server,
        server.client() as client,
    ):
        async with hypervisor(libvirtd) as conn:
            dom = await define(conn, name, guest_images["idle"], tmp_path)
            await asyncio.to_thread(dom.create)
            pidfile = Path(f"/run/libvirt/qemu/{name}.pid")
            qemu_pid = int(await asyncio.to_thread(pidfile.read_text))
        backend = backend_of(server)
        try:
            await client.request("subscribe", {"topic": "vm-status", "vmId": name})
            await client.expect("vm-status", where=is_status(name, "running"))

            await asyncio.to_thread(libvirtd.kill)
            # While the daemon is away: a clear error at once, never a hang.
            await asyncio.wait_for(backend.disconnected.wait(), 10)
            reply = await client.request("vm-control", {"vmId": name, "action": "pause"}, timeout=5)
            assert reply["data"]["code"] == "BACKEND_UNAVAILABLE"
            reply = await client.request("subscribe", {"topic": "vm-status-all"}, timeout=5)
            assert reply["data"]["code"] == "BACKEND_UNAVAILABLE"
            # The guest goes away meanwhile (its QEMU is killed).
            os.kill(qemu_pid, signal.SIGKILL)

            await asyncio.to_thread(libvirtd.start)
            # Reconnected and re-synced: the change is pushed without anyone asking.
            await client.expect("vm-status", where=is_status(name, "stopped"), timeout=30)
            reply = await client.request(
                "vm-control", {"vmId": name, "action": "start"}, timeout=30
            )
            assert reply["data"]["status"] == "success", reply
            # Events were registered again on the new connection.
            await client.expect("system-event", where=event_is("vm-started", name))
            await client.expect("vm-status", where=is_status(name, "running"))
        finally:
            async with hypervisor(libvirtd) as conn:
                with contextlib.suppress(libvirt.libvirtError):
                    await remove(await asyncio.to_thread(conn.lookupByName, name))


async def test_a_hung_daemon_gives_errors_not_hangs(
    libvirtd: Daemon, guest_images: dict[str, Path], tmp_path: Path
) -> None:
    name = f"{PREFIX}hung"
    async with hypervisor(libvirtd) as conn:
        dom = await define(conn, name, guest_images["idle"], tmp_path)
    settings = {
        "uri": libvirtd.uri,
        "call_timeout": 1.0,
        "keepalive_interval": 1,
        "keepalive_count": 1,
        "reconnect_min": 0.1,
        "reconnect_max": 0.5,
    }
    try:
        async with libvirt_server(**settings) as server, server.client() as client:
            backend = backend_of(server)
            await client.request("subscribe", {"topic": "vm-status", "vmId": name})
            os.kill(libvirtd.pid, signal.SIGSTOP)
            try:
                loop = asyncio.get_running_loop()
                t0 = loop.time()
                reply = await client.request(
                    "vm-control", {"vmId": name, "action": "start"}, timeout=10
                )
                assert reply["data"]["code"] == "BACKEND_UNAVAILABLE", reply
                assert loop.time() - t0 < 5
                # Keepalive notices the silent daemon and drops the connection.
                await asyncio.wait_for(backend.disconnected.wait(), 15)
            finally:
                os.kill(libvirtd.pid, signal.SIGCONT)
            await asyncio.wait_for(backend.connected.wait(), 30)
            reply = await client.request(
                "vm-control", {"vmId": name, "action": "start"}, timeout=30
            )
            assert reply["data"]["status"] == "success", reply
            await client.expect("vm-status", where=is_status(name, "running"))
    finally:
        await remove(dom)
