"""The persisted known-hosts file and the host key decision of one connection."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncssh


def host_pattern(host: str, port: int) -> str:
    """How OpenSSH writes a host in known_hosts."""
    return host if port == 22 else f"[{host}]:{port}"


class KnownHosts:
    """An OpenSSH-format known-hosts file that ``accept-new`` appends to."""

    def __init__(self, path: Path | Callable[[], Path]) -> None:
        self._path = path
        self._lock = asyncio.Lock()

    @property
    def path(self) -> Path:
        """The file (a default location is found, and its directory made, on first use)."""
        if callable(self._path):
            self._path = self._path()
        return self._path

    def _read(self) -> str:
        try:
            return self.path.read_text()
        except FileNotFoundError:
            return ""

    async def keys_for(self, host: str, port: int) -> list[Any]:
        text = await asyncio.to_thread(self._read)
        if not text.strip():
            return []
        known = asyncssh.import_known_hosts(text)
        return list(known.match(host, "", port)[0])

    async def add(self, host: str, port: int, key: Any) -> None:
        line = f"{host_pattern(host, port)} {key.export_public_key('openssh').decode().strip()}\n"

        def append() -> None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a") as fh:
                fh.write(line)

        async with self._lock:
            await asyncio.to_thread(append)


class HostKeyCheck:
    """Decides about the server's key when it is not among the ``known`` keys."""

    def __init__(self, policy: str, known: list[Any]) -> None:
        self.policy = policy
        self.known = known
        self.verdict = ""  # "changed", "unknown" or "new" once asked
        self.new_key: Any = None

    def known_hosts(self) -> Any:
        """The ``known_hosts`` argument of ``asyncssh.connect``."""
        if self.policy == "off":
            return None
        return (self.known, [], [])

    def decide(self, key: Any) -> bool:
        if self.known:
            self.verdict = "changed"
            return False
        if self.policy == "strict":
            self.verdict = "unknown"
            return False
        self.verdict = "new"
        self.new_key = key
        return True
