"""Proxmox tasks: wait for a UPID to finish, read the tail of its log."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .client import PveClient


class TaskFailed(Exception):
    """The task ended with an ``exitstatus`` other than ``OK`` / ``WARNINGS: n``."""

    def __init__(self, upid: str, exitstatus: str, log: list[str]) -> None:
        super().__init__(exitstatus)
        self.upid = upid
        self.exitstatus = exitstatus
        self.log = log


class TaskTimeout(Exception):
    """The task was still running when the wait ended."""


def upid_node(upid: str) -> str:
    """The node a task runs on: ``UPID:<node>:<pid>:<pstart>:<starttime>:<type>:<id>:<user>:``."""
    parts = upid.split(":")
    if len(parts) < 9 or parts[0] != "UPID" or not parts[1]:
        raise ValueError(f"not a UPID: {upid[:80]!r}")
    return parts[1]


def succeeded(exitstatus: str | None) -> bool:
    return exitstatus == "OK" or (exitstatus or "").startswith("WARNINGS")


async def wait_task(
    client: PveClient, upid: str, *, timeout: float, poll: float, log_lines: int
) -> dict[str, Any]:
    """Poll ``tasks/{upid}/status`` until the task stops; return the final status.

    Raises :class:`TaskFailed` (with the last ``log_lines`` lines of the task log) or
    :class:`TaskTimeout`."""
    node = upid_node(upid)
    deadline = time.monotonic() + timeout
    while True:
        status: dict[str, Any] = await client.call(
            lambda api: api.nodes(node).tasks(upid).status.get()
        )
        if status.get("status") == "stopped":
            break
        if time.monotonic() >= deadline:
            raise TaskTimeout(f"task still running after {timeout:g} s")
        await asyncio.sleep(min(poll, max(0.0, deadline - time.monotonic())))
    exitstatus = str(status.get("exitstatus") or "unexpected status")
    if succeeded(exitstatus):
        return status
    lines: list[str] = []
    if log_lines:
        try:
            lines = await task_log_tail(client, upid, log_lines)
        except Exception:
            lines = []
    raise TaskFailed(upid, exitstatus, lines)


async def task_log_tail(client: PveClient, upid: str, count: int) -> list[str]:
    """The last ``count`` lines of a task's log (``tasks/{upid}/log`` pages from the start,
    so read a page large enough for short power-action logs and keep its tail)."""
    node = upid_node(upid)
    entries: list[dict[str, Any]] = await client.call(
        lambda api: api.nodes(node).tasks(upid).log.get(start=0, limit=max(500, count))
    )
    lines = [str(e.get("t", "")) for e in sorted(entries, key=lambda e: int(e.get("n", 0)))]
    return lines[-count:]
