"""Files really truncated, rotated, deleted, recreated, fed bad bytes and partial lines while
clients are connected (inotify, and the polling fallback)."""

from __future__ import annotations

import os

import pytest
from logkit import lines, rotate, write

TRUNCATED = "日志文件被截断，重新加载..."
ROTATED = "日志文件 {} 已轮转，继续跟踪新文件"
DELETED = "日志文件 {} 不再存在"

WATCHERS = [pytest.param({}, id="inotify"), pytest.param({"inotify": False}, id="polling")]


@pytest.fixture(params=WATCHERS)
def watcher(request: pytest.FixtureRequest) -> dict[str, object]:
    return dict(request.param)


async def test_copytruncate_sends_notice_then_last_lines_again(logs_server, logdir, watcher):
    log = logdir / "ds_update.log"
    lines(log, 0, 60)
    async with logs_server(**watcher) as server, server.logs("ds_update.log") as client:
        assert (await client.take(50))[-1] == "line 59"
        # copytruncate: copy away, then truncate in place; the writer keeps appending
        (logdir / "ds_update.log.1").write_bytes(log.read_bytes())
        os.truncate(log, 0)
        assert await client.next() == TRUNCATED
        lines(log, 100, 103, prefix="after")
        got = await client.take(3)
        assert got == ["after 100", "after 101", "after 102"]
        lines(log, 103, 104, prefix="after")
        assert await client.next() == "after 103"


async def test_truncation_with_content_resends_the_last_lines(logs_server, logdir, watcher):
    log = logdir / "ds_update.log"
    lines(log, 0, 10)
    async with logs_server(history=5, **watcher) as server, server.logs("ds_update.log") as client:
        assert await client.take(5) == [f"line {i}" for i in range(5, 10)]
        os.truncate(log, len("".join(f"line {i}\n" for i in range(8))))  # to 8 lines at once
        assert await client.next() == TRUNCATED
        assert await client.take(5) == [f"line {i}" for i in range(3, 8)]


async def test_rotation_by_rename_follows_the_new_file(logs_server, logdir, watcher):
    log = logdir / "ds_update.log"
    lines(log, 0, 3)
    async with logs_server(**watcher) as server, server.logs("ds_update.log") as client:
        assert await client.take(3) == ["line 0", "line 1", "line 2"]
        rotate(log, logdir / "ds_update.log.1", late=b"late line in the old file\n")
        lines(log, 0, 2, prefix="new")
        got = await client.take(4)
        rotated = ROTATED.format("ds_update.log")
        assert got == ["late line in the old file", rotated, "new 0", "new 1"]
        lines(log, 2, 3, prefix="new")
        assert await client.next() == "new 2"


async def test_rotation_serves_what_the_new_file_held_before_it_was_seen(
    logs_server, logdir, watcher
):
    # A busy writer: the new file already holds more than `history` lines when the tailer
    # switches to it. None of them may be lost.
    log = logdir / "ds_update.log"
    lines(log, 0, 3)
    async with logs_server(**watcher) as server, server.logs("ds_update.log") as client:
        assert await client.take(3) == ["line 0", "line 1", "line 2"]
        staged = logdir / "staged.tmp"
        lines(staged, 0, 200, prefix="new")
        os.rename(log, logdir / "ds_update.log.1")
        os.rename(staged, log)  # appears with its 200 lines at once
        got = await client.take(201)
        assert got == [ROTATED.format("ds_update.log")] + [f"new {i}" for i in range(200)]
        lines(log, 200, 201, prefix="new")
        assert await client.next() == "new 200"


async def test_rotation_to_a_huge_file_says_how_many_lines_it_skipped(
    logs_server, logdir, monkeypatch
):
    from virtwire_logs import tail

    monkeypatch.setattr(tail, "ROTATED_MAX", 1000)  # bytes
    log = logdir / "ds_update.log"
    lines(log, 0, 1)
    async with logs_server() as server, server.logs("ds_update.log") as client:
        assert await client.next() == "line 0"
        staged = logdir / "staged.tmp"
        lines(staged, 0, 500, prefix="n")  # "n 0\n" .. "n 499\n": 2890 bytes
        os.rename(log, logdir / "ds_update.log.1")
        os.rename(staged, log)
        notice = await client.next()
        served = 1000 // len("n 499\n")  # whole lines of the last 1000 bytes
        skipped = 500 - served
        assert (
            notice
            == f"日志文件 ds_update.log 已轮转，继续跟踪新文件（新文件开头 {skipped} 行未显示）"
        )
        assert await client.take(served) == [f"n {i}" for i in range(skipped, 500)]


async def test_deleted_file_notice_then_close_then_recreated_file(logs_server, logdir, watcher):
    log = logdir / "upload.log"
    lines(log, 0, 1)
    async with logs_server(reopen_grace=0.2, **watcher) as server:
        async with server.logs("upload.log") as client:
            assert await client.next() == "line 0"
            log.unlink()
            assert await client.next() == DELETED.format("upload.log")
            assert await client.closed() == (1000, "deleted")
        lines(log, 0, 1, prefix="recreated")
        async with server.logs("upload.log") as client:
            assert await client.next() == "recreated 0"
            lines(log, 1, 2, prefix="recreated")
            assert await client.next() == "recreated 1"


async def test_deleted_then_recreated_within_grace_keeps_following(logs_server, logdir, watcher):
    log = logdir / "upload.log"
    lines(log, 0, 1)
    async with logs_server(reopen_grace=30, **watcher) as server:
        async with server.logs("upload.log") as client:
            assert await client.next() == "line 0"
            log.unlink()
            await client.sync()  # the server has seen the deletion or will on its next look
            lines(log, 0, 1, prefix="again")
            assert await client.take(2) == [ROTATED.format("upload.log"), "again 0"]


async def test_invalid_utf8_is_replaced_not_dropped(logs_server, logdir, watcher):
    log = logdir / "ds_update.log"
    write(log, b"ok \xe2\x9c\x93\n")
    async with logs_server(**watcher) as server, server.logs("ds_update.log") as client:
        assert await client.next() == "ok ✓"
        write(log, b"bad \xff\xfe end\nhalf \xe2\x9c\nlatin1 caf\xe9\n")
        assert await client.take(3) == ["bad \ufffd\ufffd end", "half \ufffd", "latin1 caf\ufffd"]
        write(log, b"still here\n")
        assert await client.next() == "still here"


async def test_partial_line_is_held_until_its_newline(logs_server, logdir, watcher):
    log = logdir / "ds_update.log"
    write(log, b"first\nhalf-writ")
    async with logs_server(**watcher) as server, server.logs("ds_update.log") as client:
        assert await client.next() == "first"
        write(log, b"ten ")
        await client.sync()
        write(log, "多字节".encode()[:4])  # even a split UTF-8 character
        await client.sync()
        assert client.drained() == []
        write(log, "多字节".encode()[4:] + b" done\nnext\n")
        assert await client.take(2) == ["half-written 多字节 done", "next"]


async def test_huge_line_is_cut_with_a_marker(logs_server, logdir, watcher):
    log = logdir / "ds_update.log"
    write(log, b"")
    async with logs_server(max_line_bytes=1000, **watcher) as server:
        async with server.logs("ds_update.log") as client:
            await client.sync()
            write(log, b"x" * 5000 + b"\n")
            assert await client.next() == "x" * 1000 + "…[行过长，已截断 4000 字节]"
            # a cut falling inside a multi-byte character cuts before it
            write(log, b"y" * 999 + "中".encode() + b"\nafter\n")
            assert await client.take(2) == ["y" * 999 + "…[行过长，已截断 3 字节]", "after"]
            # written in many small pieces, memory stays bounded and the count is exact
            for _ in range(50):
                write(log, b"z" * 1000)
            write(log, b"\n")
            assert await client.next() == "z" * 1000 + "…[行过长，已截断 49000 字节]"
        write(log, b"w" * 3000 + b"\n")
        async with server.logs("ds_update.log") as client:  # in the history as well
            history = await client.take(5)
            assert history[-1] == "w" * 1000 + "…[行过长，已截断 2000 字节]"
