"""The ``[plugins.libvirt]`` config section."""

from __future__ import annotations

from typing import Literal

import msgspec


class LibvirtSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Options of the libvirt backend (docs/libvirt.md explains each)."""

    #: libvirt connection URI. The default is libvirt's built-in test driver (one running
    #: domain named ``test``), so a gateway started without config shows a VM at once.
    uri: str = "test:///default"
    #: Seconds between periodic ``vm-status`` pushes while anyone is subscribed.
    stats_interval: float = 2.0
    #: What becomes the ``vmId``: the domain ``name`` or its ``uuid``.
    vm_id: Literal["name", "uuid"] = "name"
    #: Seconds a graceful ``stop`` waits for the guest to power off before it fails
    #: (``VM_STOP_FAILED``; use ``force``). 0: answer once libvirt accepted the request.
    shutdown_timeout: float = 20.0
    #: Upper bound in seconds of any single libvirt call; a call that takes longer gives
    #: ``BACKEND_UNAVAILABLE`` instead of a hang.
    call_timeout: float = 15.0
    #: Reconnect backoff after the daemon went away: first delay and ceiling, in seconds.
    reconnect_min: float = 0.2
    reconnect_max: float = 5.0
    #: libvirt keepalive: probe interval (s) and unanswered probes before the connection
    #: is declared dead (remote URIs only). 0 disables.
    keepalive_interval: int = 2
    keepalive_count: int = 3
    #: How VNC consoles reach a domain's VNC server: ``fd`` asks libvirt for a connected
    #: socket (``openGraphicsFD`` with skip-auth: local connections only), ``tcp`` connects
    #: to the address and port of the domain XML (with its ``passwd``), ``auto`` uses ``fd``
    #: on a local connection and ``tcp`` otherwise (or when libvirt refuses the socket).
    vnc_connect: Literal["auto", "fd", "tcp"] = "auto"
    #: Threads running blocking libvirt calls.
    workers: int = 4
    #: Serial consoles (``terminal-connect`` type ``serial``): take a domain's console even
    #: when another client (``virsh console``) holds it, disconnecting that client. Off: such
    #: a console is refused with ``CONSOLE_BUSY``.
    console_force: bool = False

    def __post_init__(self) -> None:
        checks = (
            ("stats_interval", self.stats_interval >= 0.05),
            ("shutdown_timeout", self.shutdown_timeout >= 0),
            ("call_timeout", self.call_timeout > 0),
            ("reconnect_min", self.reconnect_min > 0),
            ("reconnect_max", self.reconnect_max >= self.reconnect_min),
            ("keepalive_interval", self.keepalive_interval >= 0),
            ("keepalive_count", self.keepalive_count >= 0),
            ("workers", 1 <= self.workers <= 64),
        )
        for field, ok in checks:
            if not ok:
                raise ValueError(f"invalid value for {field}: {getattr(self, field)!r}")
