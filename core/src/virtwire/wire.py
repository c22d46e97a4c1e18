"""virtwire's uvicorn protocols: bounds on connections and handshakes, close deadlines, and the
direct frame write path.

uvicorn takes its HTTP and WebSocket protocol classes by import path or class; virtwire runs
:class:`HttpProtocol` (httptools) and :class:`WebSocketProtocol` (websockets' sans-I/O
implementation) so that:

- every connection counts against ``server.max_connections`` and
  ``server.max_connections_per_address`` (over a cap: HTTP 503, then the socket is closed);
- a request must arrive whole within ``server.handshake_timeout`` (else HTTP 408 and close);
- a handshake the WebSocket layer refuses (a request line or header over 8 KiB) gets its
  414/431 answer instead of hanging;
- every close has a deadline (``server.close_timeout``): a peer that does not take the close
  frame in time is dropped (``transport.abort()``), whatever is still buffered for it;
- a frame over the protocol's hard size cap gets an error frame before its 1009 close, and a
  text frame that is not UTF-8 is closed with 1007 without an error-level traceback;
- keepalive pings and pong deadlines of every connection run from one timer per loop
  (:mod:`virtwire.keepalive`) instead of two timers per connection: pings due in the same
  quarter second go out in one wake-up of the loop;
- :meth:`WebSocketProtocol.write_text` writes a text frame straight to the transport while
  the connection is open, writable and idle (see :mod:`virtwire.hub`); whether it may is one
  flag, kept up to date on every state change instead of re-checked per write. Frames for one
  connection written in the same loop tick go out in one ``transport.write`` at the end of
  the tick (any other write on that connection flushes them first, so order is kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import struct
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import PayloadTooBig
from websockets.frames import Frame, Opcode

from .keepalive import Keepalive, keepalive_for, tick_for

log = logging.getLogger("virtwire.wire")

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


#: Per event loop: connections with direct frames waiting for the end of this loop tick.
_dirty: dict[asyncio.AbstractEventLoop, list[WebSocketProtocol]] = {}


def _flush_dirty(loop: asyncio.AbstractEventLoop) -> None:
    for proto in _dirty.pop(loop, ()):
        proto.flush()


def flush_now() -> None:
    """Hand the frames written so far this loop tick to the sockets now, instead of at the
    end of the tick: before a second fan-out, so that the first one's frames do not wait
    for it (see :mod:`virtwire.builtins.vms`)."""
    loop = asyncio.get_running_loop()
    if loop in _dirty:
        _flush_dirty(loop)


class _Inbox:
    """What uvicorn's protocol needs of its ``asyncio.Queue`` of ASGI events (one consumer:
    the application's ``receive``), in a fraction of its memory: no deque until an event
    arrives, one future while the application waits."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] | None = None
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        if self._items is None:
            self._items = [item]
        else:
            self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items or ())

    async def get(self) -> Any:
        while not self._items:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        items = self._items
        item = items.pop(0)
        if not items:
            self._items = None
        return item


class _Flag:
    """What uvicorn's protocol needs of its ``asyncio.Event`` ``writable``, without the
    deque an Event keeps for waiters: a flag, and a list only while someone waits."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = True
        self._waiters: list[asyncio.Future[bool]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(True)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        if self._set:
            return True
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        return await waiter


class Limits:
    """What the protocols need from the settings, and the live connection counts."""

    __slots__ = (
        "close_timeout",
        "handshake_timeout",
        "max_connections",
        "max_per_address",
        "open",
        "per_address",
    )

    def __init__(
        self,
        *,
        max_connections: int = 0,
        max_per_address: int = 0,
        handshake_timeout: float = 10.0,
        close_timeout: float = 2.0,
    ) -> None:
        self.max_connections = max_connections
        self.max_per_address = max_per_address
        self.handshake_timeout = handshake_timeout
        self.close_timeout = close_timeout
        #: transport -> address of every counted connection
        self.open: dict[Any, str] = {}
        self.per_address: dict[str, int] = {}

    def admit(self, transport: Any, address: str) -> bool:
        """Count a new connection, or refuse it (False) when a cap is reached."""
        if self.max_connections and len(self.open) >= self.max_connections:
            return False
        count = self.per_address.get(address, 0)
        if self.max_per_address and count >= self.max_per_address:
            return False
        self.open[transport] = address
        self.per_address[address] = count + 1
        return True

    def release(self, transport: Any) -> None:
        address = self.open.pop(transport, None)
        if address is None:
            return
        left = self.per_address.get(address, 1) - 1
        if left > 0:
            self.per_address[address] = left
        else:
            self.per_address.pop(address, None)


_DEFAULT_LIMITS = Limits()


def limits_of(config: Any) -> Limits:
    return getattr(config, "virtwire_limits", None) or _DEFAULT_LIMITS


def _plain_response(status: bytes, text: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"content-length: " + str(len(text)).encode() + b"\r\nconnection: close\r\n\r\n" + text
    )


def _abort_later(loop: asyncio.AbstractEventLoop, transport: Any, delay: float) -> Any:
    def drop() -> None:
        if not transport.is_closing() or transport.get_write_buffer_size():
            transport.abort()

    return loop.call_later(delay, drop)


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with connection caps and a handshake deadline."""

    _deadline: asyncio.TimerHandle | None = None
    virtwire_limits: Limits = _DEFAULT_LIMITS

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        limits = self.virtwire_limits = limits_of(self.config)
        client = self.client
        if not limits.admit(transport, client[0] if client else "?"):
            log.warning(
                "connection refused: too many connections",
                extra={"client": client[0] if client else "?"},
            )
            transport.write(_plain_response(b"503 Service Unavailable", b"too many connections\n"))
            transport.close()
            self._deadline = _abort_later(self.loop, transport, limits.close_timeout)
            return
        self._deadline = self.loop.call_later(limits.handshake_timeout, self._request_timeout)

    def _request_timeout(self) -> None:
        self._deadline = None
        transport = self.transport
        if transport.is_closing():
            return
        transport.write(_plain_response(b"408 Request Timeout", b"request timeout\n"))
        transport.close()
        self._deadline = _abort_later(self.loop, transport, self.virtwire_limits.close_timeout)

    def _cancel_deadline(self) -> None:
        deadline = self._deadline
        if deadline is not None:
            deadline.cancel()
            self._deadline = None

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None and not self.transport.is_closing():
            self._deadline = self.loop.call_later(
                self.virtwire_limits.handshake_timeout, self._request_timeout
            )

    def on_headers_complete(self) -> None:
        self._cancel_deadline()
        super().on_headers_complete()

    def handle_websocket_upgrade(self) -> None:
        self._cancel_deadline()
        super().handle_websocket_upgrade()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        limits_of(self.config).release(self.transport)
        super().connection_lost(exc)


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol with close deadlines, answered handshake
    refusals, error frames before a 1009, quiet 1007s and the direct write path."""

    #: Set by the application: the text of the error frame sent before a 1009 close when a
    #: frame is over the hard cap (argument: the frame's announced size), or None.
    on_oversize: Callable[[int], str | None] | None = None
    #: Frames written this tick, not yet handed to the transport, and their size.
    _pending: list[bytes] | None = None
    _pending_bytes = 0
    #: Past this many bytes, frames of this tick go to the transport at once (which may
    #: pause writing: later frames then queue in the bounded outbox).
    BATCH_BYTES = 64 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._live = False
        self._handshake_complete = False
        self._close_sent = False
        self._disconnected = False
        self._writable_now = True
        self._abort_timer: asyncio.TimerHandle | None = None
        self._direct_allowed = False
        super().__init__(*args, **kwargs)
        # Lean stand-ins for the asyncio.Queue and asyncio.Event of every connection.
        self.queue = _Inbox()  # type: ignore[assignment]
        self.writable = _Flag()  # type: ignore[assignment]
        self.virtwire_limits = limits_of(self.config)
        self.close_timeout = self.virtwire_limits.close_timeout
        self._direct_allowed = not self.config.ws_per_message_deflate

    # -- the liveness flag of the direct path, kept on state changes ---------------------
    def _update(self) -> None:
        self._live = (
            self._handshake_complete
            and not self._close_sent
            and not self._disconnected
            and self._writable_now
            and self._direct_allowed
            and self.transport is not None
            and not self.transport.is_closing()
        )

    @property
    def handshake_complete(self) -> bool:
        return self._handshake_complete

    @handshake_complete.setter
    def handshake_complete(self, value: bool) -> None:
        self._handshake_complete = value
        self._update()

    @property
    def close_sent(self) -> bool:
        return self._close_sent

    @close_sent.setter
    def close_sent(self, value: bool) -> None:
        self._close_sent = value
        self._update()
        if value:
            self._arm_abort()

    @property
    def disconnected(self) -> bool:
        return self._disconnected

    @disconnected.setter
    def disconnected(self, value: bool) -> None:
        self._disconnected = value
        self._update()

    @property
    def live(self) -> bool:
        """True while a frame can be written straight to the transport."""
        return self._live

    def pause_writing(self) -> None:
        self._writable_now = False
        self._live = False
        super().pause_writing()

    def resume_writing(self) -> None:
        self._writable_now = True
        super().resume_writing()
        self._update()

    def set_max_size(self, size: int) -> None:
        """The largest frame the protocol reads; above it: an error frame, then 1009."""
        self.conn.max_message_size = size

    def write_text(self, text: str) -> bool:
        """Write one text frame if the connection is open and writable: it goes to the
        transport at the end of this loop tick, with the others written in the same tick."""
        if not self._live:
            return False
        data = frame_bytes(text)
        pending = self._pending
        if pending is None:
            self._pending = [data]
            self._pending_bytes = len(data)
            dirty = _dirty.get(self.loop)
            if dirty is None:
                _dirty[self.loop] = [self]
                self.loop.call_soon(_flush_dirty, self.loop)
            else:
                dirty.append(self)
        else:
            pending.append(data)
            self._pending_bytes += len(data)
            if self._pending_bytes > self.BATCH_BYTES:
                self.flush()
        return True

    def flush(self) -> None:
        """Hand the frames written this tick to the transport (one write)."""
        pending = self._pending
        if pending is None:
            return
        self._pending = None
        self._pending_bytes = 0
        if self._disconnected or self.transport is None or self.transport.is_closing():
            return
        self.transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    async def send(self, message: Any) -> None:
        self.flush()  # frames written directly this tick go first
        await super().send(message)
        if message["type"] == "websocket.accept":
            # the handshake is done: its request and response are not needed any more.
            # websockets' parser keeps the request alive for the connection's life (a local
            # of its generator): empty it too (a browser's headers are a few KiB, and the
            # path may hold a token)
            request = self.request
            if request is not None:
                request.headers.clear()
                request.path = ""
            self.request = None  # type: ignore[assignment]
            self.response = None  # type: ignore[assignment]

    # -- keepalive: deadlines in the loop's shared Keepalive, not two timers each --------
    keepalive_slot: int | None = None
    #: The pending deadline is the pong's (else: the next ping).
    _awaiting_pong = False
    #: The loop's shared Keepalive, looked up once per connection.
    _wheel: Keepalive | None = None

    def _keepalive(self) -> Keepalive:
        wheel = self._wheel
        if wheel is None:
            assert self.ping_interval is not None
            wheel = self._wheel = keepalive_for(self.loop, tick_for(self.ping_interval))
        return wheel

    def start_keepalive(self) -> None:
        if self.ping_interval is not None and self.ping_interval > 0:
            self._awaiting_pong = False
            self._keepalive().at(self, self.loop.time() + self.ping_interval)

    def stop_keepalive(self) -> None:
        if self.keepalive_slot is not None:
            self._keepalive().cancel(self)
        self.pending_ping_payload = None

    def keepalive_due(self) -> None:
        if self._awaiting_pong:
            self.keepalive_timeout()
        else:
            self.send_keepalive_ping()

    def send_keepalive_ping(self) -> None:
        if self._close_sent or self._disconnected or self.transport.is_closing():
            return
        self.flush()
        self.pending_ping_payload = random.getrandbits(32).to_bytes(4, "big")
        now = self.ping_sent_at = self.loop.time()
        self.conn.send_ping(self.pending_ping_payload)
        self.transport.write(b"".join(self.conn.data_to_send()))
        if self.ping_timeout is not None:
            self._awaiting_pong = True
            self._keepalive().at(self, now + self.ping_timeout)
        else:
            self._keepalive().at(self, now + (self.ping_interval or 0.0))

    def handle_pong(self, event: Frame) -> None:
        payload = self.pending_ping_payload
        if payload is None or bytes(event.data) != payload:
            return  # unsolicited, or the answer to an earlier ping
        self.last_ping_rtt = self.loop.time() - self.ping_sent_at
        self.pending_ping_payload = None
        if self._awaiting_pong:
            self._awaiting_pong = False
            # the next ping one interval after this one was sent
            self._keepalive().at(self, self.ping_sent_at + (self.ping_interval or 0.0))

    # -- close deadlines -------------------------------------------------------------------
    def _arm_abort(self) -> None:
        if self._abort_timer is None and not self._disconnected and self.transport is not None:
            self._abort_timer = self.loop.call_later(self.close_timeout, self.abort)

    def _after(self) -> None:
        """After anything that may have closed the transport: give it a deadline."""
        transport = self.transport
        if transport is not None and transport.is_closing():
            self._live = False
            self._arm_abort()

    def abort(self) -> None:
        """Drop the TCP connection now (for a peer too slow to take even a close frame)."""
        self._abort_timer = None
        if not self._disconnected and self.transport is not None:
            self._live = False
            self.transport.abort()

    def close_now(self, code: int, reason: str) -> None:
        """Put a close frame on the wire now, ahead of flow control (the peer may not be
        reading); the deadline then drops the connection if it does not answer."""
        if self._close_sent or self._disconnected or not self._handshake_complete:
            return
        self.flush()
        try:
            self.conn.send_close(code, reason)
        except Exception:  # the protocol is already closing
            self._arm_abort()
            return
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()

    # -- overrides that can close --------------------------------------------------------
    def connection_lost(self, exc: Exception | None) -> None:
        self._pending = None
        if self._abort_timer is not None:
            self._abort_timer.cancel()
            self._abort_timer = None
        self._writable_now = True
        super().connection_lost(exc)
        limits_of(self.config).release(self.transport)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self.handshake_initiated and self.conn.handshake_exc is not None:
            # websockets refused the request (a line over 8 KiB, too many headers, not
            # HTTP): write its answer (414, 431) instead of leaving the client waiting.
            self.handshake_initiated = True
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.close_sent = True
            self.transport.close()
        self._after()

    def handle_parser_exception(self) -> None:
        exc = self.conn.parser_exc
        if isinstance(exc, PayloadTooBig) and self._handshake_complete and not self._close_sent:
            report = self.on_oversize
            text = report(exc.size or 0) if report is not None else None
            self.flush()
            if text is not None:
                self.transport.write(frame_bytes(text))
        super().handle_parser_exception()
        self._after()

    def send_receive_event_to_app(self) -> None:
        if self.curr_msg_data_type != "text":
            super().send_receive_event_to_app()
            return
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        if self._close_sent:
            return
        try:
            text = data.decode()
        except UnicodeDecodeError:
            log.info("closing a connection that sent a text frame that is not UTF-8 (1007)")
            self.conn.send_close(1007, "invalid UTF-8")
            self.handle_parser_exception()
            return
        self.queue.put_nowait({"type": "websocket.receive", "text": text})
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def handle_close(self, event: Any) -> None:
        self.flush()
        super().handle_close(event)
        self._after()

    def keepalive_timeout(self) -> None:
        self._awaiting_pong = False
        self.pending_ping_payload = None
        if self._close_sent or self._disconnected or self.transport.is_closing():
            return
        self.flush()
        self.conn.fail(1011, "keepalive ping timeout")
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        self.transport.close()
        self._after()

    def shutdown(self) -> None:
        self.flush()
        super().shutdown()
        self._after()

    async def run_asgi(self) -> None:
        await super().run_asgi()
        self._after()


def protocol_of(send: Any) -> WebSocketProtocol | None:
    """The :class:`WebSocketProtocol` behind an ASGI ``send``, or None (another server,
    or ``send`` wrapped by middleware)."""
    proto = getattr(send, "__self__", None)
    return proto if isinstance(proto, WebSocketProtocol) else None


def _binary_header(size: int) -> bytes:
    if size < 126:
        return bytes((0x82, size))
    if size < 65536:
        return struct.pack(">BBH", 0x82, 126, size)
    return struct.pack(">BBQ", 0x82, 127, size)


class BinaryWriter:
    """Writes binary frames straight to a :class:`WebSocketProtocol`'s socket (a relay's hot
    path): the frame header and the payload go to the transport as they are, with no frame
    copy and no task switch. Built by :func:`binary_writer`."""

    __slots__ = ("_proto",)

    def __init__(self, proto: WebSocketProtocol) -> None:
        self._proto = proto

    @property
    def closing(self) -> bool:
        proto = self._proto
        return bool(
            not proto.handshake_complete
            or proto.close_sent
            or proto.disconnected
            or proto.transport is None
            or proto.transport.is_closing()
        )

    def write_now(self, data: bytes) -> bool:
        """Write one frame now. False when the socket is full (paused: await :meth:`ready`
        before more) or the connection closing (then nothing was written)."""
        if self.closing:
            return False
        self._proto.transport.writelines((_binary_header(len(data)), data))
        return bool(self._proto.writable.is_set())

    async def ready(self) -> None:
        """Until the socket takes more (or the connection went away)."""
        writable = self._proto.writable
        if not writable.is_set():
            await writable.wait()

    async def write(self, data: bytes) -> bool:
        """Wait until the socket takes more, then write one frame; False when closing."""
        await self.ready()
        if self.closing:
            return False
        self.write_now(data)
        return True


def binary_writer(send: Any, write_buffer: int | None = None) -> BinaryWriter | None:
    """A :class:`BinaryWriter` for the connection behind ``send``; None when ``send`` is not
    a :class:`WebSocketProtocol` without extensions (use ``send`` then). ``write_buffer``: the
    transport's high-water mark in bytes (room for a few large frames keeps the socket busy
    instead of stopping after each; bounded all the same)."""
    proto = protocol_of(send)
    if proto is None or proto.transport is None or getattr(proto.conn, "extensions", None):
        return None
    if write_buffer is not None:
        with contextlib.suppress(Exception):
            proto.transport.set_write_buffer_limits(high=write_buffer, low=write_buffer // 4)
    return BinaryWriter(proto)


def abort_send(send: Any) -> bool:
    """Drop the TCP connection behind an ASGI ``send`` of any uvicorn protocol now. Returns
    False when there is no transport to drop."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None or not hasattr(transport, "abort"):
        return False
    transport.abort()
    return True


__all__ = [
    "BinaryWriter",
    "HttpProtocol",
    "Limits",
    "WebSocketProtocol",
    "abort_send",
    "binary_writer",
    "frame_bytes",
    "limits_of",
    "protocol_of",
]
