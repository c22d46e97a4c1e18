"""The ``[plugins.monitor]`` config section."""

from __future__ import annotations

import math

import msgspec


class MonitorSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Options of the monitor plugin (docs/monitor.md explains each)."""

    #: Bounds of a subscription's ``interval`` in milliseconds; requests outside are clamped,
    #: and requests inside snap to the nearest step of 1, 2, 5 x 10^n ms (or a bound).
    min_interval: int = 500
    max_interval: int = 3_600_000
    #: ``interval`` of a ``subscribe`` that gives none, in milliseconds.
    default_interval: int = 5000
    #: Milliseconds between a sampler's baseline sample and its first frame (capped by the
    #: interval): the first frame arrives this soon instead of a full interval later.
    warmup: int = 500
    #: Most distinct intervals sampled at the same time; a subscribe that would start one
    #: more is refused with RATE_LIMITED (subscribers of a running interval always fit).
    #: The snapping keeps the number of possible intervals small (13 for the default bounds).
    max_samplers: int = 32
    #: Most distinct intervals one user (token ``sub``) subscribes to at once, over all
    #: their connections; a subscribe past it is refused with RATE_LIMITED.
    max_intervals_per_user: int = 4
    #: Worker threads that run samples (never the event loop).
    workers: int = 2
    #: Collector names to include in the payload; None: every registered collector.
    collectors: list[str] | None = None
    #: Block devices summed in ``disk``; None: every physical disk (those with a
    #: ``/sys/block/NAME/device``; partitions, loop, ram, zram and device-mapper devices
    #: are left out so that no byte is counted twice).
    disks: list[str] | None = None
    #: Network interfaces summed in ``network``; None: every interface, loopback included.
    nics: list[str] | None = None
    #: Interfaces left out of ``network`` (applied after ``nics``), e.g. ``["lo"]``.
    exclude_nics: list[str] = msgspec.field(default_factory=list)
    #: Mount points reported by the ``filesystems`` collector; empty: collector off.
    filesystems: list[str] = msgspec.field(default_factory=lambda: ["/"])

    def __post_init__(self) -> None:
        checks = (
            ("min_interval", self.min_interval >= 50),
            ("max_interval", self.max_interval >= self.min_interval),
            (
                "default_interval",
                self.min_interval <= self.default_interval <= self.max_interval,
            ),
            ("warmup", self.warmup >= 0),
            ("max_samplers", self.max_samplers >= 1),
            ("max_intervals_per_user", self.max_intervals_per_user >= 1),
            ("workers", 1 <= self.workers <= 32),
        )
        for field, ok in checks:
            if not ok:
                raise ValueError(f"invalid value for {field}: {getattr(self, field)!r}")

    def clamp(self, interval: int) -> int:
        """The interval a request for ``interval`` ms gets: within the bounds, snapped to
        the nearest (on a log scale) of the steps; ``default_interval`` is always one."""
        interval = max(self.min_interval, min(self.max_interval, interval))
        return min(self.steps(), key=lambda s: (abs(math.log(s / interval)), -s))

    def steps(self) -> list[int]:
        """The intervals a subscription can get: 1, 2, 5 x 10^n ms within the bounds, the
        bounds themselves and ``default_interval``."""
        out = {self.min_interval, self.max_interval, self.default_interval}
        decade = 1
        while decade <= self.max_interval:
            for m in (1, 2, 5):
                if self.min_interval <= m * decade <= self.max_interval:
                    out.add(m * decade)
            decade *= 10
        return sorted(out)
