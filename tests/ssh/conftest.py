"""Fixtures for the ssh plugin: a real OpenSSH sshd for the whole module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sshkit import Sshd


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    daemon = Sshd(tmp_path_factory.mktemp("sshd"))
    daemon.prepare()
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()
