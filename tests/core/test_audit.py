"""The audit stream (virtwire/audit.py, docs/audit.md): the file and its mode, rotation,
drops counted and reported, plugin records with secrets redacted, the event filter, the
``[audit]`` table, and the records of a terminal and its one-time ticket (a real shell on a
PTY, tests/core/localpty.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import stat
from pathlib import Path
from typing import Any

import httpx
import pytest
from localpty import LocalShellPlugin
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket
from test_metrics import samples
from virtwire import hookimpl
from virtwire.app import create_app
from virtwire.audit import AuditLog
from virtwire.config import AuditConfig
from virtwire.errors import ConfigError, VirtwireError
from virtwire.session import Session
from virtwire.testing import make_settings, run_server
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus


class SnapshotPlugin:
    """A plugin that records its own action in the audit stream."""

    @hookimpl
    def register_handlers(self, register: Any, gateway: Any) -> None:
        async def snapshot(session: Session, data: dict[str, Any]) -> dict[str, Any]:
            gateway.audit(
                "snapshot-create",
                session=session,
                vmId=data["vmId"],
                password=data.get("password"),
                note=data.get("note"),
            )
            return {"vmId": data["vmId"]}

        register("snapshot", snapshot, scope="vm:control")


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_plugin_records_with_the_caller_and_no_secret(tmp_path: Path) -> None:
    path = tmp_path / "audit" / "audit.log"
    config = {"audit": {"path": str(path), "instance": "gw-7"}}
    plugins = [("snapshots", SnapshotPlugin())]
    async with run_server(plugins=plugins, config=config) as server:
        token = server.token("erin")
        async with server.client(token) as client:
            reply = await client.request(
                "snapshot",
                {"vmId": "db", "password": "hunter2", "note": "see /ws/vnc/abcdefghijkl"},
            )
            assert reply["type"] == "snapshot-response"
        (record,) = await server.audit_records("snapshot-create")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert record["user"] == "erin" and record["vmId"] == "db" and record["gateway"] == "gw-7"
    assert record["id"].startswith("t") and record["address"].startswith("127.0.0.1:")
    assert record["password"] == "[REDACTED]"
    text = path.read_text()
    assert "hunter2" not in text and token not in text and "abcdefghijkl" not in text


class RoutePlugin:
    """A plugin WebSocket route that checks its client's token with the gateway."""

    @hookimpl
    def register_routes(self, register: Any, gateway: Any) -> None:
        async def hello(websocket: WebSocket) -> None:
            try:
                await gateway.authenticate_websocket(websocket, scope="vm:read")
            except VirtwireError:
                await websocket.close(1008)
                return
            await websocket.accept()
            await websocket.close(1000)

        register(WebSocketRoute("/hello", hello))


async def test_refused_tokens_are_recorded_without_the_token(tmp_path: Path) -> None:
    config = {"audit": {"path": str(tmp_path / "a.log")}}
    async with run_server(plugins=[("route", RoutePlugin())], config=config) as server:
        forged = server.token("mallory")[:-4] + "AAAA"
        async with server.client(forged) as client:
            await client.closed()
        expired = server.token("mallory", ttl=-60)
        with contextlib.suppress(InvalidStatus, ConnectionClosed):
            async with connect(server.ws_url("/hello", expired)) as ws:
                await ws.recv()
        records = await server.audit_records("auth-refused", count=2)
        text = (tmp_path / "a.log").read_text()
    assert [r["outcome"] for r in records] == ["AUTH_FAILED", "TOKEN_EXPIRED"]
    assert all(r["address"].startswith("127.0.0.1:") for r in records)
    assert records[1]["path"] == "/hello"
    assert forged not in text and expired not in text


async def test_a_rotated_file_is_replaced_by_a_new_one(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    async with run_server(config={"audit": {"path": str(path)}}) as server:
        gateway = server.gateway
        gateway.audit("before", n=1)
        await server.audit_records("before")
        path.rename(tmp_path / "audit.log.1")  # what logrotate does (no copytruncate)
        gateway.audit("after", n=2)
        (after,) = await server.audit_records("after")  # waits for the new file
        assert after["n"] == 2
        path.unlink()  # removed by hand: a new one again
        gateway.audit("again", n=3)
        await server.audit_records("again")
    assert [r["event"] for r in read(tmp_path / "audit.log.1")] == ["before"]
    assert [r["event"] for r in read(path)] == ["again"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_a_burst_beyond_the_queue_is_counted_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    config = {"audit": {"path": str(path), "queue_size": 4}, "server": {"metrics": "open"}}
    burst = 20000
    async with run_server(config=config) as server:
        audit = server.gateway.audit_log
        for n in range(burst):  # on the event loop, without yielding: it never waits
            server.gateway.audit("burst", n=n)
        assert audit.dropped > 0
        dropped = audit.dropped
        written = await server.audit_records("burst", count=burst - dropped)
        reports = await server.audit_records("audit-dropped")
        async with asyncio.timeout(10):  # all reported once the writer has caught up
            while sum(r["count"] for r in reports) < dropped:
                await asyncio.sleep(0.01)
                reports = await server.audit_records("audit-dropped")
        async with httpx.AsyncClient() as http:
            got = samples((await http.get(f"{server.http_url}/metrics")).text)
    assert sum(r["count"] for r in reports) == dropped
    assert len(written) == burst - dropped
    numbers = [r["n"] for r in written]
    assert numbers == sorted(numbers)  # in order, whatever was dropped
    assert got[("virtwire_audit_dropped_total", ())] == dropped
    assert got[("virtwire_audit_records_total", ())] == len(written) + len(reports)


async def test_only_the_listed_events_are_written(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    config = {"audit": {"path": str(path), "events": ["keep"]}}
    async with run_server(config=config) as server:
        server.gateway.audit("skip", n=1)
        server.gateway.audit("keep", n=2)
        await server.audit_records("keep")
    assert [r["event"] for r in read(path)] == ["keep"]


async def test_audit_off_writes_nothing(tmp_path: Path) -> None:
    async with run_server(config={"audit": {"enabled": False}}) as server:
        server.gateway.audit("anything", n=1)
        assert server.gateway.audit_log.records == 0
        assert not (server.state_dir / "audit.log").exists()


async def test_default_file_is_in_the_state_directory() -> None:
    async with run_server() as server:
        server.gateway.audit("hello")
        await server.audit_records("hello")
        assert server.gateway.audit_log.path == server.state_dir / "audit.log"


def test_audit_table_is_validated(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"audit\.queue_size"):
        make_settings({"audit": {"queue_size": 0}})
    with pytest.raises(ConfigError, match=r"unknown key 'audit\.file'"):
        make_settings({"audit": {"file": "x"}})
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("")
    with pytest.raises(ConfigError, match=r"audit\.path: cannot open"):
        AuditLog(AuditConfig()).start(blocked / "audit.log", None)
    # the app factory says so before anything starts (virtwire serve prints it and exits 2)
    settings = make_settings({"audit": {"path": str(blocked / "audit.log")}})
    with pytest.raises(ConfigError, match=r"audit\.path: cannot open .*not-a-dir"):
        create_app(settings)


async def test_terminal_and_its_ticket_are_recorded(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    config = {"audit": {"path": str(path)}}
    async with run_server(plugins=[("local", LocalShellPlugin())], config=config) as server:
        async with server.client(server.token("frank")) as client:
            reply = await client.request("terminal-connect", {"vmId": "here", "type": "local"})
            data = reply["data"]
            async with server.client(server.token("hank")) as hank:  # another user watches
                watch = {"vmId": "here", "sessionId": data["sessionId"]}
                watching = await hank.request("terminal-connect", watch)
                assert watching["data"]["mode"] == "observer"
            async with connect(server.ws_url(data["url"])) as raw:
                await raw.send("exit 3\r")
                with contextlib.suppress(ConnectionClosed):
                    while True:
                        await asyncio.wait_for(raw.recv(), 10)
            async with connect(server.ws_url(data["url"])) as again:  # one use only
                with contextlib.suppress(ConnectionClosed):
                    await asyncio.wait_for(again.recv(), 10)
            refused = await client.request("terminal-connect", {"vmId": "here", "type": "vnc"})
            assert refused["data"]["code"] == "CONSOLE_UNAVAILABLE"
        (opened,) = await server.audit_records(
            "terminal-open", where=lambda r: r["outcome"] == "ok"
        )
        (failed,) = await server.audit_records(
            "terminal-open", where=lambda r: r is not opened and r["outcome"] != "ok"
        )
        redeemed = await server.audit_records("ticket-redeem", count=2)
        (attached,) = await server.audit_records("terminal-attach")
        (closed,) = await server.audit_records("terminal-close")
        (ended,) = await server.audit_records("endpoint-close")
    sid = data["sessionId"]
    assert opened["user"] == "frank" and opened["vmId"] == "here" and opened["type"] == "local"
    assert opened["sessionId"] == sid and opened["mode"] == "owner" and opened["id"]
    assert failed["outcome"] == "CONSOLE_UNAVAILABLE" and failed["type"] == "vnc"
    assert (attached["user"], attached["sessionId"], attached["mode"]) == ("hank", sid, "observer")
    assert attached["type"] == "local" and attached["outcome"] == "ok"
    assert [r["outcome"] for r in redeemed] == ["ok", "TICKET_USED"]
    assert redeemed[0]["user"] == "frank" and redeemed[0]["sessionId"] == sid
    assert redeemed[0]["kind"] == "terminal" and redeemed[0]["address"].startswith("127.0.0.1:")
    assert closed["sessionId"] == sid and closed["exitStatus"] == 3
    assert closed["reason"] == "exited" and closed["user"] == "frank"
    assert ended["sessionId"] == sid and ended["mode"] == "owner" and ended["durationMs"] > 0
    assert data["ticket"] not in path.read_text()


async def test_path_dash_writes_to_standard_error(capfd: pytest.CaptureFixture[str]) -> None:
    audit = AuditLog(AuditConfig(path="-", instance=""))
    audit.start(None, None)
    audit.record("vm-control", {"user": "gina", "vmId": "web-1", "outcome": "ok"})
    await audit.close()
    (line,) = [x for x in capfd.readouterr().err.splitlines() if x.startswith("{")]
    record = json.loads(line)
    assert record["event"] == "vm-control" and record["user"] == "gina"
    assert "gateway" not in record  # instance = "" leaves it out
