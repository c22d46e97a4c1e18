"""Raw TCP/WebSocket helpers for tests that must misbehave as a client (never read, send
half a request, send frames no library would)."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
from dataclasses import dataclass


def masked_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One client frame (FIN set), masked with a zero key (so the payload is unchanged)."""
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    return head + b"\0\0\0\0" + payload


@dataclass
class RawClient:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def send_text(self, text: str | bytes) -> None:
        data = text.encode() if isinstance(text, str) else text
        self.writer.write(masked_frame(data))

    async def frames(self, timeout: float = 10.0) -> list[tuple[int, bytes]]:
        """Every frame until the server closes the connection: (opcode, payload)."""
        data = await asyncio.wait_for(self.reader.read(), timeout)
        out: list[tuple[int, bytes]] = []
        i = 0
        while i + 2 <= len(data):
            opcode = data[i] & 0x0F
            length = data[i + 1] & 0x7F
            i += 2
            if length == 126:
                length = struct.unpack("!H", data[i : i + 2])[0]
                i += 2
            elif length == 127:
                length = struct.unpack("!Q", data[i : i + 8])[0]
                i += 8
            out.append((opcode, data[i : i + length]))
            i += length
        return out

    def close(self) -> None:
        self.writer.close()


async def open_tcp(port: int, rcvbuf: int | None = None) -> RawClient:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    return RawClient(reader, writer)


def upgrade_request(
    port: int, path: str = "/ws", host: str | None = None, extra: str = ""
) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host or f'127.0.0.1:{port}'}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    ).encode()


async def ws_handshake(
    port: int, token: str | None = None, *, rcvbuf: int | None = None
) -> RawClient:
    client = await open_tcp(port, rcvbuf)
    path = "/ws" + (f"?token={token}" if token else "")
    client.writer.write(upgrade_request(port, path))
    response = await asyncio.wait_for(client.reader.readuntil(b"\r\n\r\n"), 10)
    assert b" 101 " in response.split(b"\r\n")[0], response
    return client


def close_code(payload: bytes) -> int | None:
    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None


async def until(predicate: object, timeout: float = 10.0) -> None:
    """Wait (bounded) until ``predicate()`` is true, checking every few milliseconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():  # type: ignore[operator]
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)
