"""Benchmark of the audit stream (docs/audit.md).

1. What one record costs the event loop: ``AuditLog.record`` with the fields of a
   ``vm-control`` record (its writer thread writing to a file meanwhile), against the standard
   library's non-blocking logging (``logging.handlers.QueueHandler`` onto a ``QueueListener``
   with a ``FileHandler``, the JSON made on the loop as its formatter would); and how many
   records per second each writer puts in its file.
2. ``vm-control`` round trip on libvirt's test driver with the audit stream on and off: three
   server processes running at once (off, on, and a second one off whose difference to the
   first is the noise of the measure), requests interleaved (the order rotating every round)
   so that the machine's noise falls on all alike, each next to a no-op request (``ping``) on
   the same connection (bench_libvirt.py's measure; goal there: <= +150 us over the no-op).

    .venv/bin/python bench/bench_audit.py [--records 200000] [--trips 8000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import logging.handlers
import queue
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _kit import close_all, token  # noqa: E402
from bench_libvirt import open_counter, pct, request, start_server  # noqa: E402
from virtwire.audit import AuditLog  # noqa: E402
from virtwire.config import AuditConfig  # noqa: E402


def fields(i: int) -> dict[str, object]:
    return {
        "user": "alice",
        "address": "127.0.0.1:50000",
        "id": i,
        "vmId": "test",
        "backend": "libvirt",
        "action": "pause",
        "force": False,
        "outcome": "ok",
        "durationMs": 0.25,
    }


def lines(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(1 for _ in fh)


async def audit_cost(n: int, workdir: Path) -> tuple[float, float]:
    """(loop seconds per record, records written per second) for virtwire's AuditLog."""
    path = workdir / "audit.log"
    audit = AuditLog(AuditConfig(queue_size=n + 1, instance="bench"))
    audit.start(path, None)
    record = audit.record
    t0 = time.perf_counter()
    for i in range(n):
        record("vm-control", fields(i))
    loop_time = time.perf_counter() - t0
    await audit.close()
    total = time.perf_counter() - t0
    assert audit.dropped == 0 and lines(path) == n
    return loop_time / n, n / total


def stdlib_cost(n: int, workdir: Path) -> tuple[float, float]:
    """The same with logging's QueueHandler -> QueueListener -> FileHandler."""
    path = workdir / "stdlib.log"
    q: queue.Queue[logging.LogRecord] = queue.Queue(n + 1)
    handler = logging.FileHandler(path)
    listener = logging.handlers.QueueListener(q, handler)
    logger = logging.getLogger("bench.audit")
    logger.propagate = False
    logger.handlers[:] = [logging.handlers.QueueHandler(q)]
    logger.setLevel(logging.INFO)
    listener.start()
    t0 = time.perf_counter()
    for i in range(n):
        logger.info(json.dumps({"event": "vm-control", **fields(i)}))
    loop_time = time.perf_counter() - t0
    listener.stop()
    handler.close()
    total = time.perf_counter() - t0
    assert lines(path) == n
    return loop_time / n, n / total


async def interleaved(ports: dict[str, int], n: int) -> dict[str, list[float]]:
    """Per round, on each server (alternating which goes first): a ``ping``, a ``vm-control``."""
    actors = {name: await open_counter(port, token("vm:control")) for name, port in ports.items()}
    times: dict[str, list[float]] = {f"{name} {kind}": [] for name in ports for kind in "pc"}
    names = list(ports)
    for i in range(n):
        action = "pause" if i % 2 == 0 else "resume"
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            actor = actors[name]
            t = time.perf_counter()
            await request(actor, f'{{"type":"ping","id":{i}}}')
            times[f"{name} p"].append(time.perf_counter() - t)
            text = f'{{"type":"vm-control","data":{{"vmId":"test","action":"{action}"}},"id":{i}}}'
            t = time.perf_counter()
            await request(actor, text)
            times[f"{name} c"].append(time.perf_counter() - t)
    close_all(list(actors.values()))
    skip = n // 10  # warm-up
    return {key: values[skip:] for key, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--trips", type=int, default=8000)
    args = parser.parse_args()
    us = 1e6
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
        workdir = Path(tmp)
        ours = asyncio.run(audit_cost(args.records, workdir))
        theirs = stdlib_cost(args.records, workdir)
        head = f"one record, {args.records} in a burst"
        print(f"{head:55} {'loop us':>9} {'written/s':>11}")
        for label, (loop_us, rate) in (
            ("logging QueueHandler -> QueueListener (baseline)", theirs),
            ("virtwire AuditLog.record -> writer thread", ours),
        ):
            print(f"{label:55} {loop_us * us:9.2f} {rate:11.0f}")

        audit_file = str(workdir / "server-audit.log")
        servers = {
            "off": start_server("off"),
            "on": start_server(audit_file),
            "off2": start_server("off"),
        }
        try:
            times = asyncio.run(interleaved({k: v.port for k, v in servers.items()}, args.trips))
        finally:
            for server in servers.values():
                server.stop(30)
        written = lines(Path(audit_file))
        off_noop, off_control, on_noop, on_control = (
            times["off p"],
            times["off c"],
            times["on p"],
            times["on c"],
        )
    print()
    print(f"{'measure':55} {'n':>5} {'p50 us':>9} {'p99 us':>9} {'mean us':>9}")
    for label, values in (
        ("audit off: no-op request (ping) round trip", off_noop),
        ("audit off: vm-control round trip (baseline)", off_control),
        ("audit on: no-op request (ping) round trip", on_noop),
        ("audit on: vm-control round trip", on_control),
    ):
        print(
            f"{label:55} {len(values):5d} {pct(values, 50) * us:9.1f} "
            f"{pct(values, 99) * us:9.1f} {statistics.fmean(values) * us:9.1f}"
        )
    cost = (statistics.median(on_control) - statistics.median(off_control)) * us
    over_on = (statistics.median(on_control) - statistics.median(on_noop)) * us
    over_off = (statistics.median(off_control) - statistics.median(off_noop)) * us
    print(f"audit records written by the server: {written} (one per vm-control)")
    print(f"vm-control over no-op (p50): +{over_off:.0f} us audit off, +{over_on:.0f} us audit on")
    noise = (statistics.median(times["off2 c"]) - statistics.median(off_control)) * us
    print(f"audit on - audit off, vm-control p50: {cost:+.1f} us")
    print(f"second audit-off server - first, vm-control p50 (the noise): {noise:+.1f} us")


if __name__ == "__main__":
    main()
