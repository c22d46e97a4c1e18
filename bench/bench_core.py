"""Core benchmarks: fan-out, memory per idle connection, request round trip.

Each figure is measured for virtwire and, in the same run, for a bare Starlette/uvicorn app doing
the same thing without virtwire (same uvicorn options: uvloop, httptools, websockets-sansio, no
permessage-deflate). Machines here are noisy: read the ratios.

    .venv/bin/python bench/bench_core.py [--clients 1000] [--messages 200] [--idle 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _kit import ServerProc, WsClient, close_all, open_client, token  # noqa: E402
from virtwire.testing import free_port  # noqa: E402


def core_server(
    kind: str, interval: float | None = None, timeout: float | None = None
) -> ServerProc:
    """``_core_servers.py KIND`` (bare, virtwire or websockets) on a free port; ``interval`` and
    ``timeout``: its keepalive pings (default: virtwire's)."""
    port = free_port()
    env = None
    if interval is not None and timeout is not None:
        env = {
            **os.environ,
            "BENCH_PING_INTERVAL": str(interval),
            "BENCH_PING_TIMEOUT": str(timeout),
        }
    args = [sys.executable, str(HERE / "_core_servers.py"), kind, str(port)]
    return ServerProc(args, port, env=env)


async def subscribe_all(clients: list[WsClient], batch: int = 200) -> None:
    for start in range(0, len(clients), batch):
        waits = []
        for c in clients[start : start + batch]:
            waits.append(c.expect(1))
            c.send_text(json.dumps({"type": "subscribe", "data": {"topic": "bench"}, "id": 1}))
        await asyncio.wait_for(asyncio.gather(*waits), 60)


async def fanout(kind: str, n_clients: int, n_messages: int, rounds: int) -> float:
    server = core_server(kind)
    try:
        await server.ready()
        return await fanout_rate(server.port, n_clients, n_messages, rounds)
    finally:
        server.stop()


async def fanout_rate(
    port: int, n_clients: int, n_messages: int, rounds: int, request_id: int | None = 2
) -> float:
    """Median frames/s to ``n_clients`` subscribers of the ``bench`` topic, each round one
    ``bench-broadcast`` of ``n_messages`` (with ``request_id``: the request has an id and is
    answered)."""
    tok = token()
    clients = [await open_client(port, tok) for _ in range(n_clients)]
    await subscribe_all(clients)
    control = await open_client(port, tok)
    request: dict[str, object] = {"type": "bench-broadcast", "data": {"n": n_messages}}
    if request_id is not None:
        request["id"] = request_id
    text = json.dumps(request)
    rates = []
    for _ in range(rounds):
        waits = [c.expect(n_messages) for c in clients]
        start = time.perf_counter()
        control.send_text(text)
        await asyncio.wait_for(asyncio.gather(*waits), 120)
        elapsed = time.perf_counter() - start
        rates.append(n_clients * n_messages / elapsed)
    close_all([*clients, control])
    return statistics.median(rates)


async def idle_memory(kind: str, n_clients: int) -> float:
    server = core_server(kind)
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
        close_all([*warm, *clients])
        return per_conn
    finally:
        server.stop()


async def round_trip(kind: str, n: int) -> tuple[float, float]:
    server = core_server(kind)
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
        client.close()
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
