"""The libvirt VNC console transport: a domain's ``<graphics type='vnc'>``.

On a local connection (a UNIX socket to libvirtd) it asks libvirt for a socket already connected
to QEMU's VNC server (``openGraphicsFD`` with skip-auth: no password, no TCP port needed);
otherwise, or when that is refused, it connects to the address and port of the domain's live
XML and answers VNC authentication with the ``passwd`` of its secure XML. Every call asks
libvirt again, so a console opened after a restart finds the new port.
"""

from __future__ import annotations

import socket
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from virtwire import VirtwireError
from virtwire.consoles import SocketStream, VncTarget
from virtwire.errors import ErrorCode

from . import sampling

if TYPE_CHECKING:
    from .backend import LibvirtBackend

#: Domain states with a running QEMU (running, blocked, paused, shutting down, PM-suspended).
ACTIVE = sampling.ACTIVE_STATES
_ANY_ADDRESS = {"", "0.0.0.0", "::", "[::]"}


@dataclass(frozen=True, slots=True)
class Graphics:
    """Where a domain's VNC server is, read in a worker thread."""

    vm_id: str
    active: bool
    index: int  # among the domain's <graphics> elements (openGraphicsFD's idx); -1: none
    host: str | None = None
    port: int | None = None
    socket_path: str | None = None
    password: str | None = None
    fd: int | None = None
    fd_error: str | None = None


def is_local(uri: str) -> bool:
    """True for a connection over the local libvirtd socket (``qemu:///system``), where
    ``openGraphicsFD`` works; False for remote transports and the test driver."""
    parts = urlsplit(uri)
    return parts.scheme in ("qemu", "qemu+unix") and not parts.netloc


def graphics_sync(conn: Any, vm_id: str, by: str, want_fd: bool) -> Graphics:
    """Find the domain's VNC display (blocking: runs through ``backend.run``)."""
    import libvirt

    dom = sampling.lookup(conn, vm_id, by)
    active = dom.state()[0] in ACTIVE
    flags = libvirt.VIR_DOMAIN_XML_SECURE if active else 0
    try:
        xml = dom.XMLDesc(flags)
    except libvirt.libvirtError:  # a read-only connection cannot see the secure XML
        xml = dom.XMLDesc(0)
    root = ET.fromstring(xml)
    for index, node in enumerate(root.findall("./devices/graphics")):
        if node.get("type") != "vnc":
            continue
        if not active:
            return Graphics(vm_id, False, index)
        fd, fd_error = None, None
        if want_fd:
            try:
                fd = dom.openGraphicsFD(index, libvirt.VIR_DOMAIN_OPEN_GRAPHICS_SKIPAUTH)
            except libvirt.libvirtError as exc:
                fd_error = str(exc.get_error_message() or exc)
            if fd is not None:
                return Graphics(vm_id, True, index, fd=fd)
        listen = node.find("listen")
        socket_path = node.get("socket") or (
            listen.get("socket") if listen is not None and listen.get("type") == "socket" else None
        )
        address = node.get("listen") or (listen.get("address") if listen is not None else None)
        port = int(node.get("port") or -1)
        return Graphics(
            vm_id,
            True,
            index,
            host=address,
            port=port if port > 0 else None,
            socket_path=socket_path,
            password=node.get("passwd"),
            fd_error=fd_error,
        )
    return Graphics(vm_id, active, -1)


class LibvirtVnc:
    """A :class:`virtwire.consoles.ConsoleTransport` for the VMs of one libvirt backend."""

    name = "libvirt"
    kinds = ("vnc",)

    def __init__(self, backend: LibvirtBackend, gateway: Any) -> None:
        self.backend = backend
        self.gateway = gateway
        self.uri = backend.settings.uri
        mode = backend.settings.vnc_connect
        self.use_fd = mode == "fd" or (mode == "auto" and is_local(self.uri))
        self.strict_fd = mode == "fd"
        self.default_host = urlsplit(self.uri).hostname or "127.0.0.1"

    def supports(self, vm_id: str, kind: str) -> bool:
        vms = getattr(self.gateway, "vms", None)
        return kind == "vnc" and vms is not None and vms.owner.get(vm_id) is self.backend

    async def open_vnc(self, vm_id: str) -> VncTarget:
        info = await self.backend.run(
            graphics_sync, vm_id, self.backend.settings.vm_id, self.use_fd, vm_id=vm_id
        )
        if info.index < 0:
            hint = (
                " (libvirt's test driver has no graphics)" if self.uri.startswith("test:") else ""
            )
            raise VirtwireError(
                ErrorCode.CONSOLE_UNAVAILABLE,
                f"VM {vm_id} has no VNC display: its domain has no <graphics type='vnc'>{hint}",
                vm_id=vm_id,
            )
        if not info.active:
            raise VirtwireError(ErrorCode.VNC_NOT_READY, f"VM {vm_id} is not running", vm_id=vm_id)
        if info.fd is not None:
            sock = socket.socket(fileno=info.fd)
            try:
                return VncTarget(await SocketStream.from_socket(sock))
            except BaseException:
                sock.close()
                raise
        if self.strict_fd:
            raise VirtwireError(
                ErrorCode.CONSOLE_UNAVAILABLE,
                f'libvirt gave no VNC socket for {vm_id} (vnc_connect = "fd")',
                vm_id=vm_id,
                details=info.fd_error,
            )
        if info.socket_path:
            return VncTarget(await SocketStream.connect_unix(info.socket_path), info.password)
        if info.port is None:
            raise VirtwireError(
                ErrorCode.VNC_NOT_READY,
                f"VM {vm_id} has no VNC port yet",
                vm_id=vm_id,
                details=info.fd_error,
            )
        host = self.default_host if (info.host or "") in _ANY_ADDRESS else str(info.host)
        try:
            stream = await SocketStream.connect(host.strip("[]"), info.port)
        except (OSError, TimeoutError) as exc:
            raise VirtwireError(
                ErrorCode.VNC_NOT_READY,
                f"the VNC server of {vm_id} ({host}:{info.port}) cannot be reached: {exc}",
                vm_id=vm_id,
            ) from None
        return VncTarget(stream, info.password)

    async def open_terminal(self, vm_id: str, kind: str, **_: Any) -> Any:
        raise VirtwireError(
            ErrorCode.CONSOLE_UNAVAILABLE, "this transport serves VNC only", vm_id=vm_id
        )
