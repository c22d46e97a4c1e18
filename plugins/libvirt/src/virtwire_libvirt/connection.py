"""The libvirt connection: opening it, every call on it, losing it and reconnecting.

The rule this module keeps: **no libvirt call ever runs on a connection that another thread
is closing or replacing.** libvirt frees a connection's state when it is closed; a call
still blocked in it (a hung daemon) then wakes up in freed memory and takes the whole
process down.

Each opened connection is a :class:`Link` with its own worker threads. Every call on it is
counted while it runs. Once the link is *retired* (the daemon went away, keepalive gave up,
or the backend closes) no new call starts on it; when the last running call has returned,
one of the link's own threads runs the connection listeners, deregisters the event
callbacks and closes it. A new connection is a new link with new threads, so the old one
can drain (a call blocked on a frozen daemon returns once keepalive drops the socket) while
the new one serves. At most ``MAX_DRAINING`` old links may still be draining before a
reconnect waits for them.

Calls for the same VM run in the order they were made (``vm_id=``): ``pause`` then
``resume`` sent back to back reach libvirt in that order. An event of a VM that has a call
running (the lifecycle event of the action being done) is handed to the loop when that call
returns instead of waking the loop on its own (at most ``call_timeout`` later).

For other modules of the plugin (console transports):

- ``LibvirtBackend.run(fn, *args, vm_id=None)`` runs the blocking ``fn(conn, *args)`` on the
  current connection in one of its threads, bounded by ``call_timeout``; it raises
  ``BackendUnavailable`` while disconnected and ``VmNotFound`` when ``fn`` raises
  :class:`virtwire_libvirt.sampling.NoDomain`. Keep what ``fn`` returns tied to the
  connection it came from (a ``virStream``, a ``virDomain``) only until a listener says
  that connection is going.
- ``LibvirtBackend.add_connection_listener(cb)`` registers ``cb(conn)``, called once for
  every connection before it is closed or replaced, in one of that connection's threads,
  after every other call on it has returned and before its event callbacks are removed
  and it is closed. Abort the streams opened on ``conn`` there (``st.eventRemoveCallback()``
  then ``st.abort()``: blocking calls are fine in a listener); tell the asyncio side with
  ``loop.call_soon_threadsafe``. A listener that raises is logged and the close goes on.
  The returned function removes the listener.
- Stream callbacks (``st.eventAddCallback``) run on libvirt's event loop thread
  (:mod:`virtwire_libvirt.eventloop`, started by the backend before the first connection);
  hand data to asyncio with ``loop.call_soon_threadsafe`` and never block in them.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import enum
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from virtwire import BackendUnavailable, VmNotFound

from . import sampling
from .eventloop import ensure_event_loop
from .settings import LibvirtSettings

T = TypeVar("T")

#: Old connections still draining (calls blocked on a hung daemon) before a reconnect waits.
MAX_DRAINING = 2

#: (generation, vmId, kind, libvirt event, detail) of one libvirt event.
EventItem = tuple[int, str, str, int, int]
Listener = Callable[[Any], None]
#: Follow-up work of a call: ``(g, cb)``, see :meth:`Link.post`.
After = tuple[Callable[[Any, Any], Any], Callable[[Any], None]]


def _settle(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    """On the loop: a link thread's outcome for ``fut`` (unless its caller gave up)."""
    if fut.done():
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


def _expire(fut: asyncio.Future[Any]) -> None:
    """On the loop: a call's time is up (its thread's late outcome is then ignored)."""
    if not fut.done():
        fut.set_exception(TimeoutError())


def _hand_over(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any) -> None:
    """From a link thread: run ``fn(*args)`` on the loop (nothing if the loop is closed)."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(fn, *args)


class State(enum.Enum):
    NEW = "new"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    CLOSED = "closed"


class Retired(Exception):
    """The link no longer takes calls (it is being or has been closed)."""


class Lost(Exception):
    """The connection died under a call (libvirt's error is the message)."""


class Link:
    """One opened libvirt connection and the threads that alone use it.

    ``submit`` and ``post`` run a call in the link's threads while the link is live;
    ``retire`` stops new calls, and the last call to return (or a link thread, if none runs)
    closes the connection: no call can overlap the close.
    """

    def __init__(self, generation: int, workers: int) -> None:
        self.generation = generation
        #: Resolved on the asyncio loop when the link is retired.
        self.gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.conn: Any = None
        self.ids: list[int] = []
        self.executor = concurrent.futures.ThreadPoolExecutor(
            workers, thread_name_prefix=f"libvirt-{generation}"
        )
        self._lock = threading.Lock()
        self._busy = 0
        self._retired = False
        self._closing = False
        self._listeners: list[Listener] = []
        self._on_closed: Callable[[Link], None] | None = None
        self._log: Any = None

    # -- calls (any thread) --------------------------------------------------------------
    def submit(self, fn: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
        """Run ``fn(conn, *args)`` in one of the link's threads."""
        try:
            return self.executor.submit(self._run, fn, args)
        except RuntimeError:  # the executor is shut down: the link is closed
            raise Retired from None

    def post(
        self,
        loop: asyncio.AbstractEventLoop,
        fut: asyncio.Future[T],
        fn: Callable[..., T],
        args: tuple[Any, ...],
        after: After | None = None,
    ) -> None:
        """Run ``fn(conn, *args)`` in one of the link's threads and settle ``fut`` on
        ``loop`` with its outcome (one hand-over, no intermediate future). With ``after =
        (g, cb)``, once ``fut`` has its result the same thread goes on with ``g(conn,
        result)`` and calls ``cb(what g returned, or None if it raised)`` on the loop: work
        whose result the caller does not wait for, still counted as a call on the link."""
        try:
            self.executor.submit(self._run_posted, loop, fut, fn, args, after)
        except RuntimeError:  # the executor is shut down: the link is closed
            raise Retired from None

    def _run_posted(
        self,
        loop: asyncio.AbstractEventLoop,
        fut: asyncio.Future[T],
        fn: Callable[..., T],
        args: tuple[Any, ...],
        after: After | None,
    ) -> None:
        def follow(conn: Any, value: T) -> None:
            _hand_over(loop, _settle, fut, True, value)
            if after is None:
                return
            then, callback = after
            out = None
            try:
                out = then(conn, value)
            except Exception:  # a failed follow-up is reported as None
                out = None
            finally:
                _hand_over(loop, callback, out)

        try:
            self._run(fn, args, follow)
        except BaseException as exc:  # handed to the awaiting task
            _hand_over(loop, _settle, fut, False, exc)

    def _run(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        follow: Callable[[Any, T], None] | None = None,
    ) -> T:
        import libvirt

        with self._lock:
            if self._retired:
                raise Retired
            self._busy += 1
        try:
            try:
                value = fn(self.conn, *args)
            except libvirt.libvirtError as exc:
                alive = True
                with contextlib.suppress(Exception):
                    alive = bool(self.conn.isAlive())
                if not alive:
                    raise Lost(describe(exc)) from exc
                raise
            if follow is not None:
                follow(self.conn, value)
            return value
        finally:
            self._leave()

    def _leave(self) -> None:
        with self._lock:
            self._busy -= 1
            close = self._retired and self._busy == 0 and not self._closing
            if close:
                self._closing = True
        if close:
            self._close_sync()

    # -- opening (a link thread) ---------------------------------------------------------
    def submit_open(
        self, settings: LibvirtSettings, post: Callable[[Any], None]
    ) -> concurrent.futures.Future[None]:
        try:
            return self.executor.submit(self.open, settings, post)
        except RuntimeError:
            raise Retired from None

    def open(self, settings: LibvirtSettings, post: Callable[[Any], None]) -> None:
        """Open the connection and register the event callbacks (blocking: a link
        thread). ``post(item)`` is called from libvirt's event thread with an
        :data:`EventItem`, or with ``(generation, reason)`` when libvirt closes the
        connection itself."""
        import libvirt

        with self._lock:
            if self._retired:
                raise Retired
            self._busy += 1
        try:
            conn = libvirt.open(settings.uri)
            self.conn = conn
            if not settings.uri.startswith("test:"):
                # libvirt's own keepalive closes the client socket under a call that is
                # still waiting in it, and libvirt 9 can crash the process when the daemon
                # then answers: liveness is probed by LibvirtConnection instead
                with contextlib.suppress(libvirt.libvirtError):
                    conn.setKeepAlive(-1, 0)
            by, generation = settings.vm_id, self.generation

            def lifecycle(_c: Any, dom: Any, event: int, detail: int, _o: Any) -> None:
                post((generation, sampling.domain_key(dom, by), "lifecycle", event, detail))

            def reboot(_c: Any, dom: Any, _o: Any) -> None:
                post((generation, sampling.domain_key(dom, by), "reboot", 0, 0))

            def closed(_c: Any, reason: int, _o: Any) -> None:
                post((generation, f"connection closed (reason {reason})"))

            self.ids.append(
                conn.domainEventRegisterAny(
                    None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, lifecycle, None
                )
            )
            self.ids.append(
                conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_REBOOT, reboot, None)
            )
            with contextlib.suppress(libvirt.libvirtError):
                conn.registerCloseCallback(closed, None)
        finally:
            self._leave()

    # -- closing -------------------------------------------------------------------------
    def retire(
        self, listeners: list[Listener], log: Any, on_closed: Callable[[Link], None]
    ) -> None:
        """No new calls; close the connection once the running ones have returned, after
        ``listeners``. ``on_closed(link)`` is called in a link thread when done."""
        with self._lock:
            if self._retired:
                return
            self._retired = True
            self._listeners = list(listeners)
            self._log = log
            self._on_closed = on_closed
            close = self._busy == 0 and not self._closing
            if close:
                self._closing = True
        if close:
            try:
                self.executor.submit(self._close_sync)
            except RuntimeError:
                self._close_sync()

    @property
    def retired(self) -> bool:
        return self._retired

    def _close_sync(self) -> None:
        conn = self.conn
        try:
            if conn is not None:
                for listener in self._listeners:
                    try:
                        listener(conn)
                    except Exception as exc:
                        if self._log is not None:
                            self._log.warning(
                                "libvirt connection listener failed",
                                error=f"{type(exc).__name__}: {exc}",
                            )
                for cid in self.ids:
                    with contextlib.suppress(Exception):
                        conn.domainEventDeregisterAny(cid)
                with contextlib.suppress(Exception):
                    conn.unregisterCloseCallback()
                with contextlib.suppress(Exception):
                    conn.close()
        finally:
            self.executor.shutdown(wait=False)
            if self._on_closed is not None:
                self._on_closed(self)


class LibvirtConnection:
    """The backend's libvirt connection: calls, loss, reconnects with backoff.

    ``on_event(item)`` gets every libvirt event of the current connection on the asyncio
    loop; ``on_up()`` is awaited after each (re)connect, ``on_down(reason)`` is called when
    the connection is lost.
    """

    def __init__(
        self,
        settings: LibvirtSettings,
        catalogue: Any,
        log: Any,
        *,
        name: str,
        on_event: Callable[[EventItem], None],
        on_up: Callable[[], Any],
        on_down: Callable[[str], None],
    ) -> None:
        self.settings = settings
        self.catalogue = catalogue
        self.log = log
        self.name = name
        self.state = State.NEW
        self.generation = 0
        self.last_error = ""
        self._on_event = on_event
        self._on_up = on_up
        self._on_down = on_down
        self._loop: asyncio.AbstractEventLoop | None = None
        self._link: Link | None = None
        self._draining: set[Link] = set()
        self._drained = asyncio.Event()
        self._listeners: list[Listener] = []
        self._tails: dict[str, asyncio.Future[None]] = {}
        #: Events from libvirt's thread not yet delivered on the loop, in order.
        self._parked: collections.deque[EventItem] = collections.deque()
        self._reconnector: asyncio.Task[None] | None = None
        self._prober: asyncio.Task[None] | None = None
        #: Set while connected / while the hypervisor is unreachable.
        self.connected = asyncio.Event()
        self.disconnected = asyncio.Event()

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.connected = asyncio.Event()
        self.disconnected = asyncio.Event()
        self._drained = asyncio.Event()
        ensure_event_loop()
        try:
            await self._connect()
        except Exception as exc:
            self.last_error = describe(exc)
            self.log.warning("libvirt unreachable, retrying", error=self.last_error)
            self._set_down()
            self._on_down(self.last_error)
            self._reconnector = asyncio.create_task(self._reconnect(), name="libvirt-reconnect")

    async def close(self) -> None:
        self.state = State.CLOSED
        if self._prober is not None:
            self._prober.cancel()
        if self._reconnector is not None:
            self._reconnector.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._reconnector, self.settings.call_timeout)
        link, self._link = self._link, None
        if link is not None:
            self._retire(link)
        # bounded: shutting down never hangs on a call stuck in a hung daemon
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.call_timeout):
                while self._draining:
                    self._drained.clear()
                    await self._drained.wait()

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """``listener(conn)`` runs before each connection is closed or replaced (see the
        module docstring). Returns a function that removes it."""
        self._listeners.append(listener)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return remove

    # -- calls ---------------------------------------------------------------------------
    def unavailable(
        self, vm_id: str | None = None, details: str | None = None
    ) -> BackendUnavailable:
        return BackendUnavailable(
            self.catalogue("backend.unavailable", name=self.name),
            vm_id=vm_id,
            details=details or self.last_error or self.state.value,
        )

    def _require(self, vm_id: str | None) -> Link:
        link = self._link
        if self.state is not State.CONNECTED or link is None:
            raise self.unavailable(vm_id)
        return link

    async def call(
        self,
        fn: Callable[..., T],
        *args: Any,
        vm_id: str | None = None,
        after: After | None = None,
    ) -> T:
        """Run the blocking ``fn(conn, *args)`` on the current connection in one of its
        threads, bounded by ``call_timeout``; calls for one ``vm_id`` run in order (the wait
        for the one before is bounded by ``call_timeout`` too). With
        ``after = (g, cb)``: see :meth:`Link.post` (the call returns before ``g`` runs;
        ``cb`` is not called when ``fn`` fails)."""
        link = self._require(vm_id)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] | None = None
        prev = None
        if vm_id is not None:
            prev = self._tails.get(vm_id)
            done = self._tails[vm_id] = loop.create_future()
        timeout = self.settings.call_timeout
        try:
            if prev is not None and not prev.done():
                # the previous call for this VM first (asyncio.wait never cancels the
                # other caller's future); a lost connection ends the wait at once
                async with asyncio.timeout(timeout):
                    await asyncio.wait((prev, link.gone), return_when=asyncio.FIRST_COMPLETED)
                link = self._require(vm_id)
            result: asyncio.Future[T] = loop.create_future()
            link.post(loop, result, fn, args, after)
            timer = loop.call_later(timeout, _expire, result)
            try:
                return await result
            finally:
                timer.cancel()
        except TimeoutError:
            raise self.unavailable(
                vm_id, details=f"no answer from libvirt within {self.settings.call_timeout:g} s"
            ) from None
        except Retired:
            raise self.unavailable(vm_id) from None
        except Lost as exc:
            self.last_error = str(exc)
            self._lost(link.generation, self.last_error)
            raise self.unavailable(vm_id) from None
        except sampling.NoDomain:
            raise VmNotFound(
                vm_id or "?", self.catalogue("vm.not_found", vm_id=vm_id or "?")
            ) from None
        finally:
            if done is not None:
                done.set_result(None)
                if self._tails.get(vm_id) is done:  # type: ignore[arg-type]
                    del self._tails[vm_id]  # type: ignore[arg-type]
            if self._parked:
                self._drain()  # events this call's VM had while it ran (see _post)

    # -- libvirt's event thread -----------------------------------------------------------
    def _post(self, item: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            if len(item) == 2:
                loop.call_soon_threadsafe(self._lost, item[0], item[1])
                return
            self._parked.append(item)
            if item[1] in self._tails:
                # A call for this VM is running (typically the action that caused the
                # event): it delivers the event when it returns, so the loop wakes up once
                # for both. The check follows the append and the call drains after it has
                # left _tails, so an event is never left behind.
                return
            loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        parked = self._parked
        while parked:
            self._deliver(parked.popleft())

    def _deliver(self, item: EventItem) -> None:
        if item[0] == self.generation and self.state is State.CONNECTED:
            self._on_event(item)

    # -- connecting ----------------------------------------------------------------------
    async def _connect(self) -> None:
        if self.state is State.CLOSED:
            return
        self.state = State.CONNECTING
        self.generation += 1
        link = Link(self.generation, self.settings.workers)
        try:
            attempt = asyncio.wrap_future(link.submit_open(self.settings, self._post))
            async with asyncio.timeout(self.settings.call_timeout):
                await attempt  # cancelled on timeout: an open not yet started never runs
        except TimeoutError:
            self._retire(link)  # a late open is closed by its own thread
            raise ConnectionError(
                f"no answer from libvirt within {self.settings.call_timeout:g} s"
            ) from None
        except BaseException:
            self._retire(link)
            raise
        if self.state is State.CLOSED:
            self._retire(link)
            return
        self._link = link
        self.state = State.CONNECTED
        self.last_error = ""
        self.disconnected.clear()
        self.connected.set()
        self.log.info("libvirt connected")
        if self.settings.keepalive_interval > 0 and not self.settings.uri.startswith("test:"):
            if self._prober is None or self._prober.done():
                self._prober = asyncio.create_task(self._probe(), name="libvirt-keepalive")
        await self._on_up()

    async def _probe(self) -> None:
        """Keepalive: a daemon that does not answer a cheap call within interval x count
        seconds is gone. The probe may stay blocked in it: the link is retired and drains
        when the daemon answers or its socket closes."""
        interval = self.settings.keepalive_interval
        limit = interval * max(self.settings.keepalive_count, 1)
        while self.state is not State.CLOSED:
            await asyncio.sleep(interval)
            link = self._link
            if self.state is not State.CONNECTED or link is None:
                continue
            try:
                async with asyncio.timeout(limit):
                    await asyncio.wrap_future(link.submit(_alive))
            except TimeoutError:
                self._lost(link.generation, f"no answer from libvirt within {limit:g} s")
            except Lost as exc:
                self._lost(link.generation, str(exc))
            except Exception as exc:  # Retired (replaced meanwhile) or a libvirt error
                self.log.debug("libvirt keepalive probe failed", error=describe(exc))

    def _retire(self, link: Link) -> None:
        loop = self._loop
        self._draining.add(link)
        if not link.gone.done():
            link.gone.set_result(None)

        def closed(done: Link) -> None:  # a link thread
            if loop is not None and not loop.is_closed():
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(self._closed, done)

        link.retire(self._listeners, self.log, closed)

    def _closed(self, link: Link) -> None:
        self._draining.discard(link)
        self._drained.set()

    def _set_down(self) -> None:
        self.state = State.DISCONNECTED
        self.connected.clear()
        self.disconnected.set()

    def _lost(self, generation: int, reason: str) -> None:
        if generation != self.generation or self.state is not State.CONNECTED:
            return
        self.last_error = reason
        self._set_down()
        self.log.warning("libvirt connection lost, reconnecting", reason=reason)
        link, self._link = self._link, None
        self.generation += 1  # late events of the old connection are ignored
        if link is not None:
            self._retire(link)
        self._on_down(reason)
        if self._reconnector is None or self._reconnector.done():
            self._reconnector = asyncio.get_running_loop().create_task(
                self._reconnect(), name="libvirt-reconnect"
            )

    async def _reconnect(self) -> None:
        delay = self.settings.reconnect_min
        while self.state is not State.CLOSED:
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.settings.reconnect_max)
            if len(self._draining) >= MAX_DRAINING:
                # old connections are still stuck in a hung daemon: no more threads for now
                self.log.debug("libvirt reconnect waits for old connections to drain")
                continue
            try:
                await self._connect()
                return
            except Exception as exc:
                self.last_error = describe(exc)
                if self.state is State.CLOSED:
                    # close() ran meanwhile; its cancellation may have been absorbed by a
                    # timeout that completed at the same moment
                    return
                self.state = State.DISCONNECTED
                self.log.debug("libvirt reconnect failed", error=self.last_error)


def _alive(conn: Any) -> int:
    return int(conn.getLibVersion())


def describe(exc: BaseException) -> str:
    get = getattr(exc, "get_error_message", None)
    if callable(get):
        with contextlib.suppress(Exception):
            msg = get()
            if msg:
                return str(msg)
    return str(exc) or type(exc).__name__
