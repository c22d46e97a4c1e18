"""Small collectors that add fields next to the document's: ``load`` and ``filesystems``."""

from __future__ import annotations

from typing import Any

import psutil


class LoadAvgSampler:
    def sample(self) -> dict[str, Any]:
        one, five, fifteen = psutil.getloadavg()
        return {"load": {"1m": round(one, 2), "5m": round(five, 2), "15m": round(fifteen, 2)}}


class LoadAvgCollector:
    """``load``: the 1, 5 and 15 minute load averages (runnable tasks)."""

    name = "loadavg"

    def create_sampler(self) -> LoadAvgSampler:
        return LoadAvgSampler()


class FilesystemsSampler:
    def __init__(self, paths: list[str]) -> None:
        self.paths = paths

    def sample(self) -> dict[str, Any]:
        out: list[dict[str, Any]] = []
        for path in self.paths:
            try:
                u = psutil.disk_usage(path)
            except OSError as exc:
                out.append({"path": path, "error": f"{type(exc).__name__}: {exc.strerror or exc}"})
                continue
            used = u.total - u.free
            usage = round(used / u.total * 100.0, 1) if u.total else 0.0
            out.append(
                {"path": path, "total": u.total, "used": used, "free": u.free, "usage": usage}
            )
        return {"filesystems": out}


class FilesystemsCollector:
    """``filesystems``: size and use of the configured mount points, in bytes and %."""

    name = "filesystems"

    def __init__(self, paths: list[str]) -> None:
        self.paths = list(paths)

    def create_sampler(self) -> FilesystemsSampler:
        return FilesystemsSampler(self.paths)
