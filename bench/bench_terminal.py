"""Web terminals: keystroke→echo latency, `cat` throughput and memory per detached session.

Baselines measured in the same run: asyncssh straight to the same OpenSSH sshd (what a
program would do without the gateway) for latency and throughput, and a bare asyncssh client
connection for memory. The gateway runs as its own process (`virtwire serve`); the clients
run in this one. Run: .venv/bin/python bench/bench_terminal.py
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncssh
import msgspec
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "ssh"))
from _kit import ServerProc  # noqa: E402
from sshkit import Sshd, asyncssh_server  # noqa: E402

VIRTWIRE = Path(sys.executable).with_name("virtwire")
KEYSTROKES = 1000
FILE_MB = 32
DETACHED = 100
DONE = re.compile(r"DONE2")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def start_gateway(tmp: Path, hosts: dict[str, str]) -> tuple[ServerProc, str]:
    from virtwire.auth import Authenticator
    from virtwire.config import load_settings
    from virtwire.testing import free_port

    port = free_port()
    config = tmp / "virtwire.toml"
    table = ", ".join(f'"{k}" = "{v}"' for k, v in hosts.items())
    config.write_text(
        f"""[server]
port = {port}
access_log = false
log_level = "warning"

[auth]
secret = "bench-secret-0123456789abcdef-0123456789"

[terminal]
max_sessions_per_user = 1000
detach_timeout = 600

[plugins]
enabled = ["ssh"]

[plugins.ssh]
hosts = {{ {table} }}
known_hosts = "{tmp / "known_hosts"}"
"""
    )
    env = {**os.environ, "VIRTWIRE_STATE_DIR": str(tmp / "state")}
    env.pop("VIRTWIRE_CONFIG", None)
    server = ServerProc(
        [str(VIRTWIRE), "serve", "--config", str(config)], port, env=env, health="/healthz"
    )
    server.wait_ready()
    token = Authenticator(load_settings(config)).mint("bench", ["console"], ttl=3600)
    return server, token


# -- the three clients -----------------------------------------------------------------
class Direct:
    """asyncssh straight to sshd: the baseline."""

    name = "asyncssh direct"

    def __init__(self, sshd: Sshd) -> None:
        self.sshd = sshd

    async def __aenter__(self) -> Direct:
        key = asyncssh.import_private_key(self.sshd.client_key)
        self.conn = await asyncssh.connect(
            "127.0.0.1",
            self.sshd.port,
            username=self.sshd.user,
            client_keys=[key],
            known_hosts=None,
            agent_path=None,
            config=None,
        )
        self.proc = await self.conn.create_process(
            term_type="xterm-256color", term_size=(200, 50), encoding=None
        )
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.proc.close()
        self.conn.close()
        await self.conn.wait_closed()

    async def send(self, text: str) -> None:
        self.proc.stdin.write(text.encode())

    async def recv(self) -> str:
        return (await self.proc.stdout.read(1 << 20)).decode("utf-8", "replace")


class ViaWs:
    """The gateway's /ws: terminal-input / terminal-output JSON frames."""

    name = "virtwire /ws (JSON frames)"

    def __init__(self, port: int, token: str, credentials: dict[str, str]) -> None:
        self.url = f"ws://127.0.0.1:{port}/ws?token={token}"
        self.credentials = credentials

    async def __aenter__(self) -> ViaWs:
        self.ws, self.reply = await terminal_connect(self.url, self.credentials)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.ws.close()

    async def send(self, text: str) -> None:
        await self.ws.send(
            msgspec.json.encode({"type": "terminal-input", "data": {"vmId": "vm", "input": text}})
        )

    async def recv(self) -> str:
        while True:
            frame = msgspec.json.decode(await self.ws.recv())
            if frame["type"] == "terminal-output":
                return str(frame["data"]["output"])


async def terminal_connect(url: str, credentials: dict[str, str], **options: Any) -> Any:
    """A /ws connection with ``terminal-connect`` done (to VM ``vm``, 200x50, ``options``
    added): the connection and the reply's data."""
    ws = await connect(url, max_size=None, compression=None)
    data = {"vmId": "vm", "type": "ssh", "credentials": credentials, "cols": 200, "rows": 50}
    await ws.send(
        msgspec.json.encode(
            {"type": "terminal-connect", "id": 1, "data": {**data, **options}}
        ).decode()
    )
    while True:
        frame = msgspec.json.decode(await ws.recv())
        if frame.get("id") == 1:
            assert frame["type"] == "terminal-connect-response", frame
            return ws, frame["data"]


async def open_ticket(port: int, token: str, credentials: dict[str, str]) -> Any:
    url = f"ws://127.0.0.1:{port}/ws?token={token}"
    control, reply = await terminal_connect(url, credentials, output=False)
    raw = await connect(f"ws://127.0.0.1:{port}{reply['url']}", max_size=None, compression=None)
    return control, raw


class Ticket:
    name = "virtwire /ws/terminal/{ticket} (xterm.js)"

    def __init__(self, port: int, token: str, credentials: dict[str, str]) -> None:
        self.args = (port, token, credentials)

    async def __aenter__(self) -> Ticket:
        self.control, self.raw = await open_ticket(*self.args)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.raw.close()
        await self.control.close()

    async def send(self, text: str) -> None:
        await self.raw.send(text)

    async def recv(self) -> str:
        return str(await self.raw.recv())


# -- measurements ----------------------------------------------------------------------
async def until(client: Any, pattern: re.Pattern[str], timeout: float = 30.0) -> int:
    """Read output until ``pattern`` matches the tail; returns characters read."""
    seen = ""
    total = 0
    async with asyncio.timeout(timeout):
        while True:
            chunk = await client.recv()
            total += len(chunk)
            seen = (seen + chunk)[-256:]
            if pattern.search(seen):
                return total


async def settle(client: Any) -> None:
    await client.send("stty -ixon; PS1='$ '; echo READY$((1+1))\r")
    await until(client, re.compile(r"READY2"))


async def keystroke_latency(client: Any) -> list[float]:
    await settle(client)
    samples = []
    for i in range(KEYSTROKES):
        if i and i % 50 == 0:
            await client.send("\x15")  # Ctrl-U: clear the line (not measured)
            await asyncio.sleep(0.01)
            while True:  # drain the redraw
                try:
                    async with asyncio.timeout(0.02):
                        await client.recv()
                except TimeoutError:
                    break
        start = time.perf_counter()
        await client.send("x")
        while "x" not in await client.recv():
            pass
        samples.append((time.perf_counter() - start) * 1000)
    await client.send("\x15")
    return samples


async def throughput(client: Any, path: Path, size: int) -> float:
    await settle(client)
    start = time.perf_counter()
    await client.send(f"cat {path}; echo DONE$((1+1))\r")
    await until(client, DONE, timeout=120)
    elapsed = time.perf_counter() - start
    return size / elapsed / 1e6


async def detached_memory(tmp: Path) -> tuple[float, float]:
    """KiB per detached terminal in the gateway vs KiB per bare asyncssh client connection
    (each with a PTY shell) in a process of its own. Both are slopes: the RSS growth from
    DETACHED to 3 x DETACHED of them, divided by 2 x DETACHED (memory freed at start-up and
    reused first does not count)."""
    async with asyncssh_server() as (port, _key):
        gateway, token = start_gateway(tmp / "mem", {"vm": f"127.0.0.1:{port}"})
        gport = gateway.port
        try:
            creds = {"username": "alice", "password": "correct horse"}
            filler = "y" * 1000 + "\r"
            marks = []
            for count in (DETACHED, 2 * DETACHED):
                for _ in range(count):
                    ws = ViaWs(gport, token, creds)
                    await ws.__aenter__()
                    for _ in range(64):  # 64 KiB of output: a full scrollback
                        await ws.send(filler)
                    await ws.send("END\r")
                    await until(ws, re.compile(r"END\r\n"))
                    ws.ws.transport.abort()  # a dropped page: the terminal stays, detached
                await asyncio.sleep(1.0)
                marks.append(rss_kib(gateway.proc.pid))
        finally:
            gateway.stop(15)
        baseline = await asyncio.to_thread(bare_client_memory, port)
    return (marks[1] - marks[0]) / (2 * DETACHED), baseline


def bare_client_memory(port: int) -> float:
    code = f"""
import asyncio, asyncssh
def rss():
    for l in open('/proc/self/status'):
        if l.startswith('VmRSS:'): return int(l.split()[1])
async def main():
    async def one():
        c = await asyncssh.connect('127.0.0.1', {port}, username='alice',
            password='correct horse', known_hosts=None, agent_path=None, config=None,
            client_keys=None)
        p = await c.create_process(term_type='xterm', term_size=(200, 50), encoding=None)
        return c, p
    keep = []
    marks = []
    for count in ({DETACHED}, {2 * DETACHED}):
        for _ in range(count):
            keep.append(await one())
        await asyncio.sleep(0.5)
        marks.append(rss())
    print((marks[1] - marks[0]) / {2 * DETACHED})
asyncio.run(main())
"""
    # run in a thread by the caller: its loop serves the asyncssh server meanwhile
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return float(out.stdout.strip())


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        (tmp / "sshd").mkdir()
        sshd = Sshd(tmp / "sshd")
        sshd.prepare()
        sshd.start()
        big = tmp / "big.txt"
        line = ("The quick brown fox jumps over the lazy dog 0123456789 " * 2)[:99] + "\n"
        big.write_text(line * (FILE_MB * 10_000))
        (tmp / "gw").mkdir()
        gateway, token = start_gateway(tmp / "gw", {"vm": sshd.address})
        port = gateway.port
        creds = sshd.credentials()
        try:
            clients = [
                lambda: Direct(sshd),
                lambda: ViaWs(port, token, creds),
                lambda: Ticket(port, token, creds),
            ]
            print(f"keystroke -> echo ({KEYSTROKES} keystrokes at a bash prompt, ms)")
            print(f"  {'path':45} {'p50':>8} {'p99':>8}")
            for make in clients:
                async with make() as client:
                    samples = await keystroke_latency(client)
                print(f"  {client.name:45} {pct(samples, 0.5):8.3f} {pct(samples, 0.99):8.3f}")
            print(f"cat of a {big.stat().st_size / 1e6:.0f} MB text file (MB/s, best of 3)")
            for make in clients:
                best = 0.0
                for _ in range(3):
                    async with make() as client:
                        best = max(best, await throughput(client, big, big.stat().st_size))
                print(f"  {client.name:45} {best:8.1f}")
        finally:
            gateway.stop(15)
            sshd.stop()
        (tmp / "mem").mkdir()
        per_session, per_client = await detached_memory(tmp)
        print(f"memory per detached terminal (64 KiB scrollback each; {3 * DETACHED} in all)")
        print(
            f"  {'bare asyncssh client connection + PTY shell (baseline)':60} {per_client:8.1f} KiB"
        )
        print(f"  {'virtwire detached terminal':60} {per_session:8.1f} KiB")


if __name__ == "__main__":
    asyncio.run(main())
