"""A real QEMU VNC server (without a disk: SeaBIOS's text screen; or booting a guest given by
``extra`` arguments), started on a free port and stopped by PID."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from virtwire.testing import free_port

QEMU = "/usr/bin/qemu-system-x86_64"


@dataclass
class VncServer:
    port: int
    password: str | None
    proc: subprocess.Popen[bytes]


def vnc_port() -> int:
    """A free port QEMU can serve VNC on (display numbers start at 5900)."""
    port = free_port()
    while port < 5900:
        port = free_port()
    return port


@contextlib.contextmanager
def qemu_vnc(password: str | None = None, extra: Sequence[str] = ()) -> Iterator[VncServer]:
    """QEMU with a VNC server on a free port of 127.0.0.1 (VNC authentication with
    ``password``), once it listens; ``extra``: more QEMU arguments (a drive, a serial port)."""
    assert shutil.which(QEMU), "qemu-system-x86 is required (apt-packages.txt)"
    port = vnc_port()
    vnc = f"127.0.0.1:{port - 5900}"
    args = [QEMU, "-display", "none", "-m", "32", "-nodefaults", "-vga", "std", *extra]
    if password is not None:
        args += ["-object", f"secret,id=vncpw,data={password}"]
        vnc += ",password-secret=vncpw"
    proc = subprocess.Popen(
        [*args, "-vnc", vnc],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"qemu exited: {proc.stderr.read().decode() if proc.stderr else ''}"
                )
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("qemu VNC server did not listen within 20 s") from None
                time.sleep(0.02)
        yield VncServer(port, password, proc)
    finally:
        stop(proc)
        if proc.stderr:
            proc.stderr.close()


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, SIGKILL after 10 s; nothing if the process has exited."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
