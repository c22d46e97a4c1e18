"""Where a VM's SSH server is: the config's map, its template, or the VM's backend."""

from __future__ import annotations

from typing import Any

from virtwire import ErrorCode, VirtwireError

from .settings import SshSettings


def split_address(text: str, default_port: int) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address -> (host, port)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    if not host:
        raise ValueError(f"no host in address {text!r}")
    if not port:
        return host, default_port
    value = int(port)
    if not 1 <= value <= 65535:
        raise ValueError(f"port out of range in address {text!r}")
    return host, value


class AddressBook:
    def __init__(self, settings: SshSettings, gateway: Any) -> None:
        self.settings = settings
        self.gateway = gateway

    def configured(self, vm_id: str) -> str | None:
        if vm_id in self.settings.hosts:
            return self.settings.hosts[vm_id]
        if self.settings.host_template is not None:
            return self.settings.host_template.replace("{vmId}", vm_id)
        return None

    def may_have(self, vm_id: str) -> bool:
        return self.configured(vm_id) is not None or self.settings.backend_addresses

    async def resolve(self, vm_id: str) -> tuple[str, int]:
        text = self.configured(vm_id)
        if text is None and self.settings.backend_addresses:
            text = await self._from_backend(vm_id)
        if text is None:
            raise VirtwireError(
                ErrorCode.CONSOLE_UNAVAILABLE,
                f"no SSH address is known for VM {vm_id}",
                vm_id=vm_id,
                details="configure [plugins.ssh] hosts or host_template",
            )
        try:
            return split_address(text, self.settings.port)
        except ValueError as exc:
            raise VirtwireError(
                ErrorCode.CONSOLE_UNAVAILABLE,
                f"bad SSH address for VM {vm_id}",
                vm_id=vm_id,
                details=str(exc),
            ) from None

    async def _from_backend(self, vm_id: str) -> str | None:
        vms = getattr(self.gateway, "vms", None)
        if vms is None:
            return None
        backend = await vms.backend_for(vm_id)  # VM_NOT_FOUND when nobody knows it
        lookup = getattr(backend, "vm_addresses", None)
        if lookup is None:
            return None
        addresses: list[str] = await lookup(vm_id)
        return addresses[0] if addresses else None
