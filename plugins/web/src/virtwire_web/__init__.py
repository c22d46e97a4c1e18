"""virtwire-web: the web console, a page served by the gateway on its own port.

The page (``index.html``, CSS and ES modules, no build step) speaks only the public protocol:
``/ws`` for VMs, host metrics, events and consoles, ``/api/v1/ws/logs`` for logs. The
front-end libraries (noVNC, xterm.js, uPlot) are npm packages pinned by
``plugins/web/package-lock.json``, served from ``node_modules`` in a checkout or from the copy
inside the wheel. Configuration: ``[plugins.web]`` (docs/web.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from virtwire import hookimpl

from .settings import WebSettings

if TYPE_CHECKING:
    from virtwire.gateway import Gateway

NAME = "web"


@hookimpl
def register_settings(register: Any) -> None:
    register(NAME, WebSettings)


@hookimpl
def register_routes(register: Any, gateway: Gateway) -> None:
    from .assets import find_assets
    from .routes import build_routes

    settings: WebSettings = gateway.plugin_config(NAME)
    for route in build_routes(settings.path, find_assets(settings.assets_dir), settings.log_files):
        register(route)
    gateway.pages.append(("web console", settings.path))


__all__ = ["WebSettings"]
