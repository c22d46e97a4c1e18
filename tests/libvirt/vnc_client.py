"""Client-side helpers of the VNC tests: RFB over a ticket URL, PNG reading."""

from __future__ import annotations

import base64
import struct
import zlib
from typing import Any

from virtwire.testing import Client
from websockets.asyncio.client import ClientConnection


class WsStream:
    """A websockets client connection as a virtwire ByteStream (what noVNC does)."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def read(self) -> bytes:
        try:
            data = await self.ws.recv()
        except Exception:
            return b""
        return data if isinstance(data, bytes) else data.encode()

    async def write(self, data: bytes) -> None:
        await self.ws.send(data)

    async def close(self) -> None:
        await self.ws.close()


def png_pixels(data: bytes) -> tuple[int, int, bytes]:
    """Width, height and RGB rows (each prefixed by its filter byte) of an RGB PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack_from(">II", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    assert len(raw) == height * (1 + width * 3)
    return width, height, raw


def pixel(width: int, raw: bytes, x: int, y: int) -> tuple[int, ...]:
    start = y * (1 + width * 3) + 1 + x * 3
    return tuple(raw[start : start + 3])


async def vnc_bytes(client: Client, vm_id: str, count: int) -> bytes:
    """At least ``count`` bytes of ``vnc-data`` pushed for ``vm_id``."""
    out = b""
    while len(out) < count:
        frame = await client.expect("vnc-data", where=lambda f: f["data"]["vmId"] == vm_id)
        out += base64.b64decode(frame["data"]["data"])
    return out


class VncDataStream:
    """The ``vnc-data`` pushed for one VM, read as a byte stream."""

    def __init__(self, client: Client, vm_id: str) -> None:
        self.client = client
        self.vm_id = vm_id

    async def read(self) -> bytes:
        frame = await self.client.expect(
            "vnc-data", where=lambda f: f["data"]["vmId"] == self.vm_id
        )
        return base64.b64decode(frame["data"]["data"])

    async def write(self, data: bytes) -> None:
        await self.client.send("vnc-data", {"vmId": self.vm_id, "data": b64(data)})

    async def close(self) -> None:
        return None


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def error_of(reply: dict[str, Any]) -> str:
    assert reply["type"] == "error", reply
    return str(reply["data"]["code"])
