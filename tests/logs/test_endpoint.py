"""``/api/v1/ws/logs``: history, follow, the document's texts and close codes, security."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from logkit import fds_open_on, lines, write
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

NOT_FOUND = "日志文件 {} 不存在"
FORBIDDEN = "不允许访问请求的文件: {}"


async def test_last_50_lines_then_each_new_line(logs_server, logdir):
    lines(logdir / "ds_update.log", 0, 120)
    async with logs_server() as server, server.logs("ds_update.log") as client:
        assert await client.take(50) == [f"line {i}" for i in range(70, 120)]
        lines(logdir / "ds_update.log", 120, 123)
        write(logdir / "ds_update.log", "第四行 ✓\n\n")
        assert await client.take(5) == ["line 120", "line 121", "line 122", "第四行 ✓", ""]


async def test_history_is_configurable_and_short_files_send_all(logs_server, logdir):
    lines(logdir / "download.log", 0, 30)
    lines(logdir / "upload.log", 0, 3)
    async with logs_server(history=10) as server:
        async with server.logs("download.log") as client:
            assert await client.take(10) == [f"line {i}" for i in range(20, 30)]
        async with server.logs("upload.log") as client:
            assert await client.take(3) == ["line 0", "line 1", "line 2"]
            await client.sync()
            assert client.drained() == []


async def test_default_file_is_ds_update_log(logs_server, logdir):
    lines(logdir / "ds_update.log", 0, 2, prefix="default")
    async with logs_server() as server:
        async with server.logs(None) as client:
            assert await client.take(2) == ["default 0", "default 1"]
        async with server.logs("") as client:  # ?file= (empty) is the default too
            assert await client.take(2) == ["default 0", "default 1"]


async def test_configured_default(logs_server, logdir):
    lines(logdir / "upload.log", 0, 1, prefix="up")
    async with logs_server(default="upload.log") as server, server.logs(None) as client:
        assert await client.next() == "up 0"


async def test_missing_file_error_text_then_close_1000(logs_server):
    async with logs_server() as server, server.logs("download.log") as client:
        assert await client.next() == NOT_FOUND.format("download.log")
        assert await client.closed() == (1000, "not found")


@pytest.mark.parametrize(
    ("query", "shown"),
    [
        ("custom.log", "custom.log"),
        ("../ds_update.log", "../ds_update.log"),
        ("..%2Fsecret.txt", "../secret.txt"),
        ("%2e%2e%2f%2e%2e%2fetc%2fpasswd", "../../etc/passwd"),
        ("/etc/passwd", "/etc/passwd"),
        ("%2Fetc%2Fpasswd", "/etc/passwd"),
        ("ds_update.log%00", "ds_update.log?"),
        ("ds_update.log/", "ds_update.log/"),
        ("./ds_update.log", "./ds_update.log"),
        ("DS_UPDATE.LOG", "DS_UPDATE.LOG"),
        ("%252e%252e%252fsecret.txt", "%2e%2e%2fsecret.txt"),
        ("logs/ds_update.log", "logs/ds_update.log"),
    ],
)
async def test_names_not_on_the_list_are_refused_with_1008(logs_server, logdir, query, shown):
    (logdir.parent / "secret.txt").write_text("secret\n")
    async with logs_server() as server, server.logs(query) as client:
        text = await client.next()
        assert text == FORBIDDEN.format(shown)
        assert str(logdir) not in text
        assert await client.closed() == (1008, "forbidden")


async def test_symlink_out_of_the_directory_is_refused(logs_server, logdir, tmp_path):
    secret = tmp_path / "secret.log"
    secret.write_text("top secret\n")
    (logdir / "download.log").symlink_to(secret)
    (logdir / "upload.log").symlink_to(logdir / "real-upload.log")
    lines(logdir / "real-upload.log", 0, 1, prefix="inside")
    async with logs_server() as server:
        async with server.logs("download.log") as client:
            text = await client.next()
            assert text == FORBIDDEN.format("download.log")
            assert await client.closed() == (1008, "forbidden")
            assert "secret" not in text
        async with server.logs("upload.log") as client:  # a symlink that stays inside
            assert await client.next() == "inside 0"


async def test_directory_symlink_and_non_regular_files_are_refused(logs_server, logdir, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.log").write_text("outside\n")
    (logdir / "sub").symlink_to(outside)
    (logdir / "fifo").mkdir()
    async with logs_server(files={"a.log": "sub/x.log", "b.log": "fifo"}) as server:
        for name in ("a.log", "b.log"):
            async with server.logs(name) as client:
                assert await client.next() == FORBIDDEN.format(name)
                assert (await client.closed())[0] == 1008


async def test_text_ping_gets_pong_and_protocol_pings_are_answered(logs_server, logdir):
    lines(logdir / "ds_update.log", 0, 1)
    async with logs_server() as server, server.logs("ds_update.log") as client:
        assert await client.next() == "line 0"
        await client.ws.send("ping")
        assert await client.next() == "pong"
        latency = await client.ws.ping()
        await latency
        await client.ws.send("something else")  # ignored
        lines(logdir / "ds_update.log", 1, 2)
        assert await client.next() == "line 1"


async def test_token_required_by_default(logs_server, logdir):
    lines(logdir / "ds_update.log", 0, 1)
    async with logs_server() as server:
        async with server.logs("ds_update.log", token=None) as client:
            text = await client.next()
            # the endpoint takes the token from the query or the header, never a message
            assert "token 查询参数" in text and "Authorization" in text and "auth 消息" not in text
            assert (await client.closed())[0] == 4001
        async with server.logs("ds_update.log", token="not-a-jwt") as client:
            assert (await client.next()).startswith("认证失败")
            assert (await client.closed())[0] == 4001
        expired = server.running.token(ttl=-10)
        async with server.logs("ds_update.log", token=expired) as client:
            assert await client.next() == "token 已过期"
            assert (await client.closed())[0] == 4001
        no_scope = server.running.token(scopes=["vm:read"])
        async with server.logs("ds_update.log", token=no_scope) as client:
            assert "logs:read" in await client.next()
            assert (await client.closed())[0] == 1008
        scoped = server.running.token(scopes=["logs:read"])
        async with server.logs("ds_update.log", token=scoped) as client:
            assert await client.next() == "line 0"
        # an Authorization header works as well as ?token=
        headers = {"Authorization": f"Bearer {scoped}"}
        async with server.logs("ds_update.log", token=None, additional_headers=headers) as client:
            assert await client.next() == "line 0"


async def test_public_serves_without_token(logs_server, logdir):
    lines(logdir / "ds_update.log", 0, 1)
    async with logs_server(public=True) as server, server.logs(token=None) as client:
        assert await client.next() == "line 0"


async def test_stream_ends_when_the_token_expires(logs_server, logdir):
    lines(logdir / "ds_update.log", 0, 1)
    async with logs_server() as server:
        token = server.running.token(ttl=1)
        async with server.logs("ds_update.log", token=token) as client:
            assert await client.next() == "line 0"
            assert await client.next(wait=5) == "token 已过期"
            assert (await client.closed())[0] == 4001


async def test_origin_allowlist(logs_server, logdir):
    lines(logdir / "ds_update.log", 0, 1)
    server_cfg = {"allowed_origins": ["https://app.example.com"]}
    async with logs_server(server=server_cfg) as server:
        with pytest.raises(InvalidStatus) as info:
            async with connect(server.url("ds_update.log"), origin="https://evil.example.com"):
                pass
        assert info.value.response.status_code == 403
        async with server.logs("ds_update.log", origin="https://app.example.com") as client:
            assert await client.next() == "line 0"
        async with server.logs("ds_update.log") as client:  # no Origin: not a browser
            assert await client.next() == "line 0"


async def test_connection_cap_per_client(logs_server, logdir):
    lines(logdir / "ds_update.log", 0, 1)
    async with logs_server(max_connections_per_client=3) as server:
        clients = []
        for _ in range(3):
            cm = server.logs("ds_update.log")
            clients.append((cm, await cm.__aenter__()))
        for _, client in clients:
            assert await client.next() == "line 0"
        async with server.logs("ds_update.log") as extra:
            assert await extra.next() == "连接过多：每个客户端最多 3 个日志连接"
            assert await extra.closed() == (4029, "too many connections")
        cm, client = clients.pop()
        await cm.__aexit__(None, None, None)
        # once the server has seen the close, a new connection is admitted
        endpoint = server.plugin.endpoint
        await asyncio.wait_for(endpoint.wait_until(lambda: endpoint.connections == 2), 10)
        async with server.logs("ds_update.log") as again:
            assert await again.next() == "line 0"
        for cm, _ in clients:
            await cm.__aexit__(None, None, None)


async def test_english_texts(logs_server):
    async with logs_server(server={"locale": "en"}) as server:
        async with server.logs("download.log") as client:
            assert await client.next() == "log file download.log does not exist"
        async with server.logs("nope.log") as client:
            assert await client.next() == "access to the requested file is not allowed: nope.log"


async def test_gateway_shutdown_closes_streams(logs_server, logdir):
    lines(logdir / "ds_update.log", 0, 1)
    async with contextlib.AsyncExitStack() as outer:
        async with logs_server() as server:
            client = await outer.enter_async_context(server.logs("ds_update.log"))
            assert await client.next() == "line 0"
            plugin = server.plugin
        # the server is gone: the client was closed ("going away") and the tailer stopped
        assert (await client.closed())[0] == 1001
        assert len(plugin.feeds) == 0
        assert fds_open_on(logdir / "ds_update.log") == 0


async def test_the_test_kit_text_client_follows_a_log(logs_server, logdir):
    # what a plugin author uses: RunningServer.text_client on the log endpoint
    lines(logdir / "upload.log", 0, 3)
    async with logs_server() as server:
        running = server.running
        async with running.text_client(query={"file": "upload.log"}) as client:
            assert [await client.recv() for _ in range(3)] == ["line 0", "line 1", "line 2"]
            write(logdir / "upload.log", "new line\n")
            assert await client.expect("new") == "new line"
            await client.send("ping")
            assert await client.expect("pong") == "pong"
        async with running.text_client(query={"file": "secret.log"}) as client:
            assert await client.recv() == FORBIDDEN.format("secret.log")
            code, _ = await client.closed()
            assert code == 1008


async def test_reads_and_refusals_are_in_the_audit_stream(logs_server, logdir):
    """Who read which log, for how long, and every refusal (docs/audit.md); no token in the
    file."""
    lines(logdir / "ds_update.log", 0, 1)
    async with logs_server(max_connections_per_client=1) as server:
        reader = server.running.token("alice", scopes=["logs:read"])
        async with server.logs("ds_update.log", token=reader) as client:
            assert await client.next() == "line 0"
            # a second stream from the same address is over the cap
            async with server.logs("upload.log", token=reader) as second:
                assert (await second.closed())[0] == 4029
        async with server.logs("ds_update.log", token="not-a-jwt") as client:
            assert (await client.closed())[0] == 4001
        async with server.logs("ds_update.log", token=None) as client:
            assert (await client.closed())[0] == 4001
        async with server.logs("secret.log", token=reader) as client:
            assert (await client.closed())[0] == 1008
        no_scope = server.running.token("bob", scopes=["vm:read"])
        async with server.logs("ds_update.log", token=no_scope) as client:
            assert (await client.closed())[0] == 1008

        opens = await server.running.audit_records("log-open", count=5)
        closes = await server.running.audit_records("log-close")
        refused = await server.running.audit_records("auth-refused")
        text = server.gateway.audit_log.path.read_text()

    assert [(r.get("user"), r.get("file"), r["outcome"]) for r in opens] == [
        ("alice", "ds_update.log", "ok"),
        ("alice", None, "TOO_MANY_CONNECTIONS"),
        (None, None, "AUTH_REQUIRED"),
        ("alice", "secret.log", "FORBIDDEN"),
        ("bob", None, "FORBIDDEN"),  # a token without logs:read
    ]
    assert all(r["address"].startswith("127.0.0.1:") for r in opens)
    (close,) = closes
    assert close["user"] == "alice" and close["file"] == "ds_update.log"
    assert close["reason"] == "client-disconnect" and close["skipped"] == 0
    assert close["durationMs"] > 0
    (bad,) = refused
    assert bad["path"] == "/api/v1/ws/logs" and bad["outcome"] == "AUTH_FAILED"
    assert reader not in text and no_scope not in text
