"""Helpers shared by the libvirt plugin's tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import virtwire_libvirt
from virtwire.testing import RunningServer, run_server

PLUGIN = ("libvirt", virtwire_libvirt)


@contextlib.asynccontextmanager
async def libvirt_server(**settings: Any) -> AsyncIterator[RunningServer]:
    """A gateway with only the libvirt plugin, configured with ``settings``."""
    config = {"server": {"locale": "en"}, "plugins": {"libvirt": settings}}
    async with run_server(plugins=[PLUGIN], config=config) as server:
        yield server


def backend_of(server: RunningServer) -> Any:
    (backend,) = server.gateway.backends
    return backend


def is_status(vm: str, status: str) -> Any:
    return lambda f: f["data"]["vmId"] == vm and f["data"]["status"] == status
