"""VNC consoles on ``/ws`` (``vnc-connect``, ``vnc-data``, ``vnc-input``, ``vnc-screenshot``,
``vnc-disconnect``) and the binary endpoint ``/ws/vnc/{ticket}`` for noVNC, over the console
transports plugins register."""

from __future__ import annotations

import base64
import binascii
import time
from typing import TYPE_CHECKING, Any, Literal

import msgspec
from starlette.routing import WebSocketRoute

from .. import keysyms, rfb
from ..consoles import find_transport
from ..consolesessions import REASON_CLIENT, accept_ticket
from ..errors import ErrorCode, VirtwireError
from ..hookspecs import hookimpl
from ..vncconsole import VncConsole, open_rfb

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

    from ..consoles import ConsoleTransport
    from ..gateway import Gateway
    from ..session import Session

SCOPE = "console"
KIND = "vnc"
PATH = "/ws/vnc/{ticket}"


class VncConnect(msgspec.Struct, forbid_unknown_fields=True):
    vmId: str


class VncData(msgspec.Struct, forbid_unknown_fields=True):
    vmId: str
    data: str


class VncInput(msgspec.Struct, forbid_unknown_fields=True):
    vmId: str
    inputType: Literal["mouse", "keyboard", "text"]
    x: int | None = None
    y: int | None = None
    buttons: int = 0
    key: str | None = None
    keysym: int | None = None
    down: bool | None = None
    text: str | None = None


def _transport(gateway: Gateway, vm_id: str, backend: Any) -> ConsoleTransport:
    transport = find_transport(gateway.consoles, vm_id, KIND)
    if transport is not None:
        return transport
    name = getattr(backend, "name", "?")
    raise VirtwireError(
        ErrorCode.CONSOLE_UNAVAILABLE,
        f"no VNC console for {vm_id}: no installed console transport serves VMs of the "
        f"{name!r} backend",
        vm_id=vm_id,
    )


def _console(session: Session, vm_id: str) -> VncConsole:
    console = session.gateway.console_sessions.get(session, KIND, vm_id)
    if not isinstance(console, VncConsole):
        raise VirtwireError(
            ErrorCode.VNC_NOT_READY,
            f"no VNC console open for {vm_id} on this connection: send vnc-connect first",
            vm_id=vm_id,
        )
    return console


def _reply(session: Session, console: VncConsole) -> dict[str, Any]:
    ticket = session.gateway.console_sessions.issue_ticket(session, console)
    init = console.init
    return {
        "vmId": console.vm_id,
        "width": init.width,
        "height": init.height,
        "name": init.name,
        "pixelFormat": init.pixel_format.to_json(),
        "ticket": ticket.value,
        "url": PATH.format(ticket=ticket.value),
        "expiresIn": round(ticket.expires_in, 3),
    }


async def vnc_connect(session: Session, data: VncConnect) -> dict[str, Any]:
    """``vnc-connect``, recorded in the audit stream (``console-open``)."""
    with session.gateway.audit_log.request("console-open", session, vmId=data.vmId, kind=KIND):
        return await _vnc_connect(session, data)


async def _vnc_connect(session: Session, data: VncConnect) -> dict[str, Any]:
    gateway = session.gateway
    vm_id = data.vmId
    session.require(SCOPE, vm_id=vm_id)
    existing = gateway.console_sessions.get(session, KIND, vm_id)
    if isinstance(existing, VncConsole):
        return _reply(session, existing)  # already open: the same console, a new ticket
    backend = await gateway.vms.backend_for(vm_id)
    transport = _transport(gateway, vm_id, backend)
    with gateway.console_sessions.reserve(session):
        target, init, reader = await open_rfb(transport, vm_id)
        console = VncConsole(session, vm_id, transport, target, init, reader)
        if session.close_code is not None:  # the connection closed meanwhile
            await console.close("connection-closed")
            raise VirtwireError(ErrorCode.VNC_NOT_READY, "connection closing", vm_id=vm_id)
        gateway.console_sessions.add(session, console)
    console.start()
    console.log.debug(
        "vnc console opened", transport=transport.name, size=f"{init.width}x{init.height}"
    )
    return _reply(session, console)


async def vnc_data(session: Session, data: VncData) -> dict[str, Any]:
    console = _console(session, data.vmId)
    try:
        raw = base64.b64decode(data.data, validate=True)
    except (binascii.Error, ValueError):
        raise VirtwireError(
            ErrorCode.INVALID_MESSAGE,
            "invalid data.data: expected base64",
            vm_id=data.vmId,
            details={"field": "data.data", "reason": "expected base64"},
        ) from None
    await console.client_data(raw)
    return {"vmId": data.vmId, "bytes": len(raw)}


def _invalid(field: str, reason: str, vm_id: str) -> VirtwireError:
    return VirtwireError(
        ErrorCode.INVALID_MESSAGE,
        f"invalid data.{field}: {reason}",
        vm_id=vm_id,
        details={"field": f"data.{field}", "reason": reason},
    )


#: Browser ``MouseEvent.buttons`` bits → RFB button mask bits (left, right, middle swap).
_BUTTONS = ((1, 1), (2, 4), (4, 2), (8, 32), (16, 64))


def input_events(data: VncInput) -> list[bytes]:
    """The RFB events a ``vnc-input`` stands for."""
    vm_id = data.vmId
    if data.inputType == "mouse":
        if data.x is None or data.y is None:
            raise _invalid("x" if data.x is None else "y", "required for mouse input", vm_id)
        if not (0 <= data.x <= 0xFFFF and 0 <= data.y <= 0xFFFF):
            raise _invalid("x", "coordinates must be between 0 and 65535", vm_id)
        mask = 0
        for browser_bit, rfb_bit in _BUTTONS:
            if data.buttons & browser_bit:
                mask |= rfb_bit
        return [rfb.pointer_event(mask, data.x, data.y)]
    if data.inputType == "keyboard":
        if data.keysym is not None:
            if not 0 < data.keysym <= 0xFFFFFFFF:
                raise _invalid("keysym", "must be a positive 32-bit number", vm_id)
            keysym = data.keysym
        elif data.key is not None:
            try:
                keysym = keysyms.key_keysym(data.key)
            except ValueError as exc:
                raise _invalid("key", str(exc), vm_id) from None
        else:
            raise _invalid("key", "key (a KeyboardEvent.key name) or keysym is required", vm_id)
        if data.down is None:  # press and release
            return [rfb.key_event(keysym, True), rfb.key_event(keysym, False)]
        return [rfb.key_event(keysym, data.down)]
    if not data.text:
        raise _invalid("text", "a non-empty string is required for text input", vm_id)
    try:
        return [rfb.key_event(k, d) for k, d in keysyms.text_keys(data.text)]
    except ValueError as exc:
        raise _invalid("text", str(exc), vm_id) from None


async def vnc_input(session: Session, data: VncInput) -> dict[str, Any]:
    session.require(SCOPE, vm_id=data.vmId)
    console = _console(session, data.vmId)
    events = input_events(data)
    await console.inject(events)
    return {"vmId": data.vmId, "events": len(events)}


async def vnc_screenshot(session: Session, data: VncConnect) -> dict[str, Any]:
    return await _console(session, data.vmId).screenshot()


async def vnc_disconnect(session: Session, data: VncConnect) -> dict[str, Any]:
    console = _console(session, data.vmId)
    await console.close(REASON_CLIENT)
    return {"vmId": data.vmId}


class VncEndpoint:
    """``/ws/vnc/{ticket}``: plain RFB in binary frames for noVNC."""

    #: Served without Starlette's middleware, so frames take the direct write path.
    direct = True

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        admitted = await accept_ticket(self.gateway, KIND, scope, receive, send)
        if admitted is None:
            return
        console = admitted.ticket.target
        assert isinstance(console, VncConsole)
        console.log.debug("vnc browser attached", subprotocol=admitted.subprotocol)
        start = time.monotonic()
        try:
            await console.serve_browser(receive, send)
        finally:
            self.gateway.audit_log.record(
                "endpoint-close",
                {
                    "user": admitted.ticket.user_id,
                    "address": admitted.address,
                    "kind": KIND,
                    "vmId": console.vm_id,
                    "durationMs": (time.monotonic() - start) * 1000,
                },
            )


@hookimpl
def register_handlers(register: Any, gateway: Gateway) -> None:
    register("vnc-connect", vnc_connect, scope=SCOPE, schema=VncConnect)
    register("vnc-data", vnc_data, scope=SCOPE, schema=VncData)
    register("vnc-input", vnc_input, scope=SCOPE, schema=VncInput)
    register("vnc-screenshot", vnc_screenshot, scope=SCOPE, schema=VncConnect, concurrent=True)
    register("vnc-disconnect", vnc_disconnect, scope=SCOPE, schema=VncConnect)


@hookimpl
def register_routes(register: Any, gateway: Gateway) -> None:
    register(WebSocketRoute(PATH, VncEndpoint(gateway)))
