"""The SSH console transport: ``terminal-connect`` with ``type: "ssh"`` over asyncssh."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncssh
from virtwire import ErrorCode, VirtwireError
from virtwire.consoles import ByteStream

from .addresses import AddressBook
from .knownhosts import HostKeyCheck, KnownHosts
from .session import SshTerminal
from .settings import SshSettings

KINDS = ("ssh",)


class _Client(asyncssh.SSHClient):
    def __init__(self, check: HostKeyCheck) -> None:
        self.check = check

    def validate_host_public_key(self, host: str, addr: str, port: int, key: Any) -> bool:
        return self.check.decide(key)


def _credentials(vm_id: str, credentials: dict[str, Any]) -> dict[str, Any]:
    """asyncssh options for the document's ``{username, password}`` or
    ``{username, privateKey, passphrase?}``; never echoes a secret in an error."""

    def bad(field: str, reason: str) -> VirtwireError:
        return VirtwireError(
            ErrorCode.INVALID_MESSAGE,
            f"invalid data.credentials.{field}: {reason}",
            vm_id=vm_id,
            details={"field": f"data.credentials.{field}", "reason": reason},
        )

    username = credentials.get("username")
    if not isinstance(username, str) or not username:
        raise bad("username", "Expected a non-empty `str`")
    password = credentials.get("password")
    private_key = credentials.get("privateKey")
    passphrase = credentials.get("passphrase")
    options: dict[str, Any] = {"username": username, "client_keys": None, "password": None}
    if password is not None:
        if not isinstance(password, str):
            raise bad("password", "Expected `str`")
        options["password"] = password
    if private_key is not None:
        if not isinstance(private_key, str):
            raise bad("privateKey", "Expected `str` (the key in OpenSSH or PEM format)")
        if passphrase is not None and not isinstance(passphrase, str):
            raise bad("passphrase", "Expected `str`")
        try:
            key = asyncssh.import_private_key(private_key, passphrase)
        except (asyncssh.KeyImportError, ValueError, TypeError):
            raise VirtwireError(
                ErrorCode.TERMINAL_AUTH_FAILED,
                "the private key could not be read (wrong format or passphrase)",
                vm_id=vm_id,
                details={"reason": "private key"},
            ) from None
        options["client_keys"] = [key]
    if password is None and private_key is None:
        raise bad("password", "give password or privateKey")
    return options


class SshTransport:
    """A :class:`virtwire.consoles.ConsoleTransport` for SSH shells."""

    name = "ssh"
    kinds = KINDS

    def __init__(self, settings: SshSettings, gateway: Any) -> None:
        self.settings = settings
        self.addresses = AddressBook(settings, gateway)
        self.known = KnownHosts(
            Path(settings.known_hosts)
            if settings.known_hosts
            else lambda: gateway.state_dir("ssh") / "known_hosts"
        )
        self.log = gateway.log.bind(plugin="ssh")

    def supports(self, vm_id: str, kind: str) -> bool:
        return kind in KINDS and self.addresses.may_have(vm_id)

    async def open_vnc(self, vm_id: str) -> ByteStream:
        raise VirtwireError(ErrorCode.CONSOLE_UNAVAILABLE, "the ssh plugin serves no VNC")

    async def open_terminal(
        self,
        vm_id: str,
        kind: str,
        *,
        credentials: dict[str, Any],
        cols: int,
        rows: int,
    ) -> SshTerminal:
        options = _credentials(vm_id, credentials)
        host, port = await self.addresses.resolve(vm_id)
        address = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
        policy = self.settings.host_key_policy
        known = [] if policy == "off" else await self.known.keys_for(host, port)
        check = HostKeyCheck(policy, known)
        self.log.debug(
            "ssh connecting", vm=vm_id, address=address, user=options["username"], policy=policy
        )
        try:
            conn = await asyncio.wait_for(
                asyncssh.connect(
                    host,
                    port,
                    client_factory=lambda: _Client(check),
                    known_hosts=check.known_hosts(),
                    agent_path=None,
                    config=None,
                    keepalive_interval=self.settings.keepalive_interval,
                    keepalive_count_max=3,
                    preferred_auth="publickey,keyboard-interactive,password",
                    **options,
                ),
                self.settings.connect_timeout,
            )
        except asyncssh.HostKeyNotVerifiable:
            raise self._host_key_error(vm_id, address, check) from None
        except asyncssh.PermissionDenied:
            self.log.info("ssh authentication failed", vm=vm_id, address=address)
            raise VirtwireError(
                ErrorCode.TERMINAL_AUTH_FAILED,
                f"SSH authentication failed for {options['username']}@{address}",
                vm_id=vm_id,
                details={"address": address, "username": options["username"]},
            ) from None
        except (TimeoutError, OSError, asyncssh.Error) as exc:
            reason = str(exc) or type(exc).__name__
            if isinstance(exc, TimeoutError):
                reason = f"no answer within {self.settings.connect_timeout:g} s"
            self.log.info("ssh unreachable", vm=vm_id, address=address, error=reason)
            raise VirtwireError(
                ErrorCode.CONSOLE_UNAVAILABLE,
                f"cannot reach the SSH server of VM {vm_id} at {address}: {reason}",
                vm_id=vm_id,
                details={"address": address, "reason": reason},
            ) from None
        try:
            if check.verdict == "new" and check.new_key is not None:
                await self.known.add(host, port, check.new_key)
                self.log.info("ssh host key remembered", vm=vm_id, address=address)
            process = await conn.create_process(
                term_type=self.settings.term_type,
                term_size=(cols, rows),
                encoding=None,
                stderr=asyncssh.STDOUT,
            )
        except BaseException:
            conn.close()
            raise
        return SshTerminal(conn, process)

    def _host_key_error(self, vm_id: str, address: str, check: HostKeyCheck) -> VirtwireError:
        if check.verdict == "unknown":
            self.log.warning("ssh host key unknown (strict policy)", vm=vm_id, address=address)
            return VirtwireError(
                ErrorCode.TERMINAL_HOST_KEY_UNKNOWN,
                f"the SSH host key of {address} is not in the known-hosts file",
                vm_id=vm_id,
                details={"address": address, "knownHosts": str(self.known.path)},
            )
        self.log.warning("ssh host key changed: refused", vm=vm_id, address=address)
        return VirtwireError(
            ErrorCode.TERMINAL_HOST_KEY_CHANGED,
            f"the SSH host key of {address} has changed: refused "
            "(if the change is expected, remove the old key from the known-hosts file)",
            vm_id=vm_id,
            details={"address": address, "knownHosts": str(self.known.path)},
        )


__all__ = ["SshTransport"]
