"""Web console benchmark: what the page adds on top of the protocol it speaks.

Run: ``.venv/bin/python bench/bench_web.py [--runs N]``

A ``virtwire serve`` process (the embedded default: libvirt's test driver, monitor, logs, web)
on a free loopback port, and Debian's Chromium driven by Playwright:

1. Sign-in to first VM row: a fresh browser context opens the printed URL; the page's own clock
   (``performance.now()``, from the start of navigation) says when VM ``test`` shows its status
   (page load, module loading, ``/ws`` auth, ``vm-status-all``). Baseline:
   a ``websockets`` client doing the protocol part alone (connect, ``auth``, ``subscribe
   vm-status-all``, first ``vm-status``).
2. Click to badge: a click on Pause/Resume until the badge shows the new status, timed in the
   page (a MutationObserver on the badge). Baseline:
   the same ``vm-control`` over ``websockets`` until the ``vm-status`` push.
3. Bytes the first load transfers (every response body), and those a console adds (xterm.js
   loaded on demand).
Medians of ``--runs`` runs; every process started here is stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from virtwire.testing import free_port
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parent.parent
VIRTWIRE = ROOT / ".venv" / "bin" / "virtwire"
sys.path.insert(0, str(ROOT / "tests" / "kit"))
from browserkit import chromium  # noqa: E402

#: Installed before the page's scripts: resolves window.firstRow with the time (ms since the
#: navigation started) at which VM test's badge first says "running".
FIRST_ROW = """
window.firstRow = new Promise((resolve) => {
  new MutationObserver((_, observer) => {
    const badge = document.querySelector('tr[data-vm="test"] .badge');
    if (badge && badge.textContent === "running") {
      observer.disconnect();
      resolve(performance.now());
    }
  }).observe(document, { childList: true, subtree: true, characterData: true });
});
"""
#: Clicks a VM button in the page and resolves with the ms until the badge shows `status`.
CLICK_TO_BADGE = """([action, status]) => new Promise((resolve) => {
  const badge = document.querySelector('tr[data-vm="test"] .badge');
  const button = document.querySelector(`tr[data-vm="test"] button[data-action="${action}"]`);
  const start = performance.now();
  new MutationObserver((_, observer) => {
    if (badge.textContent === status) {
      observer.disconnect();
      resolve(performance.now() - start);
    }
  }).observe(badge, { childList: true, subtree: true, characterData: true });
  button.click();
})"""


#: Bytes of every response body the page has loaded so far (the page itself included).
LOADED_BYTES = """() => performance.getEntriesByType("navigation")
  .concat(performance.getEntriesByType("resource"))
  .reduce((sum, entry) => sum + entry.encodedBodySize, 0)"""


def start_gateway(state: str, port: int) -> tuple[subprocess.Popen[bytes], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIRTWIRE_")}
    env.update(VIRTWIRE_STATE_DIR=state, VIRTWIRE_SERVER__LOCALE="en", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [str(VIRTWIRE), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout and proc.stderr
    url = ""
    while not url:
        line = proc.stdout.readline().decode()
        if not line:
            raise RuntimeError("virtwire serve exited")
        if line.startswith("web console: "):
            url = line.split(": ", 1)[1].strip()
    while b"Uvicorn running on" not in proc.stderr.readline():
        pass
    return proc, url


async def protocol_first_row(port: int, token: str) -> float:
    start = time.perf_counter()
    async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
        await ws.send(json.dumps({"type": "auth", "data": {"token": token}, "id": "a"}))
        await ws.send(json.dumps({"type": "subscribe", "data": {"topic": "vm-status-all"}}))
        while json.loads(await ws.recv())["type"] != "vm-status":
            pass
    return time.perf_counter() - start


async def protocol_control(port: int, token: str, action: str, status: str) -> float:
    async with connect(f"ws://127.0.0.1:{port}/ws?token={token}") as ws:
        await ws.send(json.dumps({"type": "subscribe", "data": {"topic": "vm-status-all"}}))
        while json.loads(await ws.recv())["type"] != "vm-status":
            pass
        start = time.perf_counter()
        await ws.send(
            json.dumps({"type": "vm-control", "data": {"vmId": "test", "action": action}})
        )
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] == "vm-status" and frame["data"]["status"] == status:
                return time.perf_counter() - start


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:8.1f}"


async def main(runs: int) -> None:
    port = free_port()
    with tempfile.TemporaryDirectory() as state:
        proc, url = start_gateway(state, port)
        token = url.split("token=", 1)[1]
        try:
            base_row = [await protocol_first_row(port, token) for _ in range(runs)]
            base_ctl = []
            for i in range(runs):
                action, status = ("pause", "paused") if i % 2 == 0 else ("resume", "running")
                base_ctl.append(await protocol_control(port, token, action, status))
            if runs % 2:
                await protocol_control(port, token, "resume", "running")
            page_row, page_ctl = [], []
            first_bytes = console_bytes = 0
            async with chromium() as browser:
                for i in range(runs):
                    context = await browser.new_context(viewport={"width": 1280, "height": 800})
                    page = await context.new_page()
                    await page.add_init_script(FIRST_ROW)
                    await page.goto(url)
                    page_row.append(await page.evaluate("window.firstRow") / 1000)
                    for action, status in (("pause", "paused"), ("resume", "running")):
                        took = await page.evaluate(CLICK_TO_BADGE, [action, status])
                        page_ctl.append(took / 1000)
                    if i == 0:
                        await page.wait_for_load_state("networkidle")
                        first_bytes = await page.evaluate(LOADED_BYTES)
                        await page.get_by_role("button", name="Console of test", exact=True).click()
                        await page.locator(".console-message").wait_for()
                        await page.wait_for_load_state("networkidle")
                        console_bytes = await page.evaluate(LOADED_BYTES) - first_bytes
                    await context.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    print(f"web console, {runs} runs, medians (ms)")
    print(f"{'':44}{'protocol':>10}{'page':>10}")
    print(f"{'sign-in to first VM row':44}{ms(base_row):>10}{ms(page_row):>10}")
    print(f"{'pause/resume to badge':44}{ms(base_ctl):>10}{ms(page_ctl):>10}")
    print(
        f"first load: {first_bytes / 1024:.0f} KiB; opening a console adds "
        f"{console_bytes / 1024:.0f} KiB (xterm.js, loaded on demand)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    asyncio.run(main(parser.parse_args().runs))
