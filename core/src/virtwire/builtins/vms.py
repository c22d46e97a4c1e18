"""VM features on the backend hooks: ``vm-status`` / ``vm-status-all`` topics,
``vm-control``, and ``system-event`` frames from backend events."""

from __future__ import annotations

import asyncio
import fnmatch
import functools
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

import msgspec

from ..backends import ACTION_EVENTS, Action, HypervisorBackend, VmId, VmStatus
from ..errors import BackendUnavailable, VirtwireError, VmNotFound
from ..hookspecs import hookimpl
from ..protocol import convert_data, to_builtins
from ..topics import Subscription
from ..wire import flush_now
from .attribution import PendingActions

if TYPE_CHECKING:
    from ..gateway import Gateway
    from ..session import Session

CHANNEL = "vm-status"
EVENTS = "system-event"
#: Retry delays of a backend whose ``start()`` raised: doubling from the first to the last.
START_RETRY = (1.0, 60.0)


def _may_see(session: Session, vm_id: str | None) -> bool:
    """Whether a ``system-event`` about ``vm_id`` goes to ``session`` (None: about no VM
    in particular). The ``vms`` claim is matched once per distinct claim and VM, not once
    per connection: a fan-out to many connections of few users costs a lookup each."""
    p = session.principal
    if p is None or "vm:read" not in p.scopes:
        return False
    vms = p.vms
    return vms is None or vm_id is None or _claim_sees(vms, vm_id)


@functools.lru_cache(maxsize=4096)
def _claim_sees(vms: tuple[str, ...], vm_id: str) -> bool:
    return any(fnmatch.fnmatchcase(vm_id, pattern) for pattern in vms)


class _Events:
    """The ``VmEvents`` sink one backend reports to."""

    def __init__(self, registry: VmRegistry, backend: HypervisorBackend) -> None:
        self.registry = registry
        self.backend = backend

    def status(self, status: VmStatus) -> None:
        self.registry.push(self.backend, status)

    def event(
        self,
        event: str,
        vm_id: str,
        *,
        level: str = "info",
        message: str | None = None,
        user_id: str | None = None,
        details: object = None,
    ) -> None:
        self.registry.event(event, vm_id, level, message, user_id, details)

    def added(self, status: VmStatus, *, announce: bool = True) -> None:
        self.registry.push(self.backend, status)
        if announce:
            self.registry.event("vm-created", status.vmId, "info", None, None, None)

    def removed(self, vm_id: str) -> None:
        self.registry.forget(vm_id)

    def unavailable(self, reason: str) -> None:
        self.registry.backend_down(self.backend, reason)

    def available(self) -> None:
        self.registry.backend_up(self.backend)


class VmRegistry:
    """Routes VM requests to the backend that owns the VM and keeps each VM's latest status."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.backends = list(gateway.backends)
        self.channel = gateway.hub.shared(CHANNEL, latest=True)
        self.channel.on_active(self._watching)
        self.events = gateway.hub.broadcast_channel(EVENTS, _may_see)
        # vm-control for a VM owned here, sent to another gateway (see virtwire.broker)
        gateway.hub.serve("vm-control", self._routed_control)
        self.owner: dict[str, HypervisorBackend] = {}
        self.latest: dict[str, tuple[int, dict[str, Any]]] = {}
        self._seq = 0
        #: Which user's vm-control caused the next lifecycle event of a VM.
        self.pending = PendingActions()
        #: Backends whose ``start()`` raised; retried with backoff until they start.
        self.down: set[HypervisorBackend] = set()
        self._retries: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        for backend in self.backends:
            if not await self._start_one(backend):
                self.down.add(backend)
                task = asyncio.create_task(self._retry_start(backend))
                self._retries.add(task)
                task.add_done_callback(self._retries.discard)
        if self.gateway.hub.broker is not None:
            await self._announce()

    async def _announce(self) -> None:
        """With a broker, publish every VM's status once: other gateways' subscribers see
        the VMs this gateway serves (and the broker learns which gateway owns which VM)."""
        for backend in self._up():
            try:
                statuses = await backend.list_vms()
            except Exception as exc:
                self.gateway.log.warning(
                    "backend list failed", backend=backend.name, error=repr(exc)
                )
                continue
            for status in statuses:
                self.push(backend, status)

    async def _start_one(self, backend: HypervisorBackend, attempt: int = 1) -> bool:
        try:
            await backend.start(_Events(self, backend))
        except Exception as exc:
            self.gateway.log.error(
                "backend failed to start",
                backend=getattr(backend, "name", "?"),
                attempt=attempt,
                error=f"{type(exc).__name__}: {exc}",
            )
            return False
        return True

    async def _retry_start(self, backend: HypervisorBackend) -> None:
        delay, longest = START_RETRY
        attempt = 1
        while True:
            await asyncio.sleep(delay)
            attempt += 1
            if await self._start_one(backend, attempt):
                self.down.discard(backend)
                self.gateway.log.info("backend started", backend=backend.name, attempt=attempt)
                if len(self.channel):
                    self._watching(True)
                return
            delay = min(delay * 2, longest)

    def _up(self) -> list[HypervisorBackend]:
        return [b for b in self.backends if b not in self.down]

    def _down_error(self, backend: HypervisorBackend) -> BackendUnavailable:
        return BackendUnavailable(
            self.gateway.catalogue("backend.unavailable", name=backend.name),
            details="start failed; retrying",
        )

    async def close(self) -> None:
        for task in list(self._retries):
            task.cancel()
        if self._retries:
            await asyncio.wait(list(self._retries))
        for backend in self.backends:
            try:
                await backend.close()
            except Exception as exc:
                self.gateway.log.error(
                    "backend failed to close",
                    backend=getattr(backend, "name", "?"),
                    error=f"{type(exc).__name__}: {exc}",
                )

    def _watching(self, active: bool) -> None:
        for backend in self._up():
            try:
                backend.set_watching(active)
            except Exception as exc:
                self.gateway.log.error(
                    "backend set_watching failed", backend=backend.name, error=repr(exc)
                )

    # -- from backends -----------------------------------------------------------------
    def _store(self, backend: HypervisorBackend, status: VmStatus, seq: int) -> dict[str, Any]:
        data = to_builtins(status)
        self.owner[status.vmId] = backend
        self.latest[status.vmId] = (seq, data)
        return data

    def push(self, backend: HypervisorBackend, status: VmStatus) -> None:
        self._seq += 1
        data = self._store(backend, status, self._seq)
        self.channel.publish("vm-status", data, key=status.vmId)

    def event(
        self,
        event: str,
        vm_id: str,
        level: str,
        message: str | None,
        user_id: str | None,
        details: object,
    ) -> None:
        user_id = self.pending.claim(vm_id, event, user_id)
        data: dict[str, Any] = {
            "event": event,
            "vmId": vm_id,
            "message": message or self.gateway.catalogue(f"vm.event.{event}"),
            "level": level,
        }
        if user_id is not None:
            data["userId"] = user_id
        if details is not None:
            data["details"] = details
        # The status this event implies was published just before: it leaves now rather
        # than with the event's frames at the end of the tick, so that no subscriber's status
        # waits for the whole system-event fan-out (one more write per client, per event).
        flush_now()
        self.events.publish("system-event", data, key=vm_id)

    def backend_down(self, backend: HypervisorBackend, reason: str) -> None:
        """Subscribers learn that the backend's VMs are unreachable (not their last status)."""
        for vm_id, owner in list(self.owner.items()):
            if owner is backend:
                self.push(backend, VmStatus(vmId=vm_id, status="unreachable"))
        self._backend_event(backend, "backend-unavailable", "warning", reason)

    def backend_up(self, backend: HypervisorBackend) -> None:
        self._backend_event(backend, "backend-available", "info", None)

    def _backend_event(
        self, backend: HypervisorBackend, event: str, level: str, details: str | None
    ) -> None:
        name = getattr(backend, "name", "?")
        data: dict[str, Any] = {
            "event": event,
            "backend": name,
            "message": self.gateway.catalogue(f"vm.event.{event}", name=name),
            "level": level,
        }
        if details:
            data["details"] = details
        self.events.publish("system-event", data, key=None)

    def forget(self, vm_id: str) -> None:
        self.owner.pop(vm_id, None)
        self.latest.pop(vm_id, None)
        self.pending.forget(vm_id)
        self.channel.forget(vm_id)

    async def _routed_control(self, vm_id: str, data: dict[str, Any]) -> dict[str, Any]:
        return await control_here(
            self.gateway,
            vm_id,
            data["action"],
            force=bool(data.get("force")),
            user_id=data.get("userId"),
            log=lambda: self.gateway.log.bind(routed=True),
        )

    # -- queries -----------------------------------------------------------------------
    async def _fetch(self, backend: HypervisorBackend, vm_id: str) -> dict[str, Any]:
        seq = self._seq
        status = await backend.get_vm(vm_id)
        cached = self.latest.get(vm_id)
        if cached is not None and cached[0] > seq:
            return cached[1]  # a push arrived while we asked: it is newer
        return self._store(backend, status, seq)

    async def get(self, vm_id: str) -> tuple[HypervisorBackend, dict[str, Any]]:
        """The owning backend and current status of ``vm_id``."""
        known = self.owner.get(vm_id)
        candidates = [known] if known is not None else []
        candidates += [b for b in self.backends if b is not known]
        unavailable: BackendUnavailable | None = None
        for backend in candidates:
            if backend in self.down:
                unavailable = self._down_error(backend)
                continue
            try:
                return backend, await self._fetch(backend, vm_id)
            except VmNotFound:
                if backend is known:
                    self.forget(vm_id)
                continue
            except BackendUnavailable as exc:
                unavailable = exc
        if unavailable is not None:
            raise unavailable
        raise VmNotFound(vm_id, self.gateway.catalogue("vm.not_found", vm_id=vm_id))

    async def list_all(self) -> list[dict[str, Any]]:
        """Current status of every VM of every available backend."""
        seq = self._seq
        up = self._up()
        results = await asyncio.gather(*(b.list_vms() for b in up), return_exceptions=True)
        out: list[dict[str, Any]] = []
        errors: list[BaseException] = [self._down_error(b) for b in self.backends if b not in up]
        for backend, result in zip(up, results, strict=True):
            if isinstance(result, BaseException):
                errors.append(result)
                self.gateway.log.warning(
                    "backend list failed", backend=backend.name, error=repr(result)
                )
                continue
            for status in result:
                cached = self.latest.get(status.vmId)
                if cached is not None and cached[0] > seq:
                    out.append(cached[1])
                else:
                    out.append(self._store(backend, status, seq))
        if errors and len(errors) == len(self.backends):
            first = errors[0]
            if isinstance(first, VirtwireError):
                raise first
            raise BackendUnavailable(str(first))
        return out

    async def backend_for(self, vm_id: str) -> HypervisorBackend:
        """The backend that owns ``vm_id``: the known owner at once, else found by asking."""
        known = self.owner.get(vm_id)
        if known is not None:
            return known
        backend, _ = await self.get(vm_id)
        return backend

    def current(self, vm_id: str) -> dict[str, Any] | None:
        cached = self.latest.get(vm_id)
        return cached[1] if cached else None

    def remote(self, vm_id: str) -> str | None:
        """The latest ``vm-status`` frame of a VM another gateway owns (broker only)."""
        return None if vm_id in self.latest else self.channel.values.get(vm_id)


# -- the topics ------------------------------------------------------------------------
class VmStatusTopic:
    """``vm-status`` (one VM with ``vmId``, all visible VMs without) and ``vm-status-all``."""

    scope = "vm:read"

    def __init__(self, name: str, gateway: Gateway) -> None:
        self.name = name
        self.gateway = gateway

    def key(self, data: dict[str, Any]) -> Hashable:
        vm_id = data.get("vmId") if self.name == "vm-status" else None
        return (CHANNEL, vm_id if isinstance(vm_id, str) else None)

    async def subscribe(self, session: Session, data: dict[str, Any]) -> Subscription:
        registry: VmRegistry = self.gateway.vms
        channel = registry.channel
        vm_id = None
        if self.name == "vm-status" and data.get("vmId") is not None:
            vm_id = convert_data({"vmId": data["vmId"]}, _VmRef).vmId
        principal = session.principal
        assert principal is not None
        outbox = session.outbox
        if vm_id is not None:
            session.require("vm:read", vm_id=vm_id)
            if registry.remote(vm_id) is None:
                await registry.get(vm_id)
            wanted = vm_id

            def accept(key: Hashable) -> bool:
                return key == wanted

            vm_ids = [vm_id]
        else:
            statuses = await registry.list_all()
            vm_ids = [s["vmId"] for s in statuses if principal.can_see(s["vmId"])]
            local = set(vm_ids)
            vm_ids += [v for v in channel.values if v not in local and principal.can_see(v)]
            accept = principal.can_see if principal.vms is not None else None  # type: ignore[assignment]

        def initial() -> None:
            for vid in vm_ids:
                current = registry.current(vid)
                if current is not None:
                    channel.send_to(outbox, "vm-status", current, key=vid)
                elif (text := registry.remote(vid)) is not None:
                    channel.send_text(outbox, text, key=vid)
                    if channel.metrics is not None:
                        channel.metrics.sent(CHANNEL)

        reply: dict[str, Any] = {"vmId": vm_id} if vm_id is not None else {"count": len(vm_ids)}
        sub = Subscription.to_channel(
            channel, outbox, (CHANNEL, vm_id), accept=accept, reply=reply, initial=initial
        )

        def recheck() -> None:
            """A refreshed token: one VM must still be visible; for all VMs, the filter
            follows the new ``vms`` claim."""
            if vm_id is not None:
                session.require("vm:read", vm_id=vm_id)
                return
            now = session.principal
            assert now is not None
            for member in sub.members:
                member.set_accept(now.can_see if now.vms is not None else None)  # type: ignore[arg-type]

        sub.recheck = recheck
        return sub


class _VmRef(msgspec.Struct):
    vmId: VmId


# -- vm-control ------------------------------------------------------------------------
class VmControl(msgspec.Struct, forbid_unknown_fields=True):
    vmId: VmId
    action: Action
    force: bool = False


async def vm_control(session: Session, data: VmControl) -> dict[str, Any]:
    gateway = session.gateway
    session.require("vm:control", vm_id=data.vmId)
    request = {"action": data.action, "force": data.force, "userId": session.user_id}
    routed = await gateway.hub.route("vm-control", data.vmId, request)
    if routed is not None:  # another gateway owns the VM and ran it
        return routed
    try:
        return await control_here(
            gateway,
            data.vmId,
            data.action,
            force=data.force,
            user_id=session.user_id,
            log=lambda: session.log,
        )
    except VmNotFound:
        broker = gateway.hub.broker
        if broker is None or broker.health().get("state") == "connected":
            raise
        # not here, and no way to ask the other gateways now
        raise BackendUnavailable(
            gateway.catalogue("backend.unavailable", name=broker.name),
            vm_id=data.vmId,
            details="the broker is unreachable; another gateway may serve this VM",
        ) from None


async def control_here(
    gateway: Gateway,
    vm_id: str,
    action: str,
    *,
    force: bool,
    user_id: str | None,
    log: Callable[[], Any],
) -> dict[str, Any]:
    """Run ``action`` on the backend of this gateway that owns ``vm_id`` (``log()`` gives
    the logger for failures; every outcome is in the audit stream)."""
    backend = await gateway.vms.backend_for(vm_id)
    event = ACTION_EVENTS[action]
    if user_id is not None:
        gateway.vms.pending.expect(vm_id, event, user_id)
    try:
        await backend.control(vm_id, action, force=force, user_id=user_id)
    except VmNotFound:
        gateway.vms.forget(vm_id)  # the owner no longer has it
        raise
    except VirtwireError as exc:
        if user_id is not None:
            gateway.vms.pending.withdraw(vm_id, event, user_id)
        log().debug("vm-control failed", vm=vm_id, action=action, code=exc.code)
        raise
    except Exception as exc:
        if user_id is not None:
            gateway.vms.pending.withdraw(vm_id, event, user_id)
        log().warning(
            "vm-control failed", vm=vm_id, action=action, error=f"{type(exc).__name__}: {exc}"
        )
        raise VirtwireError(
            f"VM_{action.upper()}_FAILED",
            gateway.catalogue(f"vm.action_failed.{action}"),
            vm_id=vm_id,
            details=str(exc),
        ) from exc
    return {"vmId": vm_id, "action": action, "status": "success"}


async def audited_vm_control(session: Session, data: VmControl) -> dict[str, Any]:
    """``vm-control`` with its record in the audit stream: once, on the gateway the client
    is connected to (a control another gateway runs through the broker is recorded here),
    for success and for every refusal or failure (the error code)."""
    gateway = session.gateway
    with gateway.audit_log.request(
        "vm-control", session, vmId=data.vmId, backend=None, action=data.action, force=data.force
    ) as fields:
        try:
            return await vm_control(session, data)
        finally:
            # the backend that ran it (known once it was asked; none when another gateway did)
            fields["backend"] = getattr(gateway.vms.owner.get(data.vmId), "name", None)


@hookimpl
def register_topics(register: Any, gateway: Gateway) -> None:
    register(VmStatusTopic("vm-status", gateway))
    register(VmStatusTopic("vm-status-all", gateway))


@hookimpl
def register_handlers(register: Any, gateway: Gateway) -> None:
    # The scope is checked by the handler (``session.require``), so that a refusal is audited.
    register("vm-control", audited_vm_control, schema=VmControl, concurrent=True)
