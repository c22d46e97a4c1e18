"""What the benchmarks share: a token, a raw WebSocket client that only counts frames (cheap
enough to load a server, not itself), a server process on a free port, stopped by PID, and the
uvicorn server of the bare baselines. Imports nothing of virtwire at module level (the bare
baseline servers import it)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import subprocess
import time
from typing import Any

DEFAULT_SCOPE = "vm:read monitor:read"


def token(scope: str = DEFAULT_SCOPE) -> str:
    """A token for the test secret (``virtwire.testing``'s servers and the bench servers)."""
    import jwt
    from virtwire.testing import TEST_SECRET

    claims = {"sub": "bench", "scope": scope, "exp": int(time.time()) + 3600}
    return jwt.encode(claims, TEST_SECRET, algorithm="HS256")


class WsClient(asyncio.Protocol):
    """A WebSocket client on a raw socket: after the handshake it counts incoming text frames
    (and those that start with ``prefix``: a prefix check, no parsing), answers pings and
    parses nothing else.

    Waiting: ``expect(n)`` resolves once ``n`` more text frames came; ``next_frame()`` after the
    next text frame; ``reached`` is the moment ``matched`` came to ``match_target``."""

    def __init__(self, prefix: bytes | None = None) -> None:
        self.buf = b""
        self.handshaken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.frames = 0  # text frames
        self.target = 0  # of frames, for expect()
        self.done: asyncio.Future[None] | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.prefix = prefix
        self.matched = 0  # text frames starting with prefix
        self.match_target = 0
        self.reached = 0.0
        self.pings = 0  # answered

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data
        if not self.handshaken.done():
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            if b" 101 " not in buf[:20]:
                self.handshaken.set_exception(RuntimeError(buf[:80].decode(errors="replace")))
                return
            buf = buf[end + 4 :]
            self.handshaken.set_result(None)
        prefix = self.prefix
        i, n = 0, len(buf)
        while n - i >= 2:
            length = buf[i + 1] & 0x7F
            head = 2
            if length == 126:
                if n - i < 4:
                    break
                length = int.from_bytes(buf[i + 2 : i + 4], "big")
                head = 4
            elif length == 127:
                if n - i < 10:
                    break
                length = int.from_bytes(buf[i + 2 : i + 10], "big")
                head = 10
            if n - i < head + length:
                break
            opcode = buf[i] & 0x0F
            if opcode == 0x1:
                self.frames += 1
                if prefix is not None and buf.startswith(prefix, i + head):
                    self.matched += 1
                    if self.matched == self.match_target:
                        self.reached = time.monotonic()
                if self.frames == self.target and self.done is not None:
                    if not self.done.done():
                        self.done.set_result(None)
                if self.waiter is not None and not self.waiter.done():
                    self.waiter.set_result(None)
            elif opcode == 0x9:  # ping: answer with the same payload, mask 0
                payload = buf[i + head : i + head + length]
                assert self.transport is not None
                self.transport.write(bytes([0x8A, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
                self.pings += 1
            i += head + length
        self.buf = buf[i:]

    def send_text(self, text: str) -> None:
        payload = text.encode()
        mask = os.urandom(4)
        header = bytearray([0x81])
        if len(payload) < 126:
            header.append(0x80 | len(payload))
        else:
            header.append(0x80 | 126)
            header += len(payload).to_bytes(2, "big")
        masked = bytes(b ^ mask[j % 4] for j, b in enumerate(payload))
        assert self.transport is not None
        self.transport.write(bytes(header) + mask + masked)

    def expect(self, count: int) -> asyncio.Future[None]:
        """A future resolved once ``count`` more text frames came."""
        self.target = self.frames + count
        self.done = asyncio.get_running_loop().create_future()
        if self.frames >= self.target:
            self.done.set_result(None)
        return self.done

    async def next_frame(self) -> None:
        self.waiter = asyncio.get_running_loop().create_future()
        await self.waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_client(
    port: int, tok: str, prefix: bytes | None = None, path: str = "/ws"
) -> WsClient:
    """A ``WsClient`` on ``ws://127.0.0.1:PORT/ws?token=TOK``, handshake done."""
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(lambda: WsClient(prefix), "127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    assert proto.transport is not None
    proto.transport.write(
        (
            f"GET {path}?token={tok} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    await asyncio.wait_for(proto.handshaken, 30)
    return proto


def close_all(clients: list[WsClient]) -> None:
    for c in clients:
        c.close()


class ServerProc:
    """A server process listening on ``port`` (given in ``args``), stopped by PID. Ready once
    the port accepts connections, or with ``health`` (a path), once it answers 200 there."""

    def __init__(
        self,
        args: list[str],
        port: int,
        env: dict[str, str] | None = None,
        health: str | None = None,
    ) -> None:
        self.port = port
        self.health = health
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        self._ps: Any = None

    def wait_ready(self, within: float = 30.0) -> None:
        """Until the server is ready (raises if the process exits or time runs out)."""
        deadline = time.monotonic() + within
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.proc.args} exited with {self.proc.returncode}")
            with contextlib.suppress(OSError):
                if self._answers():
                    return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.proc.args} not ready within {within:g} s")
            time.sleep(0.05)

    def _answers(self) -> bool:
        if self.health is None:
            socket.create_connection(("127.0.0.1", self.port), 0.5).close()
            return True
        import urllib.request

        url = f"http://127.0.0.1:{self.port}{self.health}"
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)

    async def ready(self, within: float = 30.0) -> None:
        await asyncio.to_thread(self.wait_ready, within)

    @property
    def ps(self) -> Any:
        if self._ps is None:
            import psutil

            self._ps = psutil.Process(self.proc.pid)
        return self._ps

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)

    def cpu(self) -> float:
        """Seconds of CPU (user + system) so far."""
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def stop(self, timeout: float = 10.0) -> float:
        """SIGTERM, then the seconds until the process exited (killed after ``timeout``)."""
        start = time.monotonic()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return time.monotonic() - start


def bare_server(app: Any, port: int, **options: Any) -> Any:
    """A uvicorn server for ``app`` on 127.0.0.1:PORT with the stack virtwire runs on (uvloop,
    httptools, websockets-sansio, no permessage-deflate), quiet; ``options``: more of
    ``uvicorn.Config``'s."""
    import uvicorn

    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        ws="websockets-sansio",
        ws_per_message_deflate=False,
        log_level="warning",
        access_log=False,
        **options,
    )
    return uvicorn.Server(config)
