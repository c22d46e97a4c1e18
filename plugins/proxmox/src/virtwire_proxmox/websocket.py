"""The ``vncwebsocket`` leg of a Proxmox console: the WebSocket upgrade with the API
credentials and the console ticket, as a byte stream (RFB, or termproxy's framing)."""

from __future__ import annotations

import contextlib
import ssl
from typing import Any
from urllib.parse import quote

from .settings import ProxmoxSettings

#: pveproxy drops a connection whose client frame exceeds 128 KiB: stay well below.
MAX_CLIENT_FRAME = 64 * 1024
#: Largest frame accepted from pveproxy (it relays what it reads, in far smaller pieces).
MAX_SERVER_FRAME = 16 * 1024 * 1024


def ssl_context(settings: ProxmoxSettings) -> ssl.SSLContext:
    """The TLS context matching ``verify_ssl`` / ``ca_file`` (as requests uses them)."""
    if not settings.verify_ssl:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    return ssl.create_default_context(cafile=settings.ca_file)


def url(settings: ProxmoxSettings, node: str, vmid: int, port: int, ticket: str) -> str:
    host = settings.host or ""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return (
        f"wss://{host}:{settings.port}/api2/json/nodes/{quote(node, safe='')}/qemu/{vmid}"
        f"/vncwebsocket?port={port}&vncticket={quote(ticket, safe='')}"
    )


class ConsoleSocket:
    """One ``vncwebsocket`` connection: binary frames both ways."""

    def __init__(self, ws: Any) -> None:
        self._ws = ws

    @classmethod
    async def open(
        cls,
        settings: ProxmoxSettings,
        headers: dict[str, str],
        node: str,
        vmid: int,
        port: int,
        ticket: str,
    ) -> ConsoleSocket:
        """Upgrade ``GET .../vncwebsocket``; raises ``OSError``/``InvalidHandshake``/
        ``TimeoutError``. The subprotocol ``binary`` is offered: pveproxy closes the socket
        at once without it."""
        from websockets.asyncio.client import connect

        ws = await connect(
            url(settings, node, vmid, port, ticket),
            ssl=ssl_context(settings),
            additional_headers=headers,
            subprotocols=["binary"],  # type: ignore[list-item]
            compression=None,
            max_size=MAX_SERVER_FRAME,
            open_timeout=settings.call_timeout,
            ping_interval=None,  # termproxy has its own ping; pveproxy answers pings anyway
            close_timeout=2,
        )
        return cls(ws)

    async def receive(self) -> bytes:
        """The next frame's bytes; ``b""`` once the connection is closed."""
        from websockets.exceptions import ConnectionClosed

        try:
            message = await self._ws.recv()
        except ConnectionClosed:
            return b""
        return message if isinstance(message, bytes) else message.encode()

    async def send(self, data: bytes) -> None:
        """Send ``data`` in frames pveproxy accepts; ``ConnectionError`` once closed."""
        from websockets.exceptions import ConnectionClosed

        try:
            for i in range(0, len(data), MAX_CLIENT_FRAME):
                await self._ws.send(data[i : i + MAX_CLIENT_FRAME])
        except ConnectionClosed as exc:
            raise ConnectionResetError("the Proxmox console connection closed") from exc

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._ws.close()
