"""The libvirt hypervisor backend: status, stats, control, lifecycle events, reconnects."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from typing import Any, TypeVar

from virtwire import BackendUnavailable, VirtwireError, VmNotFound
from virtwire.backends import NetworkRates, VmEvents, VmStatus

from . import sampling
from .connection import EventItem, LibvirtConnection, State, describe
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
#: Lifecycle events waiting to be reported (behind a control call's reply or a refresh);
#: beyond this the backend re-syncs instead.
EVENT_QUEUE = 1024


class LibvirtBackend:
    """A :class:`virtwire.backends.HypervisorBackend` over one libvirt connection (see
    :mod:`virtwire_libvirt.connection` for the connection, its threads and reconnects)."""

    name = "libvirt"

    def __init__(self, settings: LibvirtSettings, catalogue: Any, log: Any) -> None:
        self.settings = settings
        self.catalogue = catalogue
        self.log = log.bind(backend=self.name, uri=settings.uri) if hasattr(log, "bind") else log
        self.connection = LibvirtConnection(
            settings,
            catalogue,
            self.log,
            name=self.name,
            on_event=self._enqueue,
            on_up=self._on_up,
            on_down=self._on_down,
        )
        self._events: VmEvents | None = None
        self._rates: dict[str, Rates] = {}
        self._known: dict[str, str] = {}  # vm_id -> last status word reported
        self._lifecycle: dict[str, str] = {}  # vm_id -> status word from the last event
        self._ifaces: dict[tuple[str, int], list[str]] = {}
        #: Events waiting: behind a held VM's (see _hold) or a refresh in progress, in order.
        self._backlog: collections.deque[EventItem] = collections.deque()
        self._refreshing: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._waiters: dict[str, list[tuple[str, asyncio.Future[None]]]] = {}
        self._reboot_reported: dict[str, float] = {}
        #: vmId -> control calls in flight whose reply its events wait for.
        self._held: dict[str, int] = {}
        self._watching = False
        self._down = False

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self, events: VmEvents) -> None:
        self._events = events
        await self.connection.start()

    async def close(self) -> None:
        self._backlog.clear()
        tasks = [t for t in (self._refreshing, self._ticker, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:  # bounded: shutting down never hangs on a stuck worker
            await asyncio.wait(tasks, timeout=self.settings.call_timeout)
        await self.connection.close()
        self._fail_waiters("closed")

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
        samples = await self.connection.call(sampling.sample_all, self.settings.vm_id, self._ifaces)
        return [self._status(vm_id, s) for vm_id, s in samples]

    async def get_vm(self, vm_id: str) -> VmStatus:
        s = await self.connection.call(
            sampling.sample_one, vm_id, self.settings.vm_id, self._ifaces, vm_id=vm_id
        )
        return self._status(vm_id, s)

    def _figures(self, vm_id: str, s: Sample) -> Rates:
        """Fold a sample into the VM's figures (without reporting a status)."""
        rates = self._rates.setdefault(vm_id, Rates())
        rates.update(
            s,
            running=s.state in sampling.ACTIVE_STATES,
            min_window=min(MIN_WINDOW, self.settings.stats_interval * 0.8),
        )
        return rates

    def _status(self, vm_id: str, s: Sample) -> VmStatus:
        return self._as_status(vm_id, status_word(s.state), self._figures(vm_id, s))

    def _as_status(self, vm_id: str, word: str, rates: Rates | None) -> VmStatus:
        self._known[vm_id] = word
        if rates is None or word not in ACTIVE_WORDS:
            return VmStatus(vmId=vm_id, status=word)
        return VmStatus(
            vmId=vm_id,
            status=word,
            cpu=rates.cpu,
            memory=rates.memory,
            network=NetworkRates(rx=rates.rx, tx=rates.tx),
        )

    # -- control -----------------------------------------------------------------------
    async def control(
        self, vm_id: str, action: str, *, force: bool = False, user_id: str | None = None
    ) -> None:
        # user_id is not needed: the core attributes the event this action causes.
        if self.connection.state is not State.CONNECTED:
            raise self._unavailable(vm_id)
        waiter: asyncio.Future[None] | None = None
        if action == "stop" and not force and self.settings.shutdown_timeout > 0:
            waiter = self._wait_for(vm_id, "vm-stopped")
        started = time.monotonic()
        # The VM's events wait until the reply is written. The reply needs only the action;
        # while anyone watches statuses, the counters after it are read in the same worker
        # trip once the reply can go, and folded into the VM's figures (the status the event
        # implies is published at once, with the figures known then; the next stats tick
        # has the fresh ones).
        self._hold(vm_id)
        loop = asyncio.get_running_loop()

        def sampled(sample: Sample | None) -> None:
            if sample is not None:
                self._figures(vm_id, sample)

        after = (
            ((lambda conn, _: self._sample_sync(conn, vm_id)), sampled) if self._watching else None
        )
        try:
            await self.connection.call(
                self._act_sync, vm_id, action, force, vm_id=vm_id, after=after
            )
        except VirtwireError:
            loop.call_soon(self._release, vm_id)  # after the error reply
            self._drop_waiter(vm_id, waiter)
            raise
        except Exception as exc:
            loop.call_soon(self._release, vm_id)
            self._drop_waiter(vm_id, waiter)
            raise VirtwireError(
                f"VM_{action.upper()}_FAILED",
                self.catalogue(f"vm.action_failed.{action}"),
                vm_id=vm_id,
                details=describe(exc),
            ) from exc
        except BaseException:  # cancelled: nothing will report for it
            loop.call_soon(self._release, vm_id)
            raise
        if waiter is None:
            # the core writes the reply when this returns, before this callback runs
            loop.call_soon(self._release, vm_id)
        else:
            self._release(vm_id)  # the reply waits for the VM's stop event: let its events flow
        if action in ("restart", "reset"):
            # drivers that send no REBOOT event (the test driver) still get their
            # vm-rebooted; _handle reports one of the two when both come
            since = int(started * 1e6)  # µs: an int fits the event item
            self._enqueue((self.connection.generation, vm_id, "acted-reboot", since, 0))
        if waiter is not None:
            try:
                async with asyncio.timeout(self.settings.shutdown_timeout):
                    await waiter
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
        """The action (nothing of libvirt's goes back to the loop: a ``virDomain`` freed
        there would be one more libvirt call on the loop's thread)."""
        dom = sampling.lookup(conn, vm_id, self.settings.vm_id)
        sampling.run_action(dom, action, force)

    def _sample_sync(self, conn: Any, vm_id: str) -> Sample | None:
        """The domain's counters right after an action (``None`` if it is gone)."""
        import libvirt

        try:
            return sampling.sample(sampling.lookup(conn, vm_id, self.settings.vm_id), self._ifaces)
        except (libvirt.libvirtError, sampling.NoDomain):
            return None

    def _hold(self, vm_id: str) -> None:
        """While a control action's libvirt call runs, the events of its VM (and those after
        them) wait: the caller's reply goes out before their fan-out."""
        self._held[vm_id] = self._held.get(vm_id, 0) + 1

    def _release(self, vm_id: str) -> None:
        left = self._held[vm_id] - 1
        if left:
            self._held[vm_id] = left
        else:
            del self._held[vm_id]
            self._run_backlog()

    # -- events from libvirt (on the loop, in the order libvirt sent them) ----------------
    def _enqueue(self, item: EventItem) -> None:
        """Report an event at once, unless earlier ones wait or its VM is held."""
        backlog = self._backlog
        if backlog or self._refreshing is not None or item[1] in self._held:
            if len(backlog) >= EVENT_QUEUE:
                self.log.warning("libvirt event backlog full, re-syncing")
                self._spawn(self._resync())
                return
            backlog.append(item)
            return
        self._report(item)

    def _run_backlog(self) -> None:
        """Report the waiting events, in order, up to one of a held VM or a refresh."""
        backlog = self._backlog
        while backlog and self._refreshing is None and backlog[0][1] not in self._held:
            self._report(backlog.popleft())

    def _report(self, item: EventItem) -> None:
        try:
            self._handle(item)
        except Exception:  # a bug here must not stop the events after it
            self.log.exception("libvirt event not reported", vm=item[1], kind=item[2])

    def _handle(self, item: EventItem) -> None:
        assert self._events is not None
        generation, vm_id, kind, event, detail = item
        if generation != self.connection.generation:
            return
        implied: str | None = None
        if kind in ("reboot", "acted-reboot"):
            mapped: tuple[str, str] | None = ("vm-rebooted", "info")
            last = self._reboot_reported.get(vm_id, -1e9)
            if kind == "acted-reboot" and last * 1e6 >= event:
                mapped = None  # libvirt's own REBOOT for this action came first
            elif kind == "reboot" and time.monotonic() - last < REBOOT_DEDUP:
                mapped = None  # reported already for the action that caused it
            else:
                self._reboot_reported[vm_id] = time.monotonic()
                implied = self._known.get(vm_id)
        else:
            mapped = lifecycle_event(event, detail)
            previous = self._lifecycle.get(vm_id, self._known.get(vm_id))
            if event == RESUMED and previous not in (None, "paused", "suspended"):
                mapped = None  # QEMU resumes the vCPUs of a domain it is starting
            self._lifecycle[vm_id] = EVENT_STATES.get(event, previous or "unknown")
            implied = EVENT_STATES.get(event)
            if implied is not None and implied == self._known.get(vm_id):
                implied = None  # no change (QEMU's RESUMED right after STARTED)
        if implied is not None:
            # the status the event implies, at once, with the figures last sampled
            # (the next stats tick refreshes them): one fan-out, no worker trip
            status = self._as_status(vm_id, implied, self._rates.get(vm_id))
            if implied not in ACTIVE_WORDS:
                self._rates.pop(vm_id, None)
            self._events.status(status)
        if mapped is not None:
            name, level = mapped
            self._events.event(name, vm_id, level=level)
            self._wake(vm_id, name)
        if kind == "lifecycle" and event == UNDEFINED:
            self._forget(vm_id)
        elif kind == "lifecycle" and event not in EVENT_STATES:
            # e.g. DEFINED: the state is not in the event; the events after it wait
            self._refreshing = asyncio.get_running_loop().create_task(
                self._refresh_then_go_on(vm_id), name="libvirt-refresh"
            )

    async def _refresh_then_go_on(self, vm_id: str) -> None:
        try:
            await self._refresh(vm_id)
        finally:
            self._refreshing = None
            self._run_backlog()

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
            if self.connection.state is not State.CONNECTED:
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
        return self.connection.unavailable(vm_id, details)

    async def vm_addresses(self, vm_id: str) -> list[str]:
        """The domain's IP addresses, IPv4 first (``addresses.domain_addresses``): where the
        ssh plugin finds a VM's SSH server when its config names none."""
        from .addresses import domain_addresses

        return await self.run(domain_addresses, vm_id, self.settings.vm_id, vm_id=vm_id)

    async def run(self, fn: Callable[..., T], *args: Any, vm_id: str | None = None) -> T:
        """Run the blocking ``fn(conn, *args)`` on the current libvirt connection, off the
        event loop and bounded by ``call_timeout``: the one way console transports and other
        modules of this plugin use the connection. Raises ``BackendUnavailable`` while
        disconnected and ``VmNotFound`` when ``fn`` raises ``sampling.NoDomain``. Calls for
        one ``vm_id`` run in order. See :mod:`virtwire_libvirt.connection`."""
        return await self.connection.call(fn, *args, vm_id=vm_id)

    def add_connection_listener(self, listener: Callable[[Any], None]) -> Callable[[], None]:
        """``listener(conn)`` runs in a thread of each libvirt connection before that
        connection is closed or replaced (abort its streams there); returns a function
        that removes the listener. See :mod:`virtwire_libvirt.connection`."""
        return self.connection.add_listener(listener)

    @property
    def state(self) -> State:
        return self.connection.state

    @property
    def connected(self) -> asyncio.Event:
        return self.connection.connected

    @property
    def disconnected(self) -> asyncio.Event:
        return self.connection.disconnected

    async def _on_up(self) -> None:
        was_down, self._down = self._down, False
        await self._resync(everything=was_down)
        if was_down and self._events is not None:
            self._events.available()

    def _on_down(self, reason: str) -> None:
        self._down = True
        self._fail_waiters(reason)
        if self._events is not None:
            self._events.unavailable(reason)

    async def _resync(self, *, everything: bool = False) -> None:
        """Report every VM whose status changed while we were not listening (all of them
        after the first connect and after the hypervisor was unreachable) and the ones
        that disappeared."""
        assert self._events is not None
        before = dict(self._known)
        try:
            statuses = await self.list_vms()
        except VirtwireError:
            return
        seen = set()
        for status in statuses:
            seen.add(status.vmId)
            if everything or before.get(status.vmId) != status.status or not before:
                self._events.status(status)
        for vm_id in before.keys() - seen:
            self._forget(vm_id)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


#: Status words of a domain with a QEMU process (its figures mean something).
ACTIVE_WORDS = frozenset(status_word(state) for state in sampling.ACTIVE_STATES)
