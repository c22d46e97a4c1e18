"""The ``system-monitor`` topic: one sampling loop per distinct interval, shared by every
subscriber of that interval, started with the first and stopped with the last."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from virtwire import ErrorCode, VirtwireError
from virtwire.hub import Channel
from virtwire.topics import Subscription

from .sampling import FRAME, SamplingLoop
from .settings import MonitorSettings

if TYPE_CHECKING:
    from virtwire.collectors import MetricCollector
    from virtwire.gateway import Gateway
    from virtwire.session import Session

NAME = "system-monitor"
SCOPE = "monitor:read"


class MonitorTopic:
    """``subscribe {topic: "system-monitor", interval}`` (ms, clamped to the configured
    bounds; the response carries the value used)."""

    name = NAME
    scope = SCOPE

    def __init__(self, gateway: Gateway, settings: MonitorSettings) -> None:
        self.gateway = gateway
        self.settings = settings
        #: Running sampling loops by interval.
        self.loops: dict[int, SamplingLoop] = {}
        self._channels: dict[int, Channel] = {}
        self._executor: ThreadPoolExecutor | None = None
        #: Subscriptions per interval of each user (``sub``), over all their connections.
        self._users: dict[str, Counter[int]] = {}

    # -- helpers -----------------------------------------------------------------------
    def collectors(self) -> list[MetricCollector]:
        wanted = self.settings.collectors
        registered = list(self.gateway.collectors)
        if wanted is None:
            return registered
        return [c for c in registered if getattr(c, "name", None) in wanted]

    def interval(self, data: dict[str, Any]) -> int:
        """The clamped interval of ``subscribe`` data; INVALID_MESSAGE if it is no number."""
        raw = data.get("interval")
        if raw is None:
            return self.settings.default_interval
        if isinstance(raw, bool) or not isinstance(raw, int | float) or raw != raw:
            raise VirtwireError(
                ErrorCode.INVALID_MESSAGE,
                self.gateway.catalogue("monitor.invalid_interval"),
                details={"field": "data.interval", "reason": "Expected a number of milliseconds"},
            )
        if raw >= self.settings.max_interval:
            return self.settings.max_interval
        return self.settings.clamp(round(raw))

    def executor(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                self.settings.workers, thread_name_prefix="virtwire-monitor"
            )
        return self._executor

    def channel(self, interval: int) -> Channel:
        """The interval's channel, hooked so that its first subscriber starts the sampling
        loop and its last stops it."""
        known = self._channels.get(interval)
        if known is not None:
            return known
        channel = self.gateway.hub.channel(f"{NAME}:{interval}", latest=True)
        channel.on_active(lambda active: self._active(interval, channel, active))
        self._channels[interval] = channel
        return channel

    def _active(self, interval: int, channel: Channel, active: bool) -> None:
        if active:
            if interval not in self.loops:
                loop = SamplingLoop(
                    interval,
                    channel,
                    self.collectors(),
                    warmup=self.settings.warmup,
                    executor=self.executor(),
                    log=self.gateway.log,
                )
                self.loops[interval] = loop
                loop.start()
            return
        running = self.loops.pop(interval, None)
        if running is not None:
            running.stop()
        # Idle intervals keep nothing: forget the channel so that clients trying many
        # intervals over time do not grow the hub.
        if self._channels.get(interval) is channel:
            del self._channels[interval]
        self.gateway.hub.discard(channel)

    # -- the Topic protocol ------------------------------------------------------------
    def key(self, data: dict[str, Any]) -> Hashable:
        """``(name, clamped interval)``; without ``interval`` (a bare ``unsubscribe``)
        ``(name, None)``, which ends every ``system-monitor`` subscription."""
        if data.get("interval") is None:
            return (NAME, None)
        try:
            return (NAME, self.interval(data))
        except VirtwireError:
            return (NAME, None)

    async def subscribe(self, session: Session, data: dict[str, Any]) -> Subscription:
        interval = self.interval(data)
        user = session.user_id or ""
        mine = self._users.get(user)
        cap = self.settings.max_intervals_per_user
        if mine is not None and interval not in mine and len(mine) >= cap:
            # a user's own limit: what it names is only that user's
            yours = sorted(mine)
            raise VirtwireError(
                ErrorCode.RATE_LIMITED,
                self.gateway.catalogue(
                    "monitor.too_many_user_intervals",
                    limit=cap,
                    yours=", ".join(map(str, yours)),
                ),
                details={"limit": cap, "yours": yours},
            )
        limit = self.settings.max_samplers
        if interval not in self.loops and len(self.loops) >= limit:
            raise VirtwireError(
                ErrorCode.RATE_LIMITED,
                self.gateway.catalogue("monitor.too_many_intervals", limit=limit),
                details={"limit": limit},
            )
        outbox = session.outbox
        handle: list[tuple[Channel, Any]] = []

        def start() -> None:
            self._users.setdefault(user, Counter())[interval] += 1
            channel = self.channel(interval)
            handle.append((channel, channel.add(outbox)))
            loop = self.loops.get(interval)
            if loop is not None and loop.latest is not None:
                channel.send_to(outbox, FRAME, loop.latest)

        def close() -> None:
            while handle:
                channel, sub = handle.pop()
                channel.remove(sub)
                counts = self._users.get(user)
                if counts is not None:
                    counts[interval] -= 1
                    if counts[interval] <= 0:
                        del counts[interval]
                    if not counts:
                        del self._users[user]

        return Subscription(
            key=(NAME, interval), close=close, reply={"interval": interval}, start=start
        )

    # -- lifespan ----------------------------------------------------------------------
    async def close(self) -> None:
        loops = list(self.loops.values())
        self.loops.clear()
        for loop in loops:
            loop.stop()
        for loop in loops:
            await loop.wait_stopped()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
