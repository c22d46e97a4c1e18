"""Unmodified noVNC 1.7 (the npm package) in headless Chromium against the gateway's
``/ws/vnc/{ticket}`` endpoint: the page loads noVNC from a static server of its own (another
origin, allowed by ``server.allowed_origins``), connects with the ticket URL, shows the test
guest's screen and types into it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from browserkit import chromium, novnc_site, open_novnc
from lv_helpers import PLUGIN
from lv_vnc import Guest, qemu_guest
from virtwire.testing import run_server

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


@pytest.fixture
def guest(guest_images: dict[str, Path], tmp_path: Path) -> Iterator[Guest]:
    with qemu_guest(guest_images["idle"], tmp_path, password="novnc-pw") as g:
        yield g


async def test_novnc_connects_shows_the_screen_and_types(guest: Guest, tmp_path: Path) -> None:
    await guest.wait_serial("virtwire test guest")
    with novnc_site(tmp_path / "site") as site:
        config = {
            "server": {"locale": "en", "allowed_origins": [site]},
            "plugins": {"libvirt": {"uri": guest.uri}},
        }
        async with (
            run_server(plugins=[PLUGIN], config=config) as server,
            server.client() as client,
            chromium() as browser,
        ):
            reply = await client.request("vnc-connect", {"vmId": "vnc-vm"})
            page = await open_novnc(browser, site, server.ws_url(reply["data"]["url"]))
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
            await page.wait_for_function("(window.events || []).includes('disconnect')")
    assert (tmp_path / "novnc.png").stat().st_size > 1000
