"""One sampling loop per interval: samples every collector once per tick in a worker
thread and publishes one ``system-monitor`` frame to the interval's channel."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Any

from virtwire.collectors import MetricCollector, Sampler
from virtwire.hub import Channel

FRAME = "system-monitor"


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _merge(into: dict[str, Any], fields: dict[str, Any], path: str = "") -> list[str]:
    """Add ``fields`` to ``into`` without replacing anything already there (nested dicts
    are merged); returns the dotted names that were already taken."""
    taken: list[str] = []
    for key, value in fields.items():
        current = into.get(key)
        if key not in into:
            into[key] = value
        elif isinstance(current, dict) and isinstance(value, dict):
            taken += _merge(current, value, f"{path}{key}.")
        else:
            taken.append(f"{path}{key}")
    return taken


class Tick:
    """The outcome of sampling every collector once."""

    __slots__ = ("errors", "fields", "taken")

    def __init__(self) -> None:
        self.fields: dict[str, Any] = {}
        self.errors: dict[str, str] = {}
        self.taken: dict[str, list[str]] = {}


def create_samplers(
    collectors: Sequence[MetricCollector],
) -> tuple[list[tuple[str, Sampler]], dict[str, str]]:
    """A fresh sampler per collector; a collector whose ``create_sampler`` raises is left
    out and reported by name."""
    samplers: list[tuple[str, Sampler]] = []
    errors: dict[str, str] = {}
    for collector in collectors:
        name = str(getattr(collector, "name", type(collector).__name__))
        try:
            samplers.append((name, collector.create_sampler()))
        except Exception as exc:
            errors[name] = f"create_sampler: {_describe(exc)}"
    return samplers, errors


def sample_all(samplers: Sequence[tuple[str, Sampler]]) -> Tick:
    """Sample every collector once (runs in a worker thread). A collector that raises or
    returns something else than a dict is reported by name; the others still count."""
    tick = Tick()
    for name, sampler in samplers:
        try:
            fields = sampler.sample()
            if not isinstance(fields, dict):
                raise TypeError(f"sample() returned {type(fields).__name__}, not dict")
        except Exception as exc:
            tick.errors[name] = _describe(exc)
            continue
        taken = _merge(tick.fields, fields)
        if taken:
            tick.taken[name] = taken
    return tick


class SamplingLoop:
    """Samples the collectors every ``interval`` ms while its channel has subscribers.

    Start-up: samplers are created and a baseline sample is taken at once; the first frame
    follows after ``min(interval, warmup)`` ms (its rates cover that warm-up), the next ones
    every ``interval`` ms after it. A tick that overruns skips the slots it missed rather than
    sampling in a burst.
    """

    def __init__(
        self,
        interval: int,
        channel: Channel,
        collectors: Sequence[MetricCollector],
        *,
        warmup: int,
        executor: Executor,
        log: Any,
    ) -> None:
        self.interval = interval
        self.channel = channel
        self.collectors = list(collectors)
        self.warmup = warmup
        self.executor = executor
        self.log = log.bind(interval=interval)
        #: The newest payload (what a later subscriber gets first); None before the first.
        self.latest: dict[str, Any] | None = None
        #: Samples taken and frames published (for the operator and the tests).
        self.samples = 0
        self.frames = 0
        self._failing: dict[str, str] = {}
        self._warned_taken: set[str] = set()
        self._crashed = False
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(
            self._run(), name=f"system-monitor:{self.interval}"
        )

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()

    async def wait_stopped(self) -> None:
        if self.task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def _in_thread(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def _run(self) -> None:
        try:
            await self._loop()
        except asyncio.CancelledError:
            raise
        except Exception:  # never expected: keep the gateway up, say what happened
            self.log.exception("system-monitor sampler stopped")

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        samplers, broken = await self._in_thread(create_samplers, self.collectors)
        await self._sample(samplers, broken)  # the baseline: rates need a previous sample
        period = self.interval / 1000
        due = loop.time() + min(self.interval, self.warmup) / 1000
        while True:
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                payload = await self._sample(samplers, broken)
                self.latest = payload
                self.channel.publish(FRAME, payload)
                self.frames += 1
            except asyncio.CancelledError:
                raise
            except Exception:  # never expected: say so once, keep ticking
                if not self._crashed:
                    self._crashed = True
                    self.log.exception("system-monitor tick failed")
            now = loop.time()
            due += period
            if due <= now:  # overran: skip to the next slot in the future
                due += ((now - due) // period + 1) * period

    async def _sample(
        self, samplers: list[tuple[str, Sampler]], broken: dict[str, str]
    ) -> dict[str, Any]:
        tick: Tick = await self._in_thread(sample_all, samplers)
        self.samples += 1
        errors = {**broken, **tick.errors}
        self._report(errors, tick.taken)
        payload = tick.fields
        payload["interval"] = self.interval
        if errors:
            payload["errors"] = errors
        return payload

    def _report(self, errors: dict[str, str], taken: dict[str, list[str]]) -> None:
        """Log a collector's failure once when it starts failing and once when it recovers."""
        for name, error in errors.items():
            if self._failing.get(name) != error:
                self.log.warning("metric collector failed", collector=name, error=error)
        for name in set(self._failing) - set(errors):
            self.log.info("metric collector recovered", collector=name)
        self._failing = dict(errors)
        for name, fields in taken.items():
            if name not in self._warned_taken:
                self._warned_taken.add(name)
                self.log.warning(
                    "metric collector fields already set by an earlier collector; ignored",
                    collector=name,
                    fields=fields,
                )
