"""Debian's Chromium driven by Playwright, and pages served to it from a static site of their
own (another origin than the gateway's): what the browser tests of several test directories
share (the web console's, noVNC's and xterm.js's)."""

from __future__ import annotations

import contextlib
import functools
import http.server
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from playwright.async_api import Browser, Page, async_playwright
from virtwire.testing import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
NODE_MODULES = Path(__file__).resolve().parents[1] / "js" / "node_modules"
NOVNC = NODE_MODULES / "@novnc" / "novnc"

#: Unmodified noVNC on the ticket URL given as ``?url=``; its events land in ``window.events``.
NOVNC_PAGE = """<!doctype html>
<meta charset="utf-8">
<title>noVNC</title>
<div id="screen" style="width: 720px; height: 400px"></div>
<script>window.events = [];</script>
<script type="module">
import RFB from "/novnc/core/rfb.js";
const url = new URLSearchParams(location.search).get("url");
const rfb = new RFB(document.getElementById("screen"), url);
for (const name of ["connect", "disconnect", "securityfailure", "credentialsrequired"]) {
  rfb.addEventListener(name, () => window.events.push(name));
}
window.rfb = rfb;
</script>
"""


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless, closed at the end."""
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def static_site(root: Path, index: str, links: dict[str, Path]) -> Iterator[str]:
    """``root`` on http://127.0.0.1:PORT (stopped at the end), with ``index`` as index.html
    and a symbolic link per entry of ``links`` (name -> target)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "index.html").write_text(index)
    for name, target in links.items():
        (root / name).symlink_to(target)
    handler = functools.partial(_Quiet, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@contextlib.contextmanager
def novnc_site(root: Path) -> Iterator[str]:
    """``NOVNC_PAGE`` and the noVNC package (tests/js) served from ``root``."""
    assert NOVNC.joinpath("core", "rfb.js").exists(), "make install installs tests/js packages"
    with static_site(root, NOVNC_PAGE, {"novnc": NOVNC}) as site:
        yield site


async def open_novnc(browser: Browser, site: str, ws_url: str) -> Page:
    """A page of ``novnc_site`` on ``ws_url``, once noVNC says it is connected."""
    page = await browser.new_page(viewport={"width": 760, "height": 440})
    await page.goto(f"{site}/index.html?url={ws_url}")
    # polls until true: an exception (the page not ready) would end the wait at once
    await page.wait_for_function("(window.events || []).includes('connect')", timeout=20000)
    return page
