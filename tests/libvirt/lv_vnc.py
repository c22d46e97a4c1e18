"""The test guest under a plain QEMU with a VNC server, described to libvirt's test driver
(``test:///file.xml``: a fixed graphics port is kept as written), so VNC consoles run through
the libvirt plugin without a libvirtd. Stopped by PID."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from virtwire.testing import free_port

QEMU = "/usr/bin/qemu-system-x86_64"


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


def _vnc_port() -> int:
    port = free_port()
    while port < 5900:
        port = free_port()
    return port


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
    port = _vnc_port()
    serial = tmp / f"{name}.serial"
    vnc = f"127.0.0.1:{port - 5900}"
    args = [QEMU, "-display", "none", "-m", "32", "-nodefaults", "-vga", "std"]
    args += ["-drive", f"file={image},format=raw,if=ide,snapshot=on"]
    args += ["-serial", f"file:{serial}"]
    if password is not None:
        args += ["-object", f"secret,id=vncpw,data={password}"]
        vnc += ",password-secret=vncpw"
    xml = tmp / f"{name}.xml"
    xml.write_text(node_xml(name, port, password))
    proc = subprocess.Popen(
        [*args, "-vnc", vnc],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"qemu exited with {proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("qemu VNC server did not listen within 20 s") from None
                time.sleep(0.02)
        yield Guest(name, port, password, serial, f"test://{xml}", proc)
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
