"""The ``[plugins.monitor]`` config section."""

from __future__ import annotations

import msgspec


class MonitorSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Options of the monitor plugin (docs/monitor.md explains each)."""

    #: Bounds of a subscription's ``interval`` in milliseconds; requests outside are clamped.
    min_interval: int = 500
    max_interval: int = 3_600_000
    #: ``interval`` of a ``subscribe`` that gives none, in milliseconds.
    default_interval: int = 5000
    #: Milliseconds between a sampler's baseline sample and its first frame (capped by the
    #: interval): the first frame arrives this soon instead of a full interval later.
    warmup: int = 500
    #: Most distinct intervals sampled at the same time; a subscribe that would start one
    #: more is refused with RATE_LIMITED (subscribers of a running interval always fit).
    max_samplers: int = 32
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
            ("workers", 1 <= self.workers <= 32),
        )
        for field, ok in checks:
            if not ok:
                raise ValueError(f"invalid value for {field}: {getattr(self, field)!r}")

    def clamp(self, interval: int) -> int:
        return max(self.min_interval, min(self.max_interval, interval))
