"""Client-side helpers of the VNC tests: RFB over a ticket URL, vnc-data as a stream
(PNG reading: tests/kit/pngkit.py)."""

from __future__ import annotations

import base64
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
