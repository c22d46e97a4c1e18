"""Fixtures of the Proxmox plugin's tests: the stand-in Proxmox server (see pve_standin.py)
with its certificate, and the real QEMU VNC server behind its consoles. tests/e2e imports
them too."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pve_standin import Cluster, Display, StandIn, make_certificate
from qemu_vnc import stop

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
    proc = subprocess.Popen(
        [
            qemu,
            "-display",
            "none",
            # the first free display from :40 on (other test runs may hold some)
            "-vnc",
            "127.0.0.1:40,to=99,password=on",
            "-m",
            "64",
            "-nodefaults",
            "-vga",
            "std",
            "-qmp",
            f"unix:{qmp},server=on,wait=off",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield Display("127.0.0.1", _vnc_port(proc, str(qmp)), str(qmp))
    finally:
        stop(proc)


def _qmp_sync(path: str, command: str) -> dict[str, object]:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(path)
        stream = sock.makefile("rwb")
        stream.readline()  # greeting
        for cmd in ("qmp_capabilities", command):
            stream.write(json.dumps({"execute": cmd}).encode() + b"\n")
            stream.flush()
            while True:
                reply = json.loads(stream.readline())
                if "return" in reply or "error" in reply:
                    break
        return reply


def _vnc_port(proc: subprocess.Popen[bytes], qmp: str, timeout: float = 20.0) -> int:
    """The TCP port QEMU's VNC server listens on, once it does (asked over QMP)."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, "QEMU exited at start"
        assert time.monotonic() < deadline, "QEMU's VNC server did not come up"
        try:
            reply = _qmp_sync(qmp, "query-vnc")
        except (OSError, ValueError):
            time.sleep(0.05)
            continue
        info = reply.get("return")
        if isinstance(info, dict) and info.get("enabled") and info.get("service"):
            return int(str(info["service"]))
        time.sleep(0.05)


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
