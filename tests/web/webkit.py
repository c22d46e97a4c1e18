"""Shared pieces of the web console's tests (the plugins they load, the gateway config, the
``Site`` under test), imported by conftest.py and the test modules."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import virtwire_libvirt
import virtwire_logs
import virtwire_monitor
import virtwire_web
from playwright.async_api import Page
from virtwire.testing import RunningServer

PLUGINS = [
    ("libvirt", virtwire_libvirt),
    ("monitor", virtwire_monitor),
    ("logs", virtwire_logs),
    ("web", virtwire_web),
]
WAIT = 15_000  # ms: bound of every wait on the page
HERE = Path(__file__).resolve().parent


@dataclass
class Site:
    """A gateway with the web plugin, and what the tests write to it."""

    server: RunningServer
    log_file: Path
    shots: Path
    problems: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.server.http_url + "/"

    def page_url(self, token: str | None = None) -> str:
        return self.url + (f"?token={token}" if token else "")

    async def shot(self, page: Page, name: str) -> Path:
        path = self.shots / f"{name}.png"
        await page.screenshot(path=str(path), full_page=True)
        return path


def gateway_config(tmp_path: Path, locale: str = "en", **web: Any) -> dict[str, Any]:
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    (logs / "app.log").write_text("".join(f"boot line {i}\n" for i in range(5)))
    config: dict[str, Any] = {
        "server": {"locale": locale},
        "plugins": {
            "libvirt": {"stats_interval": 0.5},
            "monitor": {"warmup": 200},
            "logs": {"directory": str(logs), "files": {"app.log": "app.log"}, "default": "app.log"},
        },
    }
    if web:
        config["plugins"]["web"] = web
    return config
