"""Real SSH servers for the tests: OpenSSH ``sshd`` (temp config and host key, free port,
stopped by PID) and asyncssh's in-process server (password auth), plus terminal helpers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import re
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from virtwire.testing import Client, free_port

SSHD = "/usr/sbin/sshd"


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited with {proc.returncode}")
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        time.sleep(0.02)
    raise RuntimeError(f"sshd did not listen on {port} within {timeout} s")


@dataclass
class Sshd:
    """OpenSSH's sshd on 127.0.0.1 with its own config, host key and authorized key."""

    workdir: Path
    port: int = 0
    user: str = field(default_factory=lambda: pwd.getpwuid(os.getuid()).pw_name)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def client_key(self) -> str:
        return (self.workdir / "client_key").read_text()

    @property
    def host_key_file(self) -> Path:
        return self.workdir / "host_ed25519"

    def prepare(self) -> None:
        if not os.path.exists(SSHD):
            raise RuntimeError(f"{SSHD} is missing: run `make install` (openssh-server)")
        os.makedirs("/run/sshd", exist_ok=True)  # privilege separation directory
        self.port = self.port or free_port()
        self.new_host_key()
        client = asyncssh.generate_private_key("ssh-ed25519")
        client.write_private_key(str(self.workdir / "client_key"))
        client.write_public_key(str(self.workdir / "authorized_keys"))
        config = self.workdir / "sshd_config"
        config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.host_key_file}\n"
            f"PidFile {self.workdir / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {self.workdir / 'authorized_keys'}\n"
            "UsePAM no\nStrictModes no\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
            "PermitRootLogin prohibit-password\nPrintMotd no\nPrintLastLog no\n"
            "LogLevel ERROR\n"
        )
        subprocess.run([SSHD, "-t", "-f", str(config)], check=True)

    def new_host_key(self) -> None:
        self.host_key_file.unlink(missing_ok=True)
        asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(self.host_key_file))
        os.chmod(self.host_key_file, 0o600)

    def start(self) -> None:
        with open(self.workdir / "sshd.log", "ab") as log:
            self.proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(self.workdir / "sshd_config")],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        _wait_listening(self.port, self.proc)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def credentials(self) -> dict[str, str]:
        return {"username": self.user, "privateKey": self.client_key}


@pytest.fixture(scope="module", name="sshd")
def sshd_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """A real OpenSSH sshd for the whole module: the ``sshd`` fixture of the module or
    conftest.py that imports ``sshd_fixture``."""
    daemon = Sshd(tmp_path_factory.mktemp("sshd"))
    daemon.prepare()
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


# -- asyncssh's in-process server: password auth, a tiny line shell ---------------------
USERS = {"alice": "correct horse"}


class _PasswordServer(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        return USERS.get(username) == password


async def _shell(process: asyncssh.SSHServerProcess[bytes]) -> None:
    """Echoes what is typed (a PTY would); ``size`` prints the terminal size, ``exit N``
    ends with status N."""
    cols, rows = process.term_size[:2]
    process.stdout.write(f"welcome {process.get_extra_info('username')}\r\n$ ".encode())
    line = b""
    while True:
        try:
            data = await process.stdin.read(1024)
        except asyncssh.TerminalSizeChanged as change:
            cols, rows = change.width, change.height
            continue
        if not data:
            break
        process.stdout.write(data.replace(b"\r", b"\r\n"))
        line += data
        while b"\r" in line:
            command, line = line.split(b"\r", 1)
            words = command.decode().split()
            if words[:1] == ["exit"]:
                process.exit(int(words[1]) if len(words) > 1 else 0)
                return
            if words[:1] == ["size"]:
                process.stdout.write(f"{rows} {cols}\r\n".encode())
            if words[:1] == ["utf8"]:  # 世 split over two writes, then an invalid byte
                process.stdout.write(b"<" + "世".encode()[:1])
                await process.stdout.drain()
                await asyncio.sleep(0.05)
                process.stdout.write("世".encode()[1:] + b">\xff!\r\n")
            process.stdout.write(b"$ ")
    process.exit(0)


@contextlib.asynccontextmanager
async def asyncssh_server() -> AsyncIterator[tuple[int, Any]]:
    """(port, host key) of an asyncssh server on 127.0.0.1 in this event loop."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    server = await asyncssh.create_server(
        _PasswordServer,
        "127.0.0.1",
        0,
        server_host_keys=[key],
        process_factory=_shell,
        encoding=None,
        line_editor=False,
    )
    port = server.sockets[0].getsockname()[1]
    try:
        yield port, key
    finally:
        server.close()
        await server.wait_closed()


# -- terminal helpers --------------------------------------------------------------------
async def read_until(
    client: Client, needle: str, *, session_id: str | None = None, timeout: float = 10.0
) -> str:
    """Collect ``terminal-output`` until ``needle`` (a regular expression) matches; returns
    what was collected."""
    seen = ""
    pattern = re.compile(needle)

    async def collect() -> str:
        nonlocal seen
        while not pattern.search(seen):
            frame = await client.expect("terminal-output")
            data = frame["data"]
            if session_id is None or data["sessionId"] == session_id:
                seen += data["output"]
        return seen

    try:
        return await asyncio.wait_for(collect(), timeout)
    except TimeoutError:
        raise AssertionError(f"{needle!r} not seen within {timeout} s; got {seen!r}") from None
