"""Console transports: VNC byte streams and terminal sessions for a VM.

This is the contract a backend plugin implements to offer consoles (the libvirt plugin's
``virtwire_libvirt.vnc`` is a complete example; docs/plugins.md explains it). A transport lists
the console ``kinds`` it serves and opens them; the core does everything else: scopes and the
``vms`` claim, per-connection and per-user limits, tickets, the RFB handshake (the transport
only says which password the VM's VNC server expects), framing for the browser, and cleanup.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

#: Bytes asked for per read from a VM's VNC socket: large reads keep a relay fast.
READ_SIZE = 256 * 1024


@runtime_checkable
class ByteStream(Protocol):
    """A bidirectional byte stream (a VNC server's RFB stream).

    ``read`` is pulled by the core only as fast as the browser takes the data, so a transport
    needs no buffer of its own: backpressure reaches the VM's socket.
    """

    async def read(self) -> bytes:
        """The next chunk (up to about :data:`READ_SIZE` bytes); ``b""`` at end of stream."""

    async def write(self, data: bytes) -> None:
        """Send ``data``; returns once it is handed to the socket (waits while it is full).
        Raises ``ConnectionError`` when the far end is gone."""

    async def close(self) -> None:
        """Close the stream; idempotent."""


@dataclass(slots=True)
class VncTarget:
    """What :meth:`ConsoleTransport.open_vnc` returns: a stream connected to the VM's VNC
    server, before the RFB handshake, and the VNC password that server expects (None when it
    asks for none, e.g. a libvirt socket opened with skip-auth). The password is used by the
    core for the handshake only: it is never sent to a client or logged."""

    stream: ByteStream
    password: str | None = None

    def __repr__(self) -> str:
        return f"VncTarget(stream={self.stream!r}, password={'***' if self.password else None})"


class SocketStream:
    """A :class:`ByteStream` over an asyncio stream pair: what most transports need. Build it
    with :meth:`connect` (TCP) or :meth:`from_socket` (an already connected socket, such as
    libvirt's ``openGraphicsFD``)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def connect(cls, host: str, port: int, *, timeout: float = 10.0) -> SocketStream:
        """Connect over TCP; raises ``OSError``/``TimeoutError``."""
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, limit=READ_SIZE), timeout
        )
        _nodelay(writer)
        return cls(reader, writer)

    @classmethod
    async def from_socket(cls, sock: socket.socket) -> SocketStream:
        """Adopt a connected socket (it is owned and closed by the stream)."""
        sock.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=sock, limit=READ_SIZE)
        _nodelay(writer)
        return cls(reader, writer)

    async def read(self) -> bytes:
        try:
            return await self._reader.read(READ_SIZE)
        except ConnectionError:
            return b""

    async def write(self, data: bytes) -> None:
        if self._writer.is_closing():
            raise ConnectionResetError("stream closed")
        self._writer.write(data)
        await self._writer.drain()

    async def close(self) -> None:
        writer = self._writer
        if writer.is_closing():
            return
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 2.0)


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@runtime_checkable
class TerminalSession(Protocol):
    """An interactive terminal (SSH shell, serial console), as a transport opened it.

    Bytes both ways: the gateway decodes output as UTF-8 incrementally (a character split
    across reads stays whole; invalid bytes become U+FFFD), coalesces it into frames, keeps
    the scrollback and fans it out to every viewer. ``read`` should return everything
    available at once (up to ``limit`` bytes) rather than small pieces: that is what keeps
    frames few and echo fast.
    """

    async def read(self, limit: int) -> bytes:
        """The next output, at most ``limit`` bytes, waiting until there is some; ``b""``
        once the terminal ended (then ``exit_status`` and ``close_reason`` are final)."""

    async def write(self, data: bytes) -> None:
        """Send keystrokes (in order; may wait for the far end to take them)."""

    async def resize(self, cols: int, rows: int) -> None:
        """Change the terminal size (a serial console may ignore it)."""

    async def close(self) -> None:
        """End the terminal and release what it holds; idempotent."""

    #: Exit status once ended, if the far end reported one (an SSH command's exit code).
    exit_status: int | None
    #: Why it ended, once it did (``"exited"``, ``"vm-stopped"``, ...); ``""`` while open.
    close_reason: str


@runtime_checkable
class ConsoleTransport(Protocol):
    """Opens consoles of the ``kinds`` it provides (``"vnc"``, ``"ssh"``, ``"serial"``...).

    The core calls only the methods of the kinds a transport lists: a VNC-only transport's
    ``open_terminal`` may simply raise ``VirtwireError(CONSOLE_UNAVAILABLE)``. Every method
    runs on the event loop and must not block it.
    """

    name: str
    kinds: tuple[str, ...]

    def supports(self, vm_id: str, kind: str) -> bool:
        """True if this transport can open a ``kind`` console on ``vm_id`` (cheap, no I/O:
        e.g. "the VM belongs to my backend"). The first registered transport that supports
        the VM is used."""

    async def open_vnc(self, vm_id: str) -> VncTarget:
        """Connect to the VM's VNC server (a fresh connection per call: the core may hold
        several per console, e.g. one per browser tab). Raise
        ``VirtwireError(CONSOLE_UNAVAILABLE)`` when the VM has no VNC server (say why),
        ``VirtwireError(VNC_NOT_READY)`` when it has one that cannot be reached now (the VM is
        not running), ``VmNotFound`` for an unknown VM."""

    async def open_terminal(
        self,
        vm_id: str,
        kind: str,
        *,
        credentials: dict[str, Any],
        cols: int,
        rows: int,
    ) -> TerminalSession:
        """Open a terminal of ``cols`` x ``rows``. Raise ``VirtwireError`` with
        ``TERMINAL_AUTH_FAILED`` on bad credentials, ``CONSOLE_UNAVAILABLE`` when the far end
        cannot be reached (details naming the address), or a transport's own code."""


def find_transport(
    transports: list[ConsoleTransport], vm_id: str, kind: str
) -> ConsoleTransport | None:
    """The first transport that lists ``kind`` and supports it on ``vm_id``."""
    for transport in transports:
        if kind in transport.kinds and transport.supports(vm_id, kind):
            return transport
    return None


__all__ = [
    "READ_SIZE",
    "ByteStream",
    "ConsoleTransport",
    "SocketStream",
    "TerminalSession",
    "VncTarget",
    "find_transport",
]
