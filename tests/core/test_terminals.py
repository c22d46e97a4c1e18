"""The core's terminal machinery with a real local shell on a PTY (tests/core/localpty.py):
limits, validation, detach with timeout 0, a second page of the same user, shutdown."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from localpty import LocalShellPlugin
from virtwire.testing import Client, run_server

PLUGINS: list[Any] = [("local", LocalShellPlugin())]
PROMPT = r"\$ $"


async def output_until(client: Client, pattern: str, timeout: float = 20.0) -> str:
    seen = ""
    async with asyncio.timeout(timeout):
        while not re.search(pattern, seen):
            seen += (await client.expect("terminal-output"))["data"]["output"]
    return seen


async def test_shell_round_trip_and_exit_status() -> None:
    async with run_server(plugins=PLUGINS) as server, server.client() as client:
        reply = await client.request("terminal-connect", {"vmId": "here", "type": "local"})
        assert reply["type"] == "terminal-connect-response", reply
        await output_until(client, PROMPT)  # typed-ahead input may be flushed before
        await client.request("terminal-input", {"vmId": "here", "input": "echo $((6*7))\n"})
        await output_until(client, r"[\r\n]42\r\n\$ $")
        await client.request("terminal-input", {"vmId": "here", "input": "exit 4\n"})
        closed = await client.expect("terminal-closed")
        assert closed["data"]["exitStatus"] == 4 and closed["data"]["reason"] == "exited"
        assert len(server.gateway.terminals) == 0


async def test_bad_requests_get_clear_errors() -> None:
    config = {"terminal": {"max_sessions_per_user": 1}}
    async with run_server(plugins=PLUGINS, config=config) as server, server.client() as client:
        reply = await client.request(
            "terminal-connect", {"vmId": "here", "type": "local", "cols": 0}
        )
        assert reply["data"]["code"] == "INVALID_MESSAGE"
        assert reply["data"]["details"]["field"] == "data.cols"
        reply = await client.request("terminal-connect", {"vmId": "here", "type": "vnc"})
        assert reply["data"]["code"] == "CONSOLE_UNAVAILABLE"
        assert reply["data"]["details"]["available"] == ["local"]
        reply = await client.request("terminal-input", {"vmId": "here", "input": "x"})
        assert reply["data"]["code"] == "TERMINAL_NOT_FOUND"
        first = await client.request("terminal-connect", {"vmId": "here", "type": "local"})
        assert first["type"] == "terminal-connect-response"
        reply = await client.request("terminal-connect", {"vmId": "there", "type": "local"})
        assert reply["data"]["code"] == "RATE_LIMITED"
        async with server.client(server.token("nobody", ["vm:read"])) as other:
            reply = await other.request("terminal-connect", {"vmId": "here", "type": "local"})
            assert reply["data"]["code"] == "FORBIDDEN"


async def test_no_detach_timeout_ends_with_the_last_viewer() -> None:
    config = {"terminal": {"detach_timeout": 0}}
    async with run_server(plugins=PLUGINS, config=config) as server:
        ended = asyncio.Event()
        server.gateway.terminals.on_end.append(lambda _t: ended.set())
        async with server.client() as client:
            await client.request("terminal-connect", {"vmId": "here", "type": "local"})
        await asyncio.wait_for(ended.wait(), 10)
        assert len(server.gateway.terminals) == 0


async def test_a_second_page_of_the_same_user_watches_until_the_first_leaves() -> None:
    async with run_server(plugins=PLUGINS) as server:
        token = server.token("alice")
        async with server.client(token) as first, server.client(token) as second:
            sid = (await first.request("terminal-connect", {"vmId": "here", "type": "local"}))[
                "data"
            ]["sessionId"]
            await output_until(first, PROMPT)
            watching = await second.request("terminal-connect", {"vmId": "here", "sessionId": sid})
            assert watching["data"]["mode"] == "observer"  # the first page still holds it
            await first.request("terminal-input", {"vmId": "here", "input": "echo one\n"})
            await output_until(second, r"[\r\n]one\r\n\$ $")
            sessions = list(server.gateway.sessions)
            await first.close()
            waits = [asyncio.ensure_future(s.finished.wait()) for s in sessions]
            await asyncio.wait(waits, timeout=10, return_when=asyncio.FIRST_COMPLETED)
            for wait in waits:
                wait.cancel()
            taken = await second.request("terminal-connect", {"vmId": "here", "sessionId": sid})
            assert taken["data"]["mode"] == "owner"  # now it is this page's
            await second.request("terminal-input", {"vmId": "here", "input": "echo two\n"})
            await output_until(second, r"[\r\n]two\r\n")


async def test_shutdown_closes_terminals_for_their_viewers() -> None:
    async with run_server(plugins=PLUGINS) as server, server.client() as client:
        await client.request("terminal-connect", {"vmId": "here", "type": "local"})
        terminal = next(iter(server.gateway.terminals.terminals.values()))
        process = terminal.term.proc
        await server.gateway.terminals.close_all()
        closed = await client.expect("terminal-closed")
        assert closed["data"]["reason"] == "gateway-shutdown"
        assert process.returncode is not None  # the shell was ended
