"""VNC consoles of Proxmox VMs through the gateway's VNC machinery, end to end: ``vnc-connect``,
``vnc-input``, ``vnc-screenshot`` and unmodified noVNC in Chromium on ``/ws/vnc/{ticket}``,
over the stand-in's vncproxy/vncwebsocket onto a real QEMU VNC server (VNC authentication
with the password vncproxy generated, answered by the gateway)."""

from __future__ import annotations

import base64
from pathlib import Path

from browserkit import chromium, novnc_site, open_novnc
from pve_helpers import PLUGIN, settings_for
from pve_standin import Cluster, Display, StandIn
from virtwire.testing import run_server

#: True once the canvas shows the VM's screen (SeaBIOS's text: some pixel is not black).
SCREEN_SHOWN = """() => {
  const canvas = document.querySelector("#screen canvas");
  if (!canvas || canvas.width < 720) return false;
  const data = canvas.getContext("2d").getImageData(0, 0, 720, 64).data;
  return data.some((v, i) => i % 4 !== 3 && v !== 0);
}"""


async def test_vnc_connect_input_screenshot_and_novnc(
    standin: StandIn, cluster: Cluster, qemu_display: Display, tmp_path: Path
) -> None:
    cluster.vms[100].display = qemu_display
    with novnc_site(tmp_path / "site") as site:
        config = {
            "server": {"locale": "en", "allowed_origins": [site]},
            "plugins": {"proxmox": settings_for(standin)},
        }
        async with (
            run_server(plugins=[PLUGIN], config=config) as server,
            server.client() as client,
            chromium() as browser,
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
            page = await open_novnc(browser, site, server.ws_url(data["url"]))
            await page.wait_for_function(SCREEN_SHOWN, timeout=20000)
            assert await page.evaluate("window.events") == ["connect"]
            await client.request("vnc-disconnect", {"vmId": "pve:100"})
            await page.wait_for_function("(window.events || []).includes('disconnect')")
