"""Proxmox VE hypervisor backend for virtwire.

Serves the QEMU VMs of a Proxmox VE cluster over its HTTP API (proxmoxer): one poller of
``/cluster/resources`` per gateway diffed into ``vm-status`` pushes and ``system-event``
frames, ``vm-control`` actions that wait for their task, and VNC/terminal consoles through
``vncproxy``/``termproxy``. Config section ``[plugins.proxmox]`` (see
:class:`virtwire_proxmox.settings.ProxmoxSettings` and docs/proxmox.md).
"""

from __future__ import annotations

from typing import Any

from virtwire import hookimpl

from .settings import ProxmoxSettings

NAME = "proxmox"


@hookimpl
def register_settings(register: Any) -> None:
    register(NAME, ProxmoxSettings)


@hookimpl
def register_backends(register: Any, gateway: Any) -> None:
    settings: ProxmoxSettings = gateway.plugin_config(NAME)
    if settings.host is None:
        return  # not configured: no VMs
    from virtwire.config import resolve_secret

    from .backend import ProxmoxBackend

    password = (
        resolve_secret(settings.password, "plugins.proxmox.password") if settings.password else None
    )
    token = (
        resolve_secret(settings.token_value, "plugins.proxmox.token_value")
        if settings.token_value
        else None
    )
    register(
        ProxmoxBackend(settings, gateway.catalogue, gateway.log, password=password, token=token)
    )


@hookimpl
def register_consoles(register: Any, gateway: Any) -> None:
    settings: ProxmoxSettings = gateway.plugin_config(NAME)
    if settings.host is None:
        return
    from .consoles import ProxmoxConsoles

    register(ProxmoxConsoles(gateway))
