"""xterm.js in headless Chromium (Debian's, driven by Playwright) on the ticket URL, with the
page documented in docs/protocol.md, copied as it is: it attaches, types ``echo hi`` + Enter
and reads ``hi`` back from ``term.buffer``; a reload reattaches with the scrollback."""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import virtwire_ssh
from playwright.async_api import async_playwright
from sshkit import Sshd
from virtwire.testing import free_port, run_server

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def documented_page() -> str:
    """The ready-to-copy HTML snippet of docs/protocol.md."""
    doc = (ROOT / "docs" / "protocol.md").read_text()
    start = doc.index("### xterm.js: `/ws/terminal/{ticket}`")
    match = re.search(r"```html\n(.*?)```", doc[start:], re.S)
    assert match, "docs/protocol.md has no HTML snippet for xterm.js"
    return match.group(1)


@contextlib.contextmanager
def static_site(tmp: Path) -> Iterator[str]:
    """The page next to tests/js/node_modules, served over HTTP on a free port."""
    (tmp / "index.html").write_text(documented_page())
    (tmp / "node_modules").symlink_to(ROOT / "tests" / "js" / "node_modules")
    handler = partial(SimpleHTTPRequestHandler, directory=str(tmp))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


BUFFER_TEXT = """() => {
  const b = window.opened.term.buffer.active
  const lines = []
  for (let i = 0; i < b.length; i++) lines.push(b.getLine(i).translateToString(true))
  return lines.join('\\n')
}"""


async def test_xterm_js_page_types_and_reads_back(sshd: Sshd, tmp_path: Path) -> None:
    site_dir = tmp_path / "site"
    site_dir.mkdir()
    with static_site(site_dir) as site:
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
            async_playwright() as p,
        ):
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            try:
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
            finally:
                await browser.close()
