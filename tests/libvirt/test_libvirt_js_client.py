"""The API document's own JavaScript client, unchanged, against the real ``virtwire serve``
with its embedded default (the libvirt test driver)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from virtwire.testing import free_port

HERE = Path(__file__).parent
VIRTWIRE = Path(sys.executable).with_name("virtwire")


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"virtwire serve exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"virtwire serve did not listen on {port} within {timeout} s")


def test_voidvm_client_controls_the_test_domain(tmp_path: Path) -> None:
    node = shutil.which("node")
    assert node, "node is required (make install installs it)"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIRTWIRE_")}
    env["VIRTWIRE_STATE_DIR"] = str(tmp_path)
    env["NODE_PATH"] = str(HERE.parent / "js" / "node_modules")
    port = free_port()
    proc = subprocess.Popen(
        [str(VIRTWIRE), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    try:
        _wait_port(port, proc)
        token = subprocess.run(
            [str(VIRTWIRE), "token", "--sub", "js-user"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            cwd=tmp_path,
        ).stdout.strip()
        result = subprocess.run(
            [node, str(HERE / "js_harness.js"), f"ws://127.0.0.1:{port}/ws", token, "test"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
        assert result.returncode == 0, (lines, result.stderr)
        by_kind: dict[str, list[object]] = {}
        for line in lines:
            by_kind.setdefault(line["kind"], []).append(line["data"])
        [subscribed] = by_kind["subscribed"]
        assert isinstance(subscribed, dict)
        # the topic's position (offset, epoch) for a later ``since``: see docs/protocol.md
        assert set(subscribed) == {"topic", "count", "offset", "epoch"}
        assert subscribed["topic"] == "vm-status" and subscribed["count"] == 1
        assert isinstance(subscribed["offset"], int) and isinstance(subscribed["epoch"], str)
        first = by_kind["vm-status"][0]
        assert isinstance(first, dict)
        assert first["vmId"] == "test" and first["status"] == "running"
        assert set(first) == {"vmId", "status", "cpu", "memory", "network"}
        assert by_kind["stop-response"] == [{"vmId": "test", "action": "stop", "status": "success"}]
        assert by_kind["start-response"] == [
            {"vmId": "test", "action": "start", "status": "success"}
        ]
        seen = [s["status"] for s in by_kind["vm-status"] if isinstance(s, dict)]
        assert seen.index("stopped") < len(seen) - 1 - seen[::-1].index("running")
        assert "done" in by_kind
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
