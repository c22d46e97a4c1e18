"""Metric collectors: the parts of the ``system-monitor`` payload."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

__all__ = ["MetricCollector", "Sampler"]


@runtime_checkable
class Sampler(Protocol):
    """Samples one collector for one sampling loop; keeps its own previous counters so that
    rates and percentages of different intervals never disturb each other."""

    def sample(self) -> dict[str, Any]:
        """Return fields to merge into the payload (called in a worker thread: may block
        briefly, must not touch the event loop)."""


@runtime_checkable
class MetricCollector(Protocol):
    """A named producer of ``system-monitor`` fields."""

    name: str

    def create_sampler(self) -> Sampler:
        """A fresh sampler (one per sampling interval)."""
