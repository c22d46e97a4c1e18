"""Benchmark of the Proxmox backend against the stand-in Proxmox server (500 VMs).

The stand-in (tests/proxmox/pve_standin.py) runs in its own process; the gateway runs in this
one, and the subscriber that receives every push in a third.

1. CPU per poll: the gateway process's CPU time for one poll of ``/cluster/resources`` with
   500 VMs (HTTP in a worker thread, JSON, the diff), polling every 0.2 s, with nobody
   watching and with one ``vm-status-all`` subscriber (500 pushes per poll). Baseline: the
   same request made with proxmoxer alone, paced the same (the least any poller pays).
2. Status change → client latency with ``interval`` = 1 s: a VM is stopped or started in the
   stand-in at a random moment; time until the ``vm-status`` push reaches a WebSocket client.
   Baseline: a bare proxmoxer loop polling the same API at the same interval, watching for the
   same change. Both are bound by the interval (Proxmox has no push stream).

Run: ``.venv/bin/python bench/bench_proxmox.py`` (loopback only, about a minute).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import virtwire_proxmox
from virtwire.testing import run_server

ROOT = Path(__file__).resolve().parent.parent
STANDIN = ROOT / "tests" / "proxmox" / "pve_standin.py"
VMS = 500
PASSWORD = "bench-password"
POLLS = 30
BASELINE_CALLS = 30
INTERVAL = 1.0
POLL_INTERVAL = 0.2
CHANGES = 12

SUBSCRIBER = r"""
import json, signal, sys
from websockets.sync.client import connect
count = 0
def done(*_):
    print(count, flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, done)
with connect(sys.argv[1], compression=None, max_size=None) as ws:
    ws.send(json.dumps({"type": "subscribe", "data": {"topic": "vm-status-all"}, "id": 1}))
    while True:
        count += ws.recv().count('"vm-status"')
"""


class StandIn:
    """The stand-in Proxmox server in its own process."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(STANDIN), "--vms", str(VMS), "--password", PASSWORD],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        ready = self.proc.stdout.readline().split()
        if not ready or ready[0] != "ready":
            raise RuntimeError("the stand-in did not start")
        self.port, self.cert = int(ready[1]), ready[2]

    def set(self, vmid: int, state: str) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"set {vmid} {state}\n")
        self.proc.stdin.flush()
        self.proc.stdout.readline()

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def proxmoxer_api(standin: StandIn) -> Any:
    from proxmoxer import ProxmoxAPI

    return ProxmoxAPI(
        "127.0.0.1",
        port=standin.port,
        user="root@pam",
        password=PASSWORD,
        verify_ssl=standin.cert,
        timeout=10,
    )


def baseline_cpu_per_call(standin: StandIn) -> tuple[float, float]:
    api = proxmoxer_api(standin)
    api.cluster.resources.get(type="vm")  # warm: connection, TLS session
    cpu, wall = 0.0, 0.0
    for _ in range(BASELINE_CALLS):
        time.sleep(POLL_INTERVAL)  # paced like the gateway's poller (idle gaps cost caches)
        c, w = time.process_time(), time.perf_counter()
        rows = api.cluster.resources.get(type="vm")
        cpu, wall = cpu + time.process_time() - c, wall + time.perf_counter() - w
        assert len(rows) == VMS
    return cpu / BASELINE_CALLS * 1000, wall / BASELINE_CALLS * 1000


def settings(standin: StandIn, interval: float) -> dict[str, Any]:
    return {
        "server": {"locale": "en"},
        "plugins": {
            "proxmox": {
                "host": "127.0.0.1",
                "port": standin.port,
                "password": PASSWORD,
                "ca_file": standin.cert,
                "interval": interval,
            }
        },
    }


async def gateway_cpu_per_poll(standin: StandIn, watched: bool) -> tuple[float, int]:
    """CPU ms of this process per poll; vm-status frames the subscriber received."""
    config = settings(standin, POLL_INTERVAL)
    async with run_server(plugins=[("proxmox", virtwire_proxmox)], config=config) as server:
        (backend,) = server.gateway.backends
        subscriber = None
        if watched:
            url = server.ws_url(token=server.token())
            subscriber = await asyncio.create_subprocess_exec(
                sys.executable, "-c", SUBSCRIBER, url, stdout=subprocess.PIPE
            )
            await until(lambda: backend._watching)
        start = backend.polls
        await until(lambda: backend.polls > start)
        first, cpu = backend.polls, time.process_time()
        await asyncio.sleep(POLLS * POLL_INTERVAL)  # one wake-up: the bench costs nothing
        per_poll = (time.process_time() - cpu) / (backend.polls - first) * 1000
        frames = 0
        if subscriber is not None:
            subscriber.terminate()
            out, _ = await subscriber.communicate()
            frames = int(out or 0) if out and out.strip().isdigit() else 0
        return per_poll, frames


async def latencies(standin: StandIn) -> tuple[list[float], list[float]]:
    """(virtwire, direct polling) latencies in ms of the same changes."""
    config = settings(standin, INTERVAL)
    api = proxmoxer_api(standin)
    vmid = 100 + VMS - 1
    gateway: list[float] = []
    direct: list[float] = []
    async with run_server(plugins=[("proxmox", virtwire_proxmox)], config=config) as server:
        async with server.client() as client:
            await client.request("subscribe", {"topic": "vm-status", "vmId": f"pve:{vmid}"})
            await client.expect("vm-status")
            state = "running"
            for _ in range(CHANGES):
                await asyncio.sleep(random.uniform(0, INTERVAL))
                state = "stopped" if state == "running" else "running"
                changed = time.monotonic()
                await asyncio.to_thread(standin.set, vmid, state)

                async def pushed(want: str = state) -> float:
                    await client.expect(
                        "vm-status", where=lambda f: f["data"]["status"] == want, timeout=30
                    )
                    return time.monotonic()

                async def polled(want: str = state, t0: float = changed) -> float:
                    # a user's own poller at the same interval, started in phase with nothing
                    next_poll = t0 + random.uniform(0, INTERVAL)
                    while True:
                        await asyncio.sleep(max(0.0, next_poll - time.monotonic()))
                        rows = await asyncio.to_thread(api.cluster.resources.get, type="vm")
                        row = next(r for r in rows if r["vmid"] == vmid)
                        if row["status"] == want:
                            return time.monotonic()
                        next_poll += INTERVAL

                got_push, got_poll = await asyncio.gather(pushed(), polled())
                gateway.append((got_push - changed) * 1000)
                direct.append((got_poll - changed) * 1000)
    return gateway, direct


async def until(condition: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def main() -> None:
    standin = StandIn()
    try:
        base_cpu, base_wall = await asyncio.to_thread(baseline_cpu_per_call, standin)
        idle_cpu, _ = await gateway_cpu_per_poll(standin, watched=False)
        watched_cpu, frames = await gateway_cpu_per_poll(standin, watched=True)
        gateway, direct = await latencies(standin)
    finally:
        standin.stop()
    print(f"CPU per poll of /cluster/resources with {VMS} VMs (this process, ms):")
    print(f"  proxmoxer call alone (baseline)        {base_cpu:8.2f}   (wall {base_wall:.1f} ms)")
    print(
        f"  virtwire poll, nobody watching         {idle_cpu:8.2f}   ({idle_cpu / base_cpu:.2f}x)"
    )
    print(
        f"  virtwire poll, 1 vm-status-all client  {watched_cpu:8.2f}   "
        f"({watched_cpu / base_cpu:.2f}x; {frames} frames received)"
    )
    print(f"status change -> client latency, interval {INTERVAL:g} s, {CHANGES} changes (ms):")
    for name, values in (
        ("direct proxmoxer polling (baseline)", direct),
        ("virtwire push", gateway),
    ):
        print(
            f"  {name:36s} p50 {statistics.median(values):7.1f}  max {max(values):7.1f}  "
            f"(bound: interval + one poll)"
        )


if __name__ == "__main__":
    asyncio.run(main())
