"""Fixtures of the web console's tests: a real gateway (the embedded default's plugins:
libvirt's test:///default, monitor, logs, and the web plugin) and Debian's Chromium driven by
Playwright. Screenshots of each state go to the test's tmp dir (``shots``)."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from browserkit import chromium
from playwright.async_api import Browser, ConsoleMessage, Page
from virtwire.testing import make_settings, run_server
from webkit import HERE, PLUGINS, WAIT, Site, gateway_config


@pytest.fixture
def site_factory(
    tmp_path: Path,
) -> Callable[..., contextlib.AbstractAsyncContextManager[Site]]:
    """``async with site_factory(port=..., locale=..., **web_settings) as site``. The texts
    are English unless ``locale`` says otherwise (this machine's Chromium has no CJK font, so
    screenshots of the default zh-CN texts show boxes)."""

    @contextlib.asynccontextmanager
    async def start(port: int | None = None, locale: str = "en", **web: Any) -> AsyncIterator[Site]:
        config = gateway_config(tmp_path, locale, **web)
        if port is not None:
            config["server"]["port"] = port
        async with run_server(make_settings(config), plugins=list(PLUGINS)) as server:
            shots = tmp_path / "shots"
            shots.mkdir(exist_ok=True)
            yield Site(server, tmp_path / "logs" / "app.log", shots)

    return start


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here runs in the session's event loop, where one Chromium serves them all
    (a browser launch per test would cost about a second each)."""
    for item in items:
        function = getattr(item, "function", None)
        if Path(str(item.fspath)).parent == HERE and inspect.iscoroutinefunction(function):
            item.add_marker(pytest.mark.asyncio(loop_scope="session"), append=False)


@pytest_asyncio.fixture(loop_scope="session")
async def site(site_factory: Callable[..., Any]) -> AsyncIterator[Site]:
    async with site_factory() as running:
        yield running


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as running:
        yield running


@pytest_asyncio.fixture(loop_scope="session")
async def new_page(browser: Browser) -> AsyncIterator[Callable[..., Any]]:
    """``page, problems = await new_page(width=1280, height=800, dark=False)``: a page whose
    console errors and uncaught exceptions (CSP violations included) land in ``problems``."""

    async def make(
        width: int = 1280, height: int = 800, *, dark: bool = False
    ) -> tuple[Page, list[str]]:
        context = await browser.new_context(
            viewport={"width": width, "height": height},
            color_scheme="dark" if dark else "light",
        )
        page = await context.new_page()
        page.set_default_timeout(WAIT)
        problems: list[str] = []

        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error":
                problems.append(f"console: {message.text}")

        page.on("console", on_console)
        page.on("pageerror", lambda exc: problems.append(f"exception: {exc}"))
        return page, problems

    yield make
    for context in browser.contexts:  # this test's pages
        await context.close()
