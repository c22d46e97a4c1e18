"""Direct frame writes on uvicorn's websockets-sansio connections.

A published frame is the same text for every subscriber, so its WebSocket frame bytes (server
frames are unmasked) are the same too: they are built once per publish and written straight to
each idle, writable connection's transport. Anything else (a connection with a backlog, a paused
transport, a negotiated extension such as permessage-deflate, another ASGI server) goes through
the ordinary ASGI ``send`` path, which this never reorders: a direct write happens only when the
connection's queue is empty and its writer is idle.
"""

from __future__ import annotations

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


def abort(send: Any) -> bool:
    """Drop the TCP connection behind ``send`` at once (for a client too slow to take even a
    close frame). Returns False when ``send`` is not a uvicorn websockets-sansio connection."""
    proto = getattr(send, "__self__", None)
    transport = getattr(proto, "transport", None)
    if transport is None or not hasattr(transport, "abort"):
        return False
    transport.abort()
    return True
