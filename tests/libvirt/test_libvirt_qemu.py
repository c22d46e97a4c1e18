"""The libvirt backend against a real libvirtd running QEMU guests under TCG.

The guest is guest/guest.S: it idles in ``hlt`` and powers off on the ACPI power button, so
a graceful stop is real; its busy variant keeps its vCPU busy. One libvirtd serves the
whole session (conftest.py); each test defines its own domains.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import libvirt
import websockets
from lv_daemon import PREFIX, Daemon, banners, domain_xml
from lv_helpers import backend_of, gateway_process, is_status, libvirt_server
from virtwire.testing import Client


def event_is(name: str, vm: str) -> Any:
    return lambda f: f["data"]["event"] == name and f["data"].get("vmId") == vm


def backend_event(state: str) -> Any:
    return lambda f: f["data"]["event"] == f"backend-{state}"


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
                # the status the event implies comes first, then the event
                await client.expect("vm-status", where=is_status(name, status))
                ev = await client.expect("system-event", where=lambda f: f["data"]["vmId"] == name)
                assert ev["data"]["event"] == event, ev
                assert ev["data"]["userId"] == "carol"
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
            # Subscribers are told: the VM's status is unreachable, not its last one.
            await client.expect("vm-status", where=is_status(name, "unreachable"))
            ev = await client.expect("system-event", where=backend_event("unavailable"))
            assert ev["data"]["backend"] == "libvirt" and ev["data"]["level"] == "warning"
            assert "vmId" not in ev["data"] and ev["data"]["message"]
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
            ev = await client.expect("system-event", where=backend_event("available"))
            assert ev["data"]["level"] == "info"
            reply = await client.request(
                "vm-control", {"vmId": name, "action": "start"}, timeout=30
            )
            assert reply["data"]["status"] == "success", reply
            # Events were registered again on the new connection.
            await client.expect("vm-status", where=is_status(name, "running"))
            await client.expect("system-event", where=event_is("vm-started", name))
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
            # The start sent while it was frozen may still be carried out by the daemon
            # now (an answer it never gave in time is no proof it did nothing): start until
            # it runs, whichever request did it.
            async with asyncio.timeout(30):
                while True:
                    reply = await client.request(
                        "vm-control", {"vmId": name, "action": "start"}, timeout=30
                    )
                    details = reply["data"].get("details", "")
                    if reply["type"] == "vm-control-response" or "already running" in details:
                        break
                    assert reply["data"]["code"] == "BACKEND_UNAVAILABLE", reply
                    await asyncio.sleep(0.2)
            await client.expect("vm-status", where=is_status(name, "running"))
    finally:
        await remove(dom)


async def test_a_daemon_frozen_after_a_restart_never_takes_the_gateway_down(
    libvirtd: Daemon, guest_images: dict[str, Path], tmp_path: Path
) -> None:
    # libvirtd restarts, then freezes for 10 s while clients are subscribed and requests
    # keep calls in flight: keepalive drops the connection and the gateway reconnects
    # while those calls are still blocked in the old one. None of them may run on a
    # connection being closed (the gateway used to die of SIGSEGV here).
    name = f"{PREFIX}frozen"
    async with hypervisor(libvirtd) as conn:
        dom = await define(conn, name, guest_images["idle"], tmp_path)
        await asyncio.to_thread(dom.create)
    settings = {"uri": libvirtd.uri, "stats_interval": 0.2, "reconnect_min": 0.1}
    try:
        async with (
            gateway_process(tmp_path, **settings) as (proc, url),
            websockets.connect(url) as ws1,
            websockets.connect(url) as ws2,
        ):
            client, watcher = Client(ws1), Client(ws2)
            await watcher.request("subscribe", {"topic": "vm-status-all"})
            await watcher.expect("vm-status", where=is_status(name, "running"))

            async def served(action: str) -> None:
                """Until libvirt answers ``action`` again (done, or refused as no-op)."""
                async with asyncio.timeout(60):
                    while True:
                        reply = await client.request(
                            "vm-control", {"vmId": name, "action": action}, timeout=40
                        )
                        if reply["type"] == "vm-control-response":
                            return
                        if reply["data"]["code"] == f"VM_{action.upper()}_FAILED":
                            return
                        await asyncio.sleep(0.2)

            await asyncio.to_thread(libvirtd.kill)
            await asyncio.to_thread(libvirtd.start)
            await served("resume")

            async def pester() -> None:
                for n in itertools.count():
                    await client.send("vm-control", {"vmId": name, "action": "pause"}, f"p{n}")
                    await asyncio.sleep(0.3)

            os.kill(libvirtd.pid, signal.SIGSTOP)
            pusher = asyncio.create_task(pester())
            try:
                await asyncio.sleep(10)  # the fault: a daemon frozen for 10 s
            finally:
                os.kill(libvirtd.pid, signal.SIGCONT)
                pusher.cancel()
            await served("resume")
            await watcher.expect("vm-status", where=is_status(name, "running"), timeout=30)
            assert proc.poll() is None, (tmp_path / "virtwire.log").read_text()[-3000:]
    finally:
        await remove(dom)
