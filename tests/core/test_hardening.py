"""Misbehaving clients: ones that stop reading, flood, hang in the handshake, rebind DNS, nest
frames deeply or play tricks with tokens. Each test is one attack a probe found working."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import jwt
import pytest
import virtwire_example
from test_connection import Flood
from virtwire import hookimpl
from virtwire.plugins import discover, selected_names
from virtwire.testing import TEST_SECRET, make_settings, run_server
from virtwire.topics import ChannelTopic
from virtwire.wire import WebSocketProtocol, protocol_of
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from wirekit import close_code, open_tcp, until, upgrade_request, ws_handshake

PLUGINS: list[Any] = [("example", virtwire_example)]


def only_session(server: Any) -> Any:
    (session,) = list(server.gateway.sessions)
    return session


def connections(server: Any) -> int:
    return len(server.server.server_state.connections)


# -- a client that stops reading ------------------------------------------------------------
async def test_a_client_that_stops_reading_is_dropped_when_its_close_is_due() -> None:
    flood = Flood()
    settings = make_settings(
        {
            "server": {
                "close_timeout": 0.5,
                "send_queue_bytes": 64 << 20,
                "send_queue_messages": 100000,
            }
        }
    )
    async with run_server(settings, plugins=[("flood", flood)]) as server:
        raw = await ws_handshake(server.port, server.token("slow"), rcvbuf=4096)
        raw.send_text(json.dumps({"type": "subscribe", "data": {"topic": "flood"}, "id": 1}))
        channel = flood.topic.channel
        await until(lambda: len(channel) == 1)
        payload = "x" * 8000
        for i in range(2000):  # 16 MB: far more than the socket buffers hold
            channel.publish("flood", {"i": i, "p": payload})
        session = only_session(server)
        assert len(session.outbox) > 0  # a backlog the client will never read
        session.close(1000, "bye")  # a close that would flush the backlog first
        await asyncio.wait_for(session.finished.wait(), 10)
        await until(lambda: connections(server) == 0)
        raw.close()


async def test_before_authentication_payloads_are_small() -> None:
    async with run_server(plugins=PLUGINS) as server:
        async with server.client(None) as client:
            await client.send("ping", {"echo": "e" * 1000}, "p1")
            pong = await client.expect("pong")
            assert pong["id"] == "p1" and pong["data"] == {}  # not echoed before auth
            await client.send_raw(
                json.dumps({"type": "auth", "data": {"token": "t" * 20000}, "id": "big"})
            )
            error = await client.expect("error")
            assert error["id"] == "big" and error["data"]["code"] == "MESSAGE_TOO_BIG"
            assert error["data"]["details"]["limit"] == 16 * 1024
            assert (await client.closed())[0] == 1009
        async with server.client() as client:  # once authenticated, the full limit
            reply = await client.request("greet", {"name": "n" * 50000})
            assert reply["type"] == "greet-response"


async def test_connections_are_capped_per_address_and_in_total() -> None:
    settings = make_settings({"server": {"max_connections_per_address": 2}})
    async with run_server(settings, plugins=PLUGINS) as server:
        async with server.client(), server.client():
            with pytest.raises(InvalidStatus) as refused:
                async with connect(server.ws_url(token=server.token())):
                    pass
            assert refused.value.response.status_code == 503
        await until(lambda: connections(server) == 0)
        async with server.client() as client:  # room again
            assert (await client.request("ping"))["type"] == "pong"
    settings = make_settings({"server": {"max_connections": 1}})
    async with run_server(settings, plugins=PLUGINS) as server:
        async with server.client():
            with pytest.raises(InvalidStatus) as refused:
                async with connect(server.ws_url(token=server.token())):
                    pass
            assert refused.value.response.status_code == 503


# -- floods ----------------------------------------------------------------------------------
async def test_a_flood_is_dropped_unread_answered_once_then_closed() -> None:
    settings = make_settings(
        {"server": {"rate_limit": 20, "rate_burst": 5, "flood_close_after": 0.3}}
    )
    async with run_server(settings, plugins=PLUGINS) as server:
        async with server.client() as client:
            for i in range(5):
                await client.send("greet", {"name": str(i)}, f"g{i}")
            for _ in range(60):  # malformed frames count against the budget too
                await client.send_raw("{not json")
            replies = [await client.expect("greet-response") for _ in range(5)]
            assert [r["id"] for r in replies] == [f"g{i}" for i in range(5)]
            errors: list[dict[str, Any]] = []
            with pytest.raises(TimeoutError):
                while True:
                    errors.append(await client.expect("error", timeout=0.2))
            limited = [e for e in errors if e["data"]["code"] == "RATE_LIMITED"]
            invalid = [e for e in errors if e["data"]["code"] == "INVALID_MESSAGE"]
            assert len(limited) == 1 and "id" not in limited[0]  # answered once
            assert len(invalid) <= 3  # only what the bucket refilled meanwhile was decoded
            loop = asyncio.get_running_loop()
            end = loop.time() + 10
            while client.ws.close_code is None and loop.time() < end:  # a sustained flood
                try:
                    await client.send_raw("{not json")
                except Exception:
                    break
                await asyncio.sleep(0.005)
            assert (await client.closed())[0] == 1008


# -- handshakes ------------------------------------------------------------------------------
@pytest.mark.parametrize("sent", [b"", b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgra"])
async def test_a_handshake_that_never_completes_is_timed_out(sent: bytes) -> None:
    settings = make_settings({"server": {"handshake_timeout": 0.3}})
    async with run_server(settings, plugins=PLUGINS) as server:
        raw = await open_tcp(server.port)
        raw.writer.write(sent)
        answer = await asyncio.wait_for(raw.reader.read(), 10)  # until the server closes
        assert answer.startswith(b"HTTP/1.1 408 ")
        raw.close()


@pytest.mark.parametrize(
    ("where", "status"), [("query", b"414"), ("header", b"431")], ids=["query", "header"]
)
async def test_an_oversized_handshake_is_answered(where: str, status: bytes) -> None:
    async with run_server(plugins=PLUGINS) as server:
        token = "t" * 9000
        raw = await open_tcp(server.port)
        if where == "query":
            raw.writer.write(upgrade_request(server.port, f"/ws?token={token}"))
        else:
            raw.writer.write(
                upgrade_request(server.port, extra=f"Authorization: Bearer {token}\r\n")
            )
        answer = await asyncio.wait_for(raw.reader.read(), 10)
        assert answer.split(b"\r\n")[0].split(b" ")[1] == status
        raw.close()


# -- Host (DNS rebinding) --------------------------------------------------------------------
async def _status(port: int, request: bytes) -> bytes:
    raw = await open_tcp(port)
    raw.writer.write(request)
    answer = await asyncio.wait_for(raw.reader.readuntil(b"\r\n"), 10)
    raw.close()
    return answer.split(b" ")[1]


def _get(path: str, host: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()


async def test_host_names_other_than_the_configured_ones_are_refused() -> None:
    async with run_server(plugins=PLUGINS) as server:
        port = server.port
        assert await _status(port, _get("/healthz", "attacker.example:80")) == b"403"
        assert await _status(port, upgrade_request(port, host="attacker.example")) == b"403"
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "app.localhost"):
            assert await _status(port, _get("/healthz", host)) == b"200", host
        assert await _status(port, upgrade_request(port, host=f"localhost:{port}")) == b"101"
    settings = make_settings({"server": {"allowed_hosts": ["gw.example.com", "*.corp.example"]}})
    async with run_server(settings, plugins=PLUGINS) as server:
        port = server.port
        assert await _status(port, _get("/healthz", "gw.example.com")) == b"200"
        assert await _status(port, _get("/healthz", "a.b.corp.example:3000")) == b"200"
        assert await _status(port, _get("/healthz", f"localhost:{port}")) == b"403"


# -- frames ----------------------------------------------------------------------------------
async def test_deeply_nested_frames_get_an_error_and_the_connection_stays() -> None:
    async with run_server(plugins=PLUGINS) as server:
        async with server.client(None) as client:  # before authentication too
            nested = "[" * 5000 + "]" * 5000
            await client.send_raw('{"type": "greet", "data": {"a": ' + nested + '}, "id": "d"}')
            error = await client.expect("error")
            assert error["id"] == "d" and error["data"]["code"] == "INVALID_MESSAGE"
            assert (await client.request("ping"))["type"] == "pong"


async def test_odd_frames_keep_their_id() -> None:
    settings = make_settings({"server": {"max_message_bytes": 4096}})
    async with run_server(settings, plugins=PLUGINS) as server:
        async with server.client() as client:
            for raw, id_ in [
                ('{"type": "greet", "data": {"n": 1e309}, "id": "n1"}', "n1"),
                ('{"type": "greet", "data": {"s": "\\ud800"}, "id": "s1"}', "s1"),
                ('{"type": "greet", "data": {"n": 1e400, "name": "x"}, "id": 7}', 7),
            ]:
                await client.send_raw(raw)
                error = await client.expect("error")
                assert error["id"] == id_ and error["data"]["code"] == "INVALID_MESSAGE"
            huge = '{"type": "greet", "data": {"name": "x"}, "id": 123456789012345678901234567890}'
            await client.send_raw(huge)
            reply = await client.expect("greet-response")
            assert reply["id"] == 123456789012345678901234567890
            await client.send("greet", {"name": "frac"}, 12.5)
            assert (await client.expect("greet-response"))["id"] == 12.5
            await client.send("greet", {"name": "y" * 5000}, "big")
            error = await client.expect("error")
            assert error["id"] == "big" and error["data"]["code"] == "MESSAGE_TOO_BIG"
            assert (await client.closed())[0] == 1009
        async with server.client() as client:  # over the protocol's hard cap (2x)
            await client.send("greet", {"name": "z" * 9000}, "huge")
            error = await client.expect("error")
            assert error["data"]["code"] == "MESSAGE_TOO_BIG"
            assert (await client.closed())[0] == 1009


async def test_invalid_utf8_closes_1007_without_an_error_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with run_server(plugins=PLUGINS) as server:
        raw = await ws_handshake(server.port, server.token())
        with caplog.at_level(logging.INFO):
            raw.send_text(b'{"type": "ping", "data": {"x": "\xff"}}')
            frames = await raw.frames()
        assert frames[-1][0] == 0x8 and close_code(frames[-1][1]) == 1007
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        raw.close()


async def test_validation_errors_speak_the_configured_locale() -> None:
    async with run_server(plugins=PLUGINS) as server:  # zh-CN by default
        async with server.client() as client:
            reply = await client.request("greet", {"name": 5})
            assert "字段" in reply["data"]["message"]
            assert reply["data"]["details"]["field"] == "data.name"
            await client.send_raw("{oops")
            assert "JSON" in (await client.expect("error"))["data"]["message"]
    settings = make_settings({"server": {"locale": "en"}})
    async with run_server(settings, plugins=PLUGINS) as server:
        async with server.client() as client:
            reply = await client.request("greet", {"name": 5})
            assert reply["data"]["message"].startswith("invalid message: field data.name")


async def test_vm_ids_with_control_characters_are_invalid() -> None:
    async with run_server(plugins=PLUGINS) as server:
        async with server.client() as client:
            for vm_id in ("a\x00b", "line\nbreak", ""):
                reply = await client.request("vm-control", {"vmId": vm_id, "action": "start"})
                assert reply["data"]["code"] == "INVALID_MESSAGE", vm_id
                assert reply["data"]["details"]["field"] == "data.vmId"
                reply = await client.request("subscribe", {"topic": "vm-status", "vmId": vm_id})
                assert reply["data"]["code"] == "INVALID_MESSAGE", vm_id


# -- tokens ----------------------------------------------------------------------------------
class Alerts:
    """A plugin topic that needs ``vm:read``."""

    @hookimpl
    def register_topics(self, register: Any, gateway: Any) -> None:
        self.topic = ChannelTopic("alerts", gateway.hub.channel("alerts"), scope="vm:read")
        register(self.topic)


async def test_a_refresh_to_fewer_rights_ends_the_subscriptions_it_no_longer_allows() -> None:
    alerts = Alerts()
    async with run_server(plugins=[*PLUGINS, ("alerts", alerts)]) as server:
        async with server.client(server.token("u", ["vm:read", "console"])) as client:
            assert (await client.request("subscribe", {"topic": "alerts"}))["type"] == (
                "subscribe-response"
            )
            alerts.topic.channel.publish("alert", {"n": 1})
            assert (await client.expect("alert"))["data"] == {"n": 1}
            reply = await client.request("auth", {"token": server.token("u", ["console"])})
            assert reply["type"] == "auth-response"
            ended = await client.expect("error")
            assert ended["data"]["code"] == "FORBIDDEN"
            assert ended["data"]["details"]["topic"] == "alerts"
            assert len(alerts.topic.channel) == 0
            alerts.topic.channel.publish("alert", {"n": 2})
            assert (await client.request("ping"))["type"] == "pong"
            assert client.frames.empty()  # no alert after the refresh


async def test_date_claims_must_be_numbers_and_tokens_unambiguous() -> None:
    async with run_server(plugins=PLUGINS) as server:
        now = int(time.time())
        for claims in (
            {"exp": str(now + 3600)},
            {"exp": now + 3600, "nbf": str(now)},
            {"exp": now + 3600, "iat": "yesterday"},
        ):
            token = jwt.encode({"sub": "u", "scope": "vm:read", **claims}, TEST_SECRET)
            async with server.client(token) as client:
                error = await client.expect("error")
                assert error["data"]["code"] == "AUTH_FAILED", claims
                assert (await client.closed())[0] == 4001
        good = server.token()
        async with connect(f"{server.ws_url()}?token=&token={good}") as ws:
            error = json.loads(await ws.recv())
            assert error["data"]["code"] == "AUTH_FAILED"
            await ws.wait_closed()
            assert ws.close_code == 4001


# -- shutdown --------------------------------------------------------------------------------
async def test_shutdown_is_bounded_by_its_timeout_with_clients_that_stopped_reading() -> None:
    flood = Flood()
    settings = make_settings(
        {
            "server": {
                "shutdown_timeout": 1.0,
                "close_timeout": 0.5,
                "send_queue_bytes": 64 << 20,
                "send_queue_messages": 100000,
            }
        }
    )
    async with run_server(settings, plugins=[("flood", flood)]) as server:
        raws = []
        for _ in range(3):
            raw = await ws_handshake(server.port, server.token(), rcvbuf=4096)
            raw.send_text(json.dumps({"type": "subscribe", "data": {"topic": "flood"}}))
            raws.append(raw)
        await until(lambda: len(flood.topic.channel) == 3)
        for i in range(500):
            flood.topic.channel.publish("flood", {"i": i, "p": "x" * 8000})
        started = time.monotonic()
        server.server.should_exit = True
        await until(lambda: connections(server) == 0 and not server.gateway.sessions, 10)
        # close deadline (0.5 s) plus uvicorn's own steps, well inside shutdown_timeout x 2
        assert time.monotonic() - started < 1.9
        for raw in raws:
            raw.close()


async def test_shutdown_puts_the_close_frame_ahead_of_the_backlog() -> None:
    flood = Flood()
    settings = make_settings(
        {"server": {"close_timeout": 5, "send_queue_bytes": 64 << 20, "send_queue_messages": 10**5}}
    )
    async with run_server(settings, plugins=[("flood", flood)]) as server:
        raw = await ws_handshake(server.port, server.token(), rcvbuf=4096)
        raw.send_text(json.dumps({"type": "subscribe", "data": {"topic": "flood"}}))
        await until(lambda: len(flood.topic.channel) == 1)
        # 32 MB: far more than loopback's kernel buffers can absorb while the client reads
        # nothing, so part of it must still be queued in the gateway when shutdown starts
        sent = 4000
        for i in range(sent):
            flood.topic.channel.publish("flood", {"i": i, "p": "x" * 8000})
        assert len(only_session(server).outbox) > 0
        server.server.should_exit = True
        frames = await raw.frames()  # reading again: what was on the wire, then the close
        assert frames[-1][0] == 0x8 and close_code(frames[-1][1]) == 1001
        received = sum(1 for op, _ in frames if op == 0x1)
        assert received < sent  # the backlog was dropped, not sent before the close
        raw.close()


# -- the embedded default and the example plugin --------------------------------------------
def test_the_embedded_default_loads_only_the_products_plugins() -> None:
    installed = discover()
    assert "example" in installed  # installed in the development environment
    names, _ = selected_names(installed, None, {}, "<defaults>")
    assert "example" not in names
    assert set(names) == {"libvirt", "logs", "monitor", "proxmox", "ssh", "web"} & set(installed)
    names, _ = selected_names(installed, None, {}, "virtwire.toml")
    assert "example" in names  # a config file without [plugins] enabled: all installed


async def test_example_ticks_topic_states_its_scope_and_caps_its_tickers() -> None:
    async with run_server(plugins=PLUGINS) as server:
        async with server.client(server.token("u", ["console"])) as client:
            reply = await client.request("subscribe", {"topic": "ticks", "interval": 1000})
            assert reply["data"]["code"] == "FORBIDDEN"
        async with server.client() as client:
            for interval in range(1000, 1016):
                reply = await client.request("subscribe", {"topic": "ticks", "interval": interval})
                assert reply["type"] == "subscribe-response"
            reply = await client.request("subscribe", {"topic": "ticks", "interval": 2000})
            assert reply["data"]["code"] == "RATE_LIMITED"


# -- the direct write path -------------------------------------------------------------------
async def test_the_direct_write_path_is_on_with_the_uvicorn_in_use() -> None:
    """Fails when a uvicorn upgrade changes the protocol class virtwire builds on: the
    direct path would otherwise silently fall back to the slower ASGI send path."""
    topic_plugin = Alerts()
    async with run_server(plugins=[("alerts", topic_plugin)]) as server:
        async with server.client() as client:
            await client.request("subscribe", {"topic": "alerts"})
            session = only_session(server)
            wire = session.outbox.direct.__self__
            assert isinstance(wire, WebSocketProtocol) and wire.live
            assert protocol_of(wire.send) is wire
            delivered = topic_plugin.topic.channel.publish("alert", {"n": 1})
            assert delivered == 1 and len(session.outbox) == 0  # written, not queued
            assert (await client.expect("alert"))["data"] == {"n": 1}
            assert session.outbox.active is False  # and no writer task while idle
            # frames for one connection in one loop tick leave in one transport write
            topic_plugin.topic.channel.publish("alert", {"n": 2})
            topic_plugin.topic.channel.publish("alert", {"n": 3})
            assert wire._pending is not None and len(wire._pending) == 2
            assert [(await client.expect("alert"))["data"]["n"] for _ in range(2)] == [2, 3]
            assert wire._pending is None
