"""Fixtures for the logs plugin: real files in a temp dir, a real gateway, real clients."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import virtwire_logs
from logkit import LogServer
from virtwire.testing import run_server


@pytest.fixture
def logdir(tmp_path: Path) -> Path:
    d = tmp_path / "logs"
    d.mkdir()
    return d


@pytest.fixture
def logs_server(
    logdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., contextlib.AbstractAsyncContextManager[LogServer]]:
    """``async with logs_server(**plugin_options) as server``: a gateway with the logs plugin
    serving ``ds_update.log``, ``download.log`` and ``upload.log`` from ``logdir``."""
    monkeypatch.setenv("VIRTWIRE_STATE_DIR", str(tmp_path / "state"))

    @contextlib.asynccontextmanager
    async def start(
        *,
        server: dict[str, Any] | None = None,
        plugins: list[Any] | None = None,
        no_section: bool = False,
        **options: Any,
    ) -> AsyncIterator[LogServer]:
        section: dict[str, Any] = {
            "directory": str(logdir),
            "files": {n: n for n in ("ds_update.log", "download.log", "upload.log")},
            **options,
        }
        config: dict[str, Any] = {"plugins": {"logs": section}, "server": dict(server or {})}
        if no_section:
            del config["plugins"]
        async with run_server(
            plugins=[("logs", virtwire_logs), *(plugins or [])], config=config
        ) as running:
            yield LogServer(running)

    return start
