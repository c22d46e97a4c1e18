"""Fixtures for the libvirt plugin: a real libvirtd with QEMU (TCG) shared by the whole
session, and the test guest's boot images (see lv_daemon.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from lv_daemon import Daemon, build_guest, start_daemon


@pytest.fixture(scope="session")
def libvirtd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    daemon = start_daemon(tmp_path_factory.mktemp("libvirtd"))
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture(scope="session")
def guest_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("guest")
    return {"idle": build_guest(out, busy=False), "busy": build_guest(out, busy=True)}


@pytest.fixture(autouse=True)
def default_test_vm_running() -> Iterator[None]:
    """``test:///default`` is one driver for the whole process: put its VM back to running
    after each test, so that no test depends on what an earlier one left it in."""
    yield
    import libvirt

    conn = libvirt.open("test:///default")
    try:
        dom = conn.lookupByName("test")
        state = dom.state()[0]
        if state == libvirt.VIR_DOMAIN_PAUSED:
            dom.resume()
        elif state != libvirt.VIR_DOMAIN_RUNNING:
            dom.create()
    finally:
        conn.close()
