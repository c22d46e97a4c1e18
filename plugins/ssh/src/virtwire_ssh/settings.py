"""The ``[plugins.ssh]`` config section."""

from __future__ import annotations

from typing import Literal

import msgspec


class SshSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Options of the SSH terminal transport (docs/ssh.md explains each)."""

    #: vmId -> "host" or "host:port" ("[v6addr]:port" for IPv6).
    hosts: dict[str, str] = msgspec.field(default_factory=dict)
    #: Address for VMs not in ``hosts``, with ``{vmId}`` replaced, e.g. "{vmId}.vm.lan:22".
    host_template: str | None = None
    #: Ask the VM's hypervisor backend for its addresses (libvirt: the interfaces' addresses)
    #: when neither ``hosts`` nor ``host_template`` gives one.
    backend_addresses: bool = True
    #: Port used when an address has none.
    port: int = 22
    #: Host keys: "strict" (only keys already in the known-hosts file), "accept-new" (a host
    #: seen for the first time is remembered; a changed key is refused), "off" (no checking).
    host_key_policy: Literal["strict", "accept-new", "off"] = "accept-new"
    #: The known-hosts file (OpenSSH format); default: the plugin's state directory's
    #: ``known_hosts`` (``<state dir>/plugins/ssh/known_hosts``).
    known_hosts: str | None = None
    #: Seconds to reach the host and finish the SSH handshake and authentication.
    connect_timeout: float = 15.0
    #: SSH keepalive probes every this many seconds (0: off); 3 unanswered end the session.
    keepalive_interval: float = 30.0
    #: TERM of the remote shell.
    term_type: str = "xterm-256color"

    def __post_init__(self) -> None:
        checks = (
            ("port", 1 <= self.port <= 65535),
            ("connect_timeout", self.connect_timeout > 0),
            ("keepalive_interval", self.keepalive_interval >= 0),
            ("term_type", bool(self.term_type)),
        )
        for field, ok in checks:
            if not ok:
                raise ValueError(f"invalid value for {field}: {getattr(self, field)!r}")
