"""Shared fixtures: tests start real servers on loopback through virtwire.testing."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
# tests/kit: what several test directories share (a QEMU VNC server, Chromium and the pages it
# loads); on the path of every run, the isolated runs of one member included
sys.path.insert(0, str(ROOT / "tests" / "kit"))

pytest_plugins = ["virtwire.testing"]


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """Environment for running the ``virtwire`` CLI as a subprocess: its own state dir (the
    generated dev secret lives there) and no inherited VIRTWIRE_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIRTWIRE_")}
    env["VIRTWIRE_STATE_DIR"] = str(tmp_path / "state")
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def virtwire_bin() -> str:
    return str(VENV_BIN / "virtwire")


@pytest.fixture(autouse=True)
def _state_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Gateways started by tests keep their state (dev secret, own log file) in a temp dir,
    never in the user's home."""
    if "VIRTWIRE_STATE_DIR" not in os.environ:
        monkeypatch.setenv("VIRTWIRE_STATE_DIR", str(tmp_path_factory.mktemp("state")))
