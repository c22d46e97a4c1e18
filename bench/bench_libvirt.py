"""Benchmark of the libvirt backend's event path on libvirt's test driver.

1. One lifecycle event to the last of 1000 ``vm-status-all`` subscribers, against one plain
   publish of a ``vm-status`` frame to the same 1000 (goal: <= 1.1x). Both are timed from the
   request that causes them (``vm-control`` pause/resume; a bench plugin's ``bench-publish``)
   until the last subscriber has its ``vm-status`` frame.
2. ``vm-control`` round trip against a no-op request (``ping``) on the same connection
   (goal: <= +150 us), with libvirt's own time for the same call in this process, and the
   same two requests against the least a gateway can do for them (``_libvirt_floor.py``: the
   ``websockets`` library's server calling libvirt-python in a worker thread, with libvirt's
   event thread delivering the action's event): what a thread hop and libvirt's event thread
   cost on this machine whatever the gateway. The round trips are measured twice: with the
   server on a CPU of its own (the figure against the goal), then left to the scheduler.

For the round trips, with two or more CPUs, the server process runs on one CPU and this script
(the client) on the others: otherwise the round trips move by +-50 us from run to run with where
the scheduler puts the server's threads (``--no-pin`` to see it). The fan-out runs unpinned.

The server (``_libvirt_server.py``) runs in its own process; the 1000 subscribers run in
another, on raw sockets that only count frames (no JSON parsing), and report when the last
one has its frame (CLOCK_MONOTONIC is shared by processes). Loopback only, about a minute:

    .venv/bin/python bench/bench_libvirt.py [--subscribers 1000] [--rounds 20] [--trips 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import resource
import statistics
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path

import libvirt

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _kit import ServerProc, WsClient, close_all, open_client, token  # noqa: E402
from virtwire.testing import free_port  # noqa: E402

VM_STATUS = b'{"type":"vm-status"'


async def open_counter(port: int, tok: str) -> WsClient:
    """A client that counts ``vm-status`` frames."""
    return await open_client(port, tok, prefix=VM_STATUS)


def subscribers(port: int, count: int, pipe: Connection) -> None:
    """The load generator (own process): ``count`` vm-status-all subscribers. On "arm" each
    expects one more vm-status frame; once all have it, the last arrival time is sent back."""

    async def main() -> None:
        tok = token("vm:read")  # subscribers read
        clients = [await open_counter(port, tok) for _ in range(count)]
        for c in clients:
            c.match_target = 1  # the current status, sent on subscribing
            c.target = 1  # (the subscribe has no id: no response)
            c.send_text('{"type":"subscribe","data":{"topic":"vm-status-all"}}')
        await wait_all(clients)
        pipe.send("ready")
        loop = asyncio.get_running_loop()
        while True:
            command = await loop.run_in_executor(None, pipe.recv)
            if command == "stop":
                break
            _, frames = command  # ("arm", frames each client gets: vm-status [+ system-event])
            for c in clients:
                c.match_target = c.matched + 1
                c.target = c.frames + frames
            pipe.send("armed")
            await wait_all(clients)
            pipe.send(max(c.reached for c in clients))
        close_all(clients)

    async def wait_all(clients: list[WsClient]) -> None:
        async with asyncio.timeout(60):
            for c in clients:  # every frame in: the next round starts from quiet
                while c.matched < c.match_target or c.frames < c.target:
                    await c.next_frame()

    import uvloop

    uvloop.run(main())  # the cheapest loop here: the counter must not be the bottleneck


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def direct_calls(n: int) -> list[float]:
    """libvirt's own time for the same calls (suspend/resume on test:///default)."""
    libvirt.registerErrorHandler(lambda _c, _e: None, None)
    conn = libvirt.open("test:///default")
    dom = conn.lookupByName("test")
    times = []
    for i in range(n):
        t = time.perf_counter()
        dom.suspend() if i % 2 == 0 else dom.resume()
        times.append(time.perf_counter() - t)
    if dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
        dom.resume()
    conn.close()
    return times


async def request(actor: WsClient, text: str) -> None:
    """Send and wait for the reply (the actor subscribes to nothing: its next frame is it)."""
    waiter = actor.next_frame()
    actor.send_text(text)
    await waiter


async def round_trips(port: int, n: int) -> tuple[list[float], list[float]]:
    """Interleaved: a no-op ``ping`` and a ``vm-control`` on the same connection."""
    actor = await open_counter(port, token("vm:control"))
    noop, control = [], []
    for i in range(n):
        t = time.perf_counter()
        await request(actor, f'{{"type":"ping","id":{i}}}')
        noop.append(time.perf_counter() - t)
        action = "pause" if i % 2 == 0 else "resume"
        t = time.perf_counter()
        await request(
            actor, f'{{"type":"vm-control","data":{{"vmId":"test","action":"{action}"}},"id":{i}}}'
        )
        control.append(time.perf_counter() - t)
    actor.close()
    skip = n // 10  # warm-up
    return noop[skip:], control[skip:]


async def cpu_per_request(server: ServerProc, n: int) -> tuple[float, float]:
    """The server's CPU time (all its threads) per request: ``n`` no-op requests, then
    ``n`` vm-controls, one at a time on one connection. Unlike the round trip, this does
    not count the time threads spend waking up."""
    actor = await open_counter(server.port, token("vm:control"))
    start = server.cpu()
    for i in range(n):
        await request(actor, f'{{"type":"ping","id":{i}}}')
    middle = server.cpu()
    for i in range(n):
        action = "pause" if i % 2 == 0 else "resume"
        await request(
            actor, f'{{"type":"vm-control","data":{{"vmId":"test","action":"{action}"}},"id":{i}}}'
        )
    end = server.cpu()
    actor.close()
    return (middle - start) / n, (end - middle) / n


async def fanout(
    port: int, pipe: Connection, rounds: int
) -> tuple[list[float], list[float], list[float]]:
    """Per round: request -> last subscriber's vm-status, for an event and a plain publish;
    and the vm-control round trip while the event fans out."""
    actor = await open_counter(port, token("vm:control"))
    loop = asyncio.get_running_loop()
    event, plain, reply = [], [], []
    for i in range(2 * rounds):
        for kind in ("event", "plain"):
            pipe.send(("arm", 2 if kind == "event" else 1))
            assert await loop.run_in_executor(None, pipe.recv) == "armed"
            if kind == "event":
                action = "pause" if i % 2 == 0 else "resume"
                text = (
                    f'{{"type":"vm-control","data":{{"vmId":"test","action":"{action}"}},"id":{i}}}'
                )
            else:
                text = '{"type":"bench-publish"}'
            answered = actor.next_frame() if kind == "event" else None
            t = time.monotonic()
            actor.send_text(text)
            if answered is not None:
                await answered
                reply.append(time.monotonic() - t)
            last = await loop.run_in_executor(None, pipe.recv)
            (event if kind == "event" else plain).append(last - t)
    actor.close()
    return event[2:], plain[2:], reply[2:]  # warm-up


def start_server(*args: str, script: str = "_libvirt_server.py") -> ServerProc:
    """``SCRIPT PORT [ARGS]`` on a free port, accepting connections, on a CPU of its own
    (see the module docstring)."""
    port = free_port()
    server = ServerProc([sys.executable, str(HERE / script), str(port), *args], port)
    server.wait_ready()
    pin(server.proc.pid)
    return server


#: ``--no-pin``: leave the processes where the scheduler puts them.
PIN = True


def pin(server_pid: int) -> None:
    """With two CPUs or more: every thread of the server on the last, this process on the
    others."""
    cpus = sorted(os.sched_getaffinity(0))
    if not PIN or len(cpus) < 2:
        return
    os.sched_setaffinity(0, set(cpus[:-1]))
    _place(server_pid, {cpus[-1]})


def unpin(server_pid: int, cpus: set[int]) -> None:
    """Back to every CPU (for the fan-out: 1000 subscribers in one process on the clients'
    CPU would be the bottleneck)."""
    os.sched_setaffinity(0, cpus)
    _place(server_pid, cpus)


def _place(pid: int, cpus: set[int]) -> None:
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(tid), cpus)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--trips", type=int, default=2000)
    parser.add_argument(
        "--no-fanout", action="store_true", help="only the round trips (no subscribers)"
    )
    parser.add_argument(
        "--no-pin", action="store_true", help="no CPU of its own for the server (noisier)"
    )
    args = parser.parse_args()
    global PIN
    PIN = not args.no_pin
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    everywhere = os.sched_getaffinity(0)
    direct = direct_calls(args.trips)
    floor = start_server(script="_libvirt_floor.py")
    try:
        floors = asyncio.run(round_trips(floor.port, args.trips))
        floors_free = floors  # --no-pin: the same measurement
        if PIN:
            unpin(floor.proc.pid, everywhere)
            floors_free = asyncio.run(round_trips(floor.port, args.trips))
    finally:
        floor.stop(30)
    server = start_server()
    port = server.port
    try:
        noop, control = asyncio.run(round_trips(port, args.trips))
        cpu = asyncio.run(cpu_per_request(server, args.trips))
        free = (noop, control)
        if PIN:
            unpin(server.proc.pid, everywhere)
            free = asyncio.run(round_trips(port, args.trips))
        event: list[float] = []
        plain: list[float] = []
        busy: list[float] = []
        unpinned = (floors_free, free)
        if args.no_fanout:
            return report(args, direct, floors, noop, control, event, plain, busy, cpu, unpinned)
        ours, theirs = mp.Pipe()
        loader = mp.get_context("fork").Process(
            target=subscribers, args=(port, args.subscribers, theirs), daemon=True
        )
        loader.start()
        assert ours.recv() == "ready"
        event, plain, busy = asyncio.run(fanout(port, ours, args.rounds))
        ours.send("stop")
        loader.join(30)
    finally:
        server.stop(30)
    report(args, direct, floors, noop, control, event, plain, busy, cpu, unpinned)


def report(
    args: argparse.Namespace,
    direct: list[float],
    floor: tuple[list[float], list[float]],
    noop: list[float],
    control: list[float],
    event: list[float],
    plain: list[float],
    busy: list[float],
    cpu: tuple[float, float],
    unpinned: tuple[tuple[list[float], list[float]], tuple[list[float], list[float]]],
) -> None:
    us = 1e6
    print(f"{'measure':60} {'n':>5} {'p50 us':>9} {'p99 us':>9} {'mean us':>9}")
    for label, values in (
        ("libvirt suspend/resume, in-process (for reference)", direct),
        ("floor: no-op (ping) round trip", floor[0]),
        ("floor: vm-control round trip", floor[1]),
        ("no-op request (ping) round trip (baseline)", noop),
        ("vm-control round trip, same connection", control),
        (f"vm-control round trip, {args.subscribers} subscribers get its event", busy),
        (f"plain publish -> last of {args.subscribers} (baseline)", plain),
        (f"lifecycle event -> last of {args.subscribers}", event),
    ):
        if not values:
            continue
        print(
            f"{label:60} {len(values):5d} {pct(values, 50) * us:9.1f} "
            f"{pct(values, 99) * us:9.1f} {statistics.fmean(values) * us:9.1f}"
        )

    def over(trips: tuple[list[float], list[float]]) -> float:
        return (statistics.median(trips[1]) - statistics.median(trips[0])) * us

    extra, least = over((noop, control)), over(floor)
    where = "server on a CPU of its own" if PIN else "left to the scheduler"
    print(
        f"vm-control over no-op (p50, {where}): +{extra:.0f} us (goal <= +150 us); "
        f"floor +{least:.0f} us: virtwire adds {extra - least:+.0f} us to it"
    )
    if PIN:
        free_floor, free = unpinned
        print(
            f"  the same left to the scheduler (noisier): +{over(free):.0f} us; "
            f"floor +{over(free_floor):.0f} us"
        )
    print(
        f"server CPU per request: no-op {cpu[0] * us:.0f} us, vm-control {cpu[1] * us:.0f} us "
        f"(+{(cpu[1] - cpu[0]) * us:.0f} us; the rest of the round trip is threads waking up)"
    )
    if event and plain:
        ratio = statistics.median(event) / statistics.median(plain)
        print(f"event / plain publish to {args.subscribers} (p50): {ratio:.2f}x (goal <= 1.1x)")


if __name__ == "__main__":
    main()
