"""``virtwire new-plugin``: every kind of generated project installs into a fresh virtualenv,
is listed by ``virtwire plugins`` there, and its own tests pass."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from virtwire.scaffold import KINDS, new_plugin

ROOT = Path(__file__).resolve().parents[2]


def _uv() -> str:
    found = shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")
    assert Path(found).exists(), "uv is installed by `make install` (.tools/bin/uv)"
    return found


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> str:
    proc = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_generated_projects_install_are_listed_and_pass_their_tests(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    # a fresh virtualenv with the core built from this workspace (a wheel, as users get it) and
    # the same versions of its dependencies as here (uv's cache has them)
    uv = _uv()
    env = {k: v for k, v in cli_env.items() if not k.startswith(("VIRTUAL_ENV", "UV_PROJECT"))}
    venv = tmp_path / "venv"
    python = str(venv / "bin" / "python")
    _run([uv, "venv", "-q", "--python", sys.executable, str(venv)], tmp_path, env)
    frozen = _run([uv, "pip", "freeze", "--python", sys.executable], tmp_path, env)
    pins = [
        line
        for line in frozen.splitlines()
        if line and not line.startswith(("-e", "virtwire")) and " @ " not in line
    ]
    (tmp_path / "pins.txt").write_text("\n".join(pins) + "\n")

    def install(*targets: str) -> None:
        cmd = [uv, "pip", "install", "-q", "--python", python, "-c", str(tmp_path / "pins.txt")]
        offline = subprocess.run(
            [*cmd, "--offline", *targets], env=env, capture_output=True, check=False
        )
        if offline.returncode != 0:  # the cache lacks an index page: let uv fetch it
            _run([*cmd, *targets], tmp_path, env)

    install(f"{ROOT / 'core'}[testing]")

    projects = []
    for kind in KINDS:
        name = f"demo-{kind}"
        out = _run(
            [str(venv / "bin" / "virtwire"), "new-plugin", name, "--kind", kind], tmp_path, env
        )
        path = tmp_path / f"virtwire-{name}"
        assert str(path) in out
        assert {p.name for p in path.iterdir()} == {"pyproject.toml", "README.md", "src", "tests"}
        entry_point = f'{name} = "virtwire_{name.replace("-", "_")}"'
        assert entry_point in (path / "pyproject.toml").read_text()
        projects.append(path)
    install(*map(str, projects))

    # with a config file (the embedded default would load only the product's plugins)
    listing = tmp_path / "listing.toml"
    listing.write_text('[auth]\nsecret = "0123456789abcdef0123456789abcdef"\n')
    listed = json.loads(
        _run(
            [str(venv / "bin" / "virtwire"), "plugins", "--json", "--config", str(listing)],
            tmp_path,
            env,
        )
    )
    rows = {r["name"]: r for r in listed}
    for kind in KINDS:
        row = rows[f"demo-{kind}"]
        assert row["state"] == "enabled" and row["distribution"] == f"virtwire-demo-{kind}"
    assert "register_backends" in rows["demo-backend"]["hooks"]
    assert "register_log_sources" in rows["demo-log-source"]["hooks"]
    assert "register_collectors" in rows["demo-collector"]["hooks"]
    assert "register_handlers" in rows["demo-handler"]["hooks"]

    for path in projects:  # each with its own pytest configuration (asyncio_mode = "auto")
        out = _run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider"], path, env)
        assert " passed" in out and "failed" not in out


def test_bad_names_kinds_and_directories_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="lower-case"):
        new_plugin("Bad_Name", directory=tmp_path / "x")
    with pytest.raises(ValueError, match="choose one of"):
        new_plugin("ok", "widget", directory=tmp_path / "y")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        new_plugin("ok", directory=tmp_path / "full")
    assert os.listdir(tmp_path / "full") == ["keep.txt"]
