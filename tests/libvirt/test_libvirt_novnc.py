"""Unmodified noVNC 1.7 (the npm package) in headless Chromium against the gateway's
``/ws/vnc/{ticket}`` endpoint: the page loads noVNC from a static server of its own (another
origin, allowed by ``server.allowed_origins``), connects with the ticket URL, shows the test
guest's screen and types into it."""

from __future__ import annotations

import contextlib
import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from lv_helpers import PLUGIN
from lv_vnc import Guest, qemu_guest
from playwright.async_api import async_playwright
from virtwire.testing import free_port, run_server

HERE = Path(__file__).parent
NOVNC = HERE.parent / "js" / "node_modules" / "@novnc" / "novnc"
CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PAGE = """<!doctype html>
<meta charset="utf-8">
<title>noVNC</title>
<div id="screen" style="width: 720px; height: 400px"></div>
<script type="module">
import RFB from "/novnc/core/rfb.js";
const url = new URLSearchParams(location.search).get("url");
window.events = [];
const rfb = new RFB(document.getElementById("screen"), url);
for (const name of ["connect", "disconnect", "securityfailure", "credentialsrequired"]) {
  rfb.addEventListener(name, () => window.events.push(name));
}
window.rfb = rfb;
</script>
"""
#: True once the canvas shows the guest's banner: its top row is blue (0, 0, 168).
BANNER_SHOWN = """() => {
  const canvas = document.querySelector("#screen canvas");
  if (!canvas || canvas.width < 720) return false;
  const px = canvas.getContext("2d").getImageData(700, 8, 1, 1).data;
  return px[0] === 0 && px[1] === 0 && px[2] === 168;
}"""

#: True once the guest's echo of the typed text shows on row 2 of the text screen.
ECHO_SHOWN = """() => {
  const data = document.querySelector("#screen canvas").getContext("2d")
    .getImageData(0, 32, 100, 16).data;
  return data.some((v, i) => i % 4 !== 3 && v !== 0);
}"""


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def static_site(root: Path) -> Iterator[str]:
    """The page and the noVNC package on http://127.0.0.1:PORT (stopped at the end)."""
    (root / "index.html").write_text(PAGE)
    (root / "novnc").symlink_to(NOVNC)
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


@pytest.fixture
def guest(guest_images: dict[str, Path], tmp_path: Path) -> Iterator[Guest]:
    with qemu_guest(guest_images["idle"], tmp_path, password="novnc-pw") as g:
        yield g


async def test_novnc_connects_shows_the_screen_and_types(guest: Guest, tmp_path: Path) -> None:
    assert NOVNC.joinpath("core", "rfb.js").exists(), "make install installs tests/js packages"
    await guest.wait_serial("virtwire test guest")
    site_root = tmp_path / "site"
    site_root.mkdir()
    with static_site(site_root) as site:
        config = {
            "server": {"locale": "en", "allowed_origins": [site]},
            "plugins": {"libvirt": {"uri": guest.uri}},
        }
        async with (
            run_server(plugins=[PLUGIN], config=config) as server,
            server.client() as client,
            async_playwright() as p,
        ):
            reply = await client.request("vnc-connect", {"vmId": "vnc-vm"})
            ws_url = server.ws_url(reply["data"]["url"])
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            try:
                page = await browser.new_page(viewport={"width": 760, "height": 440})
                await page.goto(f"{site}/index.html?url={ws_url}")
                await page.wait_for_function("window.events.includes('connect')", timeout=20000)
                await page.wait_for_function(BANNER_SHOWN, timeout=20000)
                await page.click("#screen canvas")
                # noVNC sends QEMU's extended key events (scancodes): Shift is a key too
                await page.keyboard.type("novnc here ")
                await page.keyboard.down("Shift")
                await page.keyboard.press("KeyA")
                await page.keyboard.up("Shift")
                await page.keyboard.press("Enter")
                await guest.wait_serial("novnc here A\r")
                await page.wait_for_function(ECHO_SHOWN, timeout=20000)  # the guest's echo
                await page.screenshot(path=str(tmp_path / "novnc.png"))
                assert await page.evaluate("window.events") == ["connect"]
                await client.request("vnc-disconnect", {"vmId": "vnc-vm"})
                await page.wait_for_function("window.events.includes('disconnect')")
            finally:
                await browser.close()
    assert (tmp_path / "novnc.png").stat().st_size > 1000
