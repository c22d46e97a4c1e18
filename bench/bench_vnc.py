"""VNC console relay: throughput and memory, each next to a baseline measured in the same run.

- the binary endpoint (/ws/vnc/{ticket}, what noVNC uses) vs websockify, relaying the same TCP
  source (an RFB server that answers a FramebufferUpdateRequest with a burst of bytes);
- the base64 ``vnc-data`` path on /ws vs a bare relay doing only base64-in-JSON of the same
  source (a minimal Starlette app on the same uvicorn settings);
- memory per open VNC console (a /ws connection with ``vnc-connect`` done) vs per idle /ws
  connection.

The gateway runs as ``virtwire serve`` (libvirt plugin, a ``test:///`` node whose domain's VNC
port is the source), the source, websockify and the bare relay in processes of their own; the
measuring client reads and counts in this process (it is not the bottleneck: check the MB/s of
the fastest path against FACTS.md's ~1.2 GB/s). Run: ``.venv/bin/python bench/bench_vnc.py``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import msgspec
from _kit import ServerProc, bare_server
from virtwire import rfb
from virtwire.auth import Authenticator
from virtwire.config import load_settings
from virtwire.testing import free_port
from websockets.asyncio.client import connect

HERE = Path(__file__).parent
BIN = Path(sys.executable).parent
SECRET = "bench-vnc-secret-0123456789abcdef"
CHUNK = 256 * 1024
BURST = int(os.environ.get("BENCH_VNC_MB", "512")) * 1024 * 1024
ROUNDS = 3
SESSIONS = 200


# -- the TCP source: an RFB server ------------------------------------------------------
async def source_main(port: int) -> None:
    payload = os.urandom(CHUNK)
    init = rfb.ServerInit(1024, 768, rfb.BGRX, "bench")

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(rfb.VERSION_38)
            await reader.readexactly(12)
            writer.write(bytes([1, rfb.SEC_NONE]))
            await reader.readexactly(1)
            writer.write(b"\0\0\0\0")
            await reader.readexactly(1)
            writer.write(init.pack())
            while True:
                kind = (await reader.readexactly(1))[0]
                if kind == 3:  # FramebufferUpdateRequest: the burst
                    await reader.readexactly(9)
                    sent = 0
                    while sent < BURST:
                        writer.write(payload)
                        await writer.drain()
                        sent += CHUNK
                elif kind == 2:
                    count = int.from_bytes((await reader.readexactly(3))[1:3], "big")
                    await reader.readexactly(4 * count)
                else:
                    await reader.readexactly({0: 19, 4: 7, 5: 5}.get(kind, 0))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


# -- the bare base64-in-JSON relay --------------------------------------------------------
def bare_app(source_port: int) -> object:
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect
    from virtwire.consoles import SocketStream

    encoder = msgspec.json.Encoder()

    async def relay(ws: WebSocket) -> None:
        await ws.accept()
        stream = await SocketStream.connect("127.0.0.1", source_port)
        _, reader = await rfb.client_handshake(stream, None)

        async def down() -> None:
            chunk = reader.take_buffered()
            while True:
                if chunk:
                    frame = {
                        "type": "vnc-data",
                        "data": {"vmId": "bench", "data": base64.b64encode(chunk).decode()},
                    }
                    await ws.send_text(encoder.encode(frame).decode())
                chunk = await stream.read()
                if not chunk:
                    return

        task = asyncio.create_task(down())
        try:
            while True:
                message = json.loads(await ws.receive_text())
                await stream.write(base64.b64decode(message["data"]["data"]))
        except WebSocketDisconnect:
            pass
        finally:
            task.cancel()
            await stream.close()

    return Starlette(routes=[WebSocketRoute("/ws", relay)])


def bare_main(port: int, source_port: int) -> None:
    bare_server(bare_app(source_port), port, ws_max_size=2 * 1024 * 1024).run()


def gateway_config(tmp: Path, port: int, source_port: int) -> Path:
    node = tmp / "node.xml"
    node.write_text(
        "<node><domain type='test'><name>bench</name><memory>65536</memory>"
        "<os><type>hvm</type></os><devices>"
        f"<graphics type='vnc' port='{source_port}' listen='127.0.0.1'/>"
        "</devices></domain></node>"
    )
    config = tmp / "virtwire.toml"
    config.write_text(
        f"""[server]
port = {port}
access_log = false
log_level = "warning"
max_connections_per_address = 2000
[auth]
secret = "{SECRET}"
[consoles]
max_per_connection = 4
max_per_user = 0
[plugins]
enabled = ["libvirt"]
[plugins.libvirt]
uri = "test://{node}"
"""
    )
    return config


# -- measuring --------------------------------------------------------------------------
class WsStream:
    """A client WebSocket as a ByteStream, for the RFB handshake."""

    def __init__(self, ws: object) -> None:
        self.ws = ws

    async def read(self) -> bytes:
        data = await self.ws.recv()  # type: ignore[attr-defined]
        return data if isinstance(data, bytes) else data.encode()

    async def write(self, data: bytes) -> None:
        await self.ws.send(data)  # type: ignore[attr-defined]

    async def close(self) -> None:
        await self.ws.close()  # type: ignore[attr-defined]


async def count_binary(url: str, **kwargs: object) -> float:
    """MB/s of one burst read through a binary RFB WebSocket at ``url``."""
    async with connect(url, max_size=None, **kwargs) as ws:  # type: ignore[arg-type]
        stream = WsStream(ws)
        _, reader = await rfb.client_handshake(stream, None)
        got = len(reader.take_buffered())
        start = time.perf_counter()
        await ws.send(rfb.update_request(False, 0, 0, 1024, 768))
        while got < BURST:
            got += len(await ws.recv())
        return BURST / (time.perf_counter() - start) / 1e6


async def count_json(ws: object, request: str) -> float:
    """MB/s of decoded bytes of one burst arriving as base64 vnc-data frames on ``ws``."""
    decoder = msgspec.json.Decoder()
    start = time.perf_counter()
    await ws.send(request)  # type: ignore[attr-defined]
    got = 0
    while got < BURST:
        frame = decoder.decode(await ws.recv())  # type: ignore[attr-defined]
        if frame.get("type") == "vnc-data":
            got += len(base64.b64decode(frame["data"]["data"]))
    return BURST / (time.perf_counter() - start) / 1e6


def fbur_frame() -> str:
    data = base64.b64encode(rfb.update_request(False, 0, 0, 1024, 768)).decode()
    return json.dumps({"type": "vnc-data", "data": {"vmId": "bench", "data": data}})


async def main() -> None:
    token = Authenticator(load_settings(data={"auth": {"secret": SECRET}})).mint("bench", ttl=3600)
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        source_port, gw_port, wsk_port, bare_port = (free_port() for _ in range(4))
        source = ServerProc([sys.executable, __file__, "source", str(source_port)], source_port)
        servers = [source]
        await source.ready()
        config = gateway_config(tmp, gw_port, source_port)
        gateway = ServerProc([str(BIN / "virtwire"), "serve", "--config", str(config)], gw_port)
        websockify = ServerProc(
            [str(BIN / "websockify"), str(wsk_port), f"127.0.0.1:{source_port}"], wsk_port
        )
        bare = ServerProc(
            [sys.executable, __file__, "bare", str(bare_port), str(source_port)], bare_port
        )
        servers += [gateway, websockify, bare]
        try:
            for server in (gateway, websockify, bare):
                await server.ready()
            ws_url = f"ws://127.0.0.1:{gw_port}/ws?token={token}"
            print(f"VNC relay, {BURST >> 20} MiB bursts, median of {ROUNDS} rounds")

            async def ticket_url() -> tuple[object, str]:
                ws = await connect(ws_url, max_size=None)
                await ws.send(
                    json.dumps({"type": "vnc-connect", "data": {"vmId": "bench"}, "id": 1})
                )
                reply = json.loads(await ws.recv())
                assert reply["type"] == "vnc-connect-response", reply
                return ws, f"ws://127.0.0.1:{gw_port}{reply['data']['url']}"

            binary, wsk = [], []
            for _ in range(ROUNDS):
                control, url = await ticket_url()
                binary.append(await count_binary(url))
                await control.close()  # type: ignore[attr-defined]
                wsk.append(
                    await count_binary(f"ws://127.0.0.1:{wsk_port}/", subprotocols=["binary"])
                )
            b, w = statistics.median(binary), statistics.median(wsk)
            print(f"  binary endpoint /ws/vnc/{{ticket}}: {b:8.0f} MB/s")
            print(f"  websockify (same source):    {w:8.0f} MB/s   ratio {b / w:.2f}x (goal >= 1)")

            gw_json, bare_json = [], []
            for _ in range(ROUNDS):
                async with connect(ws_url, max_size=None) as ws:
                    await ws.send(
                        json.dumps({"type": "vnc-connect", "data": {"vmId": "bench"}, "id": 1})
                    )
                    json.loads(await ws.recv())
                    gw_json.append(await count_json(ws, fbur_frame()))
                async with connect(f"ws://127.0.0.1:{bare_port}/ws", max_size=None) as ws:
                    bare_json.append(await count_json(ws, fbur_frame()))
            g, r = statistics.median(gw_json), statistics.median(bare_json)
            print(f"  vnc-data (base64 in JSON) on /ws: {g:8.0f} MB/s")
            print(f"  bare base64-JSON relay:     {r:8.0f} MB/s   ratio {g / r:.2f}x (goal >= 1)")

            base = gateway.rss()
            idle = [await connect(ws_url) for _ in range(SESSIONS)]
            await asyncio.sleep(0.5)
            after_idle = gateway.rss()
            consoles = [await connect(ws_url) for _ in range(SESSIONS)]
            for ws in consoles:
                await ws.send(
                    json.dumps({"type": "vnc-connect", "data": {"vmId": "bench"}, "id": 1})
                )
            for ws in consoles:
                reply = json.loads(await ws.recv())
                assert reply["type"] == "vnc-connect-response", reply
            await asyncio.sleep(0.5)
            after_consoles = gateway.rss()
            per_idle = (after_idle - base) / SESSIONS / 1024
            per_console = (after_consoles - after_idle) / SESSIONS / 1024
            print(f"  memory per /ws connection with an open VNC console: {per_console:6.1f} KiB")
            print(f"  memory per idle /ws connection (same run):          {per_idle:6.1f} KiB")
            for ws in idle + consoles:
                await ws.close()
        finally:
            for server in servers:
                server.stop()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "source":
        asyncio.run(source_main(int(sys.argv[2])))
    elif len(sys.argv) > 1 and sys.argv[1] == "bare":
        bare_main(int(sys.argv[2]), int(sys.argv[3]))
    else:
        asyncio.run(main())
