"""The ``psutil`` collector: the document's ``cpu``, ``memory``, ``disk`` and ``network``.

Every rate and percentage is computed from the raw counters this sampler read last time,
never from psutil's module-wide ``cpu_percent`` state, so that samplers of different
intervals do not disturb each other.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import psutil

SYS_BLOCK = "/sys/block"


class _Previous(NamedTuple):
    at: float
    cpu: list[tuple[float, float]]  # (busy, total) seconds per core
    disk: dict[str, tuple[int, int]]  # name -> (read_bytes, write_bytes)
    net: dict[str, tuple[int, int]]  # name -> (bytes_recv, bytes_sent)


def _busy_total(times: Any) -> tuple[float, float]:
    """Busy and total CPU seconds of one core, as psutil's own ``cpu_percent`` counts them:
    guest time is already part of user/nice time on Linux, idle includes iowait."""
    total = sum(times)
    total -= getattr(times, "guest", 0.0) + getattr(times, "guest_nice", 0.0)
    idle = times.idle + getattr(times, "iowait", 0.0)
    return total - idle, total


def _percent(busy: float, total: float) -> float:
    if total <= 0:
        return 0.0
    return round(min(100.0, max(0.0, busy / total * 100.0)), 1)


def _rate(
    now: Mapping[str, tuple[int, int]], before: Mapping[str, tuple[int, int]], seconds: float
) -> tuple[int, int]:
    """Bytes per second of two summed counters, per device: a device that appeared since
    the last sample or whose counter went backwards (reset) adds nothing."""
    first = second = 0
    for name, (a, b) in now.items():
        old = before.get(name)
        if old is None:
            continue
        first += max(0, a - old[0])
        second += max(0, b - old[1])
    if seconds <= 0:
        return 0, 0
    return round(first / seconds), round(second / seconds)


class CountersSampler:
    """One sampling loop's view of the host counters."""

    def __init__(
        self,
        disks: Iterable[str] | None = None,
        nics: Iterable[str] | None = None,
        exclude_nics: Iterable[str] = (),
    ) -> None:
        self._disks = set(disks) if disks is not None else None
        self._nics = set(nics) if nics is not None else None
        self._exclude_nics = set(exclude_nics)
        self._physical: dict[str, bool] = {}
        self._prev: _Previous | None = None

    def _is_physical(self, name: str) -> bool:
        known = self._physical.get(name)
        if known is None:
            if os.path.isdir(SYS_BLOCK):
                known = os.path.exists(os.path.join(SYS_BLOCK, name, "device"))
            else:  # not Linux: psutil already reports whole disks only
                known = True
            if len(self._physical) < 4096:
                self._physical[name] = known
        return known

    def _disk_counters(self) -> dict[str, tuple[int, int]]:
        counters = psutil.disk_io_counters(perdisk=True) or {}
        out: dict[str, tuple[int, int]] = {}
        for name, c in counters.items():
            wanted = name in self._disks if self._disks is not None else self._is_physical(name)
            if wanted:
                out[name] = (c.read_bytes, c.write_bytes)
        return out

    def _net_counters(self) -> dict[str, tuple[int, int]]:
        counters = psutil.net_io_counters(pernic=True) or {}
        return {
            name: (c.bytes_recv, c.bytes_sent)
            for name, c in counters.items()
            if (self._nics is None or name in self._nics) and name not in self._exclude_nics
        }

    def sample(self) -> dict[str, Any]:
        at = time.monotonic()
        cpu = [_busy_total(t) for t in psutil.cpu_times(percpu=True)]
        mem = psutil.virtual_memory()
        disk = self._disk_counters()
        net = self._net_counters()
        prev = self._prev
        self._prev = _Previous(at, cpu, disk, net)

        if prev is not None and len(prev.cpu) == len(cpu):
            deltas = [(b - pb, t - pt) for (b, t), (pb, pt) in zip(cpu, prev.cpu, strict=True)]
        else:  # first sample (or CPUs came and went): the average since boot
            deltas = cpu
        cores = [_percent(b, t) for b, t in deltas]
        usage = _percent(sum(b for b, _ in deltas), sum(t for _, t in deltas))

        seconds = at - prev.at if prev is not None else 0.0
        read, write = _rate(disk, prev.disk if prev else {}, seconds)
        rx, tx = _rate(net, prev.net if prev else {}, seconds)

        used = mem.total - mem.available
        return {
            "cpu": {"usage": usage, "cores": cores},
            "memory": {
                "total": mem.total,
                "used": used,
                "usage": _percent(used, mem.total),
                "available": mem.available,
            },
            "disk": {"read": read, "write": write},
            "network": {"rx": rx, "tx": tx},
        }


class PsutilCollector:
    """The collector behind the document's fields."""

    name = "psutil"

    def __init__(
        self,
        disks: list[str] | None = None,
        nics: list[str] | None = None,
        exclude_nics: list[str] | None = None,
    ) -> None:
        self.disks = disks
        self.nics = nics
        self.exclude_nics = exclude_nics or []

    def create_sampler(self) -> CountersSampler:
        return CountersSampler(self.disks, self.nics, self.exclude_nics)
