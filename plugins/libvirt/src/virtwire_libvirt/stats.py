"""Turning libvirt counters into the percentages and rates of ``vm-status``."""

from __future__ import annotations

from dataclasses import dataclass, field

#: A shorter window than this gives noisy figures: keep the previous figures instead
#: (a query right after a periodic sample must not replace it).
MIN_WINDOW = 0.5


@dataclass
class Sample:
    """Raw counters of one domain at one moment (taken in a worker thread)."""

    state: int
    wall: float  # time.monotonic()
    cpu_time: int = 0  # ns, all vCPUs
    vcpus: int = 1
    memory: float = 0.0  # percent, already computed
    rx: int = 0  # bytes, all interfaces
    tx: int = 0


@dataclass
class Rates:
    """The figures last reported for one domain, and the sample they were computed from."""

    base: Sample | None = None
    cpu: float = 0.0
    rx: float = 0.0
    tx: float = 0.0
    memory: float = 0.0  # percent, from the last sample
    extra: dict[str, float] = field(default_factory=dict)

    def update(self, sample: Sample, *, running: bool, min_window: float = MIN_WINDOW) -> None:
        if not running:
            self.base, self.cpu, self.rx, self.tx, self.memory = None, 0.0, 0.0, 0.0, 0.0
            return
        self.memory = sample.memory
        base = self.base
        if base is None:
            self.base = sample
            return
        window = sample.wall - base.wall
        if window < min_window:
            return
        cpu = (sample.cpu_time - base.cpu_time) / (window * 1e9 * max(sample.vcpus, 1)) * 100
        self.cpu = round(min(max(cpu, 0.0), 100.0), 1)
        # Counters restart with the guest: a negative delta means "new counter".
        self.rx = round(max(sample.rx - base.rx, 0) / window, 1)
        self.tx = round(max(sample.tx - base.tx, 0) / window, 1)
        self.base = sample


def memory_percent(mem_stats: dict[str, int], max_kib: int, cur_kib: int) -> float:
    """Guest memory in use, in percent.

    With a balloon driver reporting ``available`` and ``unused``: what the guest uses.
    Otherwise the QEMU process's resident memory against the domain's memory. Otherwise
    the current allocation against the maximum.
    """
    available = mem_stats.get("available")
    unused = mem_stats.get("unused")
    if available and unused is not None:
        pct = (available - unused) / available * 100
    elif mem_stats.get("rss") and (mem_stats.get("actual") or cur_kib):
        pct = mem_stats["rss"] / (mem_stats.get("actual") or cur_kib) * 100
    elif max_kib:
        pct = cur_kib / max_kib * 100
    else:
        pct = 0.0
    return round(min(max(pct, 0.0), 100.0), 1)
