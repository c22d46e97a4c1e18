"""``/api/v1/ws/logs?file=NAME``: the log streaming API, one text message per line."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from virtwire.connection import client_address, header, origin_allowed, token_from_scope
from virtwire.errors import CloseCode, ErrorCode, VirtwireError

from .buffer import ClientBuffer

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send
    from virtwire.auth import Principal
    from virtwire.logsources import LogSource

    from .plugin import LogsPlugin

PATH = "/api/v1/ws/logs"
#: At most this much of a requested name is echoed back in an error text.
ECHO_LIMIT = 100


def _query(scope: Scope) -> dict[str, list[str]]:
    raw = scope.get("query_string", b"").decode("utf-8", "replace")
    return parse_qs(raw, keep_blank_values=True)


def _echo(name: str) -> str:
    name = "".join(ch if ch.isprintable() else "?" for ch in name[: ECHO_LIMIT + 1])
    return name if len(name) <= ECHO_LIMIT else name[:ECHO_LIMIT] + "…"


class Refusal(Exception):
    """Why a connection is not served: the text sent, the close code and reason, and what
    the server's log records."""

    def __init__(
        self,
        text: str,
        code: int,
        reason: str,
        log: dict[str, Any],
        *,
        outcome: str,
        audited: bool = False,
    ) -> None:
        super().__init__(reason)
        self.text = text
        self.code = code
        self.reason = reason
        self.log = log
        #: For the audit stream: the error code (``log-open``'s ``outcome``).
        self.outcome = outcome
        #: Already in the audit stream (a refused token is an ``auth-refused``).
        self.audited = audited


@dataclass(frozen=True)
class Admitted:
    name: str
    source: LogSource
    ip: str
    user: str | None
    expires_at: float | None
    address: str | None


class LogsEndpoint:
    """The ASGI endpoint of ``/api/v1/ws/logs``."""

    def __init__(self, plugin: LogsPlugin) -> None:
        self.plugin = plugin
        self.gateway = plugin.gateway
        self.per_client: dict[str, int] = {}
        #: Log streams open now.
        self.connections = 0
        self._changed = asyncio.Event()

    def _count(self, delta: int) -> None:
        self.connections += delta
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Until ``predicate()`` holds, checked whenever a stream opens or closes."""
        while not predicate():
            await self._changed.wait()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        gateway = self.gateway
        if not origin_allowed(scope, gateway.settings.server.allowed_origins):
            gateway.log.warning(
                "websocket origin refused", route=PATH, origin=header(scope, b"origin"), status=403
            )
            await send({"type": "websocket.close", "code": CloseCode.POLICY_VIOLATION})
            return
        await send({"type": "websocket.accept"})
        try:
            admitted = self._admit(scope, await self._principal(scope))
        except Refusal as refusal:
            gateway.log.info("log stream refused", route=PATH, **refusal.log)
            if not refusal.audited:
                gateway.audit(
                    "log-open",
                    user=refusal.log.get("user"),
                    address=client_address(scope),
                    file=refusal.log.get("file"),
                    outcome=refusal.outcome,
                )
            with contextlib.suppress(OSError):
                await send({"type": "websocket.send", "text": refusal.text})
                await send(
                    {"type": "websocket.close", "code": refusal.code, "reason": refusal.reason}
                )
            return
        await self._stream(admitted, receive, send)

    async def _principal(self, scope: Scope) -> Principal | None:
        """The token's principal (None when ``public``), or a Refusal."""
        if self.plugin.settings.public:
            return None
        try:
            return await self._authenticate(scope)
        except VirtwireError as exc:
            code = CloseCode.POLICY_VIOLATION if exc.code == ErrorCode.FORBIDDEN else CloseCode.AUTH
            log = {"code": exc.code, "reason": exc.message}
            if isinstance(exc.details, dict) and exc.details.get("user") is not None:
                log["user"] = exc.details["user"]
            audited = exc.code in (ErrorCode.AUTH_FAILED, ErrorCode.TOKEN_EXPIRED)
            raise Refusal(
                exc.message, code, exc.code, log, outcome=exc.code, audited=audited
            ) from None

    def _admit(self, scope: Scope, principal: Principal | None) -> Admitted:
        """Check the name and the per-client cap, or raise a Refusal."""
        settings = self.plugin.settings
        text = self.gateway.catalogue
        user = principal.user_id if principal is not None else None
        values = _query(scope).get("file")
        name = values[0] if values and values[0] else self.plugin.default
        source = self.plugin.source_for(name)
        if source is None or (
            principal is not None and not self.gateway.authorized(principal, "logs:read", name)
        ):
            raise Refusal(
                text("logs.forbidden", name=_echo(name)),
                CloseCode.POLICY_VIOLATION,
                "forbidden",
                {"file": _echo(name), "user": user, "code": "forbidden"},
                outcome=ErrorCode.FORBIDDEN,
            )
        client = scope.get("client")
        ip = client[0] if client else "?"
        limit = settings.max_connections_per_client
        if limit and self.per_client.get(ip, 0) >= limit:
            raise Refusal(
                text("logs.too_many", limit=limit),
                CloseCode.TOO_MANY_CONNECTIONS,
                "too many connections",
                {"client": ip, "code": "too many connections", "limit": limit, "user": user},
                outcome="TOO_MANY_CONNECTIONS",
            )
        expires_at = principal.expires_at if principal is not None else None
        return Admitted(name, source, ip, user, expires_at, client_address(scope))

    async def _stream(self, admitted: Admitted, receive: Receive, send: Send) -> None:
        """Follow the admitted name until the client leaves or the stream ends."""
        gateway = self.gateway
        settings = self.plugin.settings
        text = gateway.catalogue
        name, ip = admitted.name, admitted.ip
        self.per_client[ip] = self.per_client.get(ip, 0) + 1
        self._count(1)
        buffer = ClientBuffer(
            name, text, settings.client_buffer_lines, settings.client_buffer_bytes
        )
        feed = self.plugin.feeds.get(name, admitted.source)
        feed.join(buffer, settings.history)
        gateway.log.debug("log stream opened", route=PATH, file=name, client=ip, user=admitted.user)
        who = {"user": admitted.user, "address": admitted.address, "file": name}
        gateway.audit("log-open", **who, outcome="ok")
        opened = time.monotonic()
        loop = asyncio.get_running_loop()
        expiry = None
        if admitted.expires_at is not None:
            delay = max(0.0, admitted.expires_at - time.time() + gateway.settings.auth.leeway)
            expiry = loop.call_later(
                delay,
                functools.partial(
                    buffer.finish,
                    text("auth.expired"),
                    CloseCode.AUTH,
                    ErrorCode.TOKEN_EXPIRED,
                    discard=True,  # nothing more once the token is no longer valid
                ),
            )
        writer = loop.create_task(self._write(buffer, send))

        shutdown = False

        def close(code: int, reason: str) -> asyncio.Task[None]:  # shutdown: 1001, no text
            nonlocal shutdown
            shutdown = True
            buffer.finish(None, code, reason, discard=True)
            return writer  # done once the close frame is sent

        gateway.closers.add(close)
        try:
            await self._read(buffer, receive)
        finally:
            gateway.closers.discard(close)
            if expiry is not None:
                expiry.cancel()
            feed.leave(buffer)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
            self._count(-1)
            left = self.per_client.get(ip, 1) - 1
            if left > 0:
                self.per_client[ip] = left
            else:
                self.per_client.pop(ip, None)
            gateway.log.debug(
                "log stream closed", route=PATH, file=name, client=ip, skipped=buffer.dropped_total
            )
            gateway.audit(
                "log-close",
                **who,
                durationMs=(time.monotonic() - opened) * 1000,
                skipped=buffer.dropped_total,
                reason="gateway-shutdown"
                if shutdown
                else buffer.close_reason or "client-disconnect",
            )

    async def _authenticate(self, scope: Scope) -> Principal:
        gateway = self.gateway
        text = gateway.catalogue
        try:
            token = token_from_scope(scope)
        except VirtwireError as exc:
            raise VirtwireError(exc.code, text(exc.text_key or "auth.ambiguous")) from None
        if not token:  # this endpoint takes no auth message: the query or the header
            raise VirtwireError(ErrorCode.AUTH_REQUIRED, text("auth.required_query"))
        try:
            principal = gateway.auth.verify(token)
        except VirtwireError as exc:
            gateway.audit(
                "auth-refused",
                address=client_address(scope),
                path=PATH,
                outcome=exc.code,
                reason=exc.message,
            )
            if exc.code == ErrorCode.TOKEN_EXPIRED:
                raise VirtwireError(exc.code, text("auth.expired")) from None
            raise VirtwireError(exc.code, text("auth.failed", reason=exc.message)) from None
        if not principal.has_scope("logs:read"):
            raise VirtwireError(
                ErrorCode.FORBIDDEN,
                text("forbidden.scope", scope="logs:read"),
                details={"user": principal.user_id},  # for the audit record, not the client
            )
        return principal

    @staticmethod
    async def _read(buffer: ClientBuffer, receive: Receive) -> None:
        while True:
            message = await receive()
            kind = message["type"]
            if kind == "websocket.disconnect":
                return
            if kind == "websocket.receive":
                data = message.get("text")
                if data is not None and data.strip().lower() == "ping":
                    buffer.urgent("pong")

    @staticmethod
    async def _write(buffer: ClientBuffer, send: Send) -> None:
        try:
            while True:
                item = buffer.pop()
                if item is None:
                    if buffer.close_code is not None:
                        await send(
                            {
                                "type": "websocket.close",
                                "code": buffer.close_code,
                                "reason": buffer.close_reason,
                            }
                        )
                        return
                    await buffer.wait()
                    continue
                await send({"type": "websocket.send", "text": item})
        except OSError:  # the client went away; the reader sees the disconnect
            return
