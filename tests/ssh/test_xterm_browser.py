"""xterm.js in headless Chromium (Debian's, driven by Playwright) on the ticket URL, with the
page documented in docs/protocol.md, copied as it is: it attaches, types ``echo hi`` + Enter
and reads ``hi`` back from ``term.buffer``; a reload reattaches with the scrollback."""

from __future__ import annotations

import re
from pathlib import Path

import virtwire_ssh
from browserkit import NODE_MODULES, chromium, static_site
from sshkit import Sshd
from virtwire.testing import run_server

ROOT = Path(__file__).resolve().parents[2]


def documented_page() -> str:
    """The ready-to-copy HTML snippet of docs/protocol.md."""
    doc = (ROOT / "docs" / "protocol.md").read_text()
    start = doc.index("### xterm.js: `/ws/terminal/{ticket}`")
    match = re.search(r"```html\n(.*?)```", doc[start:], re.S)
    assert match, "docs/protocol.md has no HTML snippet for xterm.js"
    return match.group(1)


BUFFER_TEXT = """() => {
  const b = window.opened.term.buffer.active
  const lines = []
  for (let i = 0; i < b.length; i++) lines.push(b.getLine(i).translateToString(true))
  return lines.join('\\n')
}"""


async def test_xterm_js_page_types_and_reads_back(sshd: Sshd, tmp_path: Path) -> None:
    # the page next to tests/js/node_modules, as the document has it
    with static_site(tmp_path / "site", documented_page(), {"node_modules": NODE_MODULES}) as site:
        config = {
            "server": {"allowed_origins": [site]},
            "plugins": {
                "ssh": {
                    "hosts": {"vm-1": sshd.address},
                    "known_hosts": str(tmp_path / "known_hosts"),
                }
            },
        }
        async with (
            run_server(plugins=[("ssh", virtwire_ssh)], config=config) as server,
            chromium() as browser,
        ):
            page = await browser.new_page(viewport={"width": 900, "height": 500})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(f"{site}/index.html")
            options = {
                "gateway": f"ws://127.0.0.1:{server.port}",
                "token": server.token("alice"),
                "vmId": "vm-1",
                "type": "ssh",
                "credentials": sshd.credentials(),
            }
            open_it = "async o => { window.opened = await openTerminal(o); return true }"
            assert await page.evaluate(open_it, options)
            await page.keyboard.type("echo hi")
            await page.keyboard.press("Enter")
            # `hi` on a line of its own (the echoed command line is `… echo hi`)
            await page.wait_for_function(
                f"() => ({BUFFER_TEXT})().split('\\n').some(l => l.trim() === 'hi')",
                timeout=15000,
            )
            size = await page.evaluate("[window.opened.term.cols, window.opened.term.rows]")
            await page.keyboard.type("stty size")
            await page.keyboard.press("Enter")
            await page.wait_for_function(  # the remote PTY has the page's size
                f"() => ({BUFFER_TEXT})().includes('{size[1]} {size[0]}')", timeout=15000
            )
            await page.screenshot(path=str(tmp_path / "xterm.png"))
            # a reload reattaches to the same shell: the scrollback comes back first
            await page.reload()
            assert await page.evaluate(open_it, {**options, "credentials": None})
            await page.wait_for_function(
                f"() => ({BUFFER_TEXT})().split('\\n').some(l => l.trim() === 'hi')",
                timeout=15000,
            )
            assert len(server.gateway.terminals) == 1
            assert errors == []
