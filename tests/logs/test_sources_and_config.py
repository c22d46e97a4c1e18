"""The embedded default (the gateway's own log), log sources from other plugins, config."""

from __future__ import annotations

import asyncio
import logging
import types
from collections.abc import AsyncIterator

import msgspec
import pytest
import virtwire_logs
from logkit import lines
from virtwire import ErrorCode, VirtwireError, hookimpl
from virtwire.errors import ConfigError
from virtwire.logsources import LogEvent, LogLines, LogNotice, LogSource
from virtwire.testing import run_server


@pytest.fixture
def served_logging():
    """Logging set up as ``virtwire serve`` does (structlog through the root logger, JSON),
    restored afterwards."""
    import io

    import structlog
    from virtwire import log as vlog

    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    uvicorn = {
        n: (logging.getLogger(n).handlers[:], logging.getLogger(n).propagate)
        for n in ("uvicorn", "uvicorn.error", "uvicorn.access")
    }
    vlog.configure("json", "info", io.StringIO())
    yield
    structlog.reset_defaults()
    root.handlers[:], level = saved
    root.setLevel(level)
    for name, (handlers, propagate) in uvicorn.items():
        logging.getLogger(name).handlers[:] = handlers
        logging.getLogger(name).propagate = propagate


async def test_embedded_default_serves_the_gateway_log(logs_server, tmp_path, served_logging):
    root = logging.getLogger()
    async with logs_server(no_section=True) as server:
        path = server.gateway.state_dir() / "virtwire.log"  # each test server has its own
        assert not (tmp_path / "state" / "virtwire.log").exists()
        assert server.plugin.default == "virtwire.log"
        async with server.logs(None) as client:  # no ?file=: the gateway log
            while "gateway started" not in await client.next():  # in the history
                pass
            # the gateway's own log lines arrive as they are written
            server.gateway.log.warning("a line from the gateway")
            while "a line from the gateway" not in await client.next():
                pass
        async with server.logs("ds_update.log") as client:  # not configured here
            assert await client.next() == "不允许访问请求的文件: ds_update.log"
        # tokens in request lines are not written to the file
        text = path.read_text()
        assert "/api/v1/ws/logs?token=[REDACTED]" in text
        assert path.stat().st_mode & 0o777 == 0o600  # the log names users and clients
        assert "token=eyJ" not in text
    # the handler is gone with the gateway
    assert all(getattr(h, "baseFilename", None) != str(path) for h in root.handlers)


async def test_configured_files_turn_the_gateway_log_off_unless_asked(logs_server, tmp_path):
    async with logs_server() as server:
        assert "virtwire.log" not in server.plugin.file_source.names()
    gateway_log = tmp_path / "gw" / "gateway.log"
    async with logs_server(gateway_log="gateway.log", gateway_log_path=str(gateway_log)) as server:
        assert "gateway.log" in server.plugin.file_source.names()
        assert server.plugin.default == "ds_update.log"
        assert gateway_log.exists()


class MemorySource:
    """A log source from another plugin: lines pushed by the plugin itself."""

    name = "memory"

    def __init__(self) -> None:
        self.history = ["boot 1", "boot 2", "boot 3"]
        self.queues: list[asyncio.Queue[LogEvent | Exception]] = []
        self.follows = 0

    def names(self) -> list[str]:
        return ["events"]

    def emit(self, event: LogEvent | Exception) -> None:
        for queue in self.queues:
            queue.put_nowait(event)

    async def follow(self, name: str, history: int) -> AsyncIterator[LogEvent]:
        if name != "events":
            raise VirtwireError(ErrorCode.LOG_NOT_FOUND, f"no stream {name!r}")
        self.follows += 1
        queue: asyncio.Queue[LogEvent | Exception] = asyncio.Queue(maxsize=1000)
        self.queues.append(queue)
        try:
            yield LogLines(self.history[-history:] if history else [])
            while True:
                event = await queue.get()
                if isinstance(event, Exception):
                    raise event
                yield event
                if isinstance(event, LogNotice) and event.kind == "deleted":
                    return
        finally:
            self.queues.remove(queue)


async def test_another_plugin_adds_a_log_source(logs_server, logdir):
    source = MemorySource()
    assert isinstance(source, LogSource)

    @hookimpl
    def register_log_sources(register, gateway):
        register(source)

    other = types.SimpleNamespace(register_log_sources=register_log_sources)
    lines(logdir / "ds_update.log", 0, 1)
    async with logs_server(plugins=[("memory", other)], history=2) as server:
        async with server.logs("events") as plain, server.running.client() as framed:
            assert await plain.take(2) == ["boot 2", "boot 3"]
            await framed.request("subscribe", {"topic": "logs", "file": "events", "lines": 3})
            history = await framed.expect("log-lines")
            assert history["data"]["lines"] == ["boot 1", "boot 2", "boot 3"]
            assert source.follows == 1  # shared by both clients
            source.emit(LogLines(["from the plugin"]))
            assert await plain.next() == "from the plugin"
            assert (await framed.expect("log-lines"))["data"]["lines"] == ["from the plugin"]
            source.emit(LogNotice("dropped", 7))
            assert await plain.next() == "客户端接收过慢，跳过了 7 行日志"
            event = await framed.expect("log-event")
            assert event["data"]["kind"] == "dropped" and event["data"]["count"] == 7
            source.emit(LogNotice("deleted"))
            assert await plain.next() == "日志文件 events 不再存在"
            assert (await plain.closed())[0] == 1000
            event = await framed.expect("log-event")
            assert event["data"]["kind"] == "deleted"
        async with server.logs("ds_update.log") as plain:  # the file source still serves
            assert await plain.next() == "line 0"


async def test_a_failing_source_ends_its_streams_cleanly(logs_server):
    source = MemorySource()

    @hookimpl
    def register_log_sources(register, gateway):
        register(source)

    other = types.SimpleNamespace(register_log_sources=register_log_sources)
    async with logs_server(plugins=[("memory", other)]) as server:
        async with server.logs("events") as plain, server.running.client() as framed:
            await plain.take(3)
            await framed.request("subscribe", {"topic": "logs", "file": "events"})
            await framed.expect("log-lines")
            source.emit(RuntimeError("the source broke"))
            assert await plain.next() == "服务器内部错误"
            assert (await plain.closed())[0] == 1011
            event = await framed.expect("log-event")
            assert event["data"]["kind"] == "error"
            assert event["data"]["code"] == "INTERNAL_ERROR"
        # the next client starts the source afresh
        async with server.logs("events") as plain:
            assert await plain.take(3) == ["boot 1", "boot 2", "boot 3"]
        assert source.follows == 2


def _settings(**section):
    return msgspec.convert(section, virtwire_logs.LogsSettings)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"nope": 1}, "nope"),
        ({"history": -1}, "history"),
        ({"files": {"a.log": ""}}, "files"),
        ({"max_line_bytes": 10}, "max_line_bytes"),
        ({"public": "yes"}, "public"),
    ],
)
async def test_bad_config_is_an_error_naming_the_key(section, message, tmp_path):
    with pytest.raises(ConfigError) as info:
        config = {"plugins": {"logs": section}}
        async with run_server(plugins=[("logs", virtwire_logs)], config=config):
            pass
    assert message in str(info.value)


def test_relative_paths_need_a_directory():
    from virtwire_logs.settings import resolve

    with pytest.raises(ConfigError, match="relative"):
        resolve(_settings(files={"a.log": "a.log"}))
    with pytest.raises(ConfigError, match="absolute"):
        resolve(_settings(directory="logs", files={"a.log": "a.log"}))
    resolved = resolve(_settings(files={"a.log": "/var/log/a.log"}))
    assert str(resolved.files["a.log"].path) == "/var/log/a.log"
    assert resolved.default == "ds_update.log"
    assert resolved.gateway_log is None
