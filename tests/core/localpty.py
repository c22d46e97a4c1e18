"""A terminal transport over a local shell on a pseudo-terminal: a real process, for testing
the core's terminal machinery without any SSH or hypervisor (and an example of the terminal
transport contract)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import struct
import termios
from typing import Any

from virtwire import VirtwireError, hookimpl


def _winsize(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class PtyTerminal:
    def __init__(self, proc: asyncio.subprocess.Process, master: int) -> None:
        self.proc = proc
        self.master = master
        self.exit_status: int | None = None
        self.close_reason = ""
        self._data = asyncio.Queue[bytes]()
        loop = asyncio.get_running_loop()
        loop.add_reader(master, self._readable)
        self._reading = True

    def _readable(self) -> None:
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: the shell exited and the slave side is closed
            data = b""
        if not data:
            self._stop_reading()
        self._data.put_nowait(data)

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            asyncio.get_running_loop().remove_reader(self.master)

    async def read(self, limit: int) -> bytes:
        data = await self._data.get()
        if not data:
            self.exit_status = await self.proc.wait()
            self.close_reason = "exited"
        return data

    async def write(self, data: bytes) -> None:
        os.write(self.master, data)

    async def resize(self, cols: int, rows: int) -> None:
        _winsize(self.master, cols, rows)

    async def close(self) -> None:
        self._stop_reading()
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        with contextlib.suppress(OSError):
            os.close(self.master)


class LocalShell:
    """``terminal-connect {type: "local"}``: ``/bin/sh`` on a PTY of the requested size."""

    name = "local"
    kinds = ("local",)

    def supports(self, vm_id: str, kind: str) -> bool:
        return kind == "local"

    async def open_vnc(self, vm_id: str) -> Any:
        raise VirtwireError("CONSOLE_UNAVAILABLE", "no VNC here")

    async def open_terminal(
        self, vm_id: str, kind: str, *, credentials: dict[str, Any], cols: int, rows: int
    ) -> PtyTerminal:
        master, slave = os.openpty()
        _winsize(master, cols, rows)
        os.set_blocking(master, False)
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh",
            "-i",
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env={"PS1": "$ ", "PATH": "/usr/bin:/bin", "TERM": "xterm"},
            start_new_session=True,
        )
        os.close(slave)
        return PtyTerminal(proc, master)


class LocalShellPlugin:
    @hookimpl
    def register_consoles(self, register: Any) -> None:
        register(LocalShell())
