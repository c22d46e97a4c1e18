"""The Redis broker: shared channels, latest values, history and request routing.

Three background tasks, each with one concern:
- the reader drains the PUB/SUB connection (frames of shared channels, requests and replies
  addressed to this gateway) and hands frames to the hub at once (no queue in between);
- the publisher sends queued frames in pipelines through the ``PUBLISH`` script;
- the lease keeper renews this gateway's ownership of the keys (vmIds) its backends report and
  takes over keys whose owner is gone.
While Redis is unreachable frames are delivered locally and their channels start a new epoch once
it is back; the reader reconnects, re-subscribes and refills what it missed from the streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from virtwire.broker import Entry, History
from virtwire.errors import BackendUnavailable, ErrorCode, VirtwireError

from . import scripts
from .settings import RedisSettings
from .wire import Names, decode_key, key_json, parse

if TYPE_CHECKING:
    from virtwire.hub import Hub

_json = msgspec.json.encode
_unjson = msgspec.json.decode

#: Frames sent per pipeline.
BATCH = 256


def redacted(url: str) -> str:
    """The URL without its password (for logs and /healthz)."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rpartition('@')[2]}"


class RedisBroker:
    """A :class:`virtwire.broker.Broker` over one Redis server."""

    name = "redis"

    def __init__(self, settings: RedisSettings, url: str, log: Any) -> None:
        self.settings = settings
        self.url = url
        self.log = log.bind(plugin="redis")
        self.names = Names(settings.prefix)
        self.node = secrets.token_hex(6)
        self.state = "starting"
        self.hub: Hub | None = None
        self._queue: deque[tuple[str, str, str | None]] = deque()
        self._queued = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._served: set[asyncio.Task[None]] = set()
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._connected = asyncio.Event()
        #: Channels whose next frame starts a new epoch (frames were lost on the way).
        self._lost: set[str] = set()
        #: Keys this gateway's backends reported, per owned channel: the last open frame.
        self._local: dict[str, dict[str, str]] = {c: {} for c in settings.owned_channels}
        self._owned: set[str] = set()
        self._owned_channels = set(settings.owned_channels)
        self.counters = {
            "published": 0,
            "received": 0,
            "not_owner": 0,
            "local_only": 0,
            "refilled": 0,
            "gaps": 0,
            "reconnects": 0,
            "forwarded": 0,
            "served": 0,
        }
        self.redis: aioredis.Redis = aioredis.Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=2.0,
            socket_timeout=5.0,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self._publish = self.redis.register_script(scripts.PUBLISH)
        self._claim = self.redis.register_script(scripts.CLAIM)
        self._release = self.redis.register_script(scripts.RELEASE)
        self._history = self.redis.register_script(scripts.HISTORY)

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self, hub: Hub) -> None:
        self.hub = hub
        self._tasks = [
            asyncio.create_task(self._reader(), name="redis-reader"),
            asyncio.create_task(self._publisher(), name="redis-publisher"),
            asyncio.create_task(self._leases(), name="redis-leases"),
        ]
        # Start with Redis if it is there (a short wait); otherwise serve locally and join
        # once it is reachable.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), 2.0)

    async def close(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            if self._owned and self.state == "connected":
                keys = [self.names.owner(k) for k in self._owned]
                await self._release(keys=keys, args=[self.node])
        for task in [*self._tasks, *self._served]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._served, return_exceptions=True)
        for fut in self._pending.values():
            if not fut.done():
                fut.cancel()
        with contextlib.suppress(RedisError, OSError):
            await self.redis.aclose()
        self.state = "closed"

    def health(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state,
            "node": self.node,
            "url": redacted(self.url),
            "owned": len(self._owned),
            "queued": len(self._queue),
            **self.counters,
        }

    # -- publishing --------------------------------------------------------------------
    def publish(self, channel: str, open_text: str, key: str | None) -> None:
        hub = self.hub
        assert hub is not None
        if key is not None and channel in self._owned_channels:
            self._local[channel][key] = open_text
        if self.state != "connected" or len(self._queue) >= self.settings.publish_queue:
            self._local_only(channel, open_text, key)
            return
        self._queue.append((channel, open_text, key))
        self._queued.set()

    def _local_only(self, channel: str, open_text: str, key: str | None) -> None:
        assert self.hub is not None
        self.counters["local_only"] += 1
        self._lost.add(channel)
        self.hub.deliver_local(channel, open_text, key)

    def forget(self, channel: str, key: str) -> None:
        local = self._local.get(channel)
        if local is not None:
            local.pop(key, None)
        if not any(key in v for v in self._local.values()):
            self._owned.discard(key)
            self._spawn(self._forget(channel, key))

    async def _forget(self, channel: str, key: str) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self.redis.hdel(self.names.latest(channel), key)
            await self._release(keys=[self.names.owner(key)], args=[self.node])

    async def _publisher(self) -> None:
        while True:
            await self._queued.wait()
            self._queued.clear()
            while self._queue:
                batch = [self._queue.popleft() for _ in range(min(BATCH, len(self._queue)))]
                await self._send(batch)

    async def _send(self, batch: list[tuple[str, str, str | None]]) -> None:
        names = self.names
        settings = self.settings
        hub = self.hub
        assert hub is not None
        ttl = int(settings.history_ttl * 1000)
        lease = int(settings.owner_lease * 1000)
        pipe = self.redis.pipeline(transaction=False)
        new_epoch = secrets.token_hex(4)
        sent = f"{time.time():.6f}"
        fresh = set()
        for channel, open_text, key in batch:
            owned = key is not None and channel in self._owned_channels
            restart = channel in self._lost and channel not in fresh
            if restart:
                fresh.add(channel)
            await self._publish(
                keys=[
                    names.meta(channel),
                    names.stream(channel),
                    names.latest(channel),
                    names.owner(key) if owned and key is not None else "",
                ],
                args=[
                    self.node,
                    key_json(key),
                    key or "",
                    open_text,
                    hub.history_size,
                    ttl,
                    "1" if restart else "0",
                    new_epoch,
                    "1" if hub.shared(channel).latest else "0",
                    "1" if owned else "0",
                    lease,
                    names.channel(channel),
                    sent,
                ],
                client=pipe,
            )
        start = time.perf_counter()
        try:
            results = await pipe.execute(raise_on_error=False)
            hub.metrics.broker_publish.observe(time.perf_counter() - start)
        except (RedisError, OSError) as exc:
            self._disconnected(exc)
            for channel, open_text, key in batch:
                self._local_only(channel, open_text, key)
            return
        self._lost -= fresh
        for (channel, open_text, key), result in zip(batch, results, strict=True):
            if isinstance(result, Exception):
                self.log.warning("publish failed", channel=channel, error=repr(result))
                self._local_only(channel, open_text, key)
            elif int(result[0]) == 0:
                self.counters["not_owner"] += 1  # another gateway owns this VM
                if key is not None:
                    self._owned.discard(key)
            else:
                self.counters["published"] += 1
                if key is not None and channel in self._owned_channels:
                    self._owned.add(key)

    # -- receiving ---------------------------------------------------------------------
    async def _reader(self) -> None:
        hub = self.hub
        assert hub is not None
        names = self.names
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                # every shared channel, also those created later
                await pubsub.psubscribe(names.channel("*"))
                await pubsub.subscribe(names.node(self.node))
                await self._catch_up()
                self._connected_now()
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message is None:
                        continue
                    await self._on_message(message["channel"], message["data"])
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                raise
            except (RedisError, OSError) as exc:
                self._disconnected(exc)
            with contextlib.suppress(Exception):
                await pubsub.aclose()
            await asyncio.sleep(self.settings.reconnect_interval)

    def _connected_now(self) -> None:
        if self.state != "connected":
            if self.state != "starting":
                self.counters["reconnects"] += 1
            self.log.info("redis connected", url=redacted(self.url), node=self.node)
        self.state = "connected"
        self._connected.set()

    def _disconnected(self, exc: BaseException) -> None:
        if self.state == "connected":
            self.log.warning("redis unreachable", error=f"{type(exc).__name__}: {exc}")
        self.state = "disconnected"
        self._connected.clear()
        # Frames waiting to be sent will not get there: deliver them here.
        while self._queue:
            self._local_only(*self._queue.popleft())
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(BackendUnavailable("redis unreachable"))

    async def _catch_up(self) -> None:
        """After (re)subscribing: load latest values and deliver what was published while
        this gateway was not listening (same epoch), in order."""
        hub = self.hub
        assert hub is not None
        for channel in hub.shared_channels():
            if channel.latest:
                values = await self.redis.hgetall(self.names.latest(channel.name))
                hub.load_latest(channel.name, values)
            meta = await self.redis.hgetall(self.names.meta(channel.name))
            if not meta:
                continue
            epoch, offset = meta["e"], int(meta["s"])
            if epoch == channel.epoch:
                if offset > channel.offset:
                    await self._refill(channel.name, channel.offset, channel.epoch)
            else:
                channel.sync(epoch, offset)

    async def _refill(self, name: str, after: int, epoch: str) -> None:
        held = await self.history(name, after)
        if held is None or held.epoch != epoch:
            return  # another epoch: the next frame shows it to clients
        assert self.hub is not None
        if held.first > after + 1:
            self.counters["gaps"] += 1
            self.log.warning("history trimmed; frames lost", channel=name, after=after)
        for entry in held.entries:
            self.counters["refilled"] += 1
            self.hub.deliver(name, entry.offset, held.epoch, entry.key, entry.text)

    async def _on_message(self, redis_channel: str, data: str) -> None:
        hub = self.hub
        assert hub is not None
        name = self.names.channel_of(redis_channel)
        if name is None:
            self._on_node_message(data)
            return
        msg = parse(data)
        channel = hub.shared(name)
        if msg.epoch == channel.epoch and msg.offset > channel.offset + 1 and channel.offset:
            # frames in between never reached this gateway: take them from the stream first
            await self._refill(name, channel.offset, channel.epoch)
        self.counters["received"] += 1
        hub.metrics.broker_lag.observe(max(0.0, time.time() - msg.sent))
        hub.deliver(name, msg.offset, msg.epoch, msg.key, msg.text)

    # -- history -----------------------------------------------------------------------
    async def history(self, channel: str, after: int) -> History | None:
        try:
            epoch, first, raw = await self._history(
                keys=[self.names.meta(channel), self.names.stream(channel)], args=[after]
            )
        except (RedisError, OSError):
            return None
        if not epoch:
            return None
        entries = []
        for entry_id, fields in raw:
            values = dict(zip(fields[::2], fields[1::2], strict=True))
            offset = int(entry_id.partition("-")[2])
            entries.append(Entry(offset, decode_key(values["k"]), values["t"]))
        return History(epoch, entries, int(first) or after + 1)

    # -- ownership ---------------------------------------------------------------------
    async def _leases(self) -> None:
        period = self.settings.owner_lease / 3
        lease = int(self.settings.owner_lease * 1000)
        while True:
            await asyncio.sleep(period)
            if self.state != "connected":
                continue
            keys = sorted({k for v in self._local.values() for k in v})
            if not keys:
                continue
            try:
                results = await self._claim(
                    keys=[self.names.owner(k) for k in keys], args=[self.node, lease]
                )
            except (RedisError, OSError) as exc:
                self.log.debug("lease renewal failed", error=repr(exc))
                continue
            for key, result in zip(keys, results, strict=True):
                if result == 0:
                    self._owned.discard(key)
                    continue
                self._owned.add(key)
                if result == 2:  # taken over: publish what this gateway knows now
                    self.log.info("took over", key=key)
                    for channel, local in self._local.items():
                        text = local.get(key)
                        if text is not None and channel != "system-event":
                            self.publish(channel, text, key)

    # -- requests ----------------------------------------------------------------------
    async def request(self, kind: str, key: str, data: dict[str, Any]) -> dict[str, Any] | None:
        if self.state != "connected":
            return None  # no way to know the owner: try here
        try:
            owner = await self.redis.get(self.names.owner(key))
        except (RedisError, OSError):
            return None
        if owner is None or owner == self.node:
            return None
        rid = secrets.token_hex(8)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        payload = _json(
            {"op": "req", "id": rid, "from": self.node, "kind": kind, "key": key, "data": data}
        ).decode()
        try:
            receivers = await self.redis.publish(self.names.node(owner), payload)
            if receivers == 0:
                # the owner is gone: drop its lease so that another gateway takes over now
                await self._release(keys=[self.names.owner(key)], args=[owner])
                raise BackendUnavailable(
                    f"the gateway that owns {key} is gone; another takes over within "
                    f"{self.settings.owner_lease:g} s",
                    vm_id=key,
                )
            self.counters["forwarded"] += 1
            reply = await asyncio.wait_for(fut, self.settings.request_timeout)
        except TimeoutError:
            raise BackendUnavailable(
                f"the gateway that owns {key} did not answer in "
                f"{self.settings.request_timeout:g} s",
                vm_id=key,
            ) from None
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"redis unreachable: {exc}", vm_id=key) from None
        finally:
            self._pending.pop(rid, None)
        if reply.get("ok"):
            result: dict[str, Any] = reply.get("data") or {}
            return result
        error = reply.get("error") or {}
        raise VirtwireError(
            error.get("code", ErrorCode.INTERNAL_ERROR),
            error.get("message", ""),
            vm_id=error.get("vmId"),
            details=error.get("details"),
        )

    def _on_node_message(self, data: str) -> None:
        try:
            msg = _unjson(data)
        except msgspec.DecodeError:
            self.log.warning("bad message on node channel")
            return
        if msg.get("op") == "rep":
            fut = self._pending.get(msg.get("id"))
            if fut is not None and not fut.done():
                fut.set_result(msg)
        elif msg.get("op") == "req":
            if len(self._served) >= self.settings.max_served_requests:
                error = VirtwireError(ErrorCode.RATE_LIMITED, "owner gateway busy")
                self._spawn(self._reply(msg, None, error))
                return
            self._spawn(self._serve(msg))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._served.add(task)
        task.add_done_callback(self._served.discard)

    async def _serve(self, msg: dict[str, Any]) -> None:
        assert self.hub is not None
        self.counters["served"] += 1
        try:
            result = await self.hub.handle(msg["kind"], msg["key"], msg["data"])
        except VirtwireError as exc:
            await self._reply(msg, None, exc)
        except Exception as exc:
            self.log.exception("routed request failed", kind=msg.get("kind"))
            await self._reply(
                msg, None, VirtwireError(ErrorCode.INTERNAL_ERROR, f"{type(exc).__name__}")
            )
        else:
            await self._reply(msg, result, None)

    async def _reply(
        self, msg: dict[str, Any], result: dict[str, Any] | None, error: VirtwireError | None
    ) -> None:
        reply: dict[str, Any] = {"op": "rep", "id": msg.get("id"), "ok": error is None}
        if error is None:
            reply["data"] = result
        else:
            reply["error"] = error.to_data()
        with contextlib.suppress(RedisError, OSError):
            await self.redis.publish(self.names.node(str(msg.get("from"))), _json(reply).decode())
