"""virtwire-logs: allow-listed log files streamed over WebSocket.

- ``/api/v1/ws/logs?file=NAME``: the log streaming API (last lines, then one text message
  per new line; truncation, rotation and deletion handled; ``ping`` → ``pong``).
- ``subscribe {"topic": "logs", "file": NAME, "lines": N}`` on ``/ws``: the same streams as
  ``log-lines`` / ``log-event`` frames.
- The file source on the ``register_log_sources`` hook; other plugins add sources there.

Configuration: ``[plugins.logs]`` (docs/logs.md).
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from virtwire import hookimpl

from .plugin import NAME, LogsPlugin
from .settings import LogsSettings

if TYPE_CHECKING:
    from virtwire.gateway import Gateway

_plugins: weakref.WeakKeyDictionary[Any, LogsPlugin] = weakref.WeakKeyDictionary()


def plugin_for(gateway: Gateway) -> LogsPlugin:
    """This plugin's state in ``gateway`` (created on first use)."""
    plugin = _plugins.get(gateway)
    if plugin is None:
        plugin = _plugins[gateway] = LogsPlugin(gateway)
    return plugin


@hookimpl
def register_settings(register: Any) -> None:
    register(NAME, LogsSettings)


@hookimpl
def register_log_sources(register: Any, gateway: Gateway) -> None:
    register(plugin_for(gateway).file_source)


@hookimpl
def register_routes(register: Any, gateway: Gateway) -> None:
    from starlette.routing import WebSocketRoute

    from .endpoint import PATH

    register(WebSocketRoute(PATH, plugin_for(gateway).endpoint))


@hookimpl
def register_topics(register: Any, gateway: Gateway) -> None:
    register(plugin_for(gateway).topic)


@hookimpl
def startup(gateway: Gateway) -> None:
    plugin_for(gateway).start()


@hookimpl
async def shutdown(gateway: Gateway) -> None:
    plugin = _plugins.pop(gateway, None)
    if plugin is not None:
        await plugin.close()


__all__ = ["LogsPlugin", "LogsSettings", "plugin_for"]
