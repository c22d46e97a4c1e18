"""One SSH shell as a :class:`virtwire.consoles.TerminalSession`."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

#: Seconds to wait for the exit status once the output ended, and for a clean close.
WAIT_CLOSE = 5.0


class SshTerminal:
    def __init__(self, conn: Any, process: Any) -> None:
        self.conn = conn
        self.process = process
        self.exit_status: int | None = None
        self.close_reason = ""
        self._closed = False

    async def read(self, limit: int) -> bytes:
        data: bytes = await self.process.stdout.read(limit)
        if not data:
            with contextlib.suppress(TimeoutError, Exception):
                await asyncio.wait_for(self.process.wait_closed(), WAIT_CLOSE)
            self.exit_status = self.process.exit_status
            if self.exit_status is not None and self.exit_status < 0:
                self.exit_status = None  # killed by a signal: no status
            self.close_reason = self.close_reason or "exited"
        return data

    async def write(self, data: bytes) -> None:
        self.process.stdin.write(data)
        await self.process.stdin.drain()

    async def resize(self, cols: int, rows: int) -> None:
        with contextlib.suppress(OSError):
            self.process.change_terminal_size(cols, rows)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.close_reason = self.close_reason or "closed"
        self.process.close()
        self.conn.close()
        with contextlib.suppress(TimeoutError, Exception):
            await asyncio.wait_for(self.conn.wait_closed(), WAIT_CLOSE)
