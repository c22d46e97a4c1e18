"""One VNC console of a ``/ws`` connection.

It holds the gateway's own RFB connection to the VM's VNC server (handshake done by the
gateway, shared=1) and relays it as ``vnc-data``; injects ``vnc-input`` events between complete
client messages; takes screenshots over a second connection of its own that asks for Raw and
CopyRect pixels; and serves browsers that open its ticket URL, each over a fresh connection of
their own, presenting security "None" to them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import enum
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from . import rfb
from .consoles import READ_SIZE, ByteStream, ConsoleTransport, VncTarget
from .consolesessions import REASON_CLIENT, REASON_CONNECTION, REASON_SHUTDOWN
from .errors import CloseCode, ErrorCode, VirtwireError
from .wire import BinaryWriter, binary_writer

if TYPE_CHECKING:
    from starlette.types import Receive, Send

    from .session import Session

#: Seconds allowed for the RFB handshake with a VM's VNC server.
HANDSHAKE_TIMEOUT = 10.0
#: Seconds a screenshot may wait for the VM's server to send the picture.
SCREENSHOT_TIMEOUT = 10.0
#: Injected events waiting for a client message to complete; more get RATE_LIMITED.
MAX_PENDING_EVENTS = 4096

#: How often and how far apart the state of a VM whose VNC server went away is asked.
STOP_CHECKS = 10
STOP_CHECK_DELAY = 0.1

#: Reasons of ``vnc-closed`` beyond the shared ones (``consolesessions.REASON_*``).
REASON_VM_STOPPED = "vm-stopped"
REASON_SERVER_CLOSED = "vnc-server-closed"


class State(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"


async def open_rfb(
    transport: ConsoleTransport, vm_id: str, *, shared: bool = True
) -> tuple[VncTarget, rfb.ServerInit, rfb.Reader]:
    """Open a connection to the VM's VNC server through ``transport`` and complete the RFB
    handshake (the transport's password answers VNC authentication). Raises VirtwireError:
    CONSOLE_UNAVAILABLE, VNC_NOT_READY, VM_NOT_FOUND."""
    try:
        target = await transport.open_vnc(vm_id)
    except VirtwireError:
        raise
    except (OSError, TimeoutError) as exc:
        raise VirtwireError(
            ErrorCode.VNC_NOT_READY,
            f"the VNC server of {vm_id} cannot be reached: {exc}",
            vm_id=vm_id,
        ) from None
    try:
        init, reader = await asyncio.wait_for(
            rfb.client_handshake(target.stream, target.password, shared=shared),
            HANDSHAKE_TIMEOUT,
        )
    except BaseException as exc:
        await target.stream.close()
        if isinstance(exc, rfb.AuthFailed):
            raise VirtwireError(
                ErrorCode.CONSOLE_UNAVAILABLE, f"VNC server of {vm_id}: {exc}", vm_id=vm_id
            ) from None
        if isinstance(exc, rfb.RfbError | OSError | TimeoutError):
            raise VirtwireError(
                ErrorCode.VNC_NOT_READY,
                f"VNC handshake with {vm_id} failed: {exc or 'timeout'}",
                vm_id=vm_id,
            ) from None
        raise
    return target, init, reader


class WebSocketStream:
    """A browser's binary WebSocket (ASGI) as a :class:`ByteStream`."""

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self._direct = binary_writer(send, write_buffer=4 * READ_SIZE)
        self.closed = False

    @property
    def direct(self) -> BinaryWriter | None:
        """The direct frame writer, when the server allows one."""
        return self._direct

    async def read(self) -> bytes:
        while not self.closed:
            message = await self._receive()
            if message["type"] == "websocket.disconnect":
                self.closed = True
                break
            data = message.get("bytes")
            if data is None:
                text = message.get("text")
                data = text.encode() if text else b""
            if data:
                return bytes(data)
        return b""

    async def write(self, data: bytes) -> None:
        if self._direct is not None:
            if not await self._direct.write(data):
                raise ConnectionResetError("the browser's connection is closing")
            return
        await self._send({"type": "websocket.send", "bytes": data})  # waits while paused

    async def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                self._send({"type": "websocket.close", "code": code, "reason": reason}), 2.0
            )


class VncConsole:
    """A VNC console (``vnc-connect``) of one ``/ws`` connection."""

    kind = "vnc"

    def __init__(
        self,
        session: Session,
        vm_id: str,
        transport: ConsoleTransport,
        target: VncTarget,
        init: rfb.ServerInit,
        reader: rfb.Reader,
    ) -> None:
        self.session = session
        self.vm_id = vm_id
        self.transport = transport
        self.init = init
        self.state = State.OPEN
        self.opened = time.monotonic()
        self._stream: ByteStream = target.stream
        self._reader = reader
        self._client = rfb.ClientMessages()
        self._pending: deque[bytes] = deque()
        self._write_lock = asyncio.Lock()
        self._window = session.gateway.settings.consoles.send_window_bytes
        self._relay: asyncio.Task[None] | None = None
        self._shot: tuple[ByteStream, rfb.Reader, rfb.Framebuffer] | None = None
        self._shot_lock = asyncio.Lock()
        self._browsers: set[Callable[[int, str], Awaitable[None]]] = set()
        self._closing: asyncio.Task[None] | None = None
        self._announced = False
        self.log = session.log.bind(vm=vm_id, console="vnc")

    def start(self) -> None:
        self._relay = asyncio.create_task(self._server_to_client(), name=f"vnc-{self.vm_id}")

    # -- the VM's server -> the client (vnc-data) ----------------------------------------
    async def _server_to_client(self) -> None:
        outbox = self.session.outbox
        reason = REASON_SERVER_CLOSED
        try:
            chunk = self._reader.take_buffered()
            while True:
                if chunk:
                    await outbox.room(self._window)
                    data = base64.b64encode(chunk).decode()
                    if not self.session.send("vnc-data", {"vmId": self.vm_id, "data": data}):
                        return  # the connection is closing: its cleanup closes us
                chunk = await self._stream.read()
                if not chunk:
                    break
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.log.info("vnc relay ended", error=f"{type(exc).__name__}: {exc}")
        reason = await self._why_server_left()
        self._spawn_close(reason)

    async def _why_server_left(self) -> str:
        """``vm-stopped`` when the VM is no longer running. A VNC server goes away a moment
        before the hypervisor reports the VM stopped: ask again for up to a second."""
        vms = self.session.gateway.vms
        for _ in range(STOP_CHECKS):
            try:
                _, status = await asyncio.wait_for(vms.get(self.vm_id), 5.0)
            except Exception:
                return REASON_SERVER_CLOSED
            if status.get("status") != "running":
                return REASON_VM_STOPPED
            await asyncio.sleep(STOP_CHECK_DELAY)
        return REASON_SERVER_CLOSED

    def _spawn_close(self, reason: str) -> None:
        if self._closing is None:
            self._closing = asyncio.create_task(self.close(reason))

    # -- the client -> the VM's server ---------------------------------------------------
    def _check_open(self) -> None:
        if self.state is not State.OPEN:
            raise VirtwireError(
                ErrorCode.VNC_NOT_READY,
                f"the VNC console of {self.vm_id} is closed",
                vm_id=self.vm_id,
            )

    async def client_data(self, data: bytes) -> None:
        """Client RFB messages (``vnc-data``): forwarded whole; injected events wait for a
        message boundary. Raises INVALID_MESSAGE for data that is not RFB (the stream stays
        usable: nothing of the bad message was sent)."""
        self._check_open()
        async with self._write_lock:
            try:
                out = self._client.feed(data)
            except rfb.BadClientData as exc:
                await self._write(exc.forward + self._flush_pending())
                raise VirtwireError(
                    ErrorCode.INVALID_MESSAGE,
                    f"vnc-data is not an RFB client message stream: {exc}; it was dropped",
                    vm_id=self.vm_id,
                    details={"field": "data.data", "reason": str(exc)},
                ) from None
            if self._client.at_boundary:
                out += self._flush_pending()
            await self._write(out)

    def _flush_pending(self) -> bytes:
        events = b"".join(self._pending)
        self._pending.clear()
        return events

    async def inject(self, events: list[bytes]) -> None:
        """Write the gateway's own events (KeyEvent, PointerEvent) between complete client
        messages."""
        self._check_open()
        async with self._write_lock:
            if self._client.at_boundary:
                await self._write(b"".join(events))
                return
            if len(self._pending) + len(events) > MAX_PENDING_EVENTS:
                raise VirtwireError(
                    ErrorCode.RATE_LIMITED,
                    f"too many input events waiting for an incomplete vnc-data message "
                    f"(limit {MAX_PENDING_EVENTS})",
                    vm_id=self.vm_id,
                )
            self._pending.extend(events)

    async def _write(self, data: bytes) -> None:
        if not data:
            return
        try:
            await self._stream.write(data)
        except (OSError, RuntimeError):
            self._spawn_close(REASON_SERVER_CLOSED)
            raise VirtwireError(
                ErrorCode.VNC_NOT_READY, f"the VNC server of {self.vm_id} is gone", vm_id=self.vm_id
            ) from None

    # -- screenshots ---------------------------------------------------------------------
    async def screenshot(self) -> dict[str, Any]:
        """The current screen as a PNG (over the console's own screenshot connection)."""
        self._check_open()
        async with self._shot_lock:
            try:
                return await asyncio.wait_for(self._take_screenshot(), SCREENSHOT_TIMEOUT)
            except VirtwireError:
                raise
            except (rfb.RfbError, OSError, TimeoutError) as exc:
                await self._drop_shot()
                raise VirtwireError(
                    ErrorCode.VNC_NOT_READY,
                    f"screenshot of {self.vm_id} failed: {exc or 'timeout'}",
                    vm_id=self.vm_id,
                ) from None

    async def _take_screenshot(self) -> dict[str, Any]:
        if self._shot is None:
            target, init, reader = await open_rfb(self.transport, self.vm_id)
            fb = rfb.Framebuffer(init.width, init.height)
            await target.stream.write(
                rfb.set_pixel_format(rfb.BGRX)
                + rfb.set_encodings([rfb.ENC_RAW, rfb.ENC_COPYRECT, rfb.ENC_DESKTOP_SIZE])
            )
            self._shot = (target.stream, reader, fb)
            if self.state is not State.OPEN:
                await self._drop_shot()
                self._check_open()
        stream, reader, fb = self._shot
        await fb.refresh(stream, reader)
        image = await asyncio.to_thread(fb.png)  # zlib on a whole screen: off the loop
        return {
            "vmId": self.vm_id,
            "width": fb.width,
            "height": fb.height,
            "format": "png",
            "image": base64.b64encode(image).decode(),
        }

    async def _drop_shot(self) -> None:
        shot, self._shot = self._shot, None
        if shot is not None:
            await shot[0].close()

    # -- browsers (the ticket endpoint) ----------------------------------------------------
    async def serve_browser(self, receive: Receive, send: Send) -> None:
        """Speak plain RFB to a browser (noVNC) over its binary WebSocket: security "None"
        to it, the VM's ServerInit, then a relay over a fresh connection to the VM's server
        (read in large chunks; each chunk waits until the browser's socket takes it)."""
        browser = WebSocketStream(receive, send)
        if self.state is not State.OPEN:
            await browser.close(CloseCode.POLICY_VIOLATION, "VNC_NOT_READY: console closed")
            return
        try:
            target, init, vm_reader = await open_rfb(self.transport, self.vm_id)
        except VirtwireError as exc:
            await browser.close(CloseCode.INTERNAL_ERROR, f"{exc.code}: {exc.message}"[:120])
            return
        vm = target.stream
        done = asyncio.Event()
        ending: dict[str, Any] = {"code": CloseCode.NORMAL, "reason": "VNC server closed"}

        async def closer(code: int, reason: str) -> None:
            ending.update(code=code, reason=reason)
            done.set()

        self._browsers.add(closer)
        tasks: list[asyncio.Task[None]] = []
        try:
            browser_reader = await asyncio.wait_for(
                rfb.serve_handshake(browser, init), HANDSHAKE_TIMEOUT
            )

            async def vm_to_browser() -> None:
                chunk = vm_reader.take_buffered()
                direct, pipe = browser.direct, getattr(vm, "pipe", None)
                if direct is not None and pipe is not None:  # the hot path
                    if chunk:
                        await browser.write(chunk)
                    await pipe(direct.write_now, direct.ready)
                    return
                while True:
                    if chunk:
                        await browser.write(chunk)
                    chunk = await vm.read()
                    if not chunk:
                        return

            async def browser_to_vm() -> None:
                chunk = browser_reader.take_buffered()
                while True:
                    if chunk:
                        await vm.write(chunk)
                    chunk = await browser.read()
                    if not chunk:
                        ending.update(code=CloseCode.NORMAL, reason="")
                        return

            tasks = [asyncio.create_task(vm_to_browser()), asyncio.create_task(browser_to_vm())]
            waiter = asyncio.create_task(done.wait())
            await asyncio.wait([*tasks, waiter], return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
        except (rfb.RfbError, OSError, TimeoutError, RuntimeError) as exc:
            self.log.info("browser relay ended", error=f"{type(exc).__name__}: {exc}")
        finally:
            self._browsers.discard(closer)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await vm.close()
            await browser.close(ending["code"], ending["reason"])

    # -- the end ---------------------------------------------------------------------------
    def announce(self, reason: str) -> None:
        """Queue ``vnc-closed`` now: the connection is closing (``close`` follows)."""
        if self.state is State.OPEN and not self._announced:
            self._announced = True
            self.session.send("vnc-closed", {"vmId": self.vm_id, "reason": reason})

    async def close(self, reason: str) -> None:
        """End the console: stop the relay, close its connections and browsers, and tell the
        client (``vnc-closed``) unless it asked for the end itself."""
        if self.state is State.CLOSED:
            return
        self.state = State.CLOSED
        self.session.gateway.console_sessions.discard(self.session, self)
        current = asyncio.current_task()
        if self._relay is not None and self._relay is not current:
            self._relay.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._relay
        code = CloseCode.GOING_AWAY if reason == REASON_SHUTDOWN else CloseCode.NORMAL
        for closer in list(self._browsers):
            await closer(code, f"console closed: {reason}")
        await self._stream.close()
        await self._drop_shot()
        if reason not in (REASON_CLIENT, REASON_CONNECTION) and not self._announced:
            self.session.send("vnc-closed", {"vmId": self.vm_id, "reason": reason})
        self.log.debug("vnc console closed", reason=reason)
        self.session.gateway.audit_log.record(
            "console-close",
            {
                "user": self.session.user_id,
                "address": self.session.client,
                "vmId": self.vm_id,
                "kind": self.kind,
                "reason": reason,
                "durationMs": (time.monotonic() - self.opened) * 1000,
            },
        )


__all__ = ["VncConsole", "WebSocketStream", "open_rfb"]
