"""How libvirt domain states and lifecycle events map to virtwire status words and
``system-event`` names."""

from __future__ import annotations

# virDomainState -> status word
STATE_WORDS: dict[int, str] = {
    0: "unknown",  # NOSTATE
    1: "running",  # RUNNING
    2: "blocked",  # BLOCKED (on a resource)
    3: "paused",  # PAUSED
    4: "shutting-down",  # SHUTDOWN (being shut down)
    5: "stopped",  # SHUTOFF
    6: "crashed",  # CRASHED
    7: "suspended",  # PMSUSPENDED (guest suspended to RAM)
}

# virDomainEventType values
DEFINED, UNDEFINED, STARTED, SUSPENDED, RESUMED, STOPPED, SHUTDOWN, PMSUSPENDED, CRASHED = range(9)
STOPPED_CRASHED = 2  # VIR_DOMAIN_EVENT_STOPPED_CRASHED
STOPPED_FAILED = 5  # VIR_DOMAIN_EVENT_STOPPED_FAILED
DEFINED_ADDED = 0  # VIR_DOMAIN_EVENT_DEFINED_ADDED


def status_word(state: int) -> str:
    return STATE_WORDS.get(state, "unknown")


def lifecycle_event(event: int, detail: int) -> tuple[str, str] | None:
    """The ``(system-event name, level)`` of a libvirt lifecycle event, or None when it
    only changes the status (e.g. a re-definition, or SHUTDOWN before STOPPED)."""
    if event == DEFINED:
        return ("vm-created", "info") if detail == DEFINED_ADDED else None
    if event == UNDEFINED:
        return ("vm-deleted", "info")
    if event == STARTED:
        return ("vm-started", "info")
    if event in (SUSPENDED, PMSUSPENDED):
        return ("vm-paused", "info")
    if event == RESUMED:
        return ("vm-resumed", "info")
    if event == STOPPED:
        if detail in (STOPPED_CRASHED, STOPPED_FAILED):
            return ("vm-crashed", "error")
        return ("vm-stopped", "info")
    if event == CRASHED:
        return ("vm-crashed", "error")
    return None


#: The status a lifecycle event leaves a domain in.
EVENT_STATES: dict[int, str] = {
    STARTED: "running",
    SUSPENDED: "paused",
    RESUMED: "running",
    STOPPED: "stopped",
    SHUTDOWN: "shutting-down",
    PMSUSPENDED: "suspended",
    CRASHED: "crashed",
}
