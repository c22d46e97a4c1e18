"""Fixtures of the monitor plugin's tests: a real gateway with the plugin on loopback."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import virtwire_monitor
from virtwire.testing import RunningServer, run_server


@pytest.fixture
def monitor_server() -> Callable[..., contextlib.AbstractAsyncContextManager[RunningServer]]:
    """``async with monitor_server(warmup=200, plugins=[...]) as server``: the gateway with
    the monitor plugin (plus ``plugins``) and ``[plugins.monitor]`` set from the keywords."""

    @contextlib.asynccontextmanager
    async def start(
        plugins: list[Any] | None = None, **options: Any
    ) -> AsyncIterator[RunningServer]:
        config = {"plugins": {"monitor": options}} if options else None
        async with run_server(
            plugins=[("monitor", virtwire_monitor), *(plugins or [])], config=config
        ) as server:
            yield server

    return start
