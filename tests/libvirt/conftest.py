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
