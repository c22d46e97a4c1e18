"""Helpers shared by the Proxmox plugin's tests."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import virtwire_proxmox
from pve_fixtures import PASSWORD
from pve_standin import StandIn
from virtwire.testing import RunningServer, run_server

PLUGIN = ("proxmox", virtwire_proxmox)


def settings_for(standin: StandIn, **overrides: Any) -> dict[str, Any]:
    """A ``[plugins.proxmox]`` section pointing at the stand-in (certificate checked)."""
    settings: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": standin.port,
        "user": "root@pam",
        "password": PASSWORD,
        "ca_file": str(standin.cert),
        "interval": 0.2,
        "task_poll": 0.05,
        "retry_min": 0.1,
        "retry_max": 0.5,
        "call_timeout": 5.0,
    }
    settings.update(overrides)
    return {k: v for k, v in settings.items() if v is not None}


@contextlib.asynccontextmanager
async def proxmox_server(
    standin: StandIn, plugins: list[Any] | None = None, **overrides: Any
) -> AsyncIterator[RunningServer]:
    config = {
        "server": {"locale": "en"},
        "plugins": {"proxmox": settings_for(standin, **overrides)},
    }
    async with run_server(plugins=plugins or [PLUGIN], config=config) as server:
        yield server


def backend_of(server: RunningServer) -> Any:
    return next(b for b in server.gateway.backends if b.name == "proxmox")


def is_status(vm: str, status: str) -> Any:
    return lambda f: f["data"]["vmId"] == vm and f["data"]["status"] == status


def is_event(event: str, vm: str) -> Any:
    return lambda f: f["data"]["event"] == event and f["data"]["vmId"] == vm


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait (bounded) until ``condition()`` holds; it reads state another thread changes."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)
