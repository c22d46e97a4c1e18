"""VNC consoles through the libvirt plugin's transport, end to end: libvirt's test driver
describes a domain whose VNC server is a real QEMU running the test guest (guest/guest.S), with
and without a VNC password. The same transport against a real libvirtd is in
test_libvirt_qemu_vnc.py."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from lv_helpers import PLUGIN
from lv_vnc import Guest, qemu_guest
from pngkit import pixel, png_pixels
from qemu_vnc import stop
from virtwire import rfb
from virtwire.testing import RunningServer, run_server
from vnc_client import VncDataStream, WsStream, b64, error_of, vnc_bytes
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

VM = "vnc-vm"
HERE = Path(__file__).parent


@pytest.fixture(params=[None, "pw-1234"], ids=["no-password", "password"])
def guest(
    request: pytest.FixtureRequest, guest_images: dict[str, Path], tmp_path: Path
) -> Iterator[Guest]:
    with qemu_guest(guest_images["idle"], tmp_path, password=request.param) as g:
        yield g


@contextlib.asynccontextmanager
async def gateway(guest: Guest, **consoles: Any) -> AsyncIterator[RunningServer]:
    config = {
        "server": {"locale": "en"},
        "consoles": consoles,
        "plugins": {"libvirt": {"uri": guest.uri}},
    }
    async with run_server(plugins=[PLUGIN], config=config) as server:
        yield server


async def test_connect_type_screenshot_and_rfb_round_trip(guest: Guest) -> None:
    await guest.wait_serial("virtwire test guest")
    async with gateway(guest) as server, server.client() as client:
        reply = await client.request("vnc-connect", {"vmId": VM})
        assert reply["type"] == "vnc-connect-response", reply
        data = reply["data"]
        assert (data["vmId"], data["width"], data["height"], data["name"]) == (
            VM,
            720,
            400,
            "QEMU",
        )
        assert data["pixelFormat"]["bitsPerPixel"] == 32 and data["pixelFormat"]["trueColour"]
        assert data["url"] == f"/ws/vnc/{data['ticket']}" and 29 <= data["expiresIn"] <= 30
        assert "password" not in str(reply)
        assert guest.password is None or guest.password not in str(reply)

        # vnc-input: text, as a client that speaks no RFB at all
        reply = await client.request(
            "vnc-input", {"vmId": VM, "inputType": "text", "text": "Hello, VNC!\n"}
        )
        assert reply["data"] == {"vmId": VM, "events": 2 * 12 + 2 * 5}  # 5 chars need Shift
        await guest.wait_serial("Hello, VNC!\r")
        reply = await client.request(
            "vnc-input", {"vmId": VM, "inputType": "keyboard", "key": "Enter", "down": True}
        )
        assert reply["data"]["events"] == 1
        await client.request("vnc-input", {"vmId": VM, "inputType": "keyboard", "keysym": 0xFF0D})
        reply = await client.request(
            "vnc-input", {"vmId": VM, "inputType": "mouse", "x": 100, "y": 200, "buttons": 1}
        )
        assert reply["data"]["events"] == 1

        # vnc-screenshot: the guest's screen, banner (white on blue) and the typed text
        reply = await client.request("vnc-screenshot", {"vmId": VM})
        shot = reply["data"]
        assert (shot["vmId"], shot["width"], shot["height"], shot["format"]) == (
            VM,
            720,
            400,
            "png",
        )
        width, height, raw = png_pixels(base64.b64decode(shot["image"]))
        assert (width, height) == (720, 400)
        assert pixel(width, raw, 700, 8) == (0, 0, 168)  # the banner row is blue to the edge
        assert pixel(width, raw, 700, 300) == (0, 0, 0)

        # vnc-data: the client's own RFB messages and the server's answers, both ways; an
        # input event sent between the two halves of a message waits for its end
        request = rfb.set_encodings([rfb.ENC_RAW]) + rfb.update_request(False, 0, 0, 16, 16)
        half = len(request) - 5
        reply = await client.request("vnc-data", {"vmId": VM, "data": b64(request[:half])})
        assert reply["data"] == {"vmId": VM, "bytes": half}
        await client.request(
            "vnc-input", {"vmId": VM, "inputType": "keyboard", "key": "z"}
        )  # held back: the server sees a whole FramebufferUpdateRequest first
        await client.request("vnc-data", {"vmId": VM, "data": b64(request[half:])})
        # the server's FramebufferUpdate, in Raw as asked, in its own pixel format (the one
        # vnc-connect-response announced: QEMU's is BGRX)
        fb = rfb.Framebuffer(720, 400)
        assert await rfb.read_server_message(rfb.Reader(VncDataStream(client, VM)), fb) == 0
        assert fb.pixels[:4] == bytes([168, 0, 0, 0])
        await guest.wait_serial("\r\rz")  # Enter (press/release) twice, then z

        reply = await client.request("vnc-disconnect", {"vmId": VM})
        assert reply["data"] == {"vmId": VM}
        reply = await client.request("vnc-input", {"vmId": VM, "inputType": "text", "text": "x"})
        assert error_of(reply) == "VNC_NOT_READY"


async def test_the_document_example_order_and_bad_input(guest: Guest) -> None:
    await guest.wait_serial("virtwire test guest")
    async with gateway(guest) as server, server.client() as client:
        await client.request("vnc-connect", {"vmId": VM})
        for data, field in [
            ({"inputType": "keyboard", "key": "NoSuchKey"}, "data.key"),
            ({"inputType": "keyboard"}, "data.key"),
            ({"inputType": "mouse", "x": 1}, "data.y"),
            ({"inputType": "gesture"}, "data.inputType"),
            ({"inputType": "text", "text": ""}, "data.text"),
        ]:
            reply = await client.request("vnc-input", {"vmId": VM, **data})
            assert error_of(reply) == "INVALID_MESSAGE"
            assert reply["data"]["details"]["field"] == field
        reply = await client.request("vnc-data", {"vmId": VM, "data": "not base64!"})
        assert error_of(reply) == "INVALID_MESSAGE"
        reply = await client.request("vnc-data", {"vmId": VM, "data": b64(b"\x07junk")})
        assert error_of(reply) == "INVALID_MESSAGE"
        assert "unknown client message type 7" in reply["data"]["message"]
        # the stream is still usable: nothing of the bad message reached the server
        await client.request(
            "vnc-data", {"vmId": VM, "data": b64(rfb.update_request(False, 0, 0, 8, 8))}
        )
        update = await vnc_bytes(client, VM, 4)
        assert update[0] == 0
        await client.request("vnc-input", {"vmId": VM, "inputType": "text", "text": "ok"})
        await guest.wait_serial("ok")


async def test_refusals(guest: Guest) -> None:
    async with gateway(guest, max_per_connection=1, max_per_user=2) as server:
        async with server.client(server.token("ro", ["vm:read"])) as client:
            reply = await client.request("vnc-connect", {"vmId": VM})
            assert error_of(reply) == "FORBIDDEN" and "console" in reply["data"]["message"]
        async with server.client(server.token("limited", vms=["web-*"])) as client:
            reply = await client.request("vnc-connect", {"vmId": VM})
            assert error_of(reply) == "FORBIDDEN"
        async with server.client() as client:
            reply = await client.request("vnc-connect", {"vmId": "novnc-vm"})
            assert error_of(reply) == "CONSOLE_UNAVAILABLE"
            assert "test driver has no graphics" in reply["data"]["message"]
            reply = await client.request("vnc-connect", {"vmId": "nope"})
            assert error_of(reply) == "VM_NOT_FOUND"
            reply = await client.request(
                "vnc-input", {"vmId": VM, "inputType": "text", "text": "a"}
            )
            assert error_of(reply) == "VNC_NOT_READY"
            first = await client.request("vnc-connect", {"vmId": VM})
            again = await client.request("vnc-connect", {"vmId": VM})  # the same console
            assert again["data"]["ticket"] != first["data"]["ticket"]
            reply = await client.request("vnc-connect", {"vmId": "novnc-vm"})
            assert error_of(reply) == "RATE_LIMITED"
            assert reply["data"]["details"] == {"limit": 1, "per": "connection"}
            async with server.client() as second:
                assert (await second.request("vnc-connect", {"vmId": VM}))["type"] == (
                    "vnc-connect-response"
                )
                async with server.client() as third:  # same user: 2 consoles already
                    reply = await third.request("vnc-connect", {"vmId": VM})
                    assert reply["data"]["details"] == {"limit": 2, "per": "user"}
            # the second connection closed: its console and its place are gone
            assert len(server.gateway.console_sessions) == 1


async def rfb_over_ticket(server: RunningServer, url: str, **kwargs: Any) -> rfb.ServerInit:
    async with connect(server.ws_url(url), **kwargs) as ws:
        stream = WsStream(ws)
        init, reader = await rfb.client_handshake(stream, None)
        fb = rfb.Framebuffer(init.width, init.height)
        await stream.write(
            rfb.set_pixel_format(rfb.BGRX)
            + rfb.set_encodings([rfb.ENC_RAW, rfb.ENC_COPYRECT, rfb.ENC_DESKTOP_SIZE])
        )
        await fb.refresh(stream, reader)
        assert fb.pixels[:4] == bytes([168, 0, 0, 0])  # BGRX: the blue banner
        return init


async def test_binary_endpoint_and_ticket_refusals(guest: Guest) -> None:
    await guest.wait_serial("virtwire test guest")
    async with gateway(guest, ticket_ttl=0.2) as server, server.client() as client:
        reply = await client.request("vnc-connect", {"vmId": VM})
        url = reply["data"]["url"]
        # security "None" to the browser; the gateway authenticated to the VM itself
        init = await rfb_over_ticket(server, url, subprotocols=["binary"])
        assert (init.width, init.height, init.name) == (720, 400, "QEMU")

        async def refused(url: str, **kwargs: Any) -> tuple[int, str]:
            async with connect(server.ws_url(url), **kwargs) as ws:
                with pytest.raises(ConnectionClosed):
                    await ws.recv()
                assert ws.close_code is not None
                return ws.close_code, ws.close_reason

        assert await refused(url) == (1008, "TICKET_USED: ticket already used")
        assert (await refused("/ws/vnc/made-up-ticket-value"))[1].startswith("TICKET_UNKNOWN")
        ticket = (await client.request("vnc-connect", {"vmId": VM}))["data"]
        await asyncio.sleep(ticket["expiresIn"] + 0.05)  # let its time run out
        assert await refused(ticket["url"]) == (1008, "TICKET_EXPIRED: ticket expired")
        ticket = (await client.request("vnc-connect", {"vmId": VM}))["data"]
        code, reason = await refused(ticket["url"] + "?token=" + server.token("mallory"))
        assert (code, reason) == (1008, "TICKET_FORBIDDEN: ticket belongs to another user")
        ticket = (await client.request("vnc-connect", {"vmId": VM}))["data"]
        with pytest.raises(InvalidStatus) as exc:
            async with connect(server.ws_url(ticket["url"]), origin="https://evil.example"):
                pass
        assert exc.value.response.status_code == 403
        # no subprotocol offered (noVNC's default): none chosen, the handshake works
        async with connect(server.ws_url(ticket["url"])) as ws:
            assert ws.subprotocol is None
            init, _ = await rfb.client_handshake(WsStream(ws), None)
            assert init.width == 720
            await client.request("vnc-disconnect", {"vmId": VM})  # ends the browser's too
            with pytest.raises(ConnectionClosed):
                while True:
                    await ws.recv()
            assert ws.close_code == 1000
        # the audit stream: every redemption with its outcome, the console's open and close
        redeemed = await server.audit_records("ticket-redeem", count=6)
        assert [(r.get("user"), r["outcome"]) for r in redeemed] == [
            ("tester", "ok"),
            (None, "TICKET_USED"),
            (None, "TICKET_UNKNOWN"),
            (None, "TICKET_EXPIRED"),
            ("mallory", "TICKET_FORBIDDEN"),
            ("tester", "ok"),
        ]
        assert all(r["kind"] == "vnc" for r in redeemed) and redeemed[0]["vmId"] == VM
        opened = await server.audit_records("console-open", count=4)
        assert len(opened) == 4  # the first connect and the three for a new ticket
        assert all(r["outcome"] == "ok" and r["vmId"] == VM for r in opened)
        (closed,) = await server.audit_records("console-close")
        assert closed["reason"] == "client-disconnect" and closed["user"] == "tester"
        assert len(await server.audit_records("endpoint-close", count=2)) == 2
        path = server.gateway.audit_log.path
        assert path is not None and ticket["ticket"] not in path.read_text()


async def test_vnc_closed_when_the_vnc_server_goes_away(guest: Guest) -> None:
    async with gateway(guest) as server, server.client() as client:
        await client.request("vnc-connect", {"vmId": VM})
        stop(guest.proc)
        frame = await client.expect("vnc-closed")
        # the test driver still calls the domain running: the server went away by itself
        assert frame["data"] == {"vmId": VM, "reason": "vnc-server-closed"}
        assert len(server.gateway.console_sessions) == 0
        reply = await client.request("vnc-connect", {"vmId": VM})
        assert error_of(reply) == "VNC_NOT_READY"


async def test_gateway_shutdown_tells_the_client(guest: Guest) -> None:
    async with gateway(guest) as server, server.client() as client:
        await client.request("vnc-connect", {"vmId": VM})
        server.server.should_exit = True
        frame = await client.expect("vnc-closed")
        assert frame["data"] == {"vmId": VM, "reason": "gateway-shutdown"}


async def test_the_document_js_client_connects_and_types(guest: Guest) -> None:
    node = shutil.which("node")
    assert node, "node is required (make install installs it)"
    await guest.wait_serial("virtwire test guest")
    async with gateway(guest) as server:
        env = {**os.environ, "NODE_PATH": str(HERE.parent / "js" / "node_modules")}
        proc = await asyncio.create_subprocess_exec(
            node,
            str(HERE / "vnc_harness.js"),
            server.ws_url(),
            server.token("js-user"),
            VM,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
        lines = [json.loads(line) for line in stdout.decode().splitlines() if line.strip()]
        assert proc.returncode == 0, (lines, stderr.decode())
        steps = {line["kind"]: line["data"] for line in lines}
        connected = steps["vnc-connect"]
        assert connected["vmId"] == VM and connected["url"].startswith("/ws/vnc/")
        assert (connected["width"], connected["height"]) == (720, 400)
        await guest.wait_serial("from the JS client\r")


async def test_token_expiry_ends_the_console_and_its_browser(guest: Guest) -> None:
    await guest.wait_serial("virtwire test guest")
    async with gateway(guest) as server, server.client(server.token(ttl=2)) as client:
        reply = await client.request("vnc-connect", {"vmId": VM})
        assert reply["data"]["expiresIn"] <= 2  # the ticket never outlives the token
        async with connect(server.ws_url(reply["data"]["url"])) as ws:
            await rfb.client_handshake(WsStream(ws), None)
            closed = await client.expect("vnc-closed", timeout=10)
            assert closed["data"] == {"vmId": VM, "reason": "token-expired"}
            with pytest.raises(ConnectionClosed):
                while True:
                    await ws.recv()
        assert (await client.closed())[0] == 4001
