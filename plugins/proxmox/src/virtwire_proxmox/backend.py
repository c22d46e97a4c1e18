"""The Proxmox VE backend: one poller of ``/cluster/resources`` diffed into status pushes and
events, ``status/current`` confirmations, control actions that wait for their task."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from dataclasses import dataclass
from typing import Any

from virtwire import BackendUnavailable, VirtwireError, VmNotFound
from virtwire.backends import NetworkRates, VmEvents, VmStatus

from .client import ApiError, PveClient, Unauthorized, Unreachable
from .settings import ProxmoxSettings
from .states import (
    ACTION_EVENTS,
    ACTIVE,
    COMMANDS,
    current_word,
    resource_word,
    transition,
)
from .tasks import TaskFailed, TaskTimeout, wait_task

#: Network counters unchanged for this long mean no traffic (pvestatd refreshes every 10 s).
NET_STALE = 25.0
#: A boot moment this much later than the known one (from status/current) is a reboot.
REBOOT_SLACK = 2.0


class State(enum.Enum):
    NEW = "new"
    UP = "up"
    DOWN = "down"
    CLOSED = "closed"


@dataclass
class Vm:
    """What the backend knows of one VM."""

    vm_id: str
    node: str
    vmid: int
    name: str
    status: str = "unknown"
    cpu: float = 0.0
    memory: float = 0.0
    boot: float | None = None  # monotonic moment the VM (last) booted, from its uptime
    cpu_zero: bool = True
    rx: float = 0.0
    tx: float = 0.0
    net: tuple[int, int, float] | None = None  # netin, netout, when they last changed
    applied: int = 0  # sequence number of the last status/current applied

    def snapshot(self) -> VmStatus:
        active = self.status in ACTIVE
        return VmStatus(
            vmId=self.vm_id,
            status=self.status,
            cpu=self.cpu if active else 0.0,
            memory=self.memory if active else 0.0,
            network=NetworkRates(rx=self.rx, tx=self.tx) if active else NetworkRates(),
        )


class ProxmoxBackend:
    """A :class:`virtwire.backends.HypervisorBackend` over one Proxmox VE cluster."""

    name = "proxmox"

    def __init__(
        self,
        settings: ProxmoxSettings,
        catalogue: Any,
        log: Any,
        *,
        password: str | None = None,
        token: str | None = None,
    ) -> None:
        self.settings = settings
        self.catalogue = catalogue
        self.log = log.bind(backend=self.name, host=settings.host) if hasattr(log, "bind") else log
        self._password = password
        self._token = token
        self.client: PveClient | None = None
        self.state = State.NEW
        self._events: VmEvents | None = None
        self._vms: dict[str, Vm] = {}
        self._ids: dict[tuple[str, int, Any], str] = {}  # (node, vmid, name) -> vmId
        self._last_error = ""
        self._poller: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._seq = 0
        self._watching = False
        self._polled = False
        self._poke = asyncio.Event()
        self._prefix = settings.vm_id.split("{", 1)[0]
        #: Polls done and the wall time of the last one (for the benchmark and tests).
        self.polls = 0
        self.up = asyncio.Event()
        self.down = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self, events: VmEvents) -> None:
        self._events = events
        self.up, self.down, self._poke = asyncio.Event(), asyncio.Event(), asyncio.Event()
        self.client = PveClient(self.settings, self._password, self._token)
        try:
            await self._poll()
        except (Unreachable, Unauthorized, ApiError) as exc:
            self._went_down(exc)
        self._poller = asyncio.create_task(self._run(), name="proxmox-poller")

    async def close(self) -> None:
        self.state = State.CLOSED
        tasks = [t for t in (self._poller, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=self.settings.call_timeout)
        if self.client is not None:
            self.client.close()

    def set_watching(self, watching: bool) -> None:
        self._watching = watching

    def poll_now(self) -> None:
        """Ask the poller to poll at once instead of at the end of its interval."""
        self._poke.set()

    # -- queries -----------------------------------------------------------------------
    async def list_vms(self) -> list[VmStatus]:
        self._require()
        return [vm.snapshot() for vm in self._vms.values()]

    async def get_vm(self, vm_id: str) -> VmStatus:
        return self._vm(vm_id).snapshot()

    def locate(self, vm_id: str) -> tuple[str, int]:
        """The node and numeric VMID of ``vm_id`` (console transports use it)."""
        vm = self._vm(vm_id)
        return vm.node, vm.vmid

    def owns(self, vm_id: str) -> bool:
        return vm_id in self._vms

    def known_status(self, vm_id: str) -> str:
        """The last status word known for ``vm_id`` (no I/O; ``"unknown"`` if none)."""
        vm = self._vms.get(vm_id)
        return vm.status if vm is not None else "unknown"

    def _vm(self, vm_id: str) -> Vm:
        if not vm_id.startswith(self._prefix):
            raise VmNotFound(vm_id, self.catalogue("vm.not_found", vm_id=vm_id))
        vm = self._vms.get(vm_id)
        if vm is None:
            self._require(vm_id)
            raise VmNotFound(vm_id, self.catalogue("vm.not_found", vm_id=vm_id))
        self._require(vm_id)
        return vm

    def _require(self, vm_id: str | None = None) -> PveClient:
        if self.state is not State.UP or self.client is None:
            raise self.unavailable(vm_id)
        return self.client

    def unavailable(self, vm_id: str | None = None, details: str | None = None) -> Exception:
        return BackendUnavailable(
            self.catalogue("backend.unavailable", name=self.name),
            vm_id=vm_id,
            details=details or self._last_error or self.state.value,
        )

    # -- control -----------------------------------------------------------------------
    async def control(
        self, vm_id: str, action: str, *, force: bool = False, user_id: str | None = None
    ) -> None:
        vm = self._vm(vm_id)
        client = self._require(vm_id)
        command = COMMANDS[(action, force)]
        event = ACTION_EVENTS[action]
        code = f"VM_{action.upper()}_FAILED"
        node, vmid = vm.node, vm.vmid
        try:
            upid = await client.call(lambda api: api.nodes(node).qemu(vmid).status(command).post())
            await wait_task(
                client,
                str(upid),
                timeout=self.settings.task_timeout,
                poll=self.settings.task_poll,
                log_lines=self.settings.task_log_lines,
            )
        except TaskFailed as exc:
            raise VirtwireError(
                code,
                self.catalogue(f"vm.action_failed.{action}"),
                vm_id=vm_id,
                details={"exitstatus": exc.exitstatus, "upid": exc.upid, "log": exc.log},
            ) from None
        except TaskTimeout as exc:
            raise VirtwireError(
                code, self.catalogue(f"vm.action_failed.{action}"), vm_id=vm_id, details=str(exc)
            ) from None
        except ApiError as exc:
            raise VirtwireError(
                code,
                self.catalogue(f"vm.action_failed.{action}"),
                vm_id=vm_id,
                details=exc.message,
            ) from None
        except (Unreachable, Unauthorized) as exc:
            raise self.unavailable(vm_id, details=str(exc)) from None
        before = vm.boot
        emitted = await self._confirm(vm)
        if event == "vm-rebooted" and "vm-rebooted" not in emitted:
            # the guest came back before we looked, or rebooted without a new boot moment
            self._emit(vm, "vm-rebooted", "info")
            if vm.boot == before:
                vm.boot = time.monotonic()

    def _emit(self, vm: Vm, event: str, level: str) -> None:
        # no user: the core attributes the event to the vm-control that caused it
        assert self._events is not None
        self._events.event(event, vm.vm_id, level=level)

    # -- status/current ----------------------------------------------------------------
    async def _confirm(self, vm: Vm, *, push: bool = False) -> list[str]:
        """Read ``status/current`` (it shows a pause; cluster/resources does not), apply it
        and push the VM's status if it changed. Returns the events emitted."""
        assert self.client is not None and self._events is not None
        self._seq += 1
        seq = self._seq
        node, vmid = vm.node, vm.vmid
        try:
            current: dict[str, Any] = await self.client.call(
                lambda api: api.nodes(node).qemu(vmid).status.current.get()
            )
        except ApiError as exc:
            if exc.status in (404, 500) and self._vms.get(vm.vm_id) is vm:
                self.log.debug("status/current failed", vm=vm.vm_id, error=exc.message)
            return []
        if seq <= vm.applied or self._vms.get(vm.vm_id) is not vm:
            return []  # a newer answer was applied meanwhile, or the VM is gone
        vm.applied = seq
        now = time.monotonic()
        word = current_word(current)
        emitted = []
        move = transition(vm.status, word)
        boot = now - float(current["uptime"]) if word in ACTIVE and current.get("uptime") else None
        rebooted = (
            move is None
            and word in ACTIVE
            and boot is not None
            and vm.boot is not None
            and boot > vm.boot + REBOOT_SLACK
        )
        changed = word != vm.status
        vm.status = word
        if word in ACTIVE:
            vm.boot = boot if boot is not None else vm.boot
            self._figures(vm, current, now)
        else:
            vm.boot = None
        if move is not None:
            self._emit(vm, *move)
            emitted.append(move[0])
        if rebooted:
            self._emit(vm, "vm-rebooted", "info")
            emitted.append("vm-rebooted")
        if changed or emitted or push or self._watching:
            self._events.status(vm.snapshot())
        return emitted

    # -- polling -----------------------------------------------------------------------
    async def _run(self) -> None:
        delay = self.settings.retry_min
        while self.state is not State.CLOSED:
            wait = self.settings.interval if self.state is State.UP else delay
            self._poke.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), wait)
            try:
                await self._poll()
                delay = self.settings.retry_min
            except (Unreachable, Unauthorized, ApiError) as exc:
                self._went_down(exc)
                if self.state is State.DOWN and wait != self.settings.interval:
                    delay = min(delay * 2, self.settings.retry_max)
            except Exception as exc:  # never let the poller die
                self.log.error("proxmox poll failed", error=f"{type(exc).__name__}: {exc}")

    def _went_down(self, exc: Exception) -> None:
        kind = "login refused" if isinstance(exc, Unauthorized) else "unreachable"
        self._last_error = f"{kind}: {exc}"
        was = self.state
        self.state = State.DOWN
        self.up.clear()
        self.down.set()
        if was is not State.DOWN:
            self.log.warning("proxmox " + kind + ", retrying", error=str(exc))
            if self._events is not None:
                # subscribers see the VMs as unreachable, not their last status
                self._events.unavailable(self._last_error)

    async def _poll(self) -> None:
        assert self.client is not None and self._events is not None
        rows: list[dict[str, Any]] = await self.client.call(
            lambda api: api.cluster.resources.get(type="vm")
        )
        if self.state is State.CLOSED:
            return
        recovered = self.state is State.DOWN
        if self.state is not State.UP:
            if recovered:
                self.log.info("proxmox reachable again")
                self._events.available()
            self.state = State.UP
            self._last_error = ""
            self.down.clear()
            self.up.set()
        now = time.monotonic()
        first = not self._polled
        nodes = set(self.settings.nodes)
        seen: set[str] = set()
        confirm: list[Vm] = []
        push: list[Vm] = []
        for row in rows:
            if row.get("type") != "qemu" or row.get("template"):
                continue
            node = str(row.get("node") or "")
            if nodes and node not in nodes:
                continue
            try:
                vmid = int(row["vmid"])
            except (KeyError, TypeError, ValueError):
                continue
            vm_id = self._vm_id_of(row, node, vmid)
            if vm_id in seen:
                self.log.warning("two Proxmox VMs map to one vmId; keeping the first", vm=vm_id)
                continue
            seen.add(vm_id)
            vm = self._vms.get(vm_id)
            word = resource_word(row)
            if vm is None:
                vm = Vm(vm_id, node, vmid, str(row.get("name") or vmid), status=word)
                self._vms[vm_id] = vm
                self._figures(vm, row, now)
                if word in ACTIVE and row.get("uptime"):
                    vm.boot = now - float(row["uptime"])
                if first:
                    push.append(vm)
                else:
                    self._events.added(vm.snapshot())  # vm-created, and its status
                if word == "running" and vm.cpu_zero:
                    confirm.append(vm)  # idle or paused: only status/current tells
                continue
            vm.node, vm.name = node, str(row.get("name") or vmid)
            before_zero = vm.cpu_zero
            if vm.status in ACTIVE:
                self._figures(vm, row, now)
            shown = "running" if vm.status in ACTIVE - {"suspended"} else vm.status
            row_boot = now - float(row["uptime"]) if row.get("uptime") else None
            if (
                (word != shown and not (vm.status == "suspended" and word == "running"))
                or vm.status in ("paused", "starting", "shutting-down", "blocked")
                or (word == "running" and vm.cpu_zero != before_zero)
                or (
                    row_boot is not None
                    and vm.boot is not None
                    and row_boot > vm.boot + max(15.0, 2 * self.settings.interval)
                )
            ):
                confirm.append(vm)
            elif self._watching or recovered:  # after an outage every VM's status again
                push.append(vm)
        gone = [vm for vm_id, vm in self._vms.items() if vm_id not in seen]
        for vm in gone:
            del self._vms[vm.vm_id]
            self._emit(vm, "vm-deleted", "info")
            self._events.removed(vm.vm_id)
        self._polled = True
        self.polls += 1
        for vm in push:
            self._events.status(vm.snapshot())
        if confirm:
            # at most `workers` confirmations in flight: the executor's queue stays short
            gate = asyncio.Semaphore(self.settings.workers)

            async def confirm_one(vm: Vm) -> None:
                async with gate:
                    await self._confirm(vm, push=recovered)

            await asyncio.gather(*(confirm_one(vm) for vm in confirm), return_exceptions=True)

    def _vm_id_of(self, row: dict[str, Any], node: str, vmid: int) -> str:
        key = (node, vmid, row.get("name"))
        vm_id = self._ids.get(key)
        if vm_id is None:
            if len(self._ids) > 100_000:
                self._ids.clear()
            vm_id = self._ids[key] = self.settings.vm_id.format(
                vmid=vmid, node=node, name=key[2] or vmid, cluster=self.settings.cluster
            )
        return vm_id

    @staticmethod
    def _figures(vm: Vm, row: dict[str, Any], now: float) -> None:
        """cpu % (of the VM's vCPUs), memory % and network bytes/s from a resources row or a
        status/current answer (their fields have the same names and units)."""
        cpu = float(row.get("cpu") or 0.0) * 100.0
        vm.cpu = cpu if 0.0 <= cpu <= 100.0 else (0.0 if cpu < 0.0 else 100.0)
        vm.cpu_zero = cpu <= 0.0
        maxmem = row.get("maxmem")
        memory = float(row.get("mem") or 0) / maxmem * 100.0 if maxmem else 0.0
        vm.memory = memory if 0.0 <= memory <= 100.0 else (0.0 if memory < 0.0 else 100.0)
        netin, netout = int(row.get("netin") or 0), int(row.get("netout") or 0)
        last = vm.net
        if last is None:
            vm.net = (netin, netout, now)
        elif (netin, netout) != last[:2]:
            span = now - last[2]
            if span > 0 and netin >= last[0] and netout >= last[1]:
                vm.rx = (netin - last[0]) / span
                vm.tx = (netout - last[1]) / span
            else:  # counters went back: the VM restarted
                vm.rx = vm.tx = 0.0
            vm.net = (netin, netout, now)
        elif now - last[2] > NET_STALE:
            vm.rx = vm.tx = 0.0
