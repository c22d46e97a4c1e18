"""Error codes and the exception that carries them to a client."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

__all__ = [
    "BackendUnavailable",
    "CloseCode",
    "ConfigError",
    "ErrorCode",
    "VirtwireError",
    "VmNotFound",
]


class ErrorCode(StrEnum):
    """Every ``code`` an ``error`` frame can carry (docs/protocol.md lists their meaning)."""

    AUTH_REQUIRED = "AUTH_REQUIRED"
    AUTH_FAILED = "AUTH_FAILED"
    TOKEN_EXPIRED = "TOKEN_EXPIRED"
    FORBIDDEN = "FORBIDDEN"
    INVALID_MESSAGE = "INVALID_MESSAGE"
    MESSAGE_TOO_BIG = "MESSAGE_TOO_BIG"
    UNKNOWN_TYPE = "UNKNOWN_TYPE"
    UNKNOWN_TOPIC = "UNKNOWN_TOPIC"
    NOT_SUBSCRIBED = "NOT_SUBSCRIBED"
    VM_NOT_FOUND = "VM_NOT_FOUND"
    BACKEND_UNAVAILABLE = "BACKEND_UNAVAILABLE"
    CONSOLE_UNAVAILABLE = "CONSOLE_UNAVAILABLE"
    VNC_NOT_READY = "VNC_NOT_READY"
    TERMINAL_AUTH_FAILED = "TERMINAL_AUTH_FAILED"
    TERMINAL_HOST_KEY_CHANGED = "TERMINAL_HOST_KEY_CHANGED"
    TERMINAL_HOST_KEY_UNKNOWN = "TERMINAL_HOST_KEY_UNKNOWN"
    TERMINAL_NOT_FOUND = "TERMINAL_NOT_FOUND"
    TERMINAL_CLOSED = "TERMINAL_CLOSED"
    CONSOLE_BUSY = "CONSOLE_BUSY"
    LOG_NOT_FOUND = "LOG_NOT_FOUND"
    RATE_LIMITED = "RATE_LIMITED"
    INTERNAL_ERROR = "INTERNAL_ERROR"


class CloseCode:
    """WebSocket close codes virtwire uses."""

    NORMAL = 1000
    GOING_AWAY = 1001  # server shutting down
    POLICY_VIOLATION = 1008  # a log file not on the allow list; a client flooding frames
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    AUTH = 4001  # authentication failed, timed out or the token expired
    SLOW_CONSUMER = 4008  # the client fell too far behind
    TOO_MANY_CONNECTIONS = 4029


class VirtwireError(Exception):
    """An error reported to the client as an ``error`` frame.

    Plugins raise it (or a subclass) from handlers, topics, backends and transports.
    ``code`` is an :class:`ErrorCode` value or a plugin's own upper-case code
    (``VM_START_FAILED``); ``message`` is human-readable (default: the code); ``details`` is
    optional machine- or operator-oriented detail (e.g. the hypervisor's own message).
    When the catalogue has a text ``error.<CODE>`` (the core's, or one a plugin registered
    with ``register_texts``), the client gets that text in the gateway's locale instead of
    ``message``, formatted with ``vm_id`` and ``params``.
    """

    def __init__(
        self,
        code: str,
        message: str | None = None,
        *,
        vm_id: str | None = None,
        details: Any = None,
        params: dict[str, Any] | None = None,
        text_key: str | None = None,
    ) -> None:
        message = message if message is not None else str(code)
        super().__init__(message)
        self.code = str(code)
        self.message = message
        self.vm_id = vm_id
        self.details = details
        self.params: dict[str, Any] = dict(params or {})
        #: A catalogue key whose text (formatted with ``params``) the client gets instead of
        #: ``error.<CODE>``'s, for errors whose wording depends on the case.
        self.text_key = text_key

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.vm_id is not None:
            data["vmId"] = self.vm_id
        if self.details is not None:
            data["details"] = self.details
        return data


def invalid_field(field: str, reason: str) -> VirtwireError:
    """``INVALID_MESSAGE`` for one field of a client frame (``data.vmId``, ``id``), worded in
    the client's locale; ``details`` names the field and msgspec's reason."""
    return VirtwireError(
        ErrorCode.INVALID_MESSAGE,
        f"invalid {field}: {reason}",
        details={"field": field, "reason": reason},
        text_key="message.invalid_field",
        params={"field": field, "reason": reason},
    )


class VmNotFound(VirtwireError):
    def __init__(self, vm_id: str, message: str | None = None) -> None:
        super().__init__(ErrorCode.VM_NOT_FOUND, message or f"VM {vm_id!r} not found", vm_id=vm_id)


class BackendUnavailable(VirtwireError):
    def __init__(self, message: str, *, vm_id: str | None = None, details: Any = None) -> None:
        super().__init__(ErrorCode.BACKEND_UNAVAILABLE, message, vm_id=vm_id, details=details)


class ConfigError(Exception):
    """A configuration problem; the message says where and how to fix it."""
