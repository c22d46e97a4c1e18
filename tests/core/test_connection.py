"""A connection's life over a real server: framing, replies, limits, heartbeat, shutdown."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
from typing import Any

import msgspec
import pytest
import virtwire_example
from virtwire import hookimpl
from virtwire.testing import make_settings, run_server
from virtwire.topics import ChannelTopic
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus


class Flood:
    """A real plugin that fills a channel on request: drives the slow-client paths."""

    @hookimpl
    def register_topics(self, register: Any, gateway: Any) -> None:
        self.topic = ChannelTopic("flood", gateway.hub.channel("flood"))
        register(self.topic)

    @hookimpl
    def register_handlers(self, register: Any, gateway: Any) -> None:
        async def flood(session: Any, data: dict[str, Any]) -> dict[str, Any]:
            payload = "x" * int(data.get("size", 1000))
            delivered = 0
            for i in range(int(data.get("count", 1))):
                delivered += self.topic.channel.publish("flood", {"i": i, "p": payload})
                if i % 10 == 0:
                    await asyncio.sleep(0)
            return {"published": data.get("count", 1)}

        register("flood", flood)


PLUGINS = [("example", virtwire_example)]


async def test_every_id_gets_exactly_one_reply() -> None:
    async with run_server(plugins=PLUGINS) as server:
        async with server.client() as client:
            cases = [
                ("greet", {"name": "a"}, "greet-response"),
                ("greet", {"name": 1}, "error"),
                ("nope", {}, "error"),
                ("subscribe", {"topic": "ticks", "interval": 1000}, "subscribe-response"),
                ("subscribe", {"topic": "nope"}, "error"),
                ("unsubscribe", {"topic": "ticks", "interval": 1000}, "subscribe-response"),
                ("unsubscribe", {"topic": "ticks", "interval": 1000}, "error"),
                ("ping", None, "pong"),
            ]
            for i, (type_, data, _) in enumerate(cases):
                await client.send(type_, data, f"id-{i}")
            replies: dict[str, list[dict]] = {}
            while sum(len(v) for v in replies.values()) < len(cases):
                frame = await asyncio.wait_for(client.frames.get(), 5)
                replies.setdefault(frame["id"], []).append(frame)
            for i, (type_, _, expected) in enumerate(cases):
                got = replies[f"id-{i}"]
                assert len(got) == 1
                if type_ == "unsubscribe" and expected != "error":
                    expected = "unsubscribe-response"
                assert got[0]["type"] == expected, (type_, got)
            # numeric ids are echoed as numbers
            await client.send("greet", {"name": "n"}, 42)
            frame = await asyncio.wait_for(client.frames.get(), 5)
            assert frame["id"] == 42
            # no id: success is silent, errors still arrive
            await client.send("greet", {"name": "silent"})
            await client.send("nope")
            frame = await asyncio.wait_for(client.frames.get(), 5)
            assert frame["type"] == "error" and frame["data"]["code"] == "UNKNOWN_TYPE"
            assert "id" not in frame


async def test_bad_input_gets_precise_errors_and_connection_stays_usable() -> None:
    async with run_server(plugins=PLUGINS) as server:
        async with server.client() as client:
            await client.send_raw("{not json")
            frame = await client.expect("error")
            assert frame["data"]["code"] == "INVALID_MESSAGE" and "JSON" in frame["data"]["message"]
            await client.send_raw('{"data": {}, "id": "x1"}')
            frame = await client.expect("error")
            assert frame["id"] == "x1" and frame["data"]["details"]["field"] == "type"
            await client.send_raw('{"type": "greet", "data": "hi", "id": "x2"}')
            frame = await client.expect("error")
            assert frame["id"] == "x2" and frame["data"]["details"]["field"] == "data"
            reply = await client.request("greet", {"nam": "typo"})
            assert reply["data"]["code"] == "INVALID_MESSAGE"
            assert reply["data"]["details"]["field"] in ("data.nam", "data.name")
            reply = await client.request("vm-control", {"vmId": "a", "action": "explode"})
            assert reply["data"]["details"]["field"] == "data.action"
            assert "start" in reply["data"]["message"]
            reply = await client.request("unknown-thing", {})
            assert reply["data"]["code"] == "UNKNOWN_TYPE"
            assert "greet" in reply["data"]["details"]["known"]
            await client.ws.send(b'{"type": "greet", "data": {"name": "bin"}, "id": "b1"}')
            frame = await client.expect("greet-response")
            assert frame["id"] == "b1"
            await client.ws.send(b"\xff\xfe")
            frame = await client.expect("error")
            assert frame["data"]["code"] == "INVALID_MESSAGE"
            # still usable
            assert (await client.request("greet", {"name": "ok"}))["type"] == "greet-response"


async def test_oversized_frame_is_refused_with_1009() -> None:
    settings = make_settings({"server": {"max_message_bytes": 4096}})
    async with run_server(settings, plugins=PLUGINS) as server:
        async with server.client() as client:
            await client.send("greet", {"name": "y" * 5000}, "big")
            frame = await client.expect("error")
            assert frame["data"]["code"] == "MESSAGE_TOO_BIG"
            assert frame["data"]["details"]["limit"] == 4096
            assert (await client.closed())[0] == 1009


async def test_text_ping_gets_pong() -> None:
    async with run_server(plugins=PLUGINS) as server:
        async with server.client(None) as client:  # works before auth too
            await client.send_raw("ping")
            assert await asyncio.wait_for(client.texts.get(), 5) == "pong"


async def test_rate_limit() -> None:
    settings = make_settings({"server": {"rate_limit": 1, "rate_burst": 3}})
    async with run_server(settings, plugins=PLUGINS) as server:
        async with server.client() as client:
            for i in range(5):
                await client.send("greet", {"name": str(i)}, i)
            replies = [await client.expect() for _ in range(4)]
            assert [r["id"] for r in replies[:3]] == [0, 1, 2]  # the burst is served
            # over the budget: dropped unread, one RATE_LIMITED for the streak (no id)
            assert replies[3]["data"]["code"] == "RATE_LIMITED" and "id" not in replies[3]


async def test_slow_client_is_closed_without_slowing_others() -> None:
    flood = Flood()
    # 3000 frames of 8 kB (24 MB) are far more than the slow client's socket buffers and its
    # 4 MiB send queue; the fast client (in this same event loop) keeps up.
    settings = make_settings(
        {"server": {"send_queue_messages": 10000, "send_queue_bytes": 4 << 20}}
    )
    async with run_server(settings, plugins=[("flood", flood)]) as server:
        # The slow client stops reading: websockets buffers max_queue frames, then TCP fills.
        slow_ws = await connect(server.ws_url(token=server.token("slow")), max_queue=1)
        await slow_ws.send(json.dumps({"type": "subscribe", "data": {"topic": "flood"}, "id": 1}))
        assert json.loads(await slow_ws.recv())["type"] == "subscribe-response"
        async with server.client() as fast:
            await fast.request("subscribe", {"topic": "flood"})
            reply = await fast.request("flood", {"count": 3000, "size": 8000}, timeout=60)
            assert reply["type"] == "flood-response"
            seen = 0
            while seen < 3000:
                frame = await fast.expect("flood", timeout=10)
                assert frame["data"]["i"] == seen  # in order, none lost
                seen += 1
        # the slow one was closed with 4008
        with pytest.raises(ConnectionClosed):
            while True:
                await asyncio.wait_for(slow_ws.recv(), 10)
        assert slow_ws.close_code == 4008
        await slow_ws.close()


async def test_origin_allowlist() -> None:
    settings = make_settings({"server": {"allowed_origins": ["https://app.example"]}})
    async with run_server(settings, plugins=PLUGINS) as server:
        url = server.ws_url(token=server.token())
        with pytest.raises(InvalidStatus) as info:
            async with connect(url, origin="https://evil.example"):
                pass
        assert info.value.response.status_code == 403
        async with connect(url, origin="https://app.example") as ws:
            await ws.send('{"type": "greet", "data": {"name": "o"}, "id": 1}')
            assert json.loads(await ws.recv())["type"] == "greet-response"
        # same origin (a page served by the gateway itself) is allowed
        async with connect(url, origin=f"http://127.0.0.1:{server.port}") as ws:
            await ws.send('{"type": "ping", "id": 1}')
            assert json.loads(await ws.recv())["type"] == "pong"
        async with connect(url) as ws:  # no Origin: a non-browser client
            await ws.send('{"type": "ping", "id": 1}')
            assert json.loads(await ws.recv())["type"] == "pong"


async def _raw_handshake(
    port: int, token: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A bare WebSocket handshake: this client will never answer a ping."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET /ws?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    response = await reader.readuntil(b"\r\n\r\n")
    assert b" 101 " in response.split(b"\r\n")[0]
    return reader, writer


async def test_heartbeat_drops_a_client_that_stops_answering() -> None:
    settings = make_settings({"server": {"ping_interval": 0.2, "ping_timeout": 0.3}})
    async with run_server(settings, plugins=PLUGINS) as server:
        reader, writer = await _raw_handshake(server.port, server.token())
        data = await asyncio.wait_for(reader.read(), 10)  # until the server closes
        writer.close()
        opcodes = []
        code = None
        i = 0
        while i + 2 <= len(data):
            opcode = data[i] & 0x0F
            length = data[i + 1] & 0x7F
            opcodes.append(opcode)
            if opcode == 0x8:
                code = struct.unpack("!H", data[i + 2 : i + 4])[0]
            i += 2 + length
        assert 0x9 in opcodes  # the server pinged
        assert opcodes[-1] == 0x8 and code == 1011  # then closed the silent client


async def test_graceful_shutdown_closes_with_1001() -> None:
    async with run_server(plugins=PLUGINS) as server:
        client_cm = server.client()
        client = await client_cm.__aenter__()
        assert (await client.request("greet", {"name": "x"}))["type"] == "greet-response"
        server.server.should_exit = True
        code, _ = await client.closed(timeout=10)
        assert code == 1001
        await client_cm.__aexit__(None, None, None)


async def test_healthz() -> None:
    import httpx

    async with run_server(plugins=PLUGINS) as server:
        async with httpx.AsyncClient() as http:
            response = await http.get(server.http_url + "/healthz")
        assert response.status_code == 200
        assert response.json()["status"] == "ok"


def test_frames_are_valid_json_with_timestamps() -> None:
    # guards the encoder against accidental non-JSON output
    from virtwire.protocol import encode

    assert msgspec.json.decode(encode("x", {"a": [1, 2]}))["data"] == {"a": [1, 2]}


async def test_permessage_deflate_connections_take_the_asgi_path() -> None:
    """With compression negotiated, frames cannot be written pre-encoded: they go through the
    ordinary send path, in order."""
    flood = Flood()
    settings = make_settings({"server": {"per_message_deflate": True}})
    async with run_server(settings, plugins=[("flood", flood)]) as server:
        async with server.client() as client:
            assert client.ws.protocol.extensions  # deflate was negotiated
            await client.request("subscribe", {"topic": "flood"})
            await client.request("flood", {"count": 50, "size": 100})
            for i in range(50):
                assert (await client.expect("flood"))["data"]["i"] == i


async def test_resubscribing_keeps_a_shared_producer_running() -> None:
    async with run_server(plugins=PLUGINS) as server:
        async with server.client() as client:
            topic = server.gateway.topics["ticks"]
            await client.request("subscribe", {"topic": "ticks", "interval": 1000})
            task = topic.tickers[1000]
            await client.request("subscribe", {"topic": "ticks", "interval": 1000})
            assert topic.tickers[1000] is task and not task.done()
            assert len(server.gateway.hub.channel("ticks:1000")) == 1  # replaced, not doubled


async def test_subscriptions_per_connection_are_bounded() -> None:
    settings = make_settings({"server": {"max_subscriptions": 3}})
    async with run_server(settings, plugins=PLUGINS) as server:
        async with server.client() as client:
            for interval in (100, 200, 300):
                reply = await client.request("subscribe", {"topic": "ticks", "interval": interval})
                assert reply["type"] == "subscribe-response"
            reply = await client.request("subscribe", {"topic": "ticks", "interval": 400})
            assert reply["data"]["code"] == "RATE_LIMITED"
            # replacing an existing one is fine
            reply = await client.request("subscribe", {"topic": "ticks", "interval": 300})
            assert reply["type"] == "subscribe-response"
