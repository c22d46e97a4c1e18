"""Core benchmarks: fan-out, memory per idle connection, request round trip.

Each figure is measured for virtwire and, in the same run, for a bare Starlette/uvicorn app doing
the same thing without virtwire (same uvicorn options: uvloop, httptools, websockets-sansio, no
permessage-deflate). Machines here are noisy: read the ratios.

    .venv/bin/python bench/bench_core.py [--clients 1000] [--messages 200] [--idle 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from virtwire.testing import TEST_SECRET, free_port  # noqa: E402


def token() -> str:
    import jwt

    return jwt.encode(
        {"sub": "bench", "scope": "vm:read monitor:read", "exp": int(time.time()) + 3600},
        TEST_SECRET,
        algorithm="HS256",
    )


class RawClient(asyncio.Protocol):
    """A minimal WebSocket client that counts incoming text frames (cheap enough to load the
    server, not itself)."""

    def __init__(self) -> None:
        self.buf = b""
        self.handshaken = asyncio.get_running_loop().create_future()
        self.frames = 0
        self.target = 0
        self.done: asyncio.Future[None] | None = None
        self.last_text: bytes = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.handshaken.done():
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            self.buf = self.buf[end + 4 :]
            self.handshaken.set_result(None)
        buf = self.buf
        i = 0
        n = len(buf)
        while n - i >= 2:
            length = buf[i + 1] & 0x7F
            head = 2
            if length == 126:
                if n - i < 4:
                    break
                length = int.from_bytes(buf[i + 2 : i + 4], "big")
                head = 4
            elif length == 127:
                if n - i < 10:
                    break
                length = int.from_bytes(buf[i + 2 : i + 10], "big")
                head = 10
            if n - i < head + length:
                break
            if buf[i] & 0x0F == 1:
                self.frames += 1
                self.last_text = buf[i + head : i + head + length]
                if self.done is not None and self.frames >= self.target and not self.done.done():
                    self.done.set_result(None)
            i += head + length
        self.buf = buf[i:]

    def send_text(self, text: str) -> None:
        payload = text.encode()
        mask = os.urandom(4)
        header = bytearray([0x81])
        if len(payload) < 126:
            header.append(0x80 | len(payload))
        else:
            header.append(0x80 | 126)
            header += len(payload).to_bytes(2, "big")
        masked = bytes(b ^ mask[j % 4] for j, b in enumerate(payload))
        assert self.transport is not None
        self.transport.write(bytes(header) + mask + masked)

    def expect(self, count: int) -> asyncio.Future[None]:
        self.target = self.frames + count
        self.done = asyncio.get_running_loop().create_future()
        if self.frames >= self.target:
            self.done.set_result(None)
        return self.done


async def open_client(port: int, tok: str) -> RawClient:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(RawClient, "127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    assert proto.transport is not None
    proto.transport.write(
        (
            f"GET /ws?token={tok} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    await proto.handshaken
    return proto


class ServerProc:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "_core_servers.py"), kind, str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.ps = psutil.Process(self.proc.pid)

    async def ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                _, w = await asyncio.open_connection("127.0.0.1", self.port)
                w.close()
                return
            except OSError:
                await asyncio.sleep(0.05)
        raise RuntimeError(f"{self.kind} server did not start")

    def rss(self) -> int:
        return self.ps.memory_info().rss

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


async def subscribe_all(clients: list[RawClient], batch: int = 200) -> None:
    for start in range(0, len(clients), batch):
        waits = []
        for c in clients[start : start + batch]:
            waits.append(c.expect(1))
            c.send_text(json.dumps({"type": "subscribe", "data": {"topic": "bench"}, "id": 1}))
        await asyncio.wait_for(asyncio.gather(*waits), 60)


async def fanout(kind: str, n_clients: int, n_messages: int, rounds: int) -> float:
    server = ServerProc(kind)
    try:
        await server.ready()
        tok = token()
        clients = [await open_client(server.port, tok) for _ in range(n_clients)]
        await subscribe_all(clients)
        control = await open_client(server.port, tok)
        rates = []
        for _ in range(rounds):
            waits = [c.expect(n_messages) for c in clients]
            start = time.perf_counter()
            control.send_text(
                json.dumps({"type": "bench-broadcast", "data": {"n": n_messages}, "id": 2})
            )
            await asyncio.wait_for(asyncio.gather(*waits), 120)
            elapsed = time.perf_counter() - start
            rates.append(n_clients * n_messages / elapsed)
        for c in [*clients, control]:
            assert c.transport is not None
            c.transport.close()
        return statistics.median(rates)
    finally:
        server.stop()


async def idle_memory(kind: str, n_clients: int) -> float:
    server = ServerProc(kind)
    try:
        await server.ready()
        tok = token()
        warm = [await open_client(server.port, tok) for _ in range(50)]
        await subscribe_all(warm)
        base = server.rss()
        clients = [await open_client(server.port, tok) for _ in range(n_clients)]
        await subscribe_all(clients)
        await asyncio.sleep(1.0)  # let the server settle before reading RSS (not a sync point)
        per_conn = (server.rss() - base) / n_clients
        for c in [*warm, *clients]:
            assert c.transport is not None
            c.transport.close()
        return per_conn
    finally:
        server.stop()


async def round_trip(kind: str, n: int) -> tuple[float, float]:
    server = ServerProc(kind)
    try:
        await server.ready()
        client = await open_client(server.port, token())
        times = []
        for i in range(n):
            wait = client.expect(1)
            start = time.perf_counter()
            client.send_text(json.dumps({"type": "echo", "data": {"i": i}, "id": i}))
            await wait
            times.append(time.perf_counter() - start)
        times = times[n // 10 :]  # drop warm-up
        assert client.transport is not None
        client.transport.close()
        q = statistics.quantiles(times, n=100)
        return q[49] * 1000, q[98] * 1000
    finally:
        server.stop()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle", type=int, default=5000)
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    rows = []
    fan = {
        k: await fanout(k, args.clients, args.messages, args.rounds) for k in ("bare", "virtwire")
    }
    rows.append(
        (
            f"fan-out to {args.clients} clients (msg/s, higher is better)",
            fan["bare"],
            fan["virtwire"],
            fan["virtwire"] / fan["bare"],
            ">= 0.9",
        )
    )
    mem = {k: await idle_memory(k, args.idle) for k in ("bare", "virtwire")}
    rows.append(
        (
            f"memory per idle subscribed connection, {args.idle} conns (KiB)",
            mem["bare"] / 1024,
            mem["virtwire"] / 1024,
            mem["virtwire"] / mem["bare"],
            "<= 1.2",
        )
    )
    rtt = {k: await round_trip(k, args.requests) for k in ("bare", "virtwire")}
    rows.append(
        (
            "request/response round trip p50 (ms)",
            rtt["bare"][0],
            rtt["virtwire"][0],
            rtt["virtwire"][0] / rtt["bare"][0],
            "<= 1.3",
        )
    )
    rows.append(
        (
            "request/response round trip p99 (ms)",
            rtt["bare"][1],
            rtt["virtwire"][1],
            rtt["virtwire"][1] / rtt["bare"][1],
            "",
        )
    )
    width = max(len(r[0]) for r in rows)
    print(f"{'measure'.ljust(width)}  {'bare':>12}  {'virtwire':>12}  {'ratio':>7}  target")
    for name, bare, vw, ratio, target in rows:
        print(f"{name.ljust(width)}  {bare:12.3f}  {vw:12.3f}  {ratio:7.2f}  {target}")


if __name__ == "__main__":
    asyncio.run(main())
