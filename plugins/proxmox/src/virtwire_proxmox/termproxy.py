"""A terminal through Proxmox's ``termproxy`` (``qm terminal``: the VM's serial port).

After the ``vncwebsocket`` upgrade the client sends ``<user>:<ticket>\\n`` and termproxy
answers ``OK``; then the server sends raw terminal output and the client sends
``0:<byte length>:<data>`` (input), ``1:<cols>:<rows>:`` (resize) and ``2`` (ping)
(pve-xtermjs ``termproxy/src/main.rs``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from .websocket import MAX_CLIENT_FRAME, ConsoleSocket

#: Seconds between pings (Proxmox's own xterm.js page sends one every 30 s).
PING_INTERVAL = 30.0
#: Seconds termproxy has to answer the ticket line (it waits 10 s for it itself).
LOGIN_TIMEOUT = 10.0
#: Input bytes per ``0:`` message (with its header it stays below pveproxy's frame limit).
INPUT_CHUNK = MAX_CLIENT_FRAME - 32


class TermproxyRefused(Exception):
    """termproxy closed the connection instead of answering ``OK``."""


def input_message(data: bytes) -> bytes:
    return b"0:%d:" % len(data) + data


def resize_message(cols: int, rows: int) -> bytes:
    return b"1:%d:%d:" % (cols, rows)


PING = b"2"


class TermproxySession:
    """A :class:`virtwire.consoles.TerminalSession` over one termproxy connection."""

    def __init__(self, socket: ConsoleSocket, *, ended: Callable[[], str] | None = None):
        self._socket = socket
        self._buf = bytearray()
        self._send_lock = asyncio.Lock()
        self._ended = ended
        self._pinger: asyncio.Task[None] | None = None
        self.exit_status: int | None = None
        self.close_reason = ""

    @classmethod
    async def login(
        cls,
        socket: ConsoleSocket,
        user: str,
        ticket: str,
        cols: int,
        rows: int,
        *,
        ended: Callable[[], str] | None = None,
    ) -> TermproxySession:
        """Send the ticket line, wait for ``OK``, set the size, start pinging."""
        await socket.send(f"{user}:{ticket}\n".encode())
        try:
            first = await asyncio.wait_for(socket.receive(), LOGIN_TIMEOUT)
        except TimeoutError:
            first = b""
        if not first.startswith(b"OK"):
            await socket.close()
            raise TermproxyRefused("termproxy did not accept the console ticket")
        session = cls(socket, ended=ended)
        session._buf += first[2:]
        await session.resize(cols, rows)
        session._pinger = asyncio.create_task(session._ping(), name="termproxy-ping")
        return session

    async def read(self, limit: int) -> bytes:
        while not self._buf:
            if self.close_reason:
                return b""
            data = await self._socket.receive()
            if not data:
                self._end()
                return b""
            self._buf += data
        out = bytes(self._buf[:limit])
        del self._buf[:limit]
        return out

    async def write(self, data: bytes) -> None:
        async with self._send_lock:
            for i in range(0, len(data), INPUT_CHUNK):
                await self._socket.send(input_message(data[i : i + INPUT_CHUNK]))

    async def resize(self, cols: int, rows: int) -> None:
        async with self._send_lock:
            await self._socket.send(resize_message(cols, rows))

    async def close(self) -> None:
        if not self.close_reason:
            self.close_reason = "client-disconnect"
        if self._pinger is not None:
            self._pinger.cancel()
        await self._socket.close()

    def _end(self) -> None:
        if not self.close_reason:
            self.close_reason = (self._ended() if self._ended else "") or "exited"
        if self._pinger is not None:
            self._pinger.cancel()

    async def _ping(self) -> None:
        with contextlib.suppress(ConnectionError):
            while True:
                await asyncio.sleep(PING_INTERVAL)
                async with self._send_lock:
                    await self._socket.send(PING)
