"""Consoles of Proxmox VMs: VNC through ``vncproxy`` + ``vncwebsocket`` (raw RFB, VNC
authentication with the password ``vncproxy`` generated, answered by the core), terminals
through ``termproxy`` (types ``proxmox`` and ``serial``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from virtwire import ErrorCode, VirtwireError
from virtwire.consoles import VncTarget

from .client import ApiError, Unauthorized, Unreachable
from .states import ACTIVE
from .termproxy import TermproxyRefused, TermproxySession
from .websocket import ConsoleSocket

if TYPE_CHECKING:
    from .backend import ProxmoxBackend

KINDS = ("vnc", "proxmox", "serial")
SERIAL_PORTS = ("serial0", "serial1", "serial2", "serial3")


class VncStream:
    """A :class:`virtwire.consoles.ByteStream` over a ``vncwebsocket`` connection."""

    def __init__(self, socket: ConsoleSocket) -> None:
        self._socket = socket

    async def read(self) -> bytes:
        return await self._socket.receive()

    async def write(self, data: bytes) -> None:
        await self._socket.send(data)

    async def close(self) -> None:
        await self._socket.close()


class ProxmoxConsoles:
    """The console transport of the Proxmox backend's VMs."""

    name = "proxmox"
    kinds = KINDS

    def __init__(self, gateway: Any) -> None:
        self.gateway = gateway

    @property
    def backend(self) -> ProxmoxBackend:
        from .backend import ProxmoxBackend

        for backend in self.gateway.backends:
            if isinstance(backend, ProxmoxBackend):
                return backend
        raise VirtwireError(ErrorCode.CONSOLE_UNAVAILABLE, "no Proxmox backend is configured")

    def supports(self, vm_id: str, kind: str) -> bool:
        if kind not in KINDS:
            return False
        try:
            return self.backend.owns(vm_id)
        except VirtwireError:
            return False

    # -- opening -----------------------------------------------------------------------
    async def _prepare(self, vm_id: str, kind: str) -> tuple[ProxmoxBackend, str, int]:
        backend = self.backend
        node, vmid = backend.locate(vm_id)  # VmNotFound / BackendUnavailable
        if backend.settings.uses_token:
            raise VirtwireError(
                ErrorCode.CONSOLE_UNAVAILABLE,
                "Proxmox consoles need a password login (a ticket); this gateway uses an API "
                "token, which Proxmox accepts for status and control only",
                vm_id=vm_id,
                details={"type": kind},
            )
        status = (await backend.get_vm(vm_id)).status
        if status not in ACTIVE:
            raise VirtwireError(
                ErrorCode.VNC_NOT_READY if kind == "vnc" else ErrorCode.CONSOLE_UNAVAILABLE,
                f"the VM is not running ({status})",
                vm_id=vm_id,
                details={"status": status},
            )
        return backend, node, vmid

    async def _socket(
        self, backend: ProxmoxBackend, vm_id: str, node: str, vmid: int, port: int, ticket: str
    ) -> ConsoleSocket:
        assert backend.client is not None
        try:
            return await ConsoleSocket.open(
                backend.settings, backend.client.authorization(), node, vmid, port, ticket
            )
        except Exception as exc:
            raise VirtwireError(
                ErrorCode.CONSOLE_UNAVAILABLE,
                "the Proxmox console connection was refused",
                vm_id=vm_id,
                details=f"vncwebsocket: {type(exc).__name__}: {exc}"[:300],
            ) from None

    async def _api(self, backend: ProxmoxBackend, vm_id: str, fn: Any) -> dict[str, Any]:
        assert backend.client is not None
        try:
            result: dict[str, Any] = await backend.client.call(fn)
        except ApiError as exc:
            raise VirtwireError(
                ErrorCode.CONSOLE_UNAVAILABLE,
                "Proxmox refused to open the console",
                vm_id=vm_id,
                details=exc.message,
            ) from None
        except (Unreachable, Unauthorized) as exc:
            raise backend.unavailable(vm_id, details=str(exc)) from None
        return result

    async def open_vnc(self, vm_id: str) -> VncTarget:
        backend, node, vmid = await self._prepare(vm_id, "vnc")
        proxy = await self._api(
            backend,
            vm_id,
            lambda api: (
                api.nodes(node).qemu(vmid).vncproxy.post(websocket=1, **{"generate-password": 1})
            ),
        )
        ticket = str(proxy["ticket"])
        # since qemu-server 9.1.7 a password always comes back; before, with
        # generate-password, too; otherwise the ticket itself is the VNC password
        password = str(proxy.get("password") or ticket)
        socket = await self._socket(backend, vm_id, node, vmid, int(proxy["port"]), ticket)
        return VncTarget(VncStream(socket), password)

    async def open_terminal(
        self, vm_id: str, kind: str, *, credentials: dict[str, Any], cols: int, rows: int
    ) -> TermproxySession:
        serial = credentials.get("serial")
        if serial is not None and serial not in SERIAL_PORTS:
            raise VirtwireError(
                ErrorCode.INVALID_MESSAGE,
                "invalid data.credentials.serial: expected serial0..serial3",
                vm_id=vm_id,
                details={"field": "data.credentials.serial", "reason": "serial0..serial3"},
            )
        backend, node, vmid = await self._prepare(vm_id, kind)
        args = {"serial": serial} if serial else {}
        proxy = await self._api(
            backend, vm_id, lambda api: api.nodes(node).qemu(vmid).termproxy.post(**args)
        )
        ticket, user = str(proxy["ticket"]), str(proxy["user"])
        socket = await self._socket(backend, vm_id, node, vmid, int(proxy["port"]), ticket)

        def ended() -> str:
            return "vm-stopped" if backend.known_status(vm_id) not in ACTIVE else "exited"

        try:
            return await TermproxySession.login(socket, user, ticket, cols, rows, ended=ended)
        except (TermproxyRefused, ConnectionError) as exc:
            raise VirtwireError(
                ErrorCode.TERMINAL_AUTH_FAILED,
                "termproxy refused the console ticket",
                vm_id=vm_id,
                details=str(exc),
            ) from None
