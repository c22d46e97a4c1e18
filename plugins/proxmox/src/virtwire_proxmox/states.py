"""Proxmox VM states as virtwire status words, and the events between two of them."""

from __future__ import annotations

from typing import Any

#: QMP ``query-status`` run states (``qmpstatus`` of ``status/current``) as status words.
QMP_STATUS = {
    "running": "running",
    "paused": "paused",
    "prelaunch": "starting",
    "inmigrate": "starting",
    "postmigrate": "paused",
    "finish-migrate": "paused",
    "restore-vm": "starting",
    "save-vm": "paused",
    "suspended": "suspended",
    "shutdown": "shutting-down",
    "internal-error": "crashed",
    "guest-panicked": "crashed",
    "io-error": "blocked",
    "watchdog": "crashed",
    "debug": "paused",
    "colo": "running",
}

#: What each ``vm-control`` action asks of ``status/{cmd}``, and the event it causes.
COMMANDS = {
    ("start", False): "start",
    ("start", True): "start",
    ("stop", False): "shutdown",
    ("stop", True): "stop",
    ("restart", False): "reboot",
    ("restart", True): "reset",
    ("pause", False): "suspend",
    ("pause", True): "suspend",
    ("resume", False): "resume",
    ("resume", True): "resume",
    ("reset", False): "reset",
    ("reset", True): "reset",
}
ACTION_EVENTS = {
    "start": "vm-started",
    "stop": "vm-stopped",
    "restart": "vm-rebooted",
    "pause": "vm-paused",
    "resume": "vm-resumed",
    "reset": "vm-rebooted",
}

ACTIVE = frozenset({"running", "paused", "starting", "shutting-down", "blocked", "suspended"})
OFF = frozenset({"stopped", "unknown", "crashed"})


def resource_word(row: dict[str, Any]) -> str:
    """The status word a ``cluster/resources`` row suggests (it cannot show a pause)."""
    status = row.get("status")
    if status == "running":
        return "running"
    if status == "stopped":
        # a VM hibernated with ``suspend --todisk`` is stopped with the ``suspended`` lock
        return "suspended" if row.get("lock") == "suspended" else "stopped"
    return "unknown"


def current_word(current: dict[str, Any]) -> str:
    """The status word of a ``status/current`` answer (``qmpstatus`` shows a pause)."""
    status = current.get("status")
    if status == "running":
        return QMP_STATUS.get(str(current.get("qmpstatus") or "running"), "running")
    if status == "stopped":
        return "suspended" if current.get("lock") == "suspended" else "stopped"
    return "unknown"


def transition(before: str, after: str) -> tuple[str, str] | None:
    """The ``system-event`` (name, level) of a status change, if any."""
    if before == after:
        return None
    if after == "crashed":
        return ("vm-crashed", "error")
    if after == "stopped" and before in ACTIVE:
        return ("vm-stopped", "info")
    if after in ("paused", "suspended") and before in ACTIVE:
        return ("vm-paused", "info")
    if after == "running" and before in ("paused", "suspended"):
        return ("vm-resumed", "info")
    if after in ACTIVE and before in OFF | {"suspended"}:
        return ("vm-started", "info")
    return None
