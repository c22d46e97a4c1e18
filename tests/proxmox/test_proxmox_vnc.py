"""VNC consoles of Proxmox VMs through the gateway's VNC machinery, end to end: ``vnc-connect``,
``vnc-input``, ``vnc-screenshot`` and unmodified noVNC in Chromium on ``/ws/vnc/{ticket}``,
over the stand-in's vncproxy/vncwebsocket onto a real QEMU VNC server (VNC authentication
with the password vncproxy generated, answered by the gateway)."""

from __future__ import annotations

import base64
import contextlib
import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

from playwright.async_api import async_playwright
from pve_helpers import PLUGIN, settings_for
from pve_standin import Cluster, Display, StandIn
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
<div id="screen" style="width: 720px; height: 400px"></div>
<script type="module">
import RFB from "/novnc/core/rfb.js";
const url = new URLSearchParams(location.search).get("url");
window.events = [];
const rfb = new RFB(document.getElementById("screen"), url);
for (const name of ["connect", "disconnect", "securityfailure", "credentialsrequired"]) {
  rfb.addEventListener(name, () => window.events.push(name));
}
</script>
"""
#: True once the canvas shows the VM's screen (SeaBIOS's text: some pixel is not black).
SCREEN_SHOWN = """() => {
  const canvas = document.querySelector("#screen canvas");
  if (!canvas || canvas.width < 720) return false;
  const data = canvas.getContext("2d").getImageData(0, 0, 720, 64).data;
  return data.some((v, i) => i % 4 !== 3 && v !== 0);
}"""


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def static_site(root: Path) -> Iterator[str]:
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


async def test_vnc_connect_input_screenshot_and_novnc(
    standin: StandIn, cluster: Cluster, qemu_display: Display, tmp_path: Path
) -> None:
    assert NOVNC.joinpath("core", "rfb.js").exists(), "make install installs tests/js packages"
    cluster.vms[100].display = qemu_display
    site_root = tmp_path / "site"
    site_root.mkdir()
    with static_site(site_root) as site:
        config = {
            "server": {"locale": "en", "allowed_origins": [site]},
            "plugins": {"proxmox": settings_for(standin)},
        }
        async with (
            run_server(plugins=[PLUGIN], config=config) as server,
            server.client() as client,
            async_playwright() as p,
        ):
            reply = await client.request("vnc-connect", {"vmId": "pve:100"})
            assert reply["type"] == "vnc-connect-response", reply
            data = reply["data"]
            assert (data["width"], data["height"], data["name"]) == (720, 400, "QEMU")
            with cluster.lock:
                secrets = list(cluster.issued)
            assert not [s for s in secrets if s in str(reply)]  # no password, no ticket
            typed = await client.request(
                "vnc-input", {"vmId": "pve:100", "inputType": "text", "text": "ok\n"}
            )
            assert typed["data"]["events"] == 6
            shot = await client.request("vnc-screenshot", {"vmId": "pve:100"})
            assert shot["data"]["format"] == "png"
            assert base64.b64decode(shot["data"]["image"]).startswith(b"\x89PNG")
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            try:
                page = await browser.new_page(viewport={"width": 760, "height": 440})
                ws_url = server.ws_url(data["url"])
                await page.goto(f"{site}/index.html?url={ws_url}")
                await page.wait_for_function("window.events.includes('connect')", timeout=20000)
                await page.wait_for_function(SCREEN_SHOWN, timeout=20000)
                assert await page.evaluate("window.events") == ["connect"]
                await client.request("vnc-disconnect", {"vmId": "pve:100"})
                await page.wait_for_function("window.events.includes('disconnect')")
            finally:
                await browser.close()
