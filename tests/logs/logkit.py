"""Helpers for the logs plugin tests: a plain log-stream client, a server wrapper, file writes."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import virtwire_logs
from virtwire.testing import RunningServer
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

PATH = "/api/v1/ws/logs"


class LogClient:
    """A plain WebSocket client of ``/api/v1/ws/logs``: every text message is queued."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.texts: asyncio.Queue[str] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in self.ws:
                await self.texts.put(message if isinstance(message, str) else message.decode())

    async def next(self, wait: float = 10.0) -> str:
        return await asyncio.wait_for(self.texts.get(), wait)

    async def take(self, count: int, wait: float = 10.0) -> list[str]:
        return [await self.next(wait) for _ in range(count)]

    async def until(self, text: str, wait: float = 10.0) -> list[str]:
        """Messages up to and including ``text``."""
        seen: list[str] = []
        while True:
            seen.append(await self.next(wait))
            if seen[-1] == text:
                return seen

    async def closed(self, wait: float = 10.0) -> tuple[int | None, str]:
        await asyncio.wait_for(self.ws.wait_closed(), wait)
        await asyncio.wait_for(asyncio.shield(self._reader), wait)
        return self.ws.close_code, self.ws.close_reason or ""

    def drained(self) -> list[str]:
        out = []
        while not self.texts.empty():
            out.append(self.texts.get_nowait())
        return out

    async def sync(self) -> None:
        """A round trip through the server's reader (text ping -> pong)."""
        await self.ws.send("ping")
        while (await self.next()) != "pong":
            pass

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


class LogServer:
    def __init__(self, running: RunningServer) -> None:
        self.running = running
        self.port = running.port
        self.gateway = running.gateway

    @property
    def plugin(self) -> virtwire_logs.LogsPlugin:
        return virtwire_logs.plugin_for(self.gateway)

    def url(
        self, file: str | None = None, token: str | None = "default", raw_query: str = ""
    ) -> str:
        query = []
        if file is not None:
            query.append(f"file={file}")
        if raw_query:
            query.append(raw_query)
        if token == "default":
            token = self.running.token()
        if token is not None:
            query.append(f"token={token}")
        return f"ws://127.0.0.1:{self.port}{PATH}" + ("?" + "&".join(query) if query else "")

    @contextlib.asynccontextmanager
    async def logs(
        self, file: str | None = None, token: str | None = "default", **kwargs: Any
    ) -> AsyncIterator[LogClient]:
        raw_query = kwargs.pop("raw_query", "")
        async with connect(self.url(file, token, raw_query), **kwargs) as ws:
            client = LogClient(ws)
            try:
                yield client
            finally:
                await client.close()


def write(path: Path, text: str | bytes, mode: str = "a") -> None:
    """Append (or write) and flush, as a logging process does."""
    data = text.encode() if isinstance(text, str) else text
    with open(path, mode + "b") as f:
        f.write(data)


def lines(path: Path, start: int, stop: int, prefix: str = "line") -> None:
    write(path, "".join(f"{prefix} {i}\n" for i in range(start, stop)))


def fds_open_on(path: Path) -> int:
    """How many descriptors of this process are open on ``path`` (the tailers' files)."""
    target = os.path.realpath(path)
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{fd}") == target:
                count += 1
    return count


def rotate(path: Path, to: Path, late: bytes = b"") -> None:
    """Rename ``path`` to ``to`` while a writer holds it open, which then writes ``late``
    (what a logger does before it reopens its file)."""
    with open(path, "ab") as writer:
        os.rename(path, to)
        writer.write(late)
