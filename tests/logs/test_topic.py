"""The ``logs`` topic on ``/ws``: framed history, batches and events."""

from __future__ import annotations

import asyncio
import os

from logkit import fds_open_on, lines


def _lines(frame):
    return frame["data"]["lines"]


async def test_subscribe_history_then_batches(logs_server, logdir):
    log = logdir / "ds_update.log"
    lines(log, 0, 80)
    async with logs_server() as server, server.running.client() as client:
        data = {"topic": "logs", "file": "ds_update.log", "lines": 5}
        reply = await client.request("subscribe", data)
        assert reply["type"] == "subscribe-response"
        assert reply["data"] == {"topic": "logs", "file": "ds_update.log", "lines": 5}
        history = await client.expect("log-lines")
        assert history["data"] == {
            "file": "ds_update.log",
            "lines": [f"line {i}" for i in range(75, 80)],
            "history": True,
        }
        lines(log, 80, 83)
        got: list[str] = []
        while len(got) < 3:
            got += _lines(await client.expect("log-lines"))
        assert got == ["line 80", "line 81", "line 82"]


async def test_default_lines_and_file(logs_server, logdir):
    lines(logdir / "ds_update.log", 0, 80)
    async with logs_server() as server, server.running.client() as client:
        reply = await client.request("subscribe", {"topic": "logs"})
        assert reply["data"]["file"] == "ds_update.log"
        assert len(_lines(await client.expect("log-lines"))) == 50


async def test_events_truncated_rotated_deleted(logs_server, logdir):
    log = logdir / "upload.log"
    lines(log, 0, 3)
    async with logs_server(reopen_grace=0.2) as server, server.running.client() as client:
        await client.request("subscribe", {"topic": "logs", "file": "upload.log", "lines": 2})
        assert _lines(await client.expect("log-lines")) == ["line 1", "line 2"]
        os.truncate(log, 0)
        event = await client.expect("log-event")
        assert event["data"] == {
            "file": "upload.log",
            "kind": "truncated",
            "message": "日志文件被截断，重新加载...",
        }
        reload = await client.expect("log-lines")
        assert reload["data"]["history"] is True
        os.rename(log, logdir / "upload.log.1")
        lines(log, 0, 3, prefix="new")
        event = await client.expect("log-event")
        assert event["data"]["kind"] == "rotated"
        reload = await client.expect("log-lines")
        assert reload["data"]["history"] is True
        after = list(_lines(reload))
        while after[-1:] != ["new 2"]:
            after += _lines(await client.expect("log-lines"))
        # every line of the new file from its start: no gap, no repeat
        assert after == ["new 0", "new 1", "new 2"]
        log.unlink()
        event = await client.expect("log-event", where=lambda f: f["data"]["kind"] == "deleted")
        assert event["data"]["message"] == "日志文件 upload.log 不再存在"
        # the connection stays open; a new subscription after recreation works
        lines(log, 0, 1, prefix="back")
        await client.request("subscribe", {"topic": "logs", "file": "upload.log"})
        assert _lines(await client.expect("log-lines")) == ["back 0"]


async def test_errors(logs_server, logdir):
    async with logs_server() as server, server.running.client() as client:
        reply = await client.request("subscribe", {"topic": "logs", "file": "download.log"})
        assert reply["type"] == "error"
        assert reply["data"]["code"] == "LOG_NOT_FOUND"
        assert reply["data"]["message"] == "日志文件 download.log 不存在"
        reply = await client.request("subscribe", {"topic": "logs", "file": "../etc/passwd"})
        assert reply["data"]["code"] == "FORBIDDEN"
        assert reply["data"]["message"] == "不允许访问请求的文件: ../etc/passwd"
        for bad in ({"lines": -1}, {"lines": 100000}, {"lines": "5"}, {"file": 3}):
            reply = await client.request("subscribe", {"topic": "logs", **bad})
            assert reply["data"]["code"] == "INVALID_MESSAGE", bad
    lines(logdir / "ds_update.log", 0, 1)
    async with logs_server() as server:
        token = server.running.token(scopes=["vm:read"])
        async with server.running.client(token) as client:
            reply = await client.request("subscribe", {"topic": "logs"})
            assert reply["data"]["code"] == "FORBIDDEN"


async def test_unsubscribe_and_shared_tailer_with_the_endpoint(logs_server, logdir):
    log = logdir / "ds_update.log"
    lines(log, 0, 1)
    async with logs_server() as server:
        async with (
            server.running.client() as a,
            server.running.client() as b,
            server.logs("ds_update.log") as plain,
        ):
            for c in (a, b):
                await c.request("subscribe", {"topic": "logs", "file": "ds_update.log"})
                assert _lines(await c.expect("log-lines")) == ["line 0"]
            assert await plain.next() == "line 0"
            assert fds_open_on(log) == 1
            reply = await a.request("unsubscribe", {"topic": "logs", "file": "ds_update.log"})
            assert reply["data"] == {"topic": "logs", "removed": 1}
            lines(log, 1, 2)
            assert _lines(await b.expect("log-lines")) == ["line 1"]
            assert await plain.next() == "line 1"
            await b.request("unsubscribe", {"topic": "logs"})
            assert fds_open_on(log) == 1  # the plain client still follows
        endpoint = server.plugin.endpoint
        await asyncio.wait_for(endpoint.wait_until(lambda: endpoint.connections == 0), 10)
        assert len(server.plugin.feeds) == 0
        assert fds_open_on(log) == 0


async def test_slow_ws_subscriber_gets_a_dropped_event_with_the_exact_count(logs_server, logdir):
    import json

    from websockets.asyncio.client import connect

    log = logdir / "ds_update.log"
    lines(log, 0, 1)
    total = 10000
    payload = "x" * 2000  # 20 MB: more than the socket buffers hold
    server_cfg = {"send_queue_bytes": 128 * 1024}
    async with logs_server(server=server_cfg) as server:
        url = server.running.ws_url(token=server.running.token())
        async with connect(url, max_queue=1) as ws:
            request = {"type": "subscribe", "id": 1, "data": {"topic": "logs", "lines": 1}}
            await ws.send(json.dumps(request))
            assert json.loads(await ws.recv())["type"] == "subscribe-response"
            assert json.loads(await ws.recv())["data"]["lines"] == ["line 0"]
            lines(log, 0, total, prefix=payload)  # while this client reads nothing
            publisher = server.plugin.topic.publishers["ds_update.log"]
            member = next(iter(publisher.members.values()))
            async with asyncio.timeout(20):
                while member.dropped == 0:  # noqa: ASYNC110 (server state, no event to wait on)
                    await asyncio.sleep(0.01)
            received = missed = 0
            while received + missed < total:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if frame["type"] == "log-lines":
                    received += len(frame["data"]["lines"])
                elif frame["type"] == "log-event":
                    assert frame["data"]["kind"] == "dropped"
                    assert frame["data"]["message"].startswith("客户端接收过慢")
                    missed += frame["data"]["count"]
            assert missed > 0
            assert received + missed == total
            # the connection itself was never closed for being slow
            await ws.send(json.dumps({"type": "subscribe", "id": 2, "data": {"topic": "logs"}}))
