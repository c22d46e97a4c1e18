"""Consoles of Proxmox VMs: VNC through vncproxy/vncwebsocket onto a real QEMU VNC server
(VNC authentication with the generated password), terminals through termproxy onto a real
shell."""

from __future__ import annotations

import asyncio

import pytest
import websockets
from pve_fixtures import TOKEN_SECRET
from pve_helpers import backend_of, proxmox_server
from pve_standin import Cluster, Display, StandIn, parse_term_messages
from virtwire import rfb
from virtwire.consoles import ConsoleTransport, find_transport
from virtwire_proxmox.termproxy import input_message, resize_message


def transport_of(server: object, vm_id: str, kind: str) -> ConsoleTransport:
    transport = find_transport(server.gateway.consoles, vm_id, kind)  # type: ignore[attr-defined]
    assert transport is not None and transport.name == "proxmox"
    return transport


async def test_vnc_stream_is_the_vms_display_behind_vnc_authentication(
    standin: StandIn, cluster: Cluster, qemu_display: Display
) -> None:
    cluster.vms[100].display = qemu_display
    async with proxmox_server(standin) as server:
        transport = transport_of(server, "pve:100", "vnc")
        target = await transport.open_vnc("pve:100")
        assert target.password and len(target.password) == 8  # generate-password=1
        assert target.password not in repr(target)
        init, reader = await rfb.client_handshake(target.stream, target.password)
        assert init.width > 0 and init.height > 0
        # the stream carries RFB both ways: ask for the screen, get it
        await target.stream.write(rfb.set_pixel_format(rfb.BGRX))
        await target.stream.write(rfb.set_encodings([rfb.ENC_RAW]))
        await target.stream.write(rfb.update_request(False, 0, 0, init.width, init.height))
        fb = rfb.Framebuffer(init.width, init.height)
        kind = await asyncio.wait_for(rfb.read_server_message(reader, fb), 10)
        assert kind == 0  # FramebufferUpdate
        await target.stream.close()
        # each vncproxy sets a fresh password: an old one no longer opens the display
        again = await transport.open_vnc("pve:100")
        assert again.password != target.password
        with pytest.raises(rfb.AuthFailed):
            await rfb.client_handshake(again.stream, target.password)
        await again.stream.close()


async def test_vnc_refusals(standin: StandIn, cluster: Cluster, qemu_display: Display) -> None:
    cluster.vms[101].display = qemu_display
    async with proxmox_server(standin) as server:
        transport = transport_of(server, "pve:101", "vnc")
        with pytest.raises(Exception) as stopped:
            await transport.open_vnc("pve:101")
        assert getattr(stopped.value, "code", None) == "VNC_NOT_READY"
        assert find_transport(server.gateway.consoles, "test", "vnc") is None  # not ours
    token = {"password": None, "token_name": "virtwire", "token_value": TOKEN_SECRET}
    async with proxmox_server(standin, **token) as server:
        transport = transport_of(server, "pve:100", "vnc")
        with pytest.raises(Exception) as refused:
            await transport.open_vnc("pve:100")
        assert getattr(refused.value, "code", None) == "CONSOLE_UNAVAILABLE"
        assert "API token" in str(refused.value)


async def output_until(client: object, text: str, timeout: float = 10.0) -> str:
    seen = ""

    async def collect() -> str:
        nonlocal seen
        while text not in seen:
            frame = await client.expect("terminal-output")  # type: ignore[attr-defined]
            seen += frame["data"]["output"]
        return seen

    return await asyncio.wait_for(collect(), timeout)


@pytest.mark.parametrize("kind", ["proxmox", "serial"])
async def test_terminal_through_termproxy(standin: StandIn, cluster: Cluster, kind: str) -> None:
    async with proxmox_server(standin) as server, server.client() as client:
        reply = await client.request(
            "terminal-connect", {"vmId": "pve:100", "type": kind, "cols": 90, "rows": 20}
        )
        assert reply["type"] == "terminal-connect-response", reply
        assert reply["data"]["type"] == kind
        await client.request("terminal-input", {"vmId": "pve:100", "input": "stty size\n"})
        await output_until(client, "20 90")  # the size was set through 1:cols:rows:
        await client.request("terminal-resize", {"vmId": "pve:100", "cols": 132, "rows": 43})
        await client.request(
            "terminal-input", {"vmId": "pve:100", "input": "echo ünï-$((6*7)); stty size\n"}
        )
        out = await output_until(client, "43 132")
        assert "ünï-42" in out  # input framed by UTF-8 byte length
        # the xterm.js endpoint types into the same terminal
        async with websockets.connect(server.ws_url(reply["data"]["url"])) as xterm:
            await xterm.send("echo from-xterm-$((2+3))\n")
            seen = ""
            while "from-xterm-5" not in seen:
                seen += str(await asyncio.wait_for(xterm.recv(), 10))
        done = await client.request("terminal-disconnect", {"vmId": "pve:100"})
        assert done["type"] == "terminal-disconnect-response"
        closed = await client.expect("terminal-closed")
        assert closed["data"]["reason"] == "client-disconnect"


async def test_terminal_ends_when_the_shell_exits(standin: StandIn) -> None:
    async with proxmox_server(standin) as server, server.client() as client:
        await client.request("terminal-connect", {"vmId": "pve:100", "type": "proxmox"})
        await client.request("terminal-input", {"vmId": "pve:100", "input": "exit\n"})
        closed = await client.expect("terminal-closed")
        assert closed["data"]["reason"] == "exited"


async def test_terminal_refusals(standin: StandIn, cluster: Cluster) -> None:
    async with proxmox_server(standin) as server, server.client() as client:
        stopped = await client.request("terminal-connect", {"vmId": "pve:101", "type": "proxmox"})
        assert stopped["data"]["code"] == "CONSOLE_UNAVAILABLE"
        bad = await client.request(
            "terminal-connect",
            {"vmId": "pve:100", "type": "proxmox", "credentials": {"serial": "serial9"}},
        )
        assert bad["data"]["code"] == "INVALID_MESSAGE"
        assert backend_of(server).state.value == "up"


def test_termproxy_framing() -> None:
    # what the plugin sends is what termproxy parses, byte lengths for UTF-8 included
    buffer = bytearray(input_message("ü\n".encode()) + resize_message(80, 24) + b"2")
    assert parse_term_messages(buffer) == [
        ("data", "ü\n".encode()),
        ("resize", (80, 24)),
        ("ping", None),
    ]
    assert buffer == b""
