"""Serial consoles of real QEMU guests (libvirtd under TCG): ``terminal-connect`` with
``type: "serial"``. The guest (guest/guest.S) prints a banner on COM1 and echoes what it
receives there."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import libvirt
from lv_daemon import BANNER, PREFIX, Daemon, domain_xml
from lv_helpers import libvirt_server
from virtwire.testing import Client

BANNER_TEXT = BANNER.decode()


async def read_until(client: Client, pattern: str, timeout: float = 20.0) -> str:
    seen = ""
    regex = re.compile(pattern)

    async def collect() -> str:
        nonlocal seen
        while not regex.search(seen):
            seen += (await client.expect("terminal-output"))["data"]["output"]
        return seen

    try:
        return await asyncio.wait_for(collect(), timeout)
    except TimeoutError:
        raise AssertionError(f"{pattern!r} not seen within {timeout} s; got {seen!r}") from None


@contextlib.asynccontextmanager
async def paused_domain(daemon: Daemon, image: Path, tmp: Path, name: str) -> AsyncIterator[Any]:
    """A guest with a pty serial console, started paused: output printed before a console is
    open would be lost, so the test resumes it once the console is open."""
    conn = await asyncio.to_thread(libvirt.open, daemon.uri)
    disk = tmp / f"{name}.img"
    shutil.copy(image, disk)
    dom = await asyncio.to_thread(conn.defineXML, domain_xml(name, disk, serial="pty"))
    await asyncio.to_thread(dom.createWithFlags, libvirt.VIR_DOMAIN_START_PAUSED)
    try:
        yield dom
    finally:

        def gone() -> None:
            with contextlib.suppress(libvirt.libvirtError):
                if dom.isActive():
                    dom.destroy()
            with contextlib.suppress(libvirt.libvirtError):
                dom.undefine()
            conn.close()

        await asyncio.to_thread(gone)


async def test_serial_console_two_viewers_and_restart(
    libvirtd: Daemon, guest_images: dict[str, Path], tmp_path: Path
) -> None:
    name = f"{PREFIX}serial"
    async with (
        paused_domain(libvirtd, guest_images["idle"], tmp_path, name) as dom,
        libvirt_server(uri=libvirtd.uri) as server,
        server.client(server.token("alice")) as alice,
        server.client(server.token("bob", ["console"])) as bob,
    ):
        first = await alice.request("terminal-connect", {"vmId": name, "type": "serial"})
        assert first["type"] == "terminal-connect-response", first
        assert first["data"]["type"] == "serial"
        second = await bob.request("terminal-connect", {"vmId": name, "type": "serial"})
        assert second["type"] == "terminal-connect-response", second
        # one libvirt stream for the VM, whoever watches it
        (transport,) = [t for t in server.gateway.consoles if "serial" in t.kinds]
        assert len(transport.consoles) == 1
        await asyncio.to_thread(dom.resume)
        await read_until(alice, BANNER_TEXT)
        await read_until(bob, BANNER_TEXT)
        # typed text comes back (the guest echoes COM1), to both viewers
        reply = await alice.request("terminal-input", {"vmId": name, "input": "héllo wörld"})
        assert reply["type"] == "terminal-input-response"
        await read_until(alice, "héllo wörld")
        await read_until(bob, "héllo wörld")
        await bob.request("terminal-input", {"vmId": name, "input": "from bob"})
        await read_until(alice, "from bob")
        # a reset reboots the guest on the same stream: its banner comes again
        reset = await alice.request("vm-control", {"vmId": name, "action": "reset"})
        assert reset["type"] == "vm-control-response", reset
        await read_until(alice, BANNER_TEXT)
        # the VM stopping ends the console for everyone, with the reason
        stop = await alice.request("vm-control", {"vmId": name, "action": "stop", "force": True})
        assert stop["type"] == "vm-control-response", stop
        for client in (alice, bob):
            closed = await client.expect("terminal-closed", timeout=20)
            assert closed["data"]["reason"] == "vm-stopped"
        assert transport.consoles == {}
        # a stopped VM has no console to open
        reply = await alice.request("terminal-connect", {"vmId": name, "type": "serial"})
        assert reply["data"]["code"] == "CONSOLE_UNAVAILABLE"
        assert name in reply["data"]["message"]


async def test_console_held_by_another_client(
    libvirtd: Daemon, guest_images: dict[str, Path], tmp_path: Path
) -> None:
    name = f"{PREFIX}busy-console"
    async with paused_domain(libvirtd, guest_images["idle"], tmp_path, name) as dom:
        # another client (as `virsh console` would) holds the console
        conn = dom.connect()
        other = await asyncio.to_thread(conn.newStream, 0)
        await asyncio.to_thread(dom.openConsole, None, other, 0)
        try:
            async with (
                libvirt_server(uri=libvirtd.uri) as server,
                server.client() as client,
            ):
                reply = await client.request("terminal-connect", {"vmId": name, "type": "serial"})
                assert reply["data"]["code"] == "CONSOLE_BUSY"
                assert "console_force" in reply["data"]["message"]
            async with (
                libvirt_server(uri=libvirtd.uri, console_force=True) as server,
                server.client() as client,
            ):
                reply = await client.request("terminal-connect", {"vmId": name, "type": "serial"})
                assert reply["type"] == "terminal-connect-response", reply
                await asyncio.to_thread(dom.resume)
                await read_until(client, BANNER_TEXT)
        finally:
            with contextlib.suppress(libvirt.libvirtError):
                await asyncio.to_thread(other.abort)


async def test_a_lost_libvirt_connection_ends_the_console_and_a_new_one_works(
    libvirtd: Daemon, guest_images: dict[str, Path], tmp_path: Path
) -> None:
    """libvirtd restarting under an open serial console: the stream is ended before its
    connection goes (nothing touches a closed connection), the terminal is told, the gateway
    keeps serving, and once the backend is back a new console works on the same guest."""
    name = f"{PREFIX}serial-lost"
    async with (
        paused_domain(libvirtd, guest_images["idle"], tmp_path, name) as dom,
        libvirt_server(uri=libvirtd.uri, reconnect_min=0.1, reconnect_max=0.5) as server,
        server.client(server.token("alice")) as alice,
    ):
        first = await alice.request("terminal-connect", {"vmId": name, "type": "serial"})
        assert first["type"] == "terminal-connect-response", first
        await asyncio.to_thread(dom.resume)
        await read_until(alice, BANNER_TEXT)
        (backend,) = server.gateway.backends
        await asyncio.to_thread(libvirtd.kill)  # the guest's QEMU keeps running
        closed = await alice.expect("terminal-closed", timeout=20)
        # libvirt may report the stream's end itself before the connection is retired
        assert closed["data"]["reason"] in ("connection-lost", "vm-stopped"), closed
        (transport,) = [t for t in server.gateway.consoles if "serial" in t.kinds]
        assert transport.consoles == {}
        await asyncio.to_thread(libvirtd.start)
        await asyncio.wait_for(backend.connected.wait(), 30)
        reply = await alice.request("terminal-connect", {"vmId": name, "type": "serial"})
        assert reply["type"] == "terminal-connect-response", reply
        await alice.request("terminal-input", {"vmId": name, "input": "still here"})
        await read_until(alice, "still here")
