"""Log streaming benchmark: write→client latency next to ``tail -F``, and fan-out throughput.

Run: ``.venv/bin/python bench/bench_logs.py [--samples N] [--lines N]``

1. Latency: one line at a time is appended to a file that ``tail -F`` and a client of
   ``/api/v1/ws/logs`` (a ``virtwire serve`` process) both follow; each reader is a thread
   blocked on its socket/pipe that timestamps the line's arrival. p50/p99 of write→read.
2. Throughput: 100 clients (in 4 processes) follow one file while a writer appends as fast as
   the slowest client keeps up (never more than the client buffer ahead, so nothing is
   skipped); lines/s delivered in total. Baseline: a minimal ``websockets`` server that sends
   the same lines from memory to the same 100 clients (the client side's ceiling).
Loopback only; every process started here is stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _kit import ServerProc
from virtwire.testing import free_port

ROOT = Path(__file__).resolve().parent.parent
VIRTWIRE = ROOT / ".venv" / "bin" / "virtwire"
CLIENTS = 100
PROCS = 4


def start_gateway(tmp: Path, log_dir: Path) -> ServerProc:
    port = free_port()
    config = tmp / "virtwire.toml"
    config.write_text(
        f"""
[server]
port = {port}
access_log = false
log_level = "warning"

[auth]
secret = "bench-secret-0123456789abcdef0123456789"

[plugins]
enabled = ["logs"]

[plugins.logs]
directory = "{log_dir}"
public = true
max_connections_per_client = 0
files = {{ "bench.log" = "bench.log", "fan.log" = "fan.log" }}
"""
    )
    env = {**os.environ, "VIRTWIRE_STATE_DIR": str(tmp / "state")}
    env.pop("VIRTWIRE_CONFIG", None)
    server = ServerProc(
        [str(VIRTWIRE), "serve", "--config", str(config)], port, env=env, health="/healthz"
    )
    server.wait_ready()
    return server


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- latency --------------------------------------------------------------------------
def latency(port: int, path: Path, samples: int) -> tuple[list[float], list[float]]:
    from websockets.sync.client import connect

    path.write_bytes(b"")
    tail = subprocess.Popen(
        ["tail", "-n", "0", "-F", str(path)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    ws = connect(f"ws://127.0.0.1:{port}/api/v1/ws/logs?file={path.name}").__enter__()
    arrived: dict[str, dict[int, float]] = {"tail": {}, "ws": {}}
    done = {"tail": threading.Event(), "ws": threading.Event()}
    expect = [0]

    def read_tail() -> None:
        buf = b""
        assert tail.stdout is not None
        fd = tail.stdout.fileno()
        while True:
            chunk = os.read(fd, 65536)
            now = time.perf_counter()
            if not chunk:
                return
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if line.startswith(b"L "):
                    n = int(line.split()[1])
                    arrived["tail"][n] = now
                    if n == expect[0]:
                        done["tail"].set()

    def read_ws() -> None:
        while True:
            try:
                text = ws.recv()
            except Exception:
                return
            now = time.perf_counter()
            if isinstance(text, str) and text.startswith("L "):
                n = int(text.split()[1])
                arrived["ws"][n] = now
                if n == expect[0]:
                    done["ws"].set()

    threads = [threading.Thread(target=f, daemon=True) for f in (read_tail, read_ws)]
    for t in threads:
        t.start()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    sent: dict[int, float] = {}
    try:
        # warm-up: wait until both readers see lines
        for n in range(-50, samples):
            expect[0] = n
            for e in done.values():
                e.clear()
            data = f"L {n} {'x' * 80}\n".encode()
            sent[n] = time.perf_counter()
            os.write(fd, data)
            for name, event in done.items():
                if not event.wait(5):
                    raise RuntimeError(f"{name} did not deliver line {n}")
            time.sleep(0.002)  # pacing between samples, so that lines are not batched
    finally:
        os.close(fd)
        ws.close()
        os.kill(tail.pid, signal.SIGTERM)
        tail.wait()
    ws_ms = [(arrived["ws"][n] - sent[n]) * 1000 for n in range(samples)]
    tail_ms = [(arrived["tail"][n] - sent[n]) * 1000 for n in range(samples)]
    return ws_ms, tail_ms


# -- throughput -------------------------------------------------------------------------
def _client_proc(url: str, count: int, total: int, progress, ready) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        from websockets.asyncio.client import connect

        received = [0] * count

        async def one(i: int) -> None:
            async with connect(url, max_queue=None) as ws:
                ready.put(1)
                async for message in ws:
                    if message.startswith("T "):
                        received[i] += 1
                        if received[i] >= total:
                            return

        async def report() -> None:
            while True:
                progress.put(min(received))
                await asyncio.sleep(0.02)

        reporter = asyncio.create_task(report())
        await asyncio.gather(*(one(i) for i in range(count)))
        reporter.cancel()
        progress.put(min(received))

    asyncio.run(main())


def run_clients(url: str, total: int, write) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    """Start 100 clients, call ``write(slowest)`` until every client has ``total`` lines."""
    ctx = mp.get_context("spawn")
    progress = [ctx.Queue() for _ in range(PROCS)]
    ready = ctx.Queue()
    per = CLIENTS // PROCS
    procs = [
        ctx.Process(target=_client_proc, args=(url, per, total, progress[i], ready))
        for i in range(PROCS)
    ]
    for p in procs:
        p.start()
    for _ in range(CLIENTS):
        ready.get(timeout=30)
    time.sleep(0.2)  # the last clients' history has gone out
    slowest = [0] * PROCS
    start = time.perf_counter()
    deadline = start + 60
    while min(slowest) < total and time.perf_counter() < deadline:
        write(min(slowest))
        for i, q in enumerate(progress):
            while not q.empty():
                slowest[i] = max(slowest[i], q.get())
        time.sleep(0.001)
    elapsed = time.perf_counter() - start
    for p in procs:
        p.join(10)
        if p.is_alive():
            os.kill(p.pid, signal.SIGKILL)
    return elapsed, min(slowest)


def throughput_gateway(port: int, path: Path, total: int, window: int) -> tuple[float, int]:
    path.write_bytes(b"")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    written = [0]
    batch = 100

    def write(slowest: int) -> None:
        while written[0] < total and written[0] - slowest < window - batch:
            n = written[0]
            os.write(fd, "".join(f"T {i} {'y' * 80}\n" for i in range(n, n + batch)).encode())
            written[0] += batch

    try:
        url = f"ws://127.0.0.1:{port}/api/v1/ws/logs?file={path.name}"
        return run_clients(url, total, write)
    finally:
        os.close(fd)


def _baseline_server(port: int, total: int, window: int, started, progress) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        from websockets.asyncio.server import serve

        clients = set()
        go = asyncio.Event()

        async def handler(ws) -> None:  # type: ignore[no-untyped-def]
            clients.add(ws)
            if len(clients) == CLIENTS:
                go.set()
            await ws.wait_closed()

        async with serve(handler, "127.0.0.1", port, compression=None):
            started.set()
            await go.wait()
            sent = 0
            while sent < total:
                slowest = progress.value
                end = min(total, slowest + window)
                if end > sent:
                    lines = [f"T {i} {'y' * 80}".encode() for i in range(sent, end)]
                    for ws in clients:  # frames written straight to each connection
                        for line in lines:
                            ws.protocol.send_text(line)
                        ws.send_data()
                    sent = end
                await asyncio.sleep(0.0005)
            await asyncio.sleep(5)

    asyncio.run(main())


def throughput_baseline(total: int, window: int) -> tuple[float, int]:
    ctx = mp.get_context("spawn")
    port = free_port()
    started = ctx.Event()
    progress = ctx.Value("q", 0)
    server = ctx.Process(target=_baseline_server, args=(port, total, window, started, progress))
    server.start()
    started.wait(30)

    def write(slowest: int) -> None:
        progress.value = slowest

    try:
        return run_clients(f"ws://127.0.0.1:{port}/", total, write)
    finally:
        os.kill(server.pid, signal.SIGTERM)
        server.join(5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--lines", type=int, default=20000, help="lines per client (throughput)")
    args = parser.parse_args()
    if shutil.which("tail") is None:
        print("tail not found", file=sys.stderr)
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="bench-logs-"))
    log_dir = tmp / "logs"
    log_dir.mkdir()
    gateway = start_gateway(tmp, log_dir)
    port = gateway.port
    try:
        ws_ms, tail_ms = latency(port, log_dir / "bench.log", args.samples)
        window = 900  # below the default client buffer of 1000 lines: nothing is skipped
        gw_s, gw_got = throughput_gateway(port, log_dir / "fan.log", args.lines, window)
    finally:
        gateway.stop()
    base_s, base_got = throughput_baseline(args.lines, window)
    shutil.rmtree(tmp, ignore_errors=True)

    print(f"\nwrite→read latency, {args.samples} lines (ms)")
    print(f"{'reader':<34}{'p50':>8}{'p90':>8}{'p99':>8}{'max':>8}")
    for name, values in (("tail -F (baseline)", tail_ms), ("virtwire /api/v1/ws/logs", ws_ms)):
        print(
            f"{name:<34}{pct(values, 0.5):>8.3f}{pct(values, 0.9):>8.3f}"
            f"{pct(values, 0.99):>8.3f}{max(values):>8.3f}"
        )
    d50 = pct(ws_ms, 0.5) - pct(tail_ms, 0.5)
    d99 = pct(ws_ms, 0.99) - pct(tail_ms, 0.99)
    print(f"difference: p50 {d50:+.3f} ms (target ≤ 1), p99 {d99:+.3f} ms (target ≤ 10)")
    mean_ws, mean_tail = statistics.mean(ws_ms), statistics.mean(tail_ms)
    print(f"mean virtwire {mean_ws:.3f} ms, tail -F {mean_tail:.3f} ms")

    print(f"\nfan-out: {CLIENTS} clients of one file, {args.lines} lines each")
    print(f"{'server':<44}{'lines/s delivered':>20}{'complete':>10}")
    for name, seconds, got in (
        ("minimal websockets server (baseline)", base_s, base_got),
        ("virtwire /api/v1/ws/logs (file → clients)", gw_s, gw_got),
    ):
        rate = CLIENTS * got / seconds if seconds else 0.0
        print(f"{name:<44}{rate:>20,.0f}{'yes' if got >= args.lines else 'NO':>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
