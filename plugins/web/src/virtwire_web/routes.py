"""The page's routes: ``index.html`` at the mount path, its static files, and the vendored npm
packages, every response with a Content-Security-Policy that allows only the page's origin."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from .assets import PACKAGES, STATIC, versions

#: Only the page's own origin: scripts, styles, images, fonts, and WebSockets to the same
#: host (CSP Level 3 ``'self'`` covers ``ws:``/``wss:`` of the page's host). No inline
#: script, no eval, no framing, no plugins.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'{nonce}; "
    "img-src 'self' data: blob:; font-src 'self'; connect-src 'self'; "
    "worker-src 'self' blob:; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP.format(nonce=""),
    # The page is first loaded with ?token=...: never send that URL on as a Referer.
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}


class Secured:
    """ASGI wrapper adding :data:`HEADERS` (and a cache policy) to every HTTP response."""

    def __init__(self, app: Any, cache: str) -> None:
        self.app = app
        self.extra = [(k.lower().encode(), v.encode()) for k, v in HEADERS.items()]
        self.extra.append((b"cache-control", cache.encode()))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def wrapped(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.extra]
            await send(message)

        await self.app(scope, receive, wrapped)


def build_routes(path: str, assets: Path, log_files: list[str]) -> list[BaseRoute]:
    """Routes under ``path`` (``/`` or ``/something/``)."""
    base = path.rstrip("/")
    page_config = {"logFiles": log_files, "versions": versions(assets)}

    async def config(request: Request) -> Response:
        return JSONResponse(page_config, headers={**HEADERS, "Cache-Control": "no-cache"})

    page = (STATIC / "index.html").read_text(encoding="utf-8")

    async def index(request: Request) -> Response:
        # xterm.js sizes and colours its rows with <style> elements it creates; they carry
        # this response's nonce (set by the page's own script), nothing else inline is allowed
        nonce = secrets.token_urlsafe(18)
        headers = {
            **HEADERS,
            "Content-Security-Policy": CSP.format(nonce=f" 'nonce-{nonce}'"),
            # the URL may carry the token on first load: nothing may keep a copy
            "Cache-Control": "no-store",
        }
        body = page.replace("{{nonce}}", nonce)
        return HTMLResponse(body, headers=headers)

    routes: list[BaseRoute] = [
        Route(f"{base}/", index, methods=["GET", "HEAD"]),
        Route(f"{base}/config.json", config, methods=["GET", "HEAD"]),
    ]
    if base:

        async def slash(request: Request) -> Response:
            return RedirectResponse(f"{base}/", status_code=308)

        routes.append(Route(base, slash, methods=["GET", "HEAD"]))
    routes.append(Mount(f"{base}/static", app=Secured(StaticFiles(directory=STATIC), "no-cache")))
    for name in PACKAGES:
        routes.append(
            Mount(
                f"{base}/vendor/{name}",
                app=Secured(StaticFiles(directory=assets / name), "public, max-age=3600"),
            )
        )
    return routes
