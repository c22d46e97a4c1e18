"""VNC consoles of real libvirtd/QEMU domains (the test guest): ``openGraphicsFD`` with
skip-auth on the local connection (the domain's password is never needed), TCP with the
password of the secure XML, ``vnc-closed`` when the VM stops, and a new console after a
restart. Run under ``flock /work/libvirtd.lock`` like every libvirtd test."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest
from lv_daemon import PREFIX, Daemon, banners
from lv_helpers import libvirt_server
from pngkit import pixel, png_pixels
from test_libvirt_qemu import define, hypervisor, remove
from virtwire_libvirt.vnc import LibvirtVnc, is_local
from vnc_client import error_of


async def typed(disk: Path, text: str, within: float = 20.0) -> None:
    """Until the guest echoed ``text`` on its serial log (a file has no event: poll)."""
    log = disk.parent / f"{disk.name}.serial"
    async with asyncio.timeout(within):
        while text.encode() not in (log.read_bytes() if log.exists() else b""):  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def booted(disk: Path, count: int = 1, within: float = 30.0) -> None:
    async with asyncio.timeout(within):
        while banners(disk) < count:  # noqa: ASYNC110
            await asyncio.sleep(0.02)


@pytest.mark.parametrize("mode", ["fd", "tcp"])
async def test_vnc_console_of_a_real_domain(
    libvirtd: Daemon, guest_images: dict[str, Path], tmp_path: Path, mode: str
) -> None:
    name = f"{PREFIX}vnc-{mode}"
    disk = tmp_path / f"{name}.img"
    async with (
        libvirt_server(uri=libvirtd.uri, vnc_connect=mode) as server,
        server.client() as client,
        hypervisor(libvirtd) as conn,
    ):
        dom = await define(conn, name, guest_images["idle"], tmp_path, vnc=True, passwd="s3cr3t")
        try:
            await asyncio.to_thread(dom.create)
            await booted(disk)
            (transport,) = [t for t in server.gateway.consoles if isinstance(t, LibvirtVnc)]
            assert transport.use_fd == (mode == "fd")
            reply = await client.request("vnc-connect", {"vmId": name})
            assert reply["type"] == "vnc-connect-response", reply
            assert (reply["data"]["width"], reply["data"]["height"]) == (720, 400)
            assert "s3cr3t" not in str(reply)
            await client.request(
                "vnc-input", {"vmId": name, "inputType": "text", "text": f"via {mode}!\n"}
            )
            await typed(disk, f"via {mode}!\r")
            shot = (await client.request("vnc-screenshot", {"vmId": name}))["data"]
            width, height, raw = png_pixels(base64.b64decode(shot["image"]))
            assert (width, height) == (720, 400)
            assert pixel(width, raw, 4, 4) == (0, 0, 168)  # the guest's banner

            await asyncio.to_thread(dom.destroy)
            closed = await client.expect("vnc-closed", timeout=20)
            assert closed["data"] == {"vmId": name, "reason": "vm-stopped"}
            reply = await client.request("vnc-connect", {"vmId": name})
            assert error_of(reply) == "VNC_NOT_READY" and "not running" in reply["data"]["message"]

            await asyncio.to_thread(dom.create)  # a restart: a new QEMU, maybe a new port
            await booted(disk, 2)
            reply = await client.request("vnc-connect", {"vmId": name})
            assert reply["type"] == "vnc-connect-response", reply
            await client.request("vnc-input", {"vmId": name, "inputType": "text", "text": "again"})
            await typed(disk, "again")
        finally:
            await remove(dom)


def test_auto_uses_the_socket_on_a_local_connection_only() -> None:
    assert is_local("qemu:///system") and is_local("qemu:///system?socket=/tmp/s")
    assert not is_local("qemu+ssh://host/system") and not is_local("qemu+tcp://h/system")
    assert not is_local("test:///default")
