"""The API document's JavaScript client class, unchanged, opens an SSH terminal:
``connectTerminal`` then ``sendTerminalInput``, and its ``terminal-output`` handler gets the
output (Node, the ``ws`` package as WebSocket, a real gateway and SSH server)."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import virtwire_ssh
from sshkit import USERS, asyncssh_server
from virtwire.testing import run_server

HERE = Path(__file__).parent
NODE_MODULES = HERE.parent / "js" / "node_modules"


async def test_document_client_connects_a_terminal(tmp_path: Path) -> None:
    node = shutil.which("node")
    assert node, "node is required (make install installs it)"
    async with asyncssh_server() as (port, _key):
        config = {
            "plugins": {
                "ssh": {
                    "hosts": {"vm-001": f"127.0.0.1:{port}"},
                    "known_hosts": str(tmp_path / "known_hosts"),
                }
            }
        }
        async with run_server(plugins=[("ssh", virtwire_ssh)], config=config) as server:
            proc = await asyncio.create_subprocess_exec(
                node,
                str(HERE / "js_terminal_harness.js"),
                server.ws_url(),
                server.token("js-user"),
                "vm-001",
                "alice",
                USERS["alice"],
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env={
                    "NODE_PATH": str(HERE.parent / "js" / "node_modules"),
                    "PATH": "/usr/bin:/bin",
                },
            )
            stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    lines = [json.loads(line) for line in stdout.decode().splitlines() if line.strip()]
    assert proc.returncode == 0, (lines, stderr.decode())
    by_kind = {line["kind"]: line["data"] for line in lines}
    connected = by_kind["connected"]
    assert connected["vmId"] == "vm-001" and connected["type"] == "ssh"
    assert connected["sessionId"] and connected["url"].startswith("/ws/terminal/")
    assert "welcome alice" in by_kind["output"]
    assert "hi-from-js\r\n" in by_kind["output"]
