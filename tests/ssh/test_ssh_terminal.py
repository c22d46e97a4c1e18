"""SSH terminals end to end: a real gateway, real SSH servers (OpenSSH sshd, asyncssh's
server), real WebSocket clients."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import virtwire_ssh
from sshkit import Sshd, asyncssh_server, read_until
from virtwire import VmNotFound, hookimpl
from virtwire.backends import VmStatus
from virtwire.testing import RunningServer, free_port, run_server
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed


@contextlib.asynccontextmanager
async def ssh_gateway(
    hosts: dict[str, str], state: Path, **options: Any
) -> AsyncIterator[RunningServer]:
    section = {"hosts": hosts, "known_hosts": str(state / "known_hosts"), **options}
    terminal = options.pop("terminal", None)
    config: dict[str, Any] = {"plugins": {"ssh": section}}
    if terminal is not None:
        section.pop("terminal")
        config["terminal"] = terminal
    async with run_server(plugins=[("ssh", virtwire_ssh)], config=config) as server:
        yield server


async def test_shell_over_openssh(sshd: Sshd, tmp_path: Path) -> None:
    async with (
        ssh_gateway({"vm-1": sshd.address}, tmp_path) as server,
        server.client() as client,
    ):
        reply = await client.request(
            "terminal-connect",
            {
                "vmId": "vm-1",
                "type": "ssh",
                "credentials": sshd.credentials(),
                "cols": 100,
                "rows": 30,
            },
        )
        assert reply["type"] == "terminal-connect-response", reply
        data = reply["data"]
        assert data["vmId"] == "vm-1" and data["type"] == "ssh" and data["mode"] == "owner"
        assert data["url"] == f"/ws/terminal/{data['ticket']}"
        sid = data["sessionId"]
        # the requested size, then the new one after terminal-resize
        await client.request("terminal-input", {"vmId": "vm-1", "input": "stty size\r"})
        await read_until(client, "30 100")
        resized = await client.request("terminal-resize", {"vmId": "vm-1", "cols": 120, "rows": 40})
        assert resized["data"] == {"vmId": "vm-1", "sessionId": sid, "cols": 120, "rows": 40}
        await client.request("terminal-input", {"vmId": "vm-1", "input": "stty size\r"})
        await read_until(client, "40 120")
        await client.request("terminal-input", {"vmId": "vm-1", "input": "echo hello\r"})
        await read_until(client, r"[\r\n]hello\r\n")
        await client.request("terminal-input", {"vmId": "vm-1", "input": "exit 7\r"})
        closed = await client.expect("terminal-closed")
        assert closed["data"] == {
            "vmId": "vm-1",
            "sessionId": sid,
            "reason": "exited",
            "exitStatus": 7,
        }
        # the session is gone: input is refused with the reason
        reply = await client.request(
            "terminal-input", {"vmId": "vm-1", "sessionId": sid, "input": "x"}
        )
        assert reply["data"]["code"] == "TERMINAL_CLOSED"
        assert reply["data"]["details"]["reason"] == "exited"
    # accept-new remembered the host key
    known = (tmp_path / "known_hosts").read_text()
    assert f"[127.0.0.1]:{sshd.port} ssh-ed25519 " in known


async def test_large_output_arrives_whole(sshd: Sshd, tmp_path: Path) -> None:
    """Output faster than the client reads is paced, not dropped or overflowing."""
    async with (
        ssh_gateway({"vm-1": sshd.address}, tmp_path) as server,
        server.client() as client,
    ):
        reply = await client.request(
            "terminal-connect", {"vmId": "vm-1", "type": "ssh", "credentials": sshd.credentials()}
        )
        assert reply["type"] == "terminal-connect-response"
        await client.request("terminal-input", {"vmId": "vm-1", "input": "seq 1 150000\r"})
        seen = await read_until(client, r"[\r\n]150000\r\n", timeout=30)
        lines = [line for line in seen.split("\r\n") if line.isdigit()]
        assert lines[-1000:] == [str(n) for n in range(149001, 150001)]


async def test_a_stalled_observer_does_not_freeze_the_owner(sshd: Sshd, tmp_path: Path) -> None:
    async with (
        ssh_gateway(
            {"vm-1": sshd.address}, tmp_path, terminal={"high_water_bytes": 65536}
        ) as server,
        server.client(server.token("alice")) as owner,
        server.client(server.token("bob", ["console", "console:share"]), max_queue=1) as bob,
    ):
        sid = (
            await owner.request(
                "terminal-connect",
                {"vmId": "vm-1", "type": "ssh", "credentials": sshd.credentials()},
            )
        )["data"]["sessionId"]
        bob._reader.cancel()  # bob's page stops reading (a frozen tab)
        await bob.send("terminal-connect", {"vmId": "vm-1", "sessionId": sid}, "j1")
        await owner.request("terminal-input", {"vmId": "vm-1", "input": "seq 1 800000\r"})
        tail, lines = "", 0
        async with asyncio.timeout(60):  # the owner gets everything, to the end
            while "\n800000\r\n" not in tail:
                output = (await owner.expect("terminal-output"))["data"]["output"]
                lines += output.count("\n")
                tail = (tail + output)[-64:]
        assert lines >= 800000
        (terminal,) = server.gateway.terminals.terminals.values()
        observers = [v for v in terminal.viewers if v.mode.value == "observer"]
        assert observers and observers[0].skipped > 0  # bob missed output instead
        # bob's page reads again: once caught up, it gets a redraw (reset, then the
        # scrollback), so its screen ends like the owner's
        bob._reader = asyncio.create_task(bob._read())
        redraw = await bob.expect(
            "terminal-output", where=lambda f: f["data"]["output"].startswith("\x1bc"), timeout=30
        )
        assert "\n800000\r\n" in redraw["data"]["output"] or await read_until(
            bob, r"[\r\n]800000\r\n"
        )


async def test_changed_host_key_is_refused(tmp_path: Path) -> None:
    daemon = Sshd(tmp_path / "sshd")
    daemon.workdir.mkdir()
    daemon.prepare()
    daemon.start()
    try:
        async with (
            ssh_gateway({"vm-1": daemon.address}, tmp_path) as server,
            server.client() as client,
        ):
            first = await client.request(
                "terminal-connect",
                {"vmId": "vm-1", "type": "ssh", "credentials": daemon.credentials()},
            )
            assert first["type"] == "terminal-connect-response"
            await client.request("terminal-disconnect", {"vmId": "vm-1"})
            remembered = (tmp_path / "known_hosts").read_text()
            daemon.stop()
            daemon.new_host_key()  # same address, another key: what an attacker would show
            daemon.start()
            reply = await client.request(
                "terminal-connect",
                {"vmId": "vm-1", "type": "ssh", "credentials": daemon.credentials()},
            )
            assert reply["type"] == "error"
            assert reply["data"]["code"] == "TERMINAL_HOST_KEY_CHANGED"
            assert daemon.address in reply["data"]["message"]
            assert (tmp_path / "known_hosts").read_text() == remembered  # not replaced
    finally:
        daemon.stop()


async def test_strict_policy_refuses_an_unknown_host(sshd: Sshd, tmp_path: Path) -> None:
    async with (
        ssh_gateway({"vm-1": sshd.address}, tmp_path, host_key_policy="strict") as server,
        server.client() as client,
    ):
        reply = await client.request(
            "terminal-connect", {"vmId": "vm-1", "type": "ssh", "credentials": sshd.credentials()}
        )
        assert reply["data"]["code"] == "TERMINAL_HOST_KEY_UNKNOWN"
        assert not (tmp_path / "known_hosts").exists()


async def test_password_auth_and_wrong_password(tmp_path: Path) -> None:
    async with asyncssh_server() as (port, _key):
        async with (
            ssh_gateway({"vm-1": f"127.0.0.1:{port}"}, tmp_path) as server,
            server.client() as client,
        ):
            wrong = await client.request(
                "terminal-connect",
                {
                    "vmId": "vm-1",
                    "type": "ssh",
                    "credentials": {"username": "alice", "password": "wrong horse"},
                },
            )
            assert wrong["type"] == "error"
            assert wrong["data"]["code"] == "TERMINAL_AUTH_FAILED"
            assert "wrong horse" not in str(wrong)
            # the connection stays usable
            ok = await client.request(
                "terminal-connect",
                {
                    "vmId": "vm-1",
                    "type": "ssh",
                    "credentials": {"username": "alice", "password": "correct horse"},
                },
            )
            assert ok["type"] == "terminal-connect-response", ok
            await read_until(client, "welcome alice")
            await client.request("terminal-input", {"vmId": "vm-1", "input": "size\r"})
            await read_until(client, "24 80")  # the defaults when connect gives no size
            await client.request("terminal-input", {"vmId": "vm-1", "input": "exit 3\r"})
            closed = await client.expect("terminal-closed")
            assert closed["data"]["exitStatus"] == 3
            # the audit stream: both attempts, as which login, and the end; no password
            opened = await server.audit_records("terminal-open", count=2)
            assert [(r["user"], r["login"], r["type"], r["outcome"]) for r in opened] == [
                ("tester", "alice", "ssh", "TERMINAL_AUTH_FAILED"),
                ("tester", "alice", "ssh", "ok"),
            ]
            (ended,) = await server.audit_records("terminal-close")
            assert ended["sessionId"] == opened[1]["sessionId"] == ok["data"]["sessionId"]
            assert ended["exitStatus"] == 3 and ended["vmId"] == "vm-1"
            path = server.gateway.audit_log.path
            assert path is not None
            assert "horse" not in path.read_text()


async def test_unreachable_port_names_the_address(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    async with (
        ssh_gateway({"vm-1": address}, tmp_path) as server,
        server.client() as client,
    ):
        reply = await client.request(
            "terminal-connect",
            {"vmId": "vm-1", "type": "ssh", "credentials": {"username": "u", "password": "p"}},
        )
        assert reply["data"]["code"] == "CONSOLE_UNAVAILABLE"
        assert address in reply["data"]["message"]
        assert reply["data"]["details"]["address"] == address
        # no address at all for another VM
        reply = await client.request(
            "terminal-connect",
            {"vmId": "vm-2", "type": "ssh", "credentials": {"username": "u", "password": "p"}},
        )
        assert reply["data"]["code"] in ("CONSOLE_UNAVAILABLE", "VM_NOT_FOUND")


async def test_bad_credentials_shape_is_a_clear_error(tmp_path: Path) -> None:
    async with (
        ssh_gateway({"vm-1": "127.0.0.1:1"}, tmp_path) as server,
        server.client() as client,
    ):
        reply = await client.request(
            "terminal-connect", {"vmId": "vm-1", "type": "ssh", "credentials": {"password": "p"}}
        )
        assert reply["data"]["code"] == "INVALID_MESSAGE"
        assert reply["data"]["details"]["field"] == "data.credentials.username"
        reply = await client.request(
            "terminal-connect",
            {
                "vmId": "vm-1",
                "type": "ssh",
                "credentials": {"username": "u", "privateKey": "not a key"},
            },
        )
        assert reply["data"]["code"] == "TERMINAL_AUTH_FAILED"
        reply = await client.request(
            "terminal-connect", {"vmId": "vm-1", "type": "telnet", "credentials": {}}
        )
        assert reply["data"]["code"] == "CONSOLE_UNAVAILABLE"
        assert reply["data"]["details"]["available"] == ["ssh"]


async def test_credentials_never_reach_the_logs(
    sshd: Sshd,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level("DEBUG")
    secret_password = "s3cret-Passw0rd-value"
    async with asyncssh_server() as (port, _key):
        hosts = {"vm-1": f"127.0.0.1:{port}", "vm-2": sshd.address}
        async with (
            ssh_gateway(hosts, tmp_path) as server,
            server.client() as client,
        ):
            reply = await client.request(
                "terminal-connect",
                {
                    "vmId": "vm-1",
                    "type": "ssh",
                    "credentials": {"username": "alice", "password": secret_password},
                },
            )
            assert reply["data"]["code"] == "TERMINAL_AUTH_FAILED"
            reply = await client.request(
                "terminal-connect",
                {"vmId": "vm-2", "type": "ssh", "credentials": sshd.credentials()},
            )
            assert reply["type"] == "terminal-connect-response"
            ticket = reply["data"]["ticket"]
            async with connect(server.ws_url(reply["data"]["url"])) as raw:
                await raw.send("exit\r")
                with contextlib.suppress(ConnectionClosed):
                    while True:
                        await asyncio.wait_for(raw.recv(), 10)
            await server.audit_records("endpoint-close")
            audit_path = server.gateway.audit_log.path
            assert audit_path is not None
            audit = audit_path.read_text()
    server_records = [  # the gateway's, uvicorn's and asyncssh's (not the test client's)
        r.getMessage()
        for r in caplog.records
        if r.name.startswith(("uvicorn", "virtwire", "asyncssh"))
    ]
    logs = capsys.readouterr().out + "\n".join(server_records)
    assert "ssh connecting" in logs  # the connection attempts were logged...
    key_body = sshd.client_key.splitlines()[1]
    for secret in (secret_password, key_body, ticket):  # ...without their secrets
        assert secret not in logs
        assert secret not in audit  # nor in the audit stream


async def test_known_hosts_default_to_the_plugin_state_directory() -> None:
    async with asyncssh_server() as (port, key):
        config = {"plugins": {"ssh": {"hosts": {"vm-1": f"127.0.0.1:{port}"}}}}
        async with (
            run_server(plugins=[("ssh", virtwire_ssh)], config=config) as server,
            server.client() as client,
        ):
            reply = await client.request(
                "terminal-connect",
                {
                    "vmId": "vm-1",
                    "type": "ssh",
                    "credentials": {"username": "alice", "password": "correct horse"},
                },
            )
            assert reply["type"] == "terminal-connect-response"
            known = server.state_dir / "plugins" / "ssh" / "known_hosts"
            public = key.export_public_key("openssh").decode().split()[1]
            assert f"[127.0.0.1]:{port} ssh-ed25519 {public}" in known.read_text()
            assert known.stat().st_mode & 0o777 == 0o600


class _AddressedBackend:
    """A hypervisor backend of a third-party plugin that knows where its VMs' SSH servers
    are (as the libvirt backend does from the domains' interfaces)."""

    name = "lab"

    def __init__(self, address: str) -> None:
        self.address = address

    async def start(self, events: Any) -> None:
        pass

    async def close(self) -> None:
        pass

    async def list_vms(self) -> list[VmStatus]:
        return [VmStatus(vmId="lab-1", status="running")]

    async def get_vm(self, vm_id: str) -> VmStatus:
        if vm_id != "lab-1":
            raise VmNotFound(vm_id)
        return VmStatus(vmId=vm_id, status="running")

    async def control(self, vm_id: str, action: str, **kw: Any) -> None:
        pass

    def set_watching(self, watching: bool) -> None:
        pass

    async def vm_addresses(self, vm_id: str) -> list[str]:
        return [self.address]


async def test_address_from_the_vms_backend(tmp_path: Path) -> None:
    async with asyncssh_server() as (port, _key):
        backend = _AddressedBackend(f"127.0.0.1:{port}")

        class LabPlugin:
            @hookimpl
            def register_backends(self, register: Any) -> None:
                register(backend)

        config = {"plugins": {"ssh": {"known_hosts": str(tmp_path / "known_hosts")}}}
        plugins: list[Any] = [("ssh", virtwire_ssh), ("lab", LabPlugin())]
        async with (
            run_server(plugins=plugins, config=config) as server,
            server.client() as client,
        ):
            credentials = {"username": "alice", "password": "correct horse"}
            reply = await client.request(
                "terminal-connect", {"vmId": "lab-1", "type": "ssh", "credentials": credentials}
            )
            assert reply["type"] == "terminal-connect-response", reply
            await read_until(client, "welcome alice")
            reply = await client.request(
                "terminal-connect", {"vmId": "lab-2", "type": "ssh", "credentials": credentials}
            )
            assert reply["data"]["code"] == "VM_NOT_FOUND"
