"""The ``virtwire`` command as a user runs it: serve (embedded default), token, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from virtwire.testing import free_port
from websockets.asyncio.client import connect


class Served:
    def __init__(self, proc: asyncio.subprocess.Process, port: int, banner: list[str]) -> None:
        self.proc = proc
        self.port = port
        self.banner = banner
        self.stderr: list[str] = []

    @property
    def token(self) -> str:
        line = next(x for x in self.banner if x.startswith("connect: "))
        return line.split("token=", 1)[1]


@contextlib.asynccontextmanager
async def serve(virtwire_bin: str, env: dict[str, str], *args: str) -> AsyncIterator[Served]:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        virtwire_bin,
        "serve",
        "--port",
        str(port),
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout and proc.stderr
    banner: list[str] = []
    served = Served(proc, port, banner)

    async def read_stderr_until_ready() -> None:
        while True:
            line = (await proc.stderr.readline()).decode()
            if not line:
                raise AssertionError("server exited:\n" + "".join(served.stderr))
            served.stderr.append(line)
            if "Uvicorn running on" in line:
                return

    try:
        await asyncio.wait_for(read_stderr_until_ready(), 30)
        while True:
            line = await asyncio.wait_for(proc.stdout.readline(), 5)
            if not line:
                break
            banner.append(line.decode().rstrip())
            if banner[-1].startswith("connect: ") or (
                banner[-1].startswith("plugins:") and "--config" in args
            ):
                break

        async def drain() -> None:
            while line := await proc.stderr.readline():
                served.stderr.append(line.decode())

        drainer = asyncio.create_task(drain())
        yield served
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 30)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(drainer, 5)


async def request(ws: Any, type_: str, data: Any, id_: str) -> dict[str, Any]:
    await ws.send(json.dumps({"type": type_, "data": data, "id": id_}))
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if frame.get("id") == id_:
            return frame


async def test_embedded_default_prints_a_working_token_and_hides_it_in_logs(
    virtwire_bin: str, cli_env: dict[str, str]
) -> None:
    async with serve(virtwire_bin, cli_env) as served:
        text = "\n".join(served.banner)
        assert "development mode" in text
        assert f"ws://127.0.0.1:{served.port}/ws?token=" in text
        token = served.token
        async with connect(f"ws://127.0.0.1:{served.port}/ws?token={token}") as ws:
            reply = await request(ws, "subscribe", {"topic": "vm-status-all"}, "s1")
            assert reply["type"] == "subscribe-response"
        # a token minted by `virtwire token` (same state dir: same dev secret) works too
        minted = await asyncio.create_subprocess_exec(
            virtwire_bin,
            "token",
            "--sub",
            "carol",
            "--scope",
            "vm:read",
            "--ttl",
            "60",
            env=cli_env,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await minted.communicate()
        carol = out.decode().strip()
        async with connect(
            f"ws://127.0.0.1:{served.port}/ws",
            additional_headers={"Authorization": f"Bearer {carol}"},
        ) as ws:
            reply = await request(ws, "vm-control", {"vmId": "x", "action": "start"}, "c1")
            assert reply["data"]["code"] == "FORBIDDEN"  # carol has vm:read only
        # the server stops with SIGTERM; the access log never shows a token
        served.proc.send_signal(signal.SIGTERM)
        # uvicorn re-raises the signal after a graceful shutdown
        assert await asyncio.wait_for(served.proc.wait(), 30) in (0, -signal.SIGTERM)
    logs = "".join(served.stderr)
    assert "Finished server process" in logs
    assert "/ws?token=[REDACTED]" in logs  # the request line was logged, redacted
    assert token not in logs and carol not in logs
    for line in served.stderr:
        json.loads(line)  # JSON logs when not on a terminal
    # the audit stream, in the state directory as the banner says, has carol's attempt
    audit = Path(cli_env["VIRTWIRE_STATE_DIR"]) / "audit.log"
    assert f"audit records: {audit}" in served.banner
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    controls = [r for r in records if r["event"] == "vm-control"]
    assert [(r["user"], r["outcome"]) for r in controls] == [("carol", "FORBIDDEN")]
    assert token not in audit.read_text() and carol not in audit.read_text()


async def test_sigterm_closes_clients_with_1001(virtwire_bin: str, cli_env: dict[str, str]) -> None:
    async with serve(virtwire_bin, cli_env) as served:
        async with connect(f"ws://127.0.0.1:{served.port}/ws?token={served.token}") as ws:
            assert (await request(ws, "ping", {}, "p"))["type"] == "pong"
            served.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(ws.wait_closed(), 15)
            assert ws.close_code == 1001


async def test_config_file_serve(
    virtwire_bin: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "virtwire.toml"
    config.write_text('[auth]\nsecret = "env:TEST_VW_SECRET"\n[server]\nlocale = "en"\n')
    cli_env["TEST_VW_SECRET"] = "a-long-enough-test-secret-value-0123456789"
    async with serve(virtwire_bin, cli_env, "--config", str(config)) as served:
        assert not any("development mode" in x for x in served.banner)
        minted = await asyncio.create_subprocess_exec(
            virtwire_bin,
            "token",
            "--config",
            str(config),
            "--sub",
            "dan",
            env=cli_env,
            stdout=asyncio.subprocess.PIPE,
        )
        token = (await minted.communicate())[0].decode().strip()
        async with connect(f"ws://127.0.0.1:{served.port}/ws?token={token}") as ws:
            reply = await request(ws, "nope", {}, "n")
            assert reply["data"]["message"] == "unknown message type: nope"  # locale en
