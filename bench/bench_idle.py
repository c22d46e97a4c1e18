"""Idle connections: memory per authenticated connection, and the CPU of keepalive pings.

- memory per idle authenticated connection (RSS growth / connections) for virtwire, the
  `websockets` library's own server (the baseline: goal <= 1.3x, then 1.0x) and a bare Starlette
  app on the same uvicorn stack;
- heartbeat CPU: server CPU (% of one core) with N idle connections answering pings, for
  virtwire and a bare Starlette/uvicorn app with the same ping settings (goal <= 1.1x).

Each server runs in its own process; the clients (this process) only answer pings and count
frames, and say so when they fall behind.

    .venv/bin/python bench/bench_idle.py [--memory 5000] [--heartbeat 10000] [--interval 5]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_core import token  # noqa: E402
from virtwire.testing import free_port  # noqa: E402


class IdleClient(asyncio.Protocol):
    """A WebSocket client that does the handshake, then only answers pings (masked pongs)."""

    def __init__(self) -> None:
        self.buf = b""
        self.handshaken = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.pings = 0
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data
        if not self.handshaken.done():
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            if b" 101 " not in buf[:20]:
                self.handshaken.set_exception(RuntimeError(buf[:80].decode(errors="replace")))
                return
            buf = buf[end + 4 :]
            self.handshaken.set_result(None)
        i, n = 0, len(buf)
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
            if buf[i] & 0x0F == 0x9:  # ping: answer with the same payload, mask 0
                payload = buf[i + head : i + head + length]
                assert self.transport is not None
                self.transport.write(bytes([0x8A, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
                self.pings += 1
            i += head + length
        self.buf = buf[i:]


async def open_idle(port: int, tok: str) -> IdleClient:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(IdleClient, "127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    assert proto.transport is not None
    proto.transport.write(
        (
            f"GET /ws?token={tok} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    await asyncio.wait_for(proto.handshaken, 30)
    return proto


async def open_many(
    port: int, count: int, batch: int = 200, spread: float = 0.0
) -> list[IdleClient]:
    """``count`` connections, in batches; with ``spread``, the batches start evenly over that
    many seconds (so that keepalive pings, which follow each connection's start, are spread
    the same way for every server, whatever its handshake speed)."""
    tok = token()
    clients: list[IdleClient] = []
    loop = asyncio.get_running_loop()
    begin = loop.time()
    batches = max(1, -(-count // batch))
    for i, start in enumerate(range(0, count, batch)):
        if spread:
            await asyncio.sleep(max(0.0, begin + spread * i / batches - loop.time()))
        n = min(batch, count - start)
        clients += await asyncio.gather(*(open_idle(port, tok) for _ in range(n)))
    return clients


class ServerProc:
    def __init__(self, kind: str, interval: float, timeout: float) -> None:
        self.kind = kind
        self.port = free_port()
        env = {
            **os.environ,
            "BENCH_PING_INTERVAL": str(interval),
            "BENCH_PING_TIMEOUT": str(timeout),
        }
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "_core_servers.py"), kind, str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
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
        return int(self.ps.memory_info().rss)

    def cpu(self) -> float:
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def stop(self) -> float:
        """SIGTERM, then the seconds until the server exited (killed after 60 s)."""
        start = time.monotonic()
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        return time.monotonic() - start


def close_all(clients: list[IdleClient]) -> None:
    for c in clients:
        if c.transport is not None:
            c.transport.close()


async def idle_memory(kind: str, count: int) -> float:
    """Bytes of server RSS per idle authenticated connection (no keepalive in the window)."""
    server = ServerProc(kind, 600, 600)
    try:
        await server.ready()
        warm = await open_many(server.port, 100)
        await asyncio.sleep(0.5)  # settle before the baseline reading (not a sync point)
        base = server.rss()
        clients = await open_many(server.port, count)
        await asyncio.sleep(1.0)  # settle before reading RSS (not a sync point)
        per_conn = (server.rss() - base) / count
        close_all([*warm, *clients])
        return per_conn
    finally:
        server.stop()


async def heartbeat_cpu(
    kind: str, count: int, interval: float, window: float
) -> tuple[float, float]:
    """Server CPU (% of one core) over ``window`` seconds with ``count`` idle connections
    answering pings every ``interval`` seconds, and CPU milliseconds per 1000 pings."""
    server = ServerProc(kind, interval, interval)
    try:
        await server.ready()
        clients = await open_many(server.port, count, batch=50, spread=interval)
        await asyncio.sleep(interval * 1.5)  # pings spread over the interval (not a sync point)
        before_pings = sum(c.pings for c in clients)
        cpu0, t0 = server.cpu(), time.monotonic()
        await asyncio.sleep(window)
        cpu1, t1 = server.cpu(), time.monotonic()
        pings = sum(c.pings for c in clients) - before_pings
        expected = count * window / interval
        if pings < 0.9 * expected:
            print(f"  note: {kind}: {pings} pings answered, {expected:.0f} expected")
        lost = sum(c.closed for c in clients)
        if lost:
            print(f"  note: {kind}: {lost} connections dropped during the window")
        seconds = server.stop()  # with every connection still open
        print(f"  {kind}: SIGTERM to exit with {count} connections open: {seconds:.1f} s")
        close_all(clients)
        return 100 * (cpu1 - cpu0) / (t1 - t0), 1e6 * (cpu1 - cpu0) / max(pings, 1)
    finally:
        if server.proc.poll() is None:
            server.stop()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--memory", type=int, default=5000, help="idle connections (memory)")
    parser.add_argument("--heartbeat", type=int, default=10000, help="idle connections (CPU)")
    parser.add_argument("--interval", type=float, default=5.0, help="ping interval (s)")
    parser.add_argument("--window", type=float, default=20.0, help="CPU window (s)")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-heartbeat", action="store_true")
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    if not args.skip_memory:
        mem = {k: await idle_memory(k, args.memory) for k in ("websockets", "bare", "virtwire")}
        print(f"memory per idle authenticated connection, {args.memory} connections (KiB)")
        for kind in ("websockets", "bare", "virtwire"):
            ratio = mem[kind] / mem["websockets"]
            print(f"  {kind:<12} {mem[kind] / 1024:8.1f}   x{ratio:.2f} of websockets")
        print("  target: virtwire <= 1.3x websockets, then 1.0x")
    if not args.skip_heartbeat:
        cpu = {
            k: await heartbeat_cpu(k, args.heartbeat, args.interval, args.window)
            for k in ("bare", "virtwire")
        }
        print(
            f"heartbeat CPU, {args.heartbeat} idle connections, ping every {args.interval:g} s "
            f"(% of one core over {args.window:g} s)"
        )
        for kind in ("bare", "virtwire"):
            share, per = cpu[kind]
            print(
                f"  {kind:<12} {share:8.2f}   x{share / cpu['bare'][0]:.2f} of bare"
                f"   ({per:.1f} ms CPU per 1000 pings)"
            )
        print("  target: virtwire <= 1.1x bare Starlette with the same ping settings")


if __name__ == "__main__":
    asyncio.run(main())
