"""How the page is served: headers, layouts, reconnects, the token kept out of logs, the URL
`virtwire serve` prints, configuration."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import expect
from virtwire.testing import free_port, make_settings, run_server
from virtwire_web.assets import AssetsMissing, find_assets
from webkit import PLUGINS, Site


async def test_every_response_allows_only_self(site: Site) -> None:
    async with httpx.AsyncClient(base_url=site.server.http_url) as http:
        for path in (
            "/",
            "/static/js/main.js",
            "/static/app.css",
            "/vendor/uplot/dist/uPlot.esm.js",
            "/vendor/@novnc/novnc/core/rfb.js",
            "/vendor/@xterm/xterm/lib/xterm.mjs",
        ):
            response = await http.get(path)
            assert response.status_code == 200, path
            csp = response.headers["content-security-policy"]
            assert "default-src 'self'" in csp and "script-src 'self';" in csp
            assert "unsafe" not in csp and "http" not in csp
            assert response.headers["referrer-policy"] == "no-referrer"
        index = await http.get("/?token=abc")
        assert index.headers["cache-control"] == "no-store"
        # the page's style nonce (for xterm.js's <style> elements) is new on every load
        nonces = []
        for _ in range(2):
            page = await http.get("/")
            nonce = page.headers["content-security-policy"].split("'nonce-")[1].split("'")[0]
            assert f'<meta name="csp-nonce" content="{nonce}">' in page.text
            nonces.append(nonce)
        assert nonces[0] != nonces[1] and len(nonces[0]) >= 20
        # only the listed packages are served, nothing else of node_modules or the disk
        assert (await http.get("/vendor/ws/package.json")).status_code == 404
        assert (await http.get("/static/../__init__.py")).status_code == 404
        assert (await http.get("/vendor/uplot/../../package.json")).status_code == 404


@pytest.mark.parametrize(("width", "height", "dark"), [(1280, 800, False), (390, 844, True)])
async def test_readable_at_laptop_and_phone_width_light_and_dark(
    site: Site, new_page: Any, width: int, height: int, dark: bool
) -> None:
    page, problems = await new_page(width, height, dark=dark)
    await page.goto(site.page_url(site.server.token("dev")))
    row = page.locator('tr[data-vm="test"]')
    await expect(row.locator(".badge")).to_have_text("running")
    await expect(page.locator("#chart-cpu")).to_have_attribute("data-samples", "1")
    # nothing sticks out sideways
    overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0
    # every action button is on screen and big enough to hit
    for box in [await b.bounding_box() for b in await row.locator(".actions button").all()]:
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width
        assert box["height"] >= 20
    background = await page.evaluate("getComputedStyle(document.body).backgroundColor")
    channels = [int(c) for c in background[background.index("(") + 1 : -1].split(",")[:3]]
    assert (sum(channels) / 3 < 80) if dark else (sum(channels) / 3 > 200)
    await site.shot(page, f"layout-{width}x{height}-{'dark' if dark else 'light'}")
    # the Theme button overrides the system's choice
    await page.get_by_role(
        "button", name="Switch colour theme", exact=True
    ).click()  # auto -> light
    background = await page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert sum(int(c) for c in background[background.index("(") + 1 : -1].split(",")[:3]) > 600
    assert problems == []


async def test_reconnects_with_a_banner_and_resubscribes(site_factory: Any, new_page: Any) -> None:
    port = free_port()
    page, _ = await new_page()
    async with site_factory(port=port) as site:
        token = site.server.token("dev")
        await page.goto(site.page_url(token))
        badge = page.locator('tr[data-vm="test"] .badge')
        await expect(badge).to_have_text("running")
    # the gateway is gone: a banner says so and counts down to the next try
    banner = page.locator("#banner")
    await expect(banner).to_be_visible()
    await expect(banner).to_contain_text("Reconnecting in")
    await expect(page.locator("#conn-state")).to_have_text("disconnected")
    await site.shot(page, "reconnecting")
    async with site_factory(port=port) as site:
        # the next try of the backoff schedule (at most 15 s away) finds it
        await expect(banner).to_be_hidden(timeout=20_000)
        await expect(page.locator("#conn-state")).to_have_text("connected")
        # resubscribed: controls act and the new status arrives
        row = page.locator('tr[data-vm="test"]')
        await row.get_by_role("button", name="Pause test", exact=True).click()
        await expect(badge).to_have_text("paused")
        samples = int(await page.locator("#chart-mem").get_attribute("data-samples") or 0)
        await expect(page.locator("#chart-mem")).to_have_attribute("data-samples", str(samples + 1))
        # the log pane reconnected too
        with site.log_file.open("a") as f:
            f.write("after the restart\n")
        await expect(page.locator("#log-lines .line").last).to_have_text("after the restart")
        await row.get_by_role("button", name="Resume test", exact=True).click()
        await expect(badge).to_have_text("running")


async def test_the_token_never_reaches_the_log(tmp_path: Path, new_page: Any) -> None:
    # request lines (uvicorn.access) and WebSocket handshakes (uvicorn.error) at INFO, as
    # `virtwire serve` logs them (uvicorn turned propagation off for the earlier test
    # servers that ran without an access log)
    loggers = [logging.getLogger(n) for n in ("uvicorn.access", "uvicorn.error")]
    saved = [(logger.level, logger.propagate) for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.INFO)
        logger.propagate = True
    try:
        async with run_server(
            make_settings(
                {"plugins": {"logs": {"gateway_log_path": str(tmp_path / "gateway.log")}}}
            ),
            plugins=list(PLUGINS),
            access_log=True,
        ) as server:
            token = server.token("dev")
            page, _ = await new_page()
            await page.goto(f"{server.http_url}/?token={token}")
            await expect(page.locator('tr[data-vm="test"] .badge')).to_have_text("running")
            # the gateway log, as the log pane shows it: requests logged, tokens redacted
            pane = page.locator("#log-lines")
            await expect(pane).to_contain_text("GET /?token=[REDACTED]")
            await expect(pane).to_contain_text("/api/v1/ws/logs?token=[REDACTED]")
            assert token not in (await pane.text_content() or "")
    finally:
        for logger, (level, propagate) in zip(loggers, saved, strict=True):
            logger.setLevel(level)
            logger.propagate = propagate
    text = (tmp_path / "gateway.log").read_text()
    assert "GET /static/js/main.js" in text
    assert token not in text
    assert token.split(".")[2] not in text


async def test_mount_path_is_configurable(site_factory: Any, new_page: Any) -> None:
    async with site_factory(path="/console/", log_files=["app.log", "other.log"]) as site:
        async with httpx.AsyncClient(base_url=site.server.http_url) as http:
            assert (await http.get("/")).status_code == 404
            moved = await http.get("/console")
            assert moved.status_code == 308 and moved.headers["location"] == "/console/"
        page, problems = await new_page()
        await page.goto(f"{site.server.http_url}/console/?token={site.server.token('dev')}")
        await expect(page.locator('tr[data-vm="test"] .badge')).to_have_text("running")
        assert page.url.endswith("/console/")
        options = page.locator("#log-files option")
        await expect(options).to_have_count(2)
        assert problems == []


def test_missing_front_end_files_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(AssetsMissing, match=r"npm ci"):
        find_assets(str(tmp_path))
    assert (find_assets() / "@novnc/novnc/core/rfb.js").is_file()


async def test_a_bad_mount_path_stops_the_gateway_with_its_key() -> None:
    with pytest.raises(Exception, match="path must start and end with '/'"):
        async with run_server(
            make_settings({"plugins": {"web": {"path": "console"}}}),
            plugins=[("web", __import__("virtwire_web"))],
        ):
            pass


async def test_virtwire_serve_prints_the_page_url_with_the_token(
    virtwire_bin: str, cli_env: dict[str, str], new_page: Any
) -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        virtwire_bin,
        "serve",
        "--port",
        str(port),
        env=cli_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        url = None
        while url is None:
            line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
            assert line, "virtwire serve exited"
            if line.startswith("web console: "):
                url = line.split(": ", 1)[1].strip()
        assert url.startswith(f"http://127.0.0.1:{port}/?token=ey")
        while b"Uvicorn running on" not in await asyncio.wait_for(proc.stderr.readline(), 30):
            pass
        page, _ = await new_page()
        await page.goto(url)
        await expect(page.locator('tr[data-vm="test"] .badge')).to_have_text("running")
        await expect(page.locator("#whoami")).to_contain_text("dev")
        assert page.url == f"http://127.0.0.1:{port}/"
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
