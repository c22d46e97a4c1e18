"""libvirt hypervisor backend for virtwire.

Reports every libvirt domain of one connection as a VM (the domain name, or its UUID, is
the ``vmId``), runs ``vm-control`` actions, and turns libvirt lifecycle events into
``vm-status`` pushes and ``system-event`` frames. Config section ``[plugins.libvirt]``
(see :class:`virtwire_libvirt.settings.LibvirtSettings` and docs/libvirt.md).
"""

from __future__ import annotations

from typing import Any

from virtwire import hookimpl

from .settings import LibvirtSettings

NAME = "libvirt"

TEXTS = {
    "zh-CN": {"libvirt.shutdown_timeout": "虚拟机在 {seconds} 秒内未关机（可使用 force 强制停止）"},
    "en": {
        "libvirt.shutdown_timeout": "the guest did not power off within {seconds} s "
        "(use force to stop it at once)"
    },
}


@hookimpl
def register_settings(register: Any) -> None:
    register(NAME, LibvirtSettings)


@hookimpl
def register_texts(register: Any) -> None:
    for locale, texts in TEXTS.items():
        register(locale, texts)


@hookimpl
def register_backends(register: Any, gateway: Any) -> None:
    from .backend import LibvirtBackend

    settings: LibvirtSettings = gateway.plugin_config(NAME)
    register(LibvirtBackend(settings, gateway.catalogue, gateway.log))


@hookimpl
def register_consoles(register: Any, gateway: Any) -> None:
    from .backend import LibvirtBackend
    from .serial import SerialTransport
    from .vnc import LibvirtVnc

    for backend in gateway.backends:
        if isinstance(backend, LibvirtBackend):
            register(LibvirtVnc(backend, gateway))
    register(SerialTransport(gateway, gateway.plugin_config(NAME)))
