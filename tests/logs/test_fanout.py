"""Many clients on one file share one tailer; a slow client is told what it missed."""

from __future__ import annotations

import asyncio
import contextlib

from logkit import fds_open_on, lines, write


async def test_fifty_clients_on_one_file_share_one_tailer(logs_server, logdir):
    log = logdir / "ds_update.log"
    lines(log, 0, 50, prefix="old")
    async with logs_server(max_connections_per_client=0) as server:
        async with contextlib.AsyncExitStack() as stack:
            clients = [
                await stack.enter_async_context(server.logs("ds_update.log")) for _ in range(50)
            ]
            for client in clients:
                assert await client.take(50) == [f"old {i}" for i in range(50)]
            assert len(server.plugin.feeds) == 1
            assert fds_open_on(log) == 1  # one open file, one tailer, for 50 clients
            lines(log, 0, 200, prefix="new")
            expected = [f"new {i}" for i in range(200)]
            results = await asyncio.gather(*(c.take(200) for c in clients))
            assert all(r == expected for r in results)
        # the last client gone, the tailer stops and the file is closed
        await asyncio.wait_for(
            server.plugin.endpoint.wait_until(lambda: server.plugin.endpoint.connections == 0), 10
        )
        assert len(server.plugin.feeds) == 0
        assert fds_open_on(log) == 0


async def _count(client, payload: str, total: int) -> tuple[int, int]:
    """Read until every line written is accounted for: (received, said to be skipped)."""
    received = missed = 0
    while received + missed < total:
        text = await asyncio.wait_for(client.ws.recv(), 10)
        if text.startswith("客户端接收过慢"):
            missed += int(text.split("跳过了 ")[1].split(" ")[0])
        elif text.startswith(payload):
            received += 1
    return received, missed


async def test_slow_client_gets_a_dropped_notice_with_the_exact_count(logs_server, logdir):
    log = logdir / "ds_update.log"
    write(log, b"")
    total = 10000
    payload = "x" * 2000  # 20 MB: more than the socket buffers hold
    options = {"client_buffer_lines": 100, "client_buffer_bytes": 256 * 1024}
    async with logs_server(**options) as server:
        async with server.logs("ds_update.log", max_queue=1) as slow:
            await slow.sync()
            slow._reader.cancel()  # stop reading: TCP buffers fill, then the server's buffer
            with contextlib.suppress(asyncio.CancelledError):
                await slow._reader
            lines(log, 0, total, prefix=payload)
            feed = server.plugin.feeds.live("ds_update.log")
            buffer = next(iter(feed.consumers))
            await asyncio.wait_for(buffer_dropping(buffer), 10)
            assert len(buffer) <= 101  # bounded: 100 lines and the notice
            # the client resumes reading: the lines it got plus those it was told it missed
            # add up to everything that was written, and it did miss some
            received, missed = await _count(slow, payload, total)
            assert missed > 0
            assert received + missed == total
            write(log, b"caught up\n")  # and the stream goes on as usual
            assert await asyncio.wait_for(slow.ws.recv(), 10) == "caught up"


async def buffer_dropping(buffer) -> None:
    """Until the server's buffer for this client is full and lines are being skipped."""
    while buffer.dropped == 0:  # noqa: ASYNC110 (server state, no event to wait on)
        await asyncio.sleep(0.01)
