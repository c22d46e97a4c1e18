"""The console pane's terminal: xterm.js on the gateway's ticket URL, to a real OpenSSH sshd
(the ssh plugin, with VM ``test`` of libvirt's test driver mapped to it)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio
import virtwire_ssh
from playwright.async_api import Page, expect
from virtwire.testing import make_settings, run_server
from webkit import PLUGINS, Site, gateway_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ssh"))
from sshkit import Sshd, sshd_fixture  # noqa: F401 (the sshd fixture)


@pytest_asyncio.fixture(loop_scope="session")
async def ssh_site(tmp_path: Path, sshd: Sshd) -> AsyncIterator[Site]:
    config = gateway_config(tmp_path)
    config["plugins"]["ssh"] = {
        "hosts": {"test": sshd.address},
        "known_hosts": str(tmp_path / "known_hosts"),
    }
    plugins = [*PLUGINS, ("ssh", virtwire_ssh)]
    async with run_server(make_settings(config), plugins=plugins) as server:
        shots = tmp_path / "shots"
        shots.mkdir()
        yield Site(server, tmp_path / "logs" / "app.log", shots)


async def screen_text(page: Page) -> str:
    return await page.locator("#console-body .xterm-rows").inner_text()


async def test_ssh_terminal_runs_echo_and_follows_the_pane_size(
    ssh_site: Site, sshd: Sshd, new_page: Any
) -> None:
    page, problems = await new_page()
    await page.goto(ssh_site.page_url(ssh_site.server.token("dev")))
    await page.get_by_role("button", name="Console of test", exact=True).click()
    # the test driver has no serial console: said so, and SSH is offered
    await expect(page.locator('.console-message[data-kind="none"]')).to_contain_text(
        "no serial console"
    )
    await page.get_by_role("button", name="SSH terminal…", exact=True).click()
    form = page.locator(".ssh-form")
    await form.locator('input[name="username"]').fill(sshd.user)
    await form.locator('textarea[name="privateKey"]').fill(sshd.client_key)
    await form.get_by_role("button", name="Connect", exact=True).click()
    box = page.locator('.terminal-box[data-type="ssh"]')
    await expect(box).to_have_attribute("data-state", "open")
    # keystrokes go through xterm.js's attach addon to the shell, output comes back
    await page.keyboard.type("echo web-$((6*7))\n")
    await expect(page.locator("#console-body .xterm-rows")).to_contain_text("web-42")
    await ssh_site.shot(page, "terminal")
    # the terminal fits the pane; a resize of the window reaches the shell (terminal-resize)
    rows_before = await page.locator("#console-body .xterm-rows > div").count()
    await page.set_viewport_size({"width": 1280, "height": 800})
    await page.evaluate("document.querySelector('.terminal-box').style.height = '30rem'")
    await expect(page.locator("#console-body .xterm-rows > div")).not_to_have_count(rows_before)
    rows = await page.locator("#console-body .xterm-rows > div").count()
    await page.locator("#console-body .xterm").click()
    await page.keyboard.type("stty size\n")
    await expect(page.locator("#console-body .xterm-rows")).to_contain_text(f"{rows} ")
    assert f"\n{rows} " in "\n" + (await screen_text(page)).replace("\xa0", " ")
    # a reload detaches the terminal; opening the console again reattaches to the same
    # shell, its scrollback first
    await page.reload()
    await page.get_by_role("button", name="Console of test", exact=True).click()
    await expect(page.locator('.terminal-box[data-type="ssh"]')).to_have_attribute(
        "data-state", "open"
    )
    await expect(page.locator("#console-body .xterm-rows")).to_contain_text("web-42")
    await page.locator("#console-body .xterm").click()
    await page.keyboard.type("echo again-$((2*3))\n")
    await expect(page.locator("#console-body .xterm-rows")).to_contain_text("again-6")
    # Close ends the terminal on the gateway (terminal-disconnect): nothing to reattach
    await page.get_by_role("button", name="Close", exact=True).click()
    await expect(page.locator("#console-title")).to_have_text("Console")
    saved = await page.evaluate("sessionStorage.getItem('virtwire.terminals')")
    assert saved == "{}"
    assert problems == []
