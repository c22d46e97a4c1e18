"""The document's fields against this machine's real counters."""

from __future__ import annotations

import os
import socket
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import psutil

FRAME = "system-monitor"


async def _subscribe(client: Any, interval: int) -> dict[str, Any]:
    reply = await client.request("subscribe", {"topic": FRAME, "interval": interval})
    assert reply["type"] == "subscribe-response", reply
    return reply


class _Load:
    """Runs ``step()`` in a thread until stopped and measures its own throughput."""

    def __init__(self, step: Any) -> None:
        self.step = step
        self.bytes = 0
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.bytes += self.step()

    def rate(self) -> float:
        return self.bytes / max(1e-6, time.monotonic() - self.started)

    def __enter__(self) -> _Load:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


async def test_frame_has_the_documented_fields_with_sane_values(monitor_server: Any) -> None:
    async with monitor_server() as server, server.client() as client:
        await _subscribe(client, 500)
        frames = [(await client.expect(FRAME, timeout=5))["data"] for _ in range(3)]
    total = psutil.virtual_memory().total
    for data in frames:
        cpu = data["cpu"]
        assert len(cpu["cores"]) == psutil.cpu_count()
        assert 0.0 <= cpu["usage"] <= 100.0
        assert all(0.0 <= c <= 100.0 for c in cpu["cores"])
        # usage is the whole machine: between the least and the most busy core, near the
        # mean (each core weighted by the time the kernel counted for it over the interval,
        # which differs between cores by a tick or by stolen time: hence the spread's share)
        assert min(cpu["cores"]) - 0.1 <= cpu["usage"] <= max(cpu["cores"]) + 0.1
        spread = max(cpu["cores"]) - min(cpu["cores"])
        assert abs(cpu["usage"] - statistics.fmean(cpu["cores"])) <= max(1.0, 0.1 * spread)
        mem = data["memory"]
        assert mem["total"] == total
        assert 0 < mem["used"] <= mem["total"]
        assert abs(mem["usage"] - mem["used"] / mem["total"] * 100) <= 0.1
        assert data["disk"]["read"] >= 0 and data["disk"]["write"] >= 0
        assert data["network"]["rx"] >= 0 and data["network"]["tx"] >= 0
        assert data["interval"] == 500
        assert "errors" not in data
        # the extra collectors add their fields next to the document's
        assert set(data["load"]) == {"1m", "5m", "15m"}
        root = data["filesystems"][0]
        assert root["path"] == "/" and 0 < root["used"] <= root["total"]


async def test_cpu_usage_follows_a_busy_core(monitor_server: Any) -> None:
    """A thread spinning on one core shows up as about one core's worth of usage."""
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(range(10_000))

    async with monitor_server() as server, server.client() as client:
        await _subscribe(client, 500)
        thread = threading.Thread(target=spin, daemon=True)
        thread.start()
        try:
            busy = len(psutil.cpu_times(percpu=True))
            frame = await client.expect(
                FRAME,
                where=lambda f: (
                    max(f["data"]["cpu"]["cores"]) >= 80.0
                    and f["data"]["cpu"]["usage"] >= 80.0 / busy
                ),
                timeout=10,
            )
        finally:
            stop.set()
            thread.join()
    assert frame["data"]["cpu"]["usage"] <= 100.0


async def test_disk_write_rate_rises_while_writing(monitor_server: Any, tmp_path: Path) -> None:
    chunk = os.urandom(1 << 20)
    path = tmp_path / "load.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)

    def write() -> int:
        if os.lseek(fd, 0, os.SEEK_CUR) >= 64 << 20:
            os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, chunk)
        os.fsync(fd)
        return len(chunk)

    try:
        async with monitor_server() as server, server.client() as client:
            await _subscribe(client, 500)
            await client.expect(FRAME, timeout=5)
            with _Load(write) as load:
                # a frame whose window lies inside the writing shows at least half of
                # what this test writes and fsyncs per second
                frame = await client.expect(
                    FRAME,
                    where=lambda f: f["data"]["disk"]["write"] >= max(load.rate() / 2, 1 << 20),
                    timeout=15,
                )
    finally:
        os.close(fd)
    assert frame["data"]["disk"]["write"] >= 1 << 20


async def test_network_rates_rise_with_loopback_traffic(monitor_server: Any) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    received = 0

    def drain() -> None:
        nonlocal received
        conn, _ = listener.accept()
        with conn:
            while data := conn.recv(1 << 20):
                received += len(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    sender = socket.create_connection(("127.0.0.1", port))
    payload = b"x" * (1 << 20)

    def send() -> int:
        sender.sendall(payload)
        return len(payload)

    try:
        async with monitor_server() as server, server.client() as client:
            await _subscribe(client, 500)
            await client.expect(FRAME, timeout=5)
            with _Load(send) as load:
                # loopback bytes count once as received and once as sent
                frame = await client.expect(
                    FRAME,
                    where=lambda f: (
                        min(f["data"]["network"]["rx"], f["data"]["network"]["tx"])
                        >= max(load.rate() / 2, 1 << 20)
                    ),
                    timeout=15,
                )
    finally:
        sender.close()
        reader.join(10)
        listener.close()
    assert received > 0
    assert frame["data"]["network"]["rx"] > 0


def test_samplers_keep_their_own_previous_counters() -> None:
    """A sampler's rates cover the time since its own previous sample, whatever other
    samplers (or psutil's module-wide ``cpu_percent``) read in between."""
    from virtwire_monitor.counters import CountersSampler

    slow, fast = CountersSampler(nics=["lo"]), CountersSampler(nics=["lo"])
    psutil.cpu_percent(percpu=True)
    started = time.monotonic()
    slow.sample()
    fast.sample()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        sender = socket.create_connection(listener.getsockname())
        receiver, _ = listener.accept()
        sent = 0
        with sender, receiver:
            for _ in range(64):
                sender.sendall(b"y" * 65536)
                sent += 65536
                got = 0
                while got < 65536:
                    got += len(receiver.recv(65536))
    fast.sample()  # other readers in between: another sampler, psutil's own state
    psutil.cpu_percent(percpu=True)
    fast.sample()
    data = slow.sample()
    elapsed = time.monotonic() - started
    # bytes = rate * the slow sampler's own window (which lies within ``elapsed``)
    assert data["network"]["rx"] * elapsed >= sent * 0.99
    assert data["network"]["tx"] * elapsed >= sent * 0.99
    assert 0 <= data["cpu"]["usage"] <= 100
