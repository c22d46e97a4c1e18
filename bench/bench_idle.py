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
import resource
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _kit import WsClient, close_all, open_client, token  # noqa: E402
from bench_core import core_server  # noqa: E402


async def open_many(port: int, count: int, batch: int = 200, spread: float = 0.0) -> list[WsClient]:
    """``count`` connections, in batches; with ``spread``, the batches start evenly over that
    many seconds (so that keepalive pings, which follow each connection's start, are spread
    the same way for every server, whatever its handshake speed)."""
    tok = token()
    clients: list[WsClient] = []
    loop = asyncio.get_running_loop()
    begin = loop.time()
    batches = max(1, -(-count // batch))
    for i, start in enumerate(range(0, count, batch)):
        if spread:
            await asyncio.sleep(max(0.0, begin + spread * i / batches - loop.time()))
        n = min(batch, count - start)
        clients += await asyncio.gather(*(open_client(port, tok) for _ in range(n)))
    return clients


async def idle_memory(kind: str, count: int) -> float:
    """Bytes of server RSS per idle authenticated connection (no keepalive in the window)."""
    server = core_server(kind, 600, 600)
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
        server.stop(60)


async def heartbeat_cpu(
    kind: str, count: int, interval: float, window: float
) -> tuple[float, float]:
    """Server CPU (% of one core) over ``window`` seconds with ``count`` idle connections
    answering pings every ``interval`` seconds, and CPU milliseconds per 1000 pings."""
    server = core_server(kind, interval, interval)
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
        seconds = server.stop(60)  # with every connection still open
        print(f"  {kind}: SIGTERM to exit with {count} connections open: {seconds:.1f} s")
        close_all(clients)
        return 100 * (cpu1 - cpu0) / (t1 - t0), 1e6 * (cpu1 - cpu0) / max(pings, 1)
    finally:
        server.stop(60)


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
