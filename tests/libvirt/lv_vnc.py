"""The test guest under a plain QEMU with a VNC server, described to libvirt's test driver
(``test:///file.xml``: a fixed graphics port is kept as written), so VNC consoles run through
the libvirt plugin without a libvirtd. Stopped by PID (tests/kit/qemu_vnc.py)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from qemu_vnc import qemu_vnc


@dataclass
class Guest:
    name: str
    port: int
    password: str | None
    serial: Path
    uri: str
    proc: subprocess.Popen[bytes]

    def serial_text(self) -> str:
        try:
            return self.serial.read_bytes().decode(errors="replace")
        except FileNotFoundError:
            return ""

    async def wait_serial(self, text: str, within: float = 20.0) -> str:
        """Until the guest's serial log contains ``text`` (a file has no event: poll)."""
        async with asyncio.timeout(within):
            while text not in self.serial_text():  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        return self.serial_text()


def node_xml(name: str, port: int, password: str | None) -> str:
    passwd = f" passwd='{password}'" if password else ""
    return f"""<node>
  <domain type='test'>
    <name>{name}</name>
    <memory>65536</memory>
    <os><type>hvm</type></os>
    <devices><graphics type='vnc' port='{port}' listen='127.0.0.1'{passwd}/></devices>
  </domain>
  <domain type='test'>
    <name>novnc-vm</name>
    <memory>65536</memory>
    <os><type>hvm</type></os>
  </domain>
</node>
"""


@contextlib.contextmanager
def qemu_guest(
    image: Path, tmp: Path, *, name: str = "vnc-vm", password: str | None = None
) -> Iterator[Guest]:
    """Boot ``image`` (the test guest) in QEMU with a VNC server on a free port."""
    serial = tmp / f"{name}.serial"
    drive = ["-drive", f"file={image},format=raw,if=ide,snapshot=on"]
    with qemu_vnc(password, [*drive, "-serial", f"file:{serial}"]) as vnc:
        xml = tmp / f"{name}.xml"
        xml.write_text(node_xml(name, vnc.port, password))
        yield Guest(name, vnc.port, password, serial, f"test://{xml}", vnc.proc)
