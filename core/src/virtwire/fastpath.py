"""Direct frame writes on uvicorn's websockets-sansio connections.

A published frame is the same text for every subscriber, so its WebSocket frame bytes (server
frames are unmasked) are the same too: they are built once per publish and written straight to
each idle, writable connection's transport. Anything else (a connection with a backlog, a paused
transport, a negotiated extension such as permessage-deflate, another ASGI server) goes through
the ordinary ASGI ``send`` path, which this never reorders: a direct write happens only when the
connection's queue is empty and its writer is idle.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable
from typing import Any

from websockets.frames import Frame, Opcode
from websockets.protocol import State

DirectWriter = Callable[[str], bool]

_last_text: str | None = None
_last_frame: bytes = b""


def frame_bytes(text: str) -> bytes:
    """The unmasked text frame for ``text``, built once for consecutive calls with the same
    object (a publish hands the same str to every subscriber)."""
    global _last_text, _last_frame
    if text is not _last_text:
        _last_frame = Frame(Opcode.TEXT, text.encode()).serialize(mask=False)
        _last_text = text
    return _last_frame


def direct_writer(send: Any) -> DirectWriter | None:
    """A synchronous writer for the connection behind ``send``, or None when ``send`` is not a
    websockets-sansio connection of uvicorn without extensions."""
    proto = getattr(send, "__self__", None)
    if proto is None or type(proto).__name__ != "WebSocketsSansIOProtocol":
        return None
    conn = getattr(proto, "conn", None)
    transport = getattr(proto, "transport", None)
    writable = getattr(proto, "writable", None)
    if conn is None or transport is None or writable is None or getattr(conn, "extensions", None):
        return None

    def write(text: str) -> bool:
        if (
            proto.close_sent
            or proto.disconnected
            or not writable.is_set()
            or conn.state is not State.OPEN
            or transport.is_closing()
        ):
            return False
        transport.write(frame_bytes(text))
        return True

    return write


def _binary_header(size: int) -> bytes:
    if size < 126:
        return bytes((0x82, size))
    if size < 65536:
        return struct.pack(">BBH", 0x82, 126, size)
    return struct.pack(">BBQ", 0x82, 127, size)


class BinaryWriter:
    """Writes binary frames straight to a uvicorn websockets-sansio connection's socket (a
    relay's hot path): the frame header and the payload go to the transport as they are, with
    no frame copy and no task switch. Built by :func:`binary_writer`."""

    __slots__ = ("_conn", "_proto", "_transport", "_writable")

    def __init__(self, proto: Any, conn: Any, transport: Any, writable: Any) -> None:
        self._proto = proto
        self._conn = conn
        self._transport = transport
        self._writable = writable

    @property
    def closing(self) -> bool:
        return bool(
            self._proto.close_sent
            or self._proto.disconnected
            or self._conn.state is not State.OPEN
            or self._transport.is_closing()
        )

    def write_now(self, data: bytes) -> bool:
        """Write one frame now. False when the socket is full (paused: call :meth:`ready`
        before more) or the connection closing (then nothing was written)."""
        if self.closing:
            return False
        self._transport.writelines((_binary_header(len(data)), data))
        return self._writable.is_set()

    async def ready(self) -> None:
        """Until the socket takes more (or the connection went away)."""
        if not self._writable.is_set():
            await self._writable.wait()

    async def write(self, data: bytes) -> bool:
        """Wait until the socket takes more, then write one frame; False when closing."""
        await self.ready()
        if self.closing:
            return False
        self.write_now(data)
        return True


def binary_writer(send: Any, write_buffer: int | None = None) -> BinaryWriter | None:
    """A :class:`BinaryWriter` for the connection behind ``send``; None when ``send`` is not a
    websockets-sansio connection of uvicorn without extensions (use ``send`` then).
    ``write_buffer``: the transport's high-water mark in bytes (room for a few large frames
    keeps the socket busy instead of stopping after each; bounded all the same)."""
    proto = getattr(send, "__self__", None)
    if proto is None or type(proto).__name__ != "WebSocketsSansIOProtocol":
        return None
    conn = getattr(proto, "conn", None)
    transport = getattr(proto, "transport", None)
    writable = getattr(proto, "writable", None)
    if conn is None or transport is None or writable is None or getattr(conn, "extensions", None):
        return None
    if write_buffer is not None:
        with contextlib.suppress(Exception):
            transport.set_write_buffer_limits(high=write_buffer, low=write_buffer // 4)
    return BinaryWriter(proto, conn, transport, writable)


def abort(send: Any) -> bool:
    """Drop the TCP connection behind ``send`` at once (for a client too slow to take even a
    close frame). Returns False when ``send`` is not a uvicorn websockets-sansio connection."""
    proto = getattr(send, "__self__", None)
    transport = getattr(proto, "transport", None)
    if transport is None or not hasattr(transport, "abort"):
        return False
    transport.abort()
    return True
