"""``[plugins.redis]``: where Redis is and how the gateways share through it."""

from __future__ import annotations

import msgspec


class RedisSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: ``redis://[user:password@]host:port/db`` (or ``rediss://``, ``unix://``); a password is
    #: better given by reference: ``"env:REDIS_URL"`` or ``"file:/run/secrets/redis-url"``.
    #: Empty (the default): no broker, the gateway runs alone.
    url: str = ""
    #: Prefix of every Redis key and channel, so several fleets can share one Redis.
    prefix: str = "virtwire"
    #: Seconds a channel's history and position live in Redis after its last frame.
    history_ttl: float = 86400.0
    #: Seconds an ownership lease lasts; owners renew every third of it. A dead gateway's
    #: VMs are taken over at most this long after it died.
    owner_lease: float = 6.0
    #: Seconds a forwarded ``vm-control`` waits for the owner's answer.
    request_timeout: float = 10.0
    #: Frames waiting to be published; beyond it a frame is delivered locally only and the
    #: channel starts a new epoch (the gap is reported).
    publish_queue: int = 10000
    #: Requests from other gateways served at the same time; more are refused (RATE_LIMITED).
    max_served_requests: int = 256
    #: Shared channels whose keys (vmIds) have one owning gateway at a time: only the owner's
    #: frames for a key are published (several gateways may run the same backend).
    owned_channels: list[str] = msgspec.field(default_factory=lambda: ["vm-status", "system-event"])
    #: Seconds between reconnect attempts while Redis is unreachable.
    reconnect_interval: float = 0.5
