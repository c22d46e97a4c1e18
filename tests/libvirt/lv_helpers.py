"""Helpers shared by the libvirt plugin's tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import virtwire_libvirt
from virtwire.auth import SCOPES, Authenticator
from virtwire.testing import TEST_SECRET, RunningServer, free_port, make_settings, run_server

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


@contextlib.asynccontextmanager
async def gateway_process(workdir: Path, **settings: Any) -> AsyncIterator[tuple[Any, str]]:
    """``virtwire serve`` in its own process (a crash of the gateway then fails the test
    instead of taking pytest down) with only the libvirt plugin; yields the process and
    a ``/ws`` URL with a token."""
    port = free_port()
    libvirt_table = "".join(f"{key} = {json.dumps(value)}\n" for key, value in settings.items())
    config = workdir / "virtwire.toml"
    config.write_text(
        f'[server]\nport = {port}\nlocale = "en"\naccess_log = false\n'
        f'[auth]\nsecret = "{TEST_SECRET}"\n[plugins]\nenabled = ["libvirt"]\n'
        f"[plugins.libvirt]\n{libvirt_table}"
    )
    proc = _serve(config, workdir / "virtwire.log")
    try:
        async with asyncio.timeout(30):
            while True:
                assert proc.poll() is None, f"virtwire serve exited with {proc.returncode}"
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.close()
                    break
                except OSError:
                    await asyncio.sleep(0.05)
        token = Authenticator(make_settings({"server": {"port": port}})).mint("tester", SCOPES)
        yield proc, f"ws://127.0.0.1:{port}/ws?token={token}"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)


def _serve(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIRTWIRE_")}
    env["PYTHONFAULTHANDLER"] = "1"  # a crash leaves its thread stacks in the log
    with open(log, "wb") as out:
        return subprocess.Popen(
            [str(Path(sys.executable).with_name("virtwire")), "serve", "--config", str(config)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
