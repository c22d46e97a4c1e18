"""Serial consoles: ``terminal-connect`` with ``type: "serial"`` on a libvirt domain.

libvirt lets one client at a time hold a domain's console, so the plugin opens one
non-blocking ``virStream`` per VM and fans its output out to every terminal open on that VM
(each is a :class:`SerialTerminal`, a tap with its own bounded buffer); keystrokes from any of
them go to the one stream, in order. The stream is driven by libvirt's event loop (the
plugin's event thread, :mod:`.eventloop`): its callback reads what is there and hands it to
the asyncio loop. Blocking calls (opening, sending, closing) go through
``LibvirtBackend.run``. When the domain stops, the stream ends and every terminal on it
closes with reason ``vm-stopped``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

from virtwire import ErrorCode, VirtwireError

from . import sampling

if TYPE_CHECKING:
    from .backend import LibvirtBackend

KINDS = ("serial",)
#: Bytes read from the stream per callback at most (the rest comes with the next one).
RECV_CHUNK = 64 * 1024
RECV_MAX = 256 * 1024
#: Output waiting in one terminal's buffer at most; older output is dropped beyond it (a
#: serial console keeps no history either).
TAP_BUFFER = 1024 * 1024
#: Seconds a send may wait for a full stream before the terminal is given up.
SEND_TIMEOUT = 10.0


class SerialTerminal:
    """One terminal on a VM's shared console stream (a :class:`TerminalSession`)."""

    def __init__(self, console: ConsoleStream) -> None:
        self.console = console
        self.exit_status: int | None = None
        self.close_reason = ""
        self._buf = bytearray()
        self._ready = asyncio.Event()
        self._closed = False
        #: Bytes dropped because the terminal's reader fell more than TAP_BUFFER behind.
        self.dropped = 0

    def feed(self, data: bytes) -> None:
        self._buf += data
        excess = len(self._buf) - TAP_BUFFER
        if excess > 0:
            del self._buf[:excess]
            self.dropped += excess
        self._ready.set()

    def end(self, reason: str) -> None:
        if not self.close_reason:
            self.close_reason = reason
        self._ready.set()

    async def read(self, limit: int) -> bytes:
        while not self._buf and not self.close_reason:
            self._ready.clear()
            await self._ready.wait()
        if not self._buf:
            return b""
        data = bytes(self._buf[:limit])
        del self._buf[:limit]
        return data

    async def write(self, data: bytes) -> None:
        if self.close_reason:
            raise VirtwireError(
                ErrorCode.TERMINAL_CLOSED, "the serial console has ended", vm_id=self.console.vm_id
            )
        await self.console.send(data)

    async def resize(self, cols: int, rows: int) -> None:
        """A serial line has no size to tell the guest."""

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.end("closed")
        await self.console.remove(self)


class ConsoleStream:
    """The one libvirt console stream of a VM and the terminals reading it."""

    def __init__(self, transport: SerialTransport, vm_id: str) -> None:
        self.transport = transport
        self.backend = transport.backend
        self.vm_id = vm_id
        self.taps: list[SerialTerminal] = []
        self.stream: Any = None
        #: The libvirt connection the stream was opened on (its listener aborts the stream).
        self.conn: Any = None
        self.ended = ""
        self._loop = asyncio.get_running_loop()
        self._send_lock = asyncio.Lock()
        self._opened = asyncio.Event()
        self._open_error: BaseException | None = None

    # -- opening (a worker thread) -------------------------------------------------------
    def _open_sync(self, conn: Any, force: bool) -> Any:
        import libvirt

        dom = sampling.lookup(conn, self.vm_id, self.backend.settings.vm_id)
        stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
        try:
            flags = libvirt.VIR_DOMAIN_CONSOLE_FORCE if force else 0
            dom.openConsole(None, stream, flags)
            events = (
                libvirt.VIR_STREAM_EVENT_READABLE
                | libvirt.VIR_STREAM_EVENT_ERROR
                | libvirt.VIR_STREAM_EVENT_HANGUP
            )
            stream.eventAddCallback(events, self._on_event, None)
        except BaseException:
            with contextlib.suppress(Exception):
                stream.abort()
            raise
        self.conn = conn
        return stream

    async def open(self) -> None:
        import libvirt

        force = self.transport.settings.console_force
        try:
            self.stream = await self.backend.run(self._open_sync, force, vm_id=self.vm_id)
        except libvirt.libvirtError as exc:
            raise self._open_failed(exc, force) from None
        finally:
            self._opened.set()
        self.transport.log.debug("serial console opened", vm=self.vm_id, force=force)

    def _open_failed(self, exc: Any, force: bool) -> VirtwireError:
        text = str(exc.get_error_message() if hasattr(exc, "get_error_message") else exc)
        lowered = text.lower()
        if "active console session" in lowered or "in use" in lowered:
            return VirtwireError(
                ErrorCode.CONSOLE_BUSY,
                f"the serial console of VM {self.vm_id} is in use by another client "
                "(e.g. virsh console); set [plugins.libvirt] console_force = true to take it",
                vm_id=self.vm_id,
                details=text,
            )
        if "not running" in lowered or "inactive" in lowered:
            return VirtwireError(
                ErrorCode.CONSOLE_UNAVAILABLE,
                f"VM {self.vm_id} is not running: its serial console cannot be opened",
                vm_id=self.vm_id,
                details=text,
            )
        return VirtwireError(
            ErrorCode.CONSOLE_UNAVAILABLE,
            f"the serial console of VM {self.vm_id} cannot be opened",
            vm_id=self.vm_id,
            details=text,
        )

    # -- the stream's callback (libvirt's event thread) -----------------------------------
    def _on_event(self, stream: Any, events: int, _opaque: Any) -> None:
        import libvirt

        chunks: list[bytes] = []
        size = 0
        reason = ""
        if events & libvirt.VIR_STREAM_EVENT_READABLE:
            while size < RECV_MAX:
                try:
                    data = stream.recv(RECV_CHUNK)
                except libvirt.libvirtError:
                    reason = "vm-stopped"
                    break
                if data == -2:  # would block: all read
                    break
                if not data:  # end of stream
                    reason = "vm-stopped"
                    break
                chunks.append(data)
                size += len(data)
        if events & (libvirt.VIR_STREAM_EVENT_ERROR | libvirt.VIR_STREAM_EVENT_HANGUP):
            reason = reason or "vm-stopped"
        if reason:
            # stop the callback at once: a dead stream keeps firing
            with contextlib.suppress(Exception):
                stream.eventRemoveCallback()
            with contextlib.suppress(Exception):
                stream.abort()
        if chunks or reason:
            with contextlib.suppress(RuntimeError):  # the loop is closed
                self._loop.call_soon_threadsafe(self._deliver, b"".join(chunks), reason)

    def connection_going(self, conn: Any) -> None:
        """The libvirt connection ``conn`` is about to be closed or replaced (one of its own
        threads, every other call on it returned): end the stream opened on it first, so that
        nothing touches a closed connection."""
        stream = self.stream
        if stream is None or self.conn is not conn:
            return
        self._close_sync(conn, stream)
        with contextlib.suppress(RuntimeError):  # the loop is closed
            self._loop.call_soon_threadsafe(self._end, "connection-lost")

    def _deliver(self, data: bytes, reason: str) -> None:
        if data:
            for tap in self.taps:
                tap.feed(data)
        if reason:
            self._end(reason)

    def _end(self, reason: str) -> None:
        if self.ended:
            return
        self.ended = reason
        self.stream = None
        self.transport.forget(self)
        self.transport.log.debug("serial console ended", vm=self.vm_id, reason=reason)
        for tap in self.taps:
            tap.end(reason)

    # -- input -------------------------------------------------------------------------
    @staticmethod
    def _send_sync(conn: Any, stream: Any, data: bytes) -> None:
        view = memoryview(data)
        deadline = time.monotonic() + SEND_TIMEOUT
        while view:
            sent = stream.send(bytes(view))
            if sent == -2:  # the stream is full: give it a moment (a worker thread)
                if time.monotonic() > deadline:
                    raise TimeoutError("the console takes no input")
                time.sleep(0.002)
                continue
            view = view[sent:]

    async def send(self, data: bytes) -> None:
        async with self._send_lock:  # keystrokes in order
            stream = self.stream
            if stream is None:
                raise VirtwireError(
                    ErrorCode.TERMINAL_CLOSED,
                    "the serial console has ended",
                    vm_id=self.vm_id,
                    details={"reason": self.ended or "closed"},
                )
            try:
                await self.backend.run(self._send_sync, stream, data, vm_id=self.vm_id)
            except VirtwireError:
                raise
            except Exception as exc:
                raise VirtwireError(
                    ErrorCode.CONSOLE_UNAVAILABLE,
                    f"the serial console of VM {self.vm_id} took no input",
                    vm_id=self.vm_id,
                    details=str(exc),
                ) from None

    # -- the end -----------------------------------------------------------------------
    async def remove(self, tap: SerialTerminal) -> None:
        with contextlib.suppress(ValueError):
            self.taps.remove(tap)
        if not self.taps:
            await self.close()

    @staticmethod
    def _close_sync(conn: Any, stream: Any) -> None:
        with contextlib.suppress(Exception):
            stream.eventRemoveCallback()
        with contextlib.suppress(Exception):
            stream.abort()

    async def close(self, reason: str = "closed") -> None:
        stream = self.stream
        self._end(reason)
        if stream is not None:
            with contextlib.suppress(Exception):
                await self.backend.run(self._close_sync, stream, vm_id=self.vm_id)


class SerialTransport:
    """The libvirt plugin's :class:`virtwire.consoles.ConsoleTransport` for ``serial``."""

    name = "libvirt-serial"
    kinds = KINDS

    def __init__(self, gateway: Any, settings: Any) -> None:
        self.gateway = gateway
        self.settings = settings
        self.log = gateway.log.bind(plugin="libvirt")
        self.consoles: dict[str, ConsoleStream] = {}
        self._backend: LibvirtBackend | None = None
        self._unlisten: Any = None

    @property
    def backend(self) -> LibvirtBackend:
        if self._backend is None:
            from .backend import LibvirtBackend

            self._backend = next(b for b in self.gateway.backends if isinstance(b, LibvirtBackend))
        return self._backend

    def supports(self, vm_id: str, kind: str) -> bool:
        if kind not in KINDS:
            return False
        vms = getattr(self.gateway, "vms", None)
        owner = vms.owner.get(vm_id) if vms is not None else None
        return owner is None or owner is self.backend

    async def open_vnc(self, vm_id: str) -> Any:
        raise VirtwireError(ErrorCode.CONSOLE_UNAVAILABLE, "this transport serves serial only")

    async def open_terminal(
        self, vm_id: str, kind: str, *, credentials: dict[str, Any], cols: int, rows: int
    ) -> SerialTerminal:
        if self._unlisten is None:
            self._unlisten = self.backend.add_connection_listener(self._connection_going)
        console = self.consoles.get(vm_id)
        if console is None:
            console = self.consoles[vm_id] = ConsoleStream(self, vm_id)
            try:
                await console.open()
            except BaseException:
                self.forget(console)
                raise
        else:
            await console._opened.wait()  # another terminal is opening it right now
            if console.stream is None:
                return await self.open_terminal(
                    vm_id, kind, credentials=credentials, cols=cols, rows=rows
                )
        tap = SerialTerminal(console)
        console.taps.append(tap)
        return tap

    def _connection_going(self, conn: Any) -> None:
        # a thread of the connection that is going; the dict may change meanwhile
        for console in list(self.consoles.values()):
            console.connection_going(conn)

    def forget(self, console: ConsoleStream) -> None:
        if self.consoles.get(console.vm_id) is console:
            del self.consoles[console.vm_id]

    async def close(self) -> None:
        for console in list(self.consoles.values()):
            await console.close("gateway-shutdown")
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None


__all__ = ["ConsoleStream", "SerialTerminal", "SerialTransport"]
