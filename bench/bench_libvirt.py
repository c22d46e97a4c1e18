"""Benchmark of the libvirt backend on libvirt's test driver.

1. ``vm-control`` round trip (pause/resume) through a real ``virtwire serve`` process, next
   to the same libvirt calls made directly in this process (libvirt's own call time).
2. One lifecycle event fanned out as ``vm-status`` to 1000 ``vm-status-all`` subscribers:
   time from the control request until the last subscriber has the push, next to the same
   with one subscriber.

Run: ``.venv/bin/python bench/bench_libvirt.py`` (loopback only, about half a minute).
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import libvirt
from websockets.asyncio.client import ClientConnection, connect

ROUND_TRIPS = 1000
SUBSCRIBERS = 1000
FANOUT_RUNS = 10
VIRTWIRE = Path(sys.executable).with_name("virtwire")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def direct_calls() -> list[float]:
    """libvirt's own time for the same calls (suspend/resume on test:///default)."""
    libvirt.registerErrorHandler(lambda _c, _e: None, None)
    conn = libvirt.open("test:///default")
    dom = conn.lookupByName("test")
    times = []
    for i in range(ROUND_TRIPS):
        t = time.perf_counter()
        dom.suspend() if i % 2 == 0 else dom.resume()
        times.append(time.perf_counter() - t)
    if dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
        dom.resume()
    conn.close()
    return times


class Peer:
    """A minimal client: request/response by id, and a queue of pushes."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.n = 0

    async def request(self, type_: str, data: dict[str, Any]) -> dict[str, Any]:
        self.n += 1
        rid = f"r{self.n}"
        await self.ws.send(json.dumps({"type": type_, "data": data, "id": rid}))
        while True:
            frame = json.loads(await self.ws.recv())
            if frame.get("id") == rid:
                return frame


async def control_round_trips(url: str) -> list[float]:
    async with connect(url, max_queue=None) as ws:
        peer = Peer(ws)
        times = []
        for i in range(ROUND_TRIPS):
            action = "pause" if i % 2 == 0 else "resume"
            t = time.perf_counter()
            reply = await peer.request("vm-control", {"vmId": "test", "action": action})
            times.append(time.perf_counter() - t)
            assert reply["type"] == "vm-control-response", reply
        return times


async def fanout(url: str, subscribers: int) -> list[float]:
    """Per run: seconds from the control request until the last subscriber has the
    ``vm-status`` push the event causes."""
    clients: list[ClientConnection] = []
    try:
        for _ in range(subscribers):
            ws = await connect(url, max_queue=None, compression=None)
            clients.append(ws)
            await ws.send(
                json.dumps({"type": "subscribe", "data": {"topic": "vm-status-all"}, "id": "s"})
            )
        for ws in clients:  # subscription reply and the current status
            while True:
                frame = json.loads(await ws.recv())
                if frame["type"] == "vm-status":
                    break
        results = []
        async with connect(url, compression=None) as actor_ws:
            actor = Peer(actor_ws)
            for run in range(FANOUT_RUNS):
                action, want = ("pause", "paused") if run % 2 == 0 else ("resume", "running")

                async def until(ws: ClientConnection, want: str = want) -> float:
                    while True:
                        frame = json.loads(await ws.recv())
                        if frame["type"] == "vm-status" and frame["data"]["status"] == want:
                            return time.perf_counter()

                waits = [asyncio.ensure_future(until(ws)) for ws in clients]
                t = time.perf_counter()
                await actor.request("vm-control", {"vmId": "test", "action": action})
                done = await asyncio.wait_for(asyncio.gather(*waits), 60)
                results.append(max(done) - t)
        return results
    finally:
        for ws in clients:
            await ws.close()


def start_server(state: str) -> tuple[subprocess.Popen[bytes], str]:
    """``virtwire serve`` with the embedded default (the test driver), and a token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIRTWIRE_")}
    env.update(
        VIRTWIRE_STATE_DIR=state,
        VIRTWIRE_LOAD_PLUGINS="libvirt",
        VIRTWIRE_PLUGINS__LIBVIRT__STATS_INTERVAL="3600",
        VIRTWIRE_SERVER__ACCESS_LOG="false",
        VIRTWIRE_SERVER__LOG_LEVEL="warning",
        VIRTWIRE_SERVER__RATE_LIMIT="100000",
        VIRTWIRE_SERVER__RATE_BURST="100000",
    )
    port = free_port()
    proc = subprocess.Popen(
        [str(VIRTWIRE), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise SystemExit("virtwire serve did not start") from None
            time.sleep(0.05)
    token = subprocess.run(
        [str(VIRTWIRE), "token", "--sub", "bench"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return proc, f"ws://127.0.0.1:{port}/ws?token={token}"


async def measure(url: str) -> dict[str, list[float]]:
    return {
        "rtt": await control_round_trips(url),
        "one": await fanout(url, 1),
        "many": await fanout(url, SUBSCRIBERS),
    }


def main() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    direct = direct_calls()
    with tempfile.TemporaryDirectory() as state:
        proc, url = start_server(state)
        try:
            got = asyncio.run(measure(url))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)

    ms = 1000.0
    rows = [
        ("libvirt call, in-process (baseline)", direct),
        ("vm-control round trip via virtwire", got["rtt"]),
        ("event -> vm-status, 1 subscriber (baseline)", got["one"]),
        (f"event -> vm-status, last of {SUBSCRIBERS} subscribers", got["many"]),
    ]
    print(f"{'measure':52} {'n':>5} {'p50 ms':>9} {'p99 ms':>9} {'mean ms':>9}")
    for label, values in rows:
        print(
            f"{label:52} {len(values):5d} {pct(values, 50) * ms:9.3f} "
            f"{pct(values, 99) * ms:9.3f} {statistics.fmean(values) * ms:9.3f}"
        )
    print(
        f"per-subscriber delivery at {SUBSCRIBERS}: "
        f"{pct(got['many'], 50) / SUBSCRIBERS * 1e6:.1f} us (p50 / subscriber; "
        "the clients share this process)"
    )


if __name__ == "__main__":
    main()
