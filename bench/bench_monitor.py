"""Benchmark of the monitor plugin: the CPU cost of one sample, and the gateway's CPU with
1000 clients subscribed to ``system-monitor`` at 1 s, next to the idle gateway measured
in the same run.

Run: ``.venv/bin/python bench/bench_monitor.py [--clients 1000] [--window 8]``

The gateway runs as a subprocess (``virtwire serve``, loopback, only the monitor plugin);
its CPU time (user + system, all threads) is read with psutil over a fixed window.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
from virtwire.auth import Authenticator
from virtwire.config import load_settings
from virtwire.testing import free_port
from virtwire_monitor.counters import CountersSampler
from virtwire_monitor.extras import FilesystemsSampler, LoadAvgSampler
from virtwire_monitor.sampling import sample_all
from websockets.asyncio.client import ClientConnection, connect

SECRET = "bench-monitor-secret-0123456789abcdef"
FRAME = "system-monitor"
TARGET = 5.0  # % of one core above the idle gateway


# -- part 1: one sample ----------------------------------------------------------------
def per_call(fn: Callable[[], Any], n: int) -> tuple[float, float]:
    """(CPU µs, wall µs) per call of ``fn``, over ``n`` calls."""
    fn()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(n):
        fn()
    cpu1, wall1 = time.process_time(), time.perf_counter()
    return (cpu1 - cpu0) / n * 1e6, (wall1 - wall0) / n * 1e6


def bench_sample(n: int) -> None:
    counters = CountersSampler()
    everything = [
        ("psutil", CountersSampler()),
        ("loadavg", LoadAvgSampler()),
        ("filesystems", FilesystemsSampler(["/"])),
    ]

    def read_proc_stat() -> None:
        with open("/proc/stat", "rb") as f:
            f.read()

    rows = [
        ("baseline: read /proc/stat", read_proc_stat),
        ("baseline: psutil.cpu_times(percpu=True)", lambda: psutil.cpu_times(percpu=True)),
        ("psutil collector sample()", counters.sample),
        ("  part: psutil.virtual_memory()", psutil.virtual_memory),
        ("  part: psutil.disk_io_counters(perdisk)", lambda: psutil.disk_io_counters(True)),
        ("  part: psutil.net_io_counters(pernic)", lambda: psutil.net_io_counters(True)),
        ("loadavg collector sample()", LoadAvgSampler().sample),
        ("filesystems collector sample() ['/']", FilesystemsSampler(["/"]).sample),
        ("one tick: all three collectors", lambda: sample_all(everything)),
    ]
    print(f"\n## One sample ({n} calls each, this process)\n")
    print(f"| {'what':<44} | {'CPU µs/call':>11} | {'wall µs/call':>12} |")
    print(f"|{'-' * 46}|{'-' * 13}|{'-' * 14}|")
    for name, fn in rows:
        cpu, wall = per_call(fn, n)
        print(f"| {name:<44} | {cpu:>11.1f} | {wall:>12.1f} |")


# -- part 2: the gateway under 1000 subscribers ------------------------------------------
class Gateway:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.config = workdir / "virtwire.toml"
        self.config.write_text(
            "[server]\n"
            f"port = {self.port}\n"
            'log_level = "warning"\n'
            "access_log = false\n"
            "[auth]\n"
            f'secret = "{SECRET}"\n'
            "[plugins]\n"
            'enabled = ["monitor"]\n'
        )
        self.log = workdir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def token(self) -> str:
        return Authenticator(load_settings(self.config)).mint("bench", ["monitor:read"])

    def spawn(self) -> None:
        exe = Path(sys.executable).parent / "virtwire"
        env = {k: v for k, v in os.environ.items() if not k.startswith("VIRTWIRE_")}
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [str(exe), "serve", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )

    async def start(self) -> psutil.Process:
        await asyncio.to_thread(self.spawn)
        assert self.proc is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited:\n{self.log.read_text()}")
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                await writer.wait_closed()
                return psutil.Process(self.proc.pid)
            await asyncio.sleep(0.05)
        raise RuntimeError("gateway did not start within 30 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class Clients:
    """WebSocket clients that count the ``system-monitor`` frames they receive."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conns: list[ClientConnection] = []
        self.readers: list[asyncio.Task[None]] = []
        self.frames = 0
        self.first: asyncio.Event = asyncio.Event()
        self.with_frame = 0
        self.subscribed = 0

    async def _read(self, ws: ClientConnection) -> None:
        seen = False
        with contextlib.suppress(Exception):
            async for raw in ws:
                if isinstance(raw, str) and raw.startswith('{"type":"system-monitor"'):
                    self.frames += 1
                    if not seen:
                        seen = True
                        self.with_frame += 1
                        if self.with_frame == self.subscribed:
                            self.first.set()

    async def open(self, count: int, parallel: int = 50) -> None:
        gate = asyncio.Semaphore(parallel)

        async def one() -> None:
            async with gate:
                ws = await connect(self.url, max_queue=64, ping_interval=None)
                self.conns.append(ws)

        await asyncio.gather(*(one() for _ in range(count)))

    async def subscribe(self, interval: int) -> None:
        self.subscribed = len(self.conns)
        self.first.clear()
        request = json.dumps({"type": "subscribe", "data": {"topic": FRAME, "interval": interval}})
        for ws in self.conns:
            self.readers.append(asyncio.create_task(self._read(ws)))
            await ws.send(request)
        await asyncio.wait_for(self.first.wait(), 30)

    async def close(self) -> None:
        for task in self.readers:
            task.cancel()
        await asyncio.gather(*(ws.close() for ws in self.conns), return_exceptions=True)
        await asyncio.gather(*self.readers, return_exceptions=True)


async def cpu_percent(proc: psutil.Process, window: float) -> float:
    """% of one core used by ``proc`` (all threads) over ``window`` seconds."""
    t0 = proc.cpu_times()
    w0 = time.monotonic()
    await asyncio.sleep(window)
    t1 = proc.cpu_times()
    used = (t1.user - t0.user) + (t1.system - t0.system)
    return used / (time.monotonic() - w0) * 100


async def bench_server(clients: int, window: float) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-monitor-") as tmp:
        gateway = Gateway(Path(tmp))
        proc = await gateway.start()
        url = f"ws://127.0.0.1:{gateway.port}/ws?token={gateway.token()}"
        rows: list[tuple[str, float, float | None]] = []
        try:
            await asyncio.sleep(1.0)  # let start-up work settle before the idle window
            idle = await cpu_percent(proc, window)
            rows.append(("idle gateway (baseline)", idle, None))

            one = Clients(url)
            await one.open(1)
            await one.subscribe(1000)
            rows.append(("1 client subscribed at 1 s", await cpu_percent(proc, window), None))
            await one.close()

            many = Clients(url)
            started = time.monotonic()
            await many.open(clients)
            opened = time.monotonic() - started
            await asyncio.sleep(1.0)
            rows.append(
                (
                    f"{clients} clients connected, none subscribed",
                    await cpu_percent(proc, window),
                    None,
                )
            )
            await many.subscribe(1000)
            before = many.frames
            busy = await cpu_percent(proc, window)
            rate = (many.frames - before) / window
            rows.append((f"{clients} clients subscribed at 1 s", busy, rate))
            await many.close()
        finally:
            gateway.stop()

    print(
        f"\n## Gateway CPU (subprocess, {window:g} s windows; {psutil.cpu_count()} cores; "
        f"{clients} connections opened in {opened:.1f} s)\n"
    )
    print(f"| {'state':<42} | {'CPU % of a core':>15} | {'above idle':>10} | {'frames/s':>8} |")
    print(f"|{'-' * 44}|{'-' * 17}|{'-' * 12}|{'-' * 10}|")
    for name, pct, frames in rows:
        above = pct - idle
        frames_text = f"{frames:.0f}" if frames is not None else "-"
        print(f"| {name:<42} | {pct:>15.2f} | {above:>10.2f} | {frames_text:>8} |")
    extra = rows[-1][1] - idle
    verdict = "meets" if extra < TARGET else "MISSES"
    print(
        f"\n{clients} subscribers at 1 s cost {extra:.2f} % of a core above idle: "
        f"{verdict} the target of < {TARGET:g} %."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--window", type=float, default=8.0, help="seconds per CPU window")
    parser.add_argument("--samples", type=int, default=500, help="calls per sample figure")
    args = parser.parse_args()
    print("# virtwire-monitor benchmark")
    bench_sample(args.samples)
    asyncio.run(bench_server(args.clients, args.window))


if __name__ == "__main__":
    main()
