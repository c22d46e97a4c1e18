"""Host metrics for virtwire: the ``system-monitor`` topic and its collectors.

``subscribe {topic: "system-monitor", interval}`` (scope ``monitor:read``) pushes frames::

    {"cpu": {"usage": %, "cores": [%...]}, "memory": {"total": B, "used": B, "usage": %},
     "disk": {"read": B/s, "write": B/s}, "network": {"rx": B/s, "tx": B/s}, ...}

The fields come from metric collectors registered through ``register_collectors`` (this
plugin registers ``psutil``, ``loadavg`` and ``filesystems``; other plugins add their own).
docs/monitor.md documents every option and field.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from virtwire import hookimpl

from .counters import PsutilCollector
from .extras import FilesystemsCollector, LoadAvgCollector
from .sampling import SamplingLoop
from .settings import MonitorSettings
from .topic import MonitorTopic

if TYPE_CHECKING:
    from virtwire.gateway import Gateway

PLUGIN = "monitor"

__all__ = [
    "FilesystemsCollector",
    "LoadAvgCollector",
    "MonitorSettings",
    "MonitorTopic",
    "PsutilCollector",
    "SamplingLoop",
]

TEXTS = {
    "zh-CN": {
        "monitor.invalid_interval": "无效的 data.interval：应为毫秒数",
        "monitor.too_many_intervals": "监控采样间隔过多（上限 {limit}）",
        "monitor.too_many_user_intervals": (
            "您订阅的监控采样间隔过多（上限 {limit}），已订阅：{yours}"
        ),
    },
    "en": {
        "monitor.invalid_interval": "invalid data.interval: expected a number of milliseconds",
        "monitor.too_many_intervals": "too many distinct monitor intervals in use (limit {limit})",
        "monitor.too_many_user_intervals": (
            "you subscribe to too many distinct monitor intervals (limit {limit}); yours: {yours}"
        ),
    },
}


def _settings(gateway: Gateway) -> MonitorSettings:
    settings: MonitorSettings = gateway.plugin_config(PLUGIN)
    return settings


@hookimpl
def register_settings(register: Any) -> None:
    register(PLUGIN, MonitorSettings)


@hookimpl
def register_collectors(register: Any, gateway: Gateway) -> None:
    settings = _settings(gateway)
    register(PsutilCollector(settings.disks, settings.nics, settings.exclude_nics))
    register(LoadAvgCollector())
    if settings.filesystems:
        register(FilesystemsCollector(settings.filesystems))


@hookimpl
def register_topics(register: Any, gateway: Gateway) -> None:
    for locale, texts in TEXTS.items():
        gateway.catalogue.add(locale, texts)
    topic = MonitorTopic(gateway, _settings(gateway))
    register(topic)


@hookimpl
def startup(gateway: Gateway) -> None:
    settings = _settings(gateway)
    if settings.collectors is not None:
        known = {getattr(c, "name", None) for c in gateway.collectors}
        unknown = sorted(set(settings.collectors) - known)
        if unknown:
            gateway.log.warning(
                "[plugins.monitor] collectors names no registered collector",
                unknown=unknown,
                registered=sorted(str(n) for n in known),
            )


@hookimpl
async def shutdown(gateway: Gateway) -> None:
    topic = gateway.topics.get(MonitorTopic.name)
    if isinstance(topic, MonitorTopic):
        await topic.close()
