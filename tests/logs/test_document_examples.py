"""The log streaming API document's Python (``websockets``, ``websocket-client``) and Node
(``ws``) examples, as written, against a real gateway with ``public = true``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from logkit import lines

HERE = Path(__file__).resolve().parent
JS = HERE.parent / "js"


class Example:
    """A client example running as its own process; its stdout read line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def line(self, wait: float = 15.0) -> str:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), wait)
        if not raw:
            stderr = await self.proc.stderr.read() if self.proc.stderr else b""
            raise AssertionError(f"example exited: {stderr.decode(errors='replace')}")
        return raw.decode().rstrip("\n")

    async def until(self, text: str) -> list[str]:
        seen = []
        while True:
            seen.append(await self.line())
            if seen[-1] == text:
                return seen


def _pointed(source: Path, port: int, tmp_path: Path) -> Path:
    """A copy of ``source`` whose URL (``ws://localhost:19159``) points at ``port``; a Node
    script stays next to tests/js/node_modules so that ``require('ws')`` finds it."""
    text = source.read_text().replace("localhost:19159", f"127.0.0.1:{port}")
    script = (source.parent if source.suffix == ".js" else tmp_path) / f"run-{port}-{source.name}"
    script.write_text(text)
    return script


@contextlib.asynccontextmanager
async def example(
    source: Path, port: int, tmp_path: Path, *argv: str, args: tuple[str, ...] = ()
) -> AsyncIterator[Example]:
    """Run ``source`` (pointed at ``port``) with ``argv``; stopped by PID afterwards."""
    script = _pointed(source, port, tmp_path)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = await asyncio.create_subprocess_exec(
        *argv,
        str(script),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        yield Example(proc)
    finally:
        if proc.returncode is None:
            os.kill(proc.pid, signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                os.kill(proc.pid, signal.SIGKILL)
                await proc.wait()
        script.unlink(missing_ok=True)


async def test_python_websockets_example(logs_server, logdir, tmp_path):
    log = logdir / "ds_update.log"
    lines(log, 0, 60)
    async with logs_server(public=True, reopen_grace=0.2) as server:
        source = HERE / "examples" / "watch_logs_websockets.py"
        async with example(source, server.port, tmp_path, sys.executable) as run:
            assert await run.line() == "已连接到 ds_update.log"
            history = [await run.line() for _ in range(50)]
            assert history == [f"[日志] line {i}" for i in range(10, 60)]
            lines(log, 60, 61)
            assert await run.line() == "[日志] line 60"
            log.unlink()
            assert await run.line() == "[日志] 日志文件 ds_update.log 不再存在"
            assert await asyncio.wait_for(run.proc.wait(), 10) == 0  # closed cleanly: 1000


async def test_python_websocket_client_example(logs_server, logdir, tmp_path):
    log = logdir / "download.log"
    lines(log, 0, 2)
    async with logs_server(public=True, reopen_grace=0.2) as server:
        source = HERE / "examples" / "watch_logs_websocket_client.py"
        async with example(source, server.port, tmp_path, sys.executable) as run:
            assert await run.until("连接已建立") == ["连接已建立"]
            assert [await run.line() for _ in range(2)] == ["[日志] line 0", "[日志] line 1"]
            os.truncate(log, 0)
            assert await run.line() == "[日志] 日志文件被截断，重新加载..."
            lines(log, 0, 1, prefix="again")
            assert await run.line() == "[日志] again 0"
            log.unlink()
            assert await run.line() == "[日志] 日志文件 download.log 不再存在"
            # websocket-client reports the normal close through on_error too
            closing = await run.until("连接已关闭")
            assert closing[:-1] in ([], ["[错误] Connection closed normally (code 1000): deleted"])
            assert await asyncio.wait_for(run.proc.wait(), 10) == 0


async def test_node_ws_example(logs_server, logdir, tmp_path):
    log = logdir / "upload.log"
    lines(log, 0, 1)
    async with logs_server(public=True) as server:
        async with example(JS / "logs_example.js", server.port, tmp_path, "node") as run:
            assert await run.line() == "WebSocket 连接已建立"
            assert await run.line() == "[日志] line 0"
            lines(log, 1, 3)
            assert [await run.line(), await run.line()] == ["[日志] line 1", "[日志] line 2"]
            os.kill(run.proc.pid, signal.SIGINT)  # its own graceful close
            assert await asyncio.wait_for(run.proc.wait(), 10) == 0


async def test_missing_file_text_reaches_the_example(logs_server, tmp_path):
    async with logs_server(public=True) as server:
        source = HERE / "examples" / "watch_logs_websockets.py"
        async with example(source, server.port, tmp_path, sys.executable) as run:
            assert await run.line() == "已连接到 ds_update.log"
            assert await run.line() == "[日志] 日志文件 ds_update.log 不存在"
            assert await asyncio.wait_for(run.proc.wait(), 10) == 0


async def test_robust_log_viewer_classifies_the_texts(logs_server, logdir, tmp_path):
    """The document's RobustLogViewer (browser WebSocket API, here Node's) matches message
    texts: errors, warnings and log lines land where the page expects them."""
    log = logdir / "ds_update.log"
    lines(log, 0, 2)
    node = ("node", "--no-warnings")
    source = JS / "logs_robust_viewer.js"
    async with logs_server(public=True, reopen_grace=0.2) as server:
        async with example(source, server.port, tmp_path, *node) as run:
            assert await run.line() == "STATUS status-success 已连接"
            assert [await run.line(), await run.line()] == ["LOG line 0", "LOG line 1"]
            os.truncate(log, 0)
            assert await run.line() == "STATUS status-warning 日志文件被截断，重新加载..."
            lines(log, 5, 6)
            assert await run.line() == "LOG line 5"
            log.unlink()
            # "不再存在" is not one of the texts it classifies: shown as a log line, then a
            # clean close (no reconnect)
            assert await run.line() == "LOG 日志文件 ds_update.log 不再存在"
            assert await run.line() == "STATUS status-info 连接已关闭"
        for name, text in (
            ("custom.log", "不允许访问请求的文件: custom.log"),
            ("download.log", "日志文件 download.log 不存在"),
        ):
            async with example(source, server.port, tmp_path, *node, args=(name,)) as run:
                assert await run.line() == "STATUS status-success 已连接"
                assert await run.line() == f"STATUS status-error {text}"
                assert await run.line() == "STATUS status-info 连接已关闭"
