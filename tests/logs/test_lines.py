"""Bytes to lines, and the end of a real file read backwards."""

from __future__ import annotations

import os
from pathlib import Path

from virtwire_logs.lines import LineSplitter, read_tail


def marker(count: int) -> str:
    return f"[cut {count}]"


def tail_of(path: Path, count: int, limit: int = 100):
    fd = os.open(path, os.O_RDONLY)
    try:
        return read_tail(fd, os.fstat(fd).st_size, count, limit, marker)
    finally:
        os.close(fd)


def test_splitter_holds_partial_lines_across_chunks():
    s = LineSplitter(100, marker)
    assert s.feed(b"a\nb") == ["a"]
    assert s.feed(b"c") == []
    assert s.pending == 2
    assert s.feed(b"d\n\ne\n") == ["bcd", "", "e"]
    assert s.flush() == []
    assert s.feed(b"tail") == []
    assert s.flush() == ["tail"]


def test_splitter_cuts_long_lines_in_bounded_memory():
    s = LineSplitter(10, marker)
    for _ in range(1000):
        s.feed(b"0123456789")
    assert len(s._head) == 10
    assert s.feed(b"\nok\n") == ["0123456789[cut 9990]", "ok"]
    assert s.feed(b"x" * 25 + b"\n") == ["x" * 10 + "[cut 15]"]
    # a multi-byte character split by the cut is left out whole
    assert s.feed("aaaaaaaaa中\n".encode()) == ["aaaaaaaaa[cut 3]"]
    assert s.feed("aaaaaaa中\n".encode()) == ["aaaaaaa中"]


def test_read_tail_of_real_files(tmp_path):
    path = tmp_path / "f.log"
    path.write_bytes(b"".join(b"line %d\n" % i for i in range(10_000)) + b"part")
    tail = tail_of(path, 3)
    assert tail.lines == ["line 9997", "line 9998", "line 9999"]
    assert (tail.partial, tail.partial_extra) == (b"part", 0)
    assert tail_of(path, 0).lines == []
    path.write_bytes(b"a\nb\n")
    assert tail_of(path, 50).lines == ["a", "b"]
    path.write_bytes(b"")
    assert tail_of(path, 50).lines == []
    path.write_bytes(b"no newline at all")
    tail = tail_of(path, 50)
    assert (tail.lines, tail.partial) == ([], b"no newline at all")
    path.write_bytes(b"short\n" + b"y" * 500 + b"\nlast\n" + b"z" * 300)
    tail = tail_of(path, 2)
    assert tail.lines == ["y" * 100 + "[cut 400]", "last"]
    assert (len(tail.partial), tail.partial_extra) == (100, 200)


def test_crlf_line_ends_are_stripped():
    s = LineSplitter(100, marker)
    assert s.feed(b"one\r\ntwo\r\nthr") == ["one", "two"]
    assert s.feed(b"ee\r\n") == ["three"]
    assert s.feed(b"bare\rcr\n") == ["bare\rcr"]  # only a CR right before the LF goes
    long = LineSplitter(4, marker)
    assert long.feed(b"abcdefgh\r\nx\r\n") == ["abcd[cut 4]", "x"]
