"""Fixtures of the Proxmox plugin's tests: the stand-in Proxmox server (see pve_standin.py)
with its certificate, and the real QEMU VNC server behind its consoles. tests/e2e imports
them too."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pve_standin import Cluster, Display, StandIn, make_certificate

PASSWORD = "standin-secret-pw"
TOKEN_ID = "root@pam!virtwire"
TOKEN_SECRET = "0d9a1f3e-standin-token-secret"


@pytest.fixture(scope="session")
def pve_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("pve-cert"))


@pytest.fixture(scope="session")
def qemu_display(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Display]:
    """A real QEMU VNC server (VNC password set over QMP) standing in for a VM's display."""
    qemu = shutil.which("qemu-system-x86_64")
    assert qemu, "qemu-system-x86_64 is required (apt package qemu-system-x86)"
    qmp = tmp_path_factory.mktemp("qemu") / "qmp.sock"
    proc = None
    for display in range(40, 90):  # VNC port 5900 + display
        proc = subprocess.Popen(
            [
                qemu,
                "-display",
                "none",
                "-vnc",
                f"127.0.0.1:{display},password=on",
                "-m",
                "64",
                "-nodefaults",
                "-vga",
                "std",
                "-qmp",
                f"unix:{qmp},server=on,wait=off",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while proc.poll() is None and not qmp.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        if proc.poll() is None and qmp.exists():
            break
        proc.wait()
        proc = None
    assert proc is not None, "no free VNC display for QEMU"
    try:
        yield Display("127.0.0.1", 5900 + display, str(qmp))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def new_cluster(**kw: object) -> Cluster:
    options: dict[str, object] = {
        "users": {"root@pam": PASSWORD},
        "tokens": {TOKEN_ID: TOKEN_SECRET},
        "login_delay": 0.05,
        "task_delay": 0.1,
    }
    options.update(kw)
    cluster = Cluster(**options)  # type: ignore[arg-type]
    cluster.add_vm(100, "web", "running")
    cluster.add_vm(101, "db", "stopped")
    cluster.add_vm(102, "batch", "paused")
    cluster.add_vm(900, "tmpl", "stopped", template=1)
    return cluster


@pytest.fixture
def cluster() -> Cluster:
    return new_cluster()


@pytest.fixture
def standin(cluster: Cluster, pve_cert: tuple[Path, Path]) -> Iterator[StandIn]:
    server = StandIn(cluster, *pve_cert)
    server.start()
    try:
        yield server
    finally:
        server.stop()
