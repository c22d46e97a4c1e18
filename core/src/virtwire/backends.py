"""The hypervisor backend protocol and the status/event types backends report."""

from __future__ import annotations

from typing import Annotated, Literal, Protocol, runtime_checkable

import msgspec

__all__ = [
    "ACTIONS",
    "ACTION_EVENTS",
    "EVENTS",
    "STATUSES",
    "Action",
    "HypervisorBackend",
    "NetworkRates",
    "VmEvents",
    "VmStatus",
]

#: Control actions of ``vm-control``.
Action = Literal["start", "stop", "restart", "pause", "resume", "reset"]

#: A VM id as clients may send it: 1 to 256 characters, no control characters (a NUL or
#: a newline is never part of a hypervisor's VM name).
VmId = Annotated[str, msgspec.Meta(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$")]
ACTIONS: tuple[str, ...] = ("start", "stop", "restart", "pause", "resume", "reset")

#: Status words backends report (docs/protocol.md explains each).
STATUSES = (
    "running",
    "stopped",
    "paused",
    "shutting-down",
    "crashed",
    "suspended",
    "starting",
    "blocked",
    "unknown",
    "unreachable",
)

#: ``system-event`` events a backend may emit.
EVENTS = (
    "vm-created",
    "vm-started",
    "vm-stopped",
    "vm-paused",
    "vm-resumed",
    "vm-rebooted",
    "vm-crashed",
    "vm-deleted",
)


#: The ``system-event`` each control action leads to. The core attributes the first such
#: event of the VM after a ``vm-control`` to the acting user (``userId``).
ACTION_EVENTS: dict[str, str] = {
    "start": "vm-started",
    "stop": "vm-stopped",
    "restart": "vm-rebooted",
    "pause": "vm-paused",
    "resume": "vm-resumed",
    "reset": "vm-rebooted",
}


class NetworkRates(msgspec.Struct):
    """Network throughput in bytes per second."""

    rx: float = 0.0
    tx: float = 0.0


class VmStatus(msgspec.Struct, kw_only=True):
    """The ``data`` of a ``vm-status`` frame.

    ``cpu`` and ``memory`` are percentages (0..100); ``network`` is bytes per second.
    """

    vmId: str
    status: str
    cpu: float = 0.0
    memory: float = 0.0
    network: NetworkRates = msgspec.field(default_factory=NetworkRates)


class VmEvents(Protocol):
    """What a backend reports to (implemented by the core, handed to ``start``)."""

    def status(self, status: VmStatus) -> None:
        """A VM's current status: pushed to ``vm-status`` subscribers (latest value)."""

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
        """A lifecycle event (``vm-started``...): a ``system-event`` frame to every
        connection allowed to see the VM. ``message`` defaults to the catalogue text
        ``vm.event.<event>``; ``details`` (any JSON value) is sent as is. Leave ``user_id``
        None for events the hypervisor reports: the core fills in the user whose
        ``vm-control`` caused the event (see ``ACTION_EVENTS``)."""

    def added(self, status: VmStatus, *, announce: bool = True) -> None:
        """A VM appeared at run time: the core records this backend as its owner, pushes
        ``status`` to ``vm-status`` / ``vm-status-all`` subscribers allowed to see it and,
        with ``announce``, sends the ``vm-created`` ``system-event``."""

    def removed(self, vm_id: str) -> None:
        """The VM no longer exists (after ``vm-deleted``): the core forgets it."""

    def unavailable(self, reason: str) -> None:
        """The hypervisor cannot be reached (the backend is reconnecting): every VM of
        this backend gets a ``vm-status`` with status ``unreachable`` and every connection
        with ``vm:read`` a ``backend-unavailable`` system-event."""

    def available(self) -> None:
        """The hypervisor is reachable again (after ``unavailable``): a
        ``backend-available`` system-event; report each VM's status with ``status``."""


@runtime_checkable
class HypervisorBackend(Protocol):
    """A source of VMs: lists them, reports status, runs control actions, pushes events.

    All methods are called on the event loop and must not block it (run blocking client
    calls in a thread). Raise :class:`virtwire.errors.VmNotFound` for an unknown VM,
    :class:`virtwire.errors.BackendUnavailable` while the hypervisor is unreachable, and
    ``VirtwireError("VM_<ACTION>_FAILED", ...)`` when an action fails.
    """

    #: Short name used in logs and errors (usually the plugin name).
    name: str

    async def start(self, events: VmEvents) -> None:
        """Connect and begin reporting; called once in the gateway's lifespan."""

    async def close(self) -> None:
        """Disconnect and stop every background task."""

    async def list_vms(self) -> list[VmStatus]:
        """The current status of every VM of this backend."""

    async def get_vm(self, vm_id: str) -> VmStatus:
        """The current status of one VM (``VmNotFound`` if this backend has none)."""

    async def control(
        self, vm_id: str, action: str, *, force: bool = False, user_id: str | None = None
    ) -> None:
        """Run ``action`` and return when the hypervisor has done it. ``force`` asks
        ``stop``/``restart`` to skip the graceful path. ``user_id`` is the caller, for the
        ``system-event`` the action causes."""

    def set_watching(self, watching: bool) -> None:
        """True while anyone subscribes to VM status: poll periodic stats only then."""
