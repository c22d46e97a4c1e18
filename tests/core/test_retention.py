"""What an open connection keeps: not its handshake (headers, the token in the query)."""

from __future__ import annotations

import gc
import json
import secrets
from typing import Any

import virtwire_example
from virtwire.testing import run_server
from wirekit import masked_frame, open_tcp, upgrade_request

PLUGINS = [("example", virtwire_example)]


def _holders(*needles: str) -> list[str]:
    """Containers the garbage collector tracks that hold a str or bytes with a needle."""
    found = []
    raw = [n.encode() for n in needles]
    mine = (needles, raw)

    def has(value: Any) -> bool:
        if isinstance(value, str):
            return any(n in value for n in needles)
        if isinstance(value, bytes | bytearray):
            return any(n in value for n in raw)
        return False

    for obj in gc.get_objects():
        if any(obj is m for m in mine):
            continue
        if isinstance(obj, dict):
            values: Any = obj.values()
        elif isinstance(obj, list | tuple):
            values = obj
        else:
            continue
        if any(has(v) for v in values):
            found.append(f"{type(obj).__name__}: {str(obj)[:120]}")
    return found


async def test_an_open_connection_keeps_neither_its_headers_nor_its_token() -> None:
    probe = f"probe-{secrets.token_hex(8)}"
    async with run_server(plugins=PLUGINS) as server:
        token = server.token()
        client = await open_tcp(server.port)
        request = upgrade_request(server.port, f"/ws?token={token}", extra=f"X-Probe: {probe}\r\n")
        client.writer.write(request)
        del request
        response = await client.reader.readuntil(b"\r\n\r\n")
        assert b" 101 " in response
        # authenticated with the query's token: a request is served
        client.send_text(json.dumps({"type": "greet", "id": 1, "data": {"name": "x"}}))
        head = await client.reader.readexactly(2)
        frame = await client.reader.readexactly(head[1] & 0x7F)
        assert json.loads(frame)["type"] == "greet-response"
        gc.collect()
        # the token's signature part: only the handshake ever had it
        assert _holders(probe, token.rsplit(".", 1)[1]) == []
        client.writer.write(masked_frame(b"\x03\xe8", opcode=0x8))
        client.close()
