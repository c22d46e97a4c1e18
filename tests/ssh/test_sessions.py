"""Terminal sessions that outlive their WebSocket: reattach with the scrollback, expiry after
``detach_timeout``, observers and writers, several terminals on one connection, the xterm.js
endpoint (``/ws/terminal/{ticket}``). Real gateway, asyncssh's SSH server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import virtwire_ssh
from sshkit import asyncssh_server, read_until
from virtwire.testing import Client, RunningServer, run_server
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

ALICE = {"username": "alice", "password": "correct horse"}


@contextlib.asynccontextmanager
async def gateway(tmp_path: Path, **terminal: Any) -> AsyncIterator[RunningServer]:
    async with asyncssh_server() as (port, _key):
        config: dict[str, Any] = {
            "plugins": {
                "ssh": {
                    "host_template": f"127.0.0.1:{port}",
                    "known_hosts": str(tmp_path / "known_hosts"),
                    "backend_addresses": False,
                }
            },
            "terminal": terminal,
        }
        async with run_server(plugins=[("ssh", virtwire_ssh)], config=config) as server:
            yield server


async def open_terminal(client: Client, vm: str = "vm-1", **extra: Any) -> dict[str, Any]:
    reply = await client.request(
        "terminal-connect", {"vmId": vm, "type": "ssh", "credentials": ALICE, **extra}
    )
    assert reply["type"] == "terminal-connect-response", reply
    data: dict[str, Any] = reply["data"]
    return data


def kill(client: Client) -> None:
    """Drop the TCP connection without a close frame (a crashed tab, a lost network)."""
    client.ws.transport.abort()


async def test_reattach_after_the_websocket_is_killed(tmp_path: Path) -> None:
    async with gateway(tmp_path) as server:
        token = server.token("alice")
        async with server.client(token) as first:
            sid = (await open_terminal(first))["sessionId"]
            await read_until(first, "welcome alice")
            await first.request("terminal-input", {"vmId": "vm-1", "input": "before reload\r"})
            await read_until(first, "before reload")
            kill(first)
        async with server.client(token) as second:
            reply = await second.request("terminal-connect", {"vmId": "vm-1", "sessionId": sid})
            assert reply["type"] == "terminal-connect-response", reply
            assert reply["data"]["sessionId"] == sid and reply["data"]["mode"] == "owner"
            replayed = await read_until(second, "before reload")
            assert replayed.startswith("welcome alice")  # the scrollback, from the start
            # the same shell is still alive
            await second.request("terminal-input", {"vmId": "vm-1", "input": "after reload\r"})
            await read_until(second, "after reload")
            # another user cannot take it over
        async with server.client(server.token("mallory", ["console"])) as other:
            reply = await other.request("terminal-connect", {"vmId": "vm-1", "sessionId": sid})
            assert reply["data"]["code"] == "FORBIDDEN"


async def test_detached_session_expires(tmp_path: Path) -> None:
    async with gateway(tmp_path, detach_timeout=0.3) as server:
        ended = asyncio.Event()
        server.gateway.terminals.on_end.append(lambda _t: ended.set())
        token = server.token("alice")
        async with server.client(token) as first:
            sid = (await open_terminal(first))["sessionId"]
            kill(first)
        await asyncio.wait_for(ended.wait(), 10)
        assert sid not in server.gateway.terminals.terminals
        async with server.client(token) as second:
            reply = await second.request("terminal-connect", {"vmId": "vm-1", "sessionId": sid})
            assert reply["data"]["code"] == "TERMINAL_CLOSED"
            assert reply["data"]["details"] == {"sessionId": sid, "reason": "detach-timeout"}
            reply = await second.request(
                "terminal-connect", {"vmId": "vm-1", "sessionId": "no-such-session"}
            )
            assert reply["data"]["code"] == "TERMINAL_NOT_FOUND"


async def test_observers_and_writers(tmp_path: Path) -> None:
    async with gateway(tmp_path) as server:
        async with (
            server.client(server.token("alice")) as owner,
            server.client(server.token("bob", ["console", "console:share"])) as bob,
            server.client(server.token("eve", ["console"])) as eve,
        ):
            sid = (await open_terminal(owner))["sessionId"]
            await read_until(owner, "welcome alice")
            reply = await eve.request("terminal-connect", {"vmId": "vm-1", "sessionId": sid})
            assert reply["data"]["code"] == "FORBIDDEN"  # no console:share
            joined = await bob.request("terminal-connect", {"vmId": "vm-1", "sessionId": sid})
            assert joined["data"]["mode"] == "observer"
            await read_until(bob, "welcome alice")  # the scrollback
            await owner.request("terminal-input", {"vmId": "vm-1", "input": "from owner\r"})
            await read_until(bob, "from owner")  # the observer sees live output
            refused = await bob.request("terminal-input", {"vmId": "vm-1", "input": "x"})
            assert refused["data"]["code"] == "FORBIDDEN"
            refused = await bob.request("terminal-share", {"vmId": "vm-1", "writers": True})
            assert refused["data"]["code"] == "FORBIDDEN"  # only the owner shares
            shared = await owner.request("terminal-share", {"vmId": "vm-1", "writers": True})
            assert shared["data"] == {"vmId": "vm-1", "sessionId": sid, "writers": True}
            rejoined = await bob.request(
                "terminal-connect", {"vmId": "vm-1", "sessionId": sid, "mode": "writer"}
            )
            assert rejoined["data"]["mode"] == "writer"
            await bob.request("terminal-input", {"vmId": "vm-1", "input": "from bob\r"})
            await read_until(owner, "from bob")
            # the observer leaves; the owner keeps the terminal
            left = await bob.request("terminal-disconnect", {"vmId": "vm-1"})
            assert left["type"] == "terminal-disconnect-response"
            await owner.request("terminal-input", {"vmId": "vm-1", "input": "still here\r"})
            await read_until(owner, "still here")
            # the owner's disconnect ends it for everyone
            await owner.request("terminal-disconnect", {"vmId": "vm-1", "sessionId": sid})
            closed = await owner.expect("terminal-closed")
            assert closed["data"]["reason"] == "client-disconnect"


async def test_output_is_decoded_as_utf8_across_reads(tmp_path: Path) -> None:
    async with gateway(tmp_path) as server, server.client(server.token("alice")) as client:
        await open_terminal(client)
        await client.request("terminal-input", {"vmId": "vm-1", "input": "utf8\r"})
        seen = await read_until(client, "!")
        assert "<世>\ufffd!" in seen  # whole across the split; the bad byte is U+FFFD


async def test_observer_ticket_is_read_only(tmp_path: Path) -> None:
    async with gateway(tmp_path) as server:
        async with (
            server.client(server.token("alice")) as owner,
            server.client(server.token("bob", ["console", "console:share"])) as bob,
        ):
            sid = (await open_terminal(owner))["sessionId"]
            joined = await bob.request(
                "terminal-connect", {"vmId": "vm-1", "sessionId": sid, "output": False}
            )
            assert joined["data"]["mode"] == "observer"
            async with connect(server.ws_url(joined["data"]["url"])) as raw:
                seen = ""
                while "welcome alice" not in seen:
                    seen += await asyncio.wait_for(raw.recv(), 10)
                await raw.send("typed by bob\r")  # ignored: an observer
                await owner.request("terminal-input", {"vmId": "vm-1", "input": "by alice\r"})
                while "by alice" not in seen:
                    seen += await asyncio.wait_for(raw.recv(), 10)
                assert "typed by bob" not in seen


async def test_several_terminals_on_one_connection(tmp_path: Path) -> None:
    async with gateway(tmp_path) as server, server.client(server.token("alice")) as client:
        one = (await open_terminal(client))["sessionId"]
        two = (await open_terminal(client))["sessionId"]
        other_vm = (await open_terminal(client, "vm-2"))["sessionId"]
        assert len({one, two, other_vm}) == 3
        ambiguous = await client.request("terminal-input", {"vmId": "vm-1", "input": "x"})
        assert ambiguous["data"]["code"] == "INVALID_MESSAGE"
        assert ambiguous["data"]["details"]["field"] == "data.sessionId"
        await client.request("terminal-input", {"sessionId": two, "input": "to two\r"})
        await read_until(client, "to two", session_id=two)
        await client.request("terminal-input", {"vmId": "vm-2", "input": "to vm2\r"})
        await read_until(client, "to vm2", session_id=other_vm)


async def test_xterm_endpoint_with_a_ticket(tmp_path: Path) -> None:
    async with gateway(tmp_path) as server, server.client(server.token("alice")) as client:
        data = await open_terminal(client, cols=90, rows=20)
        url = server.ws_url(data["url"]) + "?cols=132&rows=43"
        async with connect(url) as raw:
            seen = ""
            while "welcome alice" not in seen:  # the scrollback first
                seen += await asyncio.wait_for(raw.recv(), 10)
            await raw.send("size\r")  # keystrokes as @xterm/addon-attach sends them
            while "43 132" not in seen:  # ?cols=&rows= resized it
                frame = await asyncio.wait_for(raw.recv(), 10)
                assert isinstance(frame, str)  # text frames the addon writes unchanged
                seen += frame
            # the /ws viewer sees the same output
            await read_until(client, "43 132")
            await raw.send("exit 5\r")
            with contextlib.suppress(ConnectionClosed):
                while True:
                    await asyncio.wait_for(raw.recv(), 10)
            assert raw.close_code == 1000 and "exit status 5" in (raw.close_reason or "")
        # one use only
        async with connect(server.ws_url(data["url"])) as again:
            with contextlib.suppress(ConnectionClosed):
                await asyncio.wait_for(again.recv(), 10)
            assert again.close_code == 1008
            assert (again.close_reason or "").startswith("TICKET_USED")


async def test_xterm_socket_closes_when_the_token_expires(tmp_path: Path) -> None:
    async with gateway(tmp_path) as server:
        token = server.token("alice", ttl=2)
        async with server.client(token) as client:
            data = await open_terminal(client)
            async with connect(server.ws_url(data["url"])) as raw:
                with contextlib.suppress(ConnectionClosed):
                    while True:  # output until the token's expiry closes it
                        await asyncio.wait_for(raw.recv(), 10)
                assert raw.close_code == 4001
                assert raw.close_reason == "TOKEN_EXPIRED"
        # the terminal itself waits, detached, for a reattach with a fresh token
        assert len(server.gateway.terminals) == 1
