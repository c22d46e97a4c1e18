"""The libvirt hypervisor backend: status, stats, control, lifecycle events, reconnects."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import time
from collections.abc import Callable
from typing import Any, TypeVar

from virtwire import BackendUnavailable, VirtwireError, VmNotFound
from virtwire.backends import NetworkRates, VmEvents, VmStatus

from . import sampling
from .eventloop import ensure_event_loop
from .settings import LibvirtSettings
from .states import (
    EVENT_STATES,
    RESUMED,
    UNDEFINED,
    lifecycle_event,
    status_word,
)
from .stats import MIN_WINDOW, Rates, Sample

T = TypeVar("T")

#: A REBOOT event this soon after the backend reported the reboot itself is the same one.
REBOOT_DEDUP = 3.0
#: Lifecycle events waiting to be reported; beyond this the backend re-syncs instead.
EVENT_QUEUE = 1024


class State(enum.Enum):
    NEW = "new"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    CLOSED = "closed"


class _Lost(Exception):
    """The connection died under a call."""


class LibvirtBackend:
    """A :class:`virtwire.backends.HypervisorBackend` over one libvirt connection."""

    name = "libvirt"

    def __init__(self, settings: LibvirtSettings, catalogue: Any, log: Any) -> None:
        self.settings = settings
        self.catalogue = catalogue
        self.log = log.bind(backend=self.name, uri=settings.uri) if hasattr(log, "bind") else log
        self.state = State.NEW
        self._events: VmEvents | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._conn: Any = None
        self._callback_ids: list[int] = []
        self._generation = 0
        self._last_error = ""
        self._rates: dict[str, Rates] = {}
        self._known: dict[str, str] = {}  # vm_id -> last status word reported
        self._lifecycle: dict[str, str] = {}  # vm_id -> status word from the last event
        self._ifaces: dict[tuple[str, int], list[str]] = {}
        self._queue: asyncio.Queue[tuple[int, str, str, int, int]] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pump_task: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._reconnector: asyncio.Task[None] | None = None
        self._waiters: dict[str, list[tuple[str, asyncio.Future[None]]]] = {}
        self._reboot_reported: dict[str, float] = {}
        self._watching = False
        #: Set while connected / while the hypervisor is unreachable.
        self.connected = asyncio.Event()
        self.disconnected = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self, events: VmEvents) -> None:
        self._events = events
        self._loop = asyncio.get_running_loop()
        self.connected = asyncio.Event()
        self.disconnected = asyncio.Event()
        self._queue = asyncio.Queue(EVENT_QUEUE)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            self.settings.workers, thread_name_prefix="libvirt-call"
        )
        ensure_event_loop()
        self._pump_task = asyncio.create_task(self._pump(), name="libvirt-events")
        try:
            await self._connect()
        except Exception as exc:
            self._last_error = _describe(exc)
            self.log.warning("libvirt unreachable, retrying", error=self._last_error)
            self.state = State.DISCONNECTED
            self.disconnected.set()
            self._reconnector = asyncio.create_task(self._reconnect(), name="libvirt-reconnect")

    async def close(self) -> None:
        self.state = State.CLOSED
        for task in [self._pump_task, self._ticker, self._reconnector, *self._tasks]:
            if task is not None:
                task.cancel()
        tasks = [t for t in (self._pump_task, self._ticker, self._reconnector, *self._tasks) if t]
        if tasks:  # bounded: shutting down never hangs on a stuck worker
            await asyncio.wait(tasks, timeout=self.settings.call_timeout)
        self._fail_waiters("closed")
        conn, self._conn = self._conn, None
        if conn is not None and self._executor is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    self._loop_run(self._disconnect_sync, conn, list(self._callback_ids)),
                    self.settings.call_timeout,
                )
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def set_watching(self, watching: bool) -> None:
        self._watching = watching
        if watching and (self._ticker is None or self._ticker.done()):
            self._ticker = asyncio.get_running_loop().create_task(
                self._tick(), name="libvirt-stats"
            )
        elif not watching and self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None

    # -- queries -----------------------------------------------------------------------
    async def list_vms(self) -> list[VmStatus]:
        conn = self._require()
        samples = await self._call(
            conn, sampling.sample_all, conn, self.settings.vm_id, self._ifaces
        )
        return [self._status(vm_id, s) for vm_id, s in samples]

    async def get_vm(self, vm_id: str) -> VmStatus:
        conn = self._require(vm_id)
        s = await self._call(
            conn, sampling.sample_one, conn, vm_id, self.settings.vm_id, self._ifaces, vm_id=vm_id
        )
        return self._status(vm_id, s)

    def _status(self, vm_id: str, s: Sample) -> VmStatus:
        rates = self._rates.setdefault(vm_id, Rates())
        rates.update(
            s,
            running=s.state in sampling.ACTIVE_STATES,
            min_window=min(MIN_WINDOW, self.settings.stats_interval * 0.8),
        )
        word = status_word(s.state)
        self._known[vm_id] = word
        return VmStatus(
            vmId=vm_id,
            status=word,
            cpu=rates.cpu,
            memory=s.memory if s.state in sampling.ACTIVE_STATES else 0.0,
            network=NetworkRates(rx=rates.rx, tx=rates.tx),
        )

    # -- control -----------------------------------------------------------------------
    async def control(
        self, vm_id: str, action: str, *, force: bool = False, user_id: str | None = None
    ) -> None:
        # user_id is not needed: the core attributes the event this action causes.
        conn = self._require(vm_id)
        waiter: asyncio.Future[None] | None = None
        if action == "stop" and not force and self.settings.shutdown_timeout > 0:
            waiter = self._wait_for(vm_id, "vm-stopped")
        started = time.monotonic()
        try:
            await self._call(conn, self._act_sync, conn, vm_id, action, force, vm_id=vm_id)
        except VirtwireError:
            self._drop_waiter(vm_id, waiter)
            raise
        except Exception as exc:
            self._drop_waiter(vm_id, waiter)
            raise VirtwireError(
                f"VM_{action.upper()}_FAILED",
                self.catalogue(f"vm.action_failed.{action}"),
                vm_id=vm_id,
                details=_describe(exc),
            ) from exc
        if action in ("restart", "reset"):
            self._report_reboot(vm_id, started)
        if waiter is not None:
            try:
                await asyncio.wait_for(waiter, self.settings.shutdown_timeout)
            except TimeoutError:
                self._drop_waiter(vm_id, waiter)
                raise VirtwireError(
                    "VM_STOP_FAILED",
                    self.catalogue("vm.action_failed.stop"),
                    vm_id=vm_id,
                    details=self.catalogue(
                        "libvirt.shutdown_timeout", seconds=f"{self.settings.shutdown_timeout:g}"
                    ),
                ) from None

    def _act_sync(self, conn: Any, vm_id: str, action: str, force: bool) -> None:
        dom = sampling.lookup(conn, vm_id, self.settings.vm_id)
        sampling.run_action(dom, action, force)

    def _report_reboot(self, vm_id: str, since: float) -> None:
        """restart/reset: drivers that send no REBOOT event (the test driver) still get
        their ``vm-rebooted``; one that came already is not reported twice."""
        if self._reboot_reported.get(vm_id, 0.0) >= since:
            return
        self._reboot_reported[vm_id] = time.monotonic()
        assert self._events is not None
        self._events.event("vm-rebooted", vm_id, level="info")
        self._spawn(self._refresh(vm_id))

    # -- events from libvirt (the event thread) ------------------------------------------
    def _post(self, generation: int, vm_id: str, kind: str, event: int, detail: int) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._enqueue, (generation, vm_id, kind, event, detail))

    def _enqueue(self, item: tuple[int, str, str, int, int]) -> None:
        if self._queue is None or item[0] != self._generation:
            return
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.log.warning("libvirt event queue full, re-syncing")
            self._spawn(self._resync())

    async def _pump(self) -> None:
        assert self._queue is not None and self._events is not None
        while True:
            generation, vm_id, kind, event, detail = await self._queue.get()
            if generation != self._generation:
                continue
            if kind == "reboot":
                mapped: tuple[str, str] | None = ("vm-rebooted", "info")
                if time.monotonic() - self._reboot_reported.get(vm_id, -1e9) < REBOOT_DEDUP:
                    mapped = None
                else:
                    self._reboot_reported[vm_id] = time.monotonic()
            else:
                mapped = lifecycle_event(event, detail)
                previous = self._lifecycle.get(vm_id, self._known.get(vm_id))
                if event == RESUMED and previous not in (None, "paused", "suspended"):
                    mapped = None  # QEMU resumes the vCPUs of a domain it is starting
                self._lifecycle[vm_id] = EVENT_STATES.get(event, previous or "unknown")
            if mapped is not None:
                name, level = mapped
                self._events.event(name, vm_id, level=level)
                self._wake(vm_id, name)
            if kind == "lifecycle" and event == UNDEFINED:
                self._forget(vm_id)
                continue
            await self._refresh(vm_id)

    async def _refresh(self, vm_id: str) -> None:
        """Push a fresh status of one VM (or its removal)."""
        assert self._events is not None
        try:
            status = await self.get_vm(vm_id)
        except VmNotFound:
            self._forget(vm_id)
            return
        except VirtwireError:
            return
        self._events.status(status)

    def _forget(self, vm_id: str) -> None:
        assert self._events is not None
        self._rates.pop(vm_id, None)
        self._lifecycle.pop(vm_id, None)
        if self._known.pop(vm_id, None) is not None:
            self._events.removed(vm_id)

    # -- waiters --------------------------------------------------------------------
    def _wait_for(self, vm_id: str, event: str) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(vm_id, []).append((event, fut))
        return fut

    def _drop_waiter(self, vm_id: str, fut: asyncio.Future[None] | None) -> None:
        if fut is None:
            return
        waiters = self._waiters.get(vm_id, [])
        waiters[:] = [w for w in waiters if w[1] is not fut]
        fut.cancel()

    def _wake(self, vm_id: str, event: str) -> None:
        waiters = self._waiters.get(vm_id)
        if not waiters:
            return
        keep = []
        for name, fut in waiters:
            if name == event or (name == "vm-stopped" and event == "vm-crashed"):
                if not fut.done():
                    fut.set_result(None)
            else:
                keep.append((name, fut))
        waiters[:] = keep

    def _fail_waiters(self, reason: str) -> None:
        for waiters in self._waiters.values():
            for _, fut in waiters:
                if not fut.done():
                    fut.set_exception(self._unavailable(details=reason))
        self._waiters.clear()

    # -- periodic stats ----------------------------------------------------------------
    async def _tick(self) -> None:
        assert self._events is not None
        while True:
            await asyncio.sleep(self.settings.stats_interval)
            if self.state is not State.CONNECTED:
                continue
            try:
                statuses = await self.list_vms()
            except VirtwireError:
                continue
            for status in statuses:
                self._events.status(status)

    # -- the connection ----------------------------------------------------------------
    def _unavailable(
        self, vm_id: str | None = None, details: str | None = None
    ) -> BackendUnavailable:
        return BackendUnavailable(
            self.catalogue("backend.unavailable", name=self.name),
            vm_id=vm_id,
            details=details or self._last_error or self.state.value,
        )

    async def vm_addresses(self, vm_id: str) -> list[str]:
        """The domain's IP addresses, IPv4 first (``addresses.domain_addresses``): where the
        ssh plugin finds a VM's SSH server when its config names none."""
        from .addresses import domain_addresses

        return await self.run(domain_addresses, vm_id, self.settings.vm_id, vm_id=vm_id)

    async def run(self, fn: Callable[..., T], *args: Any, vm_id: str | None = None) -> T:
        """Run the blocking ``fn(conn, *args)`` on the current libvirt connection, off the
        event loop and bounded by ``call_timeout``: the one way console transports and other
        modules of this plugin use the connection. Raises ``BackendUnavailable`` while
        disconnected and ``VmNotFound`` when ``fn`` raises ``sampling.NoDomain``."""
        conn = self._require(vm_id)
        return await self._call(conn, fn, conn, *args, vm_id=vm_id)

    def _require(self, vm_id: str | None = None) -> Any:
        if self.state is not State.CONNECTED or self._conn is None:
            raise self._unavailable(vm_id)
        return self._conn

    async def _loop_run(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._loop is not None and self._executor is not None
        return await self._loop.run_in_executor(self._executor, fn, *args)

    async def _call(
        self, conn: Any, fn: Callable[..., T], *args: Any, vm_id: str | None = None
    ) -> T:
        """Run a blocking libvirt call in a worker, bounded by ``call_timeout``; translate
        missing domains and dead connections."""
        import libvirt

        try:
            return await asyncio.wait_for(self._loop_run(fn, *args), self.settings.call_timeout)
        except TimeoutError:
            raise self._unavailable(
                vm_id, details=f"no answer from libvirt within {self.settings.call_timeout:g} s"
            ) from None
        except sampling.NoDomain:
            raise VmNotFound(
                vm_id or "?", self.catalogue("vm.not_found", vm_id=vm_id or "?")
            ) from None
        except libvirt.libvirtError as exc:
            alive = True
            with contextlib.suppress(Exception):
                alive = bool(conn.isAlive())
            if not alive or conn is not self._conn:
                self._last_error = _describe(exc)
                self._lost(self._generation, self._last_error)
                raise self._unavailable(vm_id) from None
            raise

    def _open_sync(self, generation: int) -> tuple[Any, list[int]]:
        import libvirt

        conn = libvirt.open(self.settings.uri)
        ids: list[int] = []
        try:
            if self.settings.keepalive_interval > 0 and not self.settings.uri.startswith("test:"):
                with contextlib.suppress(libvirt.libvirtError):
                    conn.setKeepAlive(
                        self.settings.keepalive_interval, self.settings.keepalive_count
                    )
            by = self.settings.vm_id

            def lifecycle(_c: Any, dom: Any, event: int, detail: int, _o: Any) -> None:
                self._post(generation, sampling.domain_key(dom, by), "lifecycle", event, detail)

            def reboot(_c: Any, dom: Any, _o: Any) -> None:
                self._post(generation, sampling.domain_key(dom, by), "reboot", 0, 0)

            def closed(_c: Any, reason: int, _o: Any) -> None:
                loop = self._loop
                if loop is not None and not loop.is_closed():
                    with contextlib.suppress(RuntimeError):
                        loop.call_soon_threadsafe(
                            self._lost, generation, f"connection closed (reason {reason})"
                        )

            ids.append(
                conn.domainEventRegisterAny(
                    None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, lifecycle, None
                )
            )
            ids.append(
                conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_REBOOT, reboot, None)
            )
            with contextlib.suppress(libvirt.libvirtError):
                conn.registerCloseCallback(closed, None)
        except BaseException:
            self._disconnect_sync(conn, ids)
            raise
        return conn, ids

    @staticmethod
    def _disconnect_sync(conn: Any, ids: list[int]) -> None:
        for cid in ids:
            with contextlib.suppress(Exception):
                conn.domainEventDeregisterAny(cid)
        with contextlib.suppress(Exception):
            conn.unregisterCloseCallback()
        with contextlib.suppress(Exception):
            conn.close()

    async def _connect(self) -> None:
        if self.state is State.CLOSED:
            return
        self.state = State.CONNECTING
        self._generation += 1
        generation = self._generation
        attempt = asyncio.ensure_future(self._loop_run(self._open_sync, generation))
        try:
            conn, ids = await asyncio.wait_for(asyncio.shield(attempt), self.settings.call_timeout)
        except TimeoutError:
            attempt.add_done_callback(self._close_late)
            raise ConnectionError(
                f"no answer from libvirt within {self.settings.call_timeout:g} s"
            ) from None
        if self.state is State.CLOSED:
            self._spawn(self._loop_run(self._disconnect_sync, conn, ids))
            return
        self._conn, self._callback_ids = conn, ids
        self.state = State.CONNECTED
        self._last_error = ""
        self.disconnected.clear()
        self.connected.set()
        self.log.info("libvirt connected")
        await self._resync()

    def _close_late(self, attempt: asyncio.Future[tuple[Any, list[int]]]) -> None:
        """A connection that opened after its attempt timed out is not used: close it."""
        if attempt.cancelled() or attempt.exception() is not None:
            return
        conn, ids = attempt.result()
        if self._executor is not None and self.state is not State.CLOSED:
            self._spawn(self._loop_run(self._disconnect_sync, conn, ids))
        else:
            self._disconnect_sync(conn, ids)

    async def _resync(self) -> None:
        """Report every VM whose status changed while we were not listening (all of them
        after the first connect) and the ones that disappeared."""
        assert self._events is not None
        before = dict(self._known)
        try:
            statuses = await self.list_vms()
        except VirtwireError:
            return
        seen = set()
        for status in statuses:
            seen.add(status.vmId)
            if before.get(status.vmId) != status.status or not before:
                self._events.status(status)
        for vm_id in before.keys() - seen:
            self._forget(vm_id)

    def _lost(self, generation: int, reason: str) -> None:
        if generation != self._generation or self.state is not State.CONNECTED:
            return
        self.state = State.DISCONNECTED
        self._last_error = reason
        self.connected.clear()
        self.disconnected.set()
        self.log.warning("libvirt connection lost, reconnecting", reason=reason)
        conn, ids, self._conn, self._callback_ids = self._conn, self._callback_ids, None, []
        self._generation += 1  # late callbacks of the old connection are ignored
        if conn is not None:
            self._spawn(self._loop_run(self._disconnect_sync, conn, ids))
        self._fail_waiters(reason)
        if self._reconnector is None or self._reconnector.done():
            self._reconnector = asyncio.get_running_loop().create_task(
                self._reconnect(), name="libvirt-reconnect"
            )

    async def _reconnect(self) -> None:
        delay = self.settings.reconnect_min
        while self.state is not State.CLOSED:
            await asyncio.sleep(delay)
            try:
                await self._connect()
                return
            except Exception as exc:
                self._last_error = _describe(exc)
                if self.state is State.CLOSED:
                    # close() ran meanwhile; its cancellation may have been absorbed by a
                    # wait_for that completed at the same moment
                    return
                self.state = State.DISCONNECTED
                self.log.debug("libvirt reconnect failed", error=self._last_error)
            delay = min(delay * 2, self.settings.reconnect_max)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _describe(exc: BaseException) -> str:
    get = getattr(exc, "get_error_message", None)
    if callable(get):
        with contextlib.suppress(Exception):
            msg = get()
            if msg:
                return str(msg)
    return str(exc) or type(exc).__name__
