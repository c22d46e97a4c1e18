"""The console pane's screen: noVNC (the npm package, served by the page) on the gateway's
``/ws/vnc/{ticket}``, showing a real QEMU guest (the test guest of tests/libvirt, described to
libvirt's test driver with its VNC port) and typing into it."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import expect
from virtwire.testing import make_settings, run_server
from webkit import PLUGINS, Site, gateway_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "libvirt"))
from lv_daemon import build_guest
from lv_vnc import Guest, qemu_guest

#: The guest paints its banner row blue (0, 0, 168) at the top of its text screen: the canvas
#: shows it, whatever the scaling.
BANNER_SHOWN = """() => {
  const canvas = document.querySelector("#console-body .screen canvas");
  if (!canvas || canvas.width < 700) return false;
  const px = canvas.getContext("2d").getImageData(700, 8, 1, 1).data;
  return px[0] === 0 && px[1] === 0 && px[2] === 168;
}"""


@pytest.fixture(scope="module")
def guest_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_guest(tmp_path_factory.mktemp("guest"), busy=False)


@pytest.fixture
def guest(guest_image: Path, tmp_path: Path) -> Iterator[Guest]:
    with qemu_guest(guest_image, tmp_path, password="web-pw") as running:
        yield running


@pytest_asyncio.fixture(loop_scope="session")
async def vnc_site(tmp_path: Path, guest: Guest) -> AsyncIterator[Site]:
    config = gateway_config(tmp_path)
    config["plugins"]["libvirt"]["uri"] = guest.uri
    async with run_server(make_settings(config), plugins=list(PLUGINS)) as server:
        shots = tmp_path / "shots"
        shots.mkdir()
        yield Site(server, tmp_path / "logs" / "app.log", shots)


async def test_screen_shows_the_guest_and_takes_keys(
    vnc_site: Site, guest: Guest, new_page: Any
) -> None:
    await guest.wait_serial("virtwire test guest")
    page, problems = await new_page()
    await page.goto(vnc_site.page_url(vnc_site.server.token("dev")))
    await page.get_by_role("button", name="Console of vnc-vm", exact=True).click()
    screen = page.locator("#console-body .screen")
    await expect(screen).to_have_attribute("data-state", "open", timeout=20_000)
    await page.wait_for_function(BANNER_SHOWN, timeout=20_000)
    await vnc_site.shot(page, "screen")
    # keys typed on the canvas reach the guest (it echoes them to its serial port)
    await screen.locator("canvas").click()
    await page.keyboard.type("web here")
    await page.keyboard.press("Enter")
    await guest.wait_serial("web here\r")
    # the toolbar: Ctrl-Alt-Del, scaling, full screen
    await page.get_by_role("button", name="Ctrl-Alt-Del", exact=True).click()
    scale = page.get_by_role("button", name="Scale to fit", exact=True)
    await expect(scale).to_have_attribute("aria-pressed", "true")
    await scale.click()
    await expect(scale).to_have_attribute("aria-pressed", "false")
    await page.get_by_role("button", name="Full screen", exact=True).click()
    await page.wait_for_function("document.fullscreenElement?.classList.contains('screen')")
    await page.evaluate("document.exitFullscreen()")
    await page.wait_for_function("document.fullscreenElement === null")
    # Close ends the console (vnc-disconnect): noVNC's connection closes
    await page.get_by_role("button", name="Close", exact=True).click()
    await expect(page.locator("#console-title")).to_have_text("Console")
    assert problems == []


async def test_a_vm_without_graphics_says_so(vnc_site: Site, new_page: Any) -> None:
    page, _ = await new_page()
    await page.goto(vnc_site.page_url(vnc_site.server.token("dev")))
    await page.get_by_role("button", name="Console of novnc-vm", exact=True).click()
    message = page.locator('#console-body .console-message[data-kind="none"]')
    await expect(message).to_contain_text("No console for novnc-vm")
    await expect(message).to_contain_text("CONSOLE_UNAVAILABLE")
