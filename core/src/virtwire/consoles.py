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
from collections import deque
from collections.abc import Awaitable, Callable
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


class _ChunkProtocol(asyncio.Protocol):
    """Keeps received chunks as they come (no copy into a joint buffer) and stops reading
    the socket while more than ``2 * READ_SIZE`` bytes wait to be read."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.chunks: deque[bytes] = deque()
        self.queued = 0
        self.eof = False
        self.paused = False
        self.readable: asyncio.Future[None] | None = None
        self.writable = asyncio.Event()
        self.writable.set()
        self.lost = asyncio.Event()
        #: In pipe mode: takes each chunk as it arrives; returns False when full.
        self.sink: Callable[[bytes], bool] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        if self.sink is not None:
            if not self.sink(data) and self.transport is not None and not self.paused:
                self.paused = True
                self.transport.pause_reading()
                self._wake()
            return
        self.chunks.append(data)
        self.queued += len(data)
        if self.queued > 2 * READ_SIZE and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.lost.set()
        self.writable.set()
        self._wake()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def _wake(self) -> None:
        waiter, self.readable = self.readable, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def read(self) -> bytes:
        while not self.chunks:
            if self.eof:
                return b""
            self.readable = asyncio.get_running_loop().create_future()
            await self.readable
        data = self.chunks.popleft()
        if self.chunks and len(data) < READ_SIZE:  # small pieces: hand them on together
            parts = [data]
            size = len(data)
            while self.chunks and size + len(self.chunks[0]) <= READ_SIZE:
                part = self.chunks.popleft()
                parts.append(part)
                size += len(part)
            data = b"".join(parts)
        self.queued -= len(data)
        if self.paused and self.queued <= READ_SIZE and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return data


class SocketStream:
    """A :class:`ByteStream` over a socket: what most transports need. Build it with
    :meth:`connect` (TCP), :meth:`connect_unix` or :meth:`from_socket` (an already connected
    socket, such as libvirt's ``openGraphicsFD``). Chunks are handed on as the socket gave
    them, without copies; the socket is not read while about 512 KiB wait."""

    def __init__(self, transport: asyncio.Transport, protocol: _ChunkProtocol) -> None:
        self._transport = transport
        self._protocol = protocol

    @classmethod
    async def _open(cls, opener: Any, timeout: float) -> SocketStream:
        transport, protocol = await asyncio.wait_for(opener(_ChunkProtocol), timeout)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(transport, protocol)

    @classmethod
    async def connect(cls, host: str, port: int, *, timeout: float = 10.0) -> SocketStream:
        """Connect over TCP; raises ``OSError``/``TimeoutError``."""
        loop = asyncio.get_running_loop()
        return await cls._open(lambda p: loop.create_connection(p, host, port), timeout)

    @classmethod
    async def connect_unix(cls, path: str, *, timeout: float = 10.0) -> SocketStream:
        """Connect to a UNIX socket; raises ``OSError``/``TimeoutError``."""
        loop = asyncio.get_running_loop()
        return await cls._open(lambda p: loop.create_unix_connection(p, path), timeout)

    @classmethod
    async def from_socket(cls, sock: socket.socket, *, timeout: float = 10.0) -> SocketStream:
        """Adopt a connected socket (it is owned and closed by the stream)."""
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        if sock.family == socket.AF_UNIX:
            return await cls._open(lambda p: loop.create_unix_connection(p, sock=sock), timeout)
        return await cls._open(lambda p: loop.create_connection(p, sock=sock), timeout)

    async def read(self) -> bytes:
        return await self._protocol.read()

    async def pipe(
        self, sink: Callable[[bytes], bool], ready: Callable[[], Awaitable[None]]
    ) -> None:
        """Hand every chunk to ``sink`` straight from the socket's callback (no task switch
        per chunk: a relay's hot path) until the end of the stream. ``sink`` returns False
        when its consumer is full: reading then pauses until ``ready()`` returns."""
        proto = self._protocol
        while proto.chunks:  # what was read before
            chunk = proto.chunks.popleft()
            proto.queued -= len(chunk)
            if not sink(chunk):
                await ready()
        proto.sink = sink
        try:
            while not proto.eof:
                if proto.paused:
                    await ready()
                    proto.paused = False
                    self._transport.resume_reading()
                    continue
                proto.readable = asyncio.get_running_loop().create_future()
                await proto.readable
        finally:
            proto.sink = None

    async def write(self, data: bytes) -> None:
        if self._transport.is_closing():
            raise ConnectionResetError("stream closed")
        self._transport.write(data)
        if not self._protocol.writable.is_set():
            await self._protocol.writable.wait()
            if self._transport.is_closing():
                raise ConnectionResetError("stream closed")

    async def close(self) -> None:
        if not self._transport.is_closing():
            self._transport.close()
        with contextlib.suppress(TimeoutError):  # until the socket is really closed (bounded)
            await asyncio.wait_for(self._protocol.lost.wait(), 2.0)


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
