"""Several virtwire gateways sharing state through Redis.

Registers a :class:`virtwire.broker.Broker` (``register_broker``) that carries the shared
channels (``vm-status``, ``system-event``) between gateways, keeps their history and latest
values in Redis, and forwards ``vm-control`` to the gateway that owns the VM. docs/redis.md
documents every option.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from virtwire import hookimpl
from virtwire.config import resolve_secret

from .broker import RedisBroker
from .settings import RedisSettings

if TYPE_CHECKING:
    from virtwire.gateway import Gateway

PLUGIN = "redis"

__all__ = ["RedisBroker", "RedisSettings"]


@hookimpl
def register_settings(register: Any) -> None:
    register(PLUGIN, RedisSettings)


@hookimpl
def register_broker(register: Any, gateway: Gateway) -> None:
    settings: RedisSettings = gateway.plugin_config(PLUGIN)
    if not settings.url:
        gateway.log.info("redis plugin: no [plugins.redis] url; this gateway runs alone")
        return
    url = resolve_secret(settings.url, "[plugins.redis] url")
    register(RedisBroker(settings, url, gateway.log))
