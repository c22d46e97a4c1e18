"""One ``/ws`` connection's life: origin check, auth, dispatch by ``type``, cleanup."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from .errors import CloseCode, ErrorCode, VirtwireError
from .fastpath import abort, direct_writer
from .protocol import Frame, convert_data, decode_frame, decode_json
from .session import Session, State
from .topics import Reply

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

    from .gateway import Gateway
    from .topics import MessageHandler


#: Seconds a closing client gets to take the close frame before the TCP connection is dropped.
CLOSE_GRACE = 2.0


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def token_from_scope(scope: Scope) -> str | None:
    """The token from ``?token=`` or an ``Authorization: Bearer`` header."""
    query = scope.get("query_string", b"").decode("latin-1")
    if query:
        values = parse_qs(query).get("token")
        if values and values[0]:
            return values[0]
    auth = header(scope, b"authorization")
    if auth and auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return None


def origin_allowed(scope: Scope, allowed: list[str]) -> bool:
    """Clients without Origin (non-browsers) and same-origin pages are always allowed; other
    origins only if listed (or ``"*"``)."""
    origin = header(scope, b"origin")
    if origin is None or "*" in allowed:
        return True
    origin = origin.rstrip("/")
    if origin in (a.rstrip("/") for a in allowed):
        return True
    host = header(scope, b"host")
    return host is not None and urlsplit(origin).netloc.lower() == host.lower()


def client_address(scope: Scope) -> str | None:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else None


class _RateLimiter:
    """A token bucket per connection."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class WebSocketEndpoint:
    """The ASGI endpoint of ``/ws``."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        gateway = self.gateway
        server = gateway.settings.server
        if not origin_allowed(scope, server.allowed_origins):
            gateway.log.warning(
                "websocket origin refused", origin=header(scope, b"origin"), status=403
            )
            await send({"type": "websocket.close", "code": CloseCode.POLICY_VIOLATION})
            return
        session = Session(gateway, client_address(scope))
        await send({"type": "websocket.accept"})
        await Connection(session, send).run(scope, receive)


class Connection:
    """Drives one session: a reader (this task) and a writer task draining the outbox."""

    def __init__(self, session: Session, send: Send) -> None:
        self.session = session
        self.gateway = session.gateway
        self.send = send
        self.tasks: set[asyncio.Task[None]] = set()
        server = self.gateway.settings.server
        self.limit = server.max_message_bytes
        self.limiter = _RateLimiter(server.rate_limit, server.rate_burst)
        self.max_tasks = server.max_concurrent_requests
        self._auth_timer: asyncio.TimerHandle | None = None
        self._expiry_timer: asyncio.TimerHandle | None = None

    async def run(self, scope: Scope, receive: Receive) -> None:
        session = self.session
        gateway = self.gateway
        loop = asyncio.get_running_loop()
        session.state = State.AUTHENTICATING
        gateway.sessions.add(session)
        session.log.info("connection opened", client=session.client)
        session.outbox.direct = direct_writer(self.send)
        writer = self._writer_task = asyncio.create_task(self._writer())
        session.close_now = self._close_now
        token = token_from_scope(scope)
        if token is not None:
            self._authenticate(token, None)
        else:
            self._auth_timer = loop.call_later(
                gateway.settings.auth.auth_timeout, self._auth_timeout
            )
        code = None
        try:
            while True:
                message = await receive()
                kind = message["type"]
                if kind == "websocket.receive":
                    if session.state is State.CLOSING:
                        continue
                    text = message.get("text")
                    if text is None:
                        try:
                            text = (message.get("bytes") or b"").decode()
                        except UnicodeDecodeError:
                            self._error(
                                VirtwireError(
                                    ErrorCode.INVALID_MESSAGE,
                                    "binary frame is not UTF-8 JSON",
                                    details={"reason": "binary frames must carry UTF-8 JSON"},
                                )
                            )
                            continue
                    await self._on_text(text)
                elif kind == "websocket.disconnect":
                    code = message.get("code")
                    break
        finally:
            await self._cleanup(writer, code)

    # -- writing -----------------------------------------------------------------------
    async def _writer(self) -> None:
        session = self.session
        outbox = session.outbox
        send = self.send
        try:
            while True:
                text = outbox.pop()
                if text is None:
                    text = await outbox.get()
                    if text is None:
                        break
                await send({"type": "websocket.send", "text": text})
            if session.close_code is not None and session.state is not State.CLOSED:
                close = {
                    "type": "websocket.close",
                    "code": session.close_code,
                    "reason": _reason(session.close_reason),
                }
                await self._send_close(close)
        except (OSError, RuntimeError) as exc:  # the client went away mid-send
            session.log.debug("send failed", error=f"{type(exc).__name__}: {exc}")

    async def _send_close(self, close: dict[str, Any]) -> None:
        try:
            await asyncio.wait_for(self.send(close), CLOSE_GRACE)
        except TimeoutError:  # it cannot even take the close frame: drop it
            self.session.log.info("client did not take the close frame; aborting")
            abort(self.send)

    def _close_now(self) -> None:
        """The client overflowed its queue: stop the writer (possibly blocked on a full
        socket) and close without sending the backlog."""
        session = self.session
        self._writer_task.cancel()
        close = {
            "type": "websocket.close",
            "code": session.close_code,
            "reason": _reason(session.close_reason),
        }

        async def closer() -> None:
            try:
                await self._send_close(close)
            except (OSError, RuntimeError):
                pass

        task = asyncio.get_running_loop().create_task(closer())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _error(self, error: VirtwireError, id_: Any = None) -> None:
        self.session.send_error(error, id_)

    # -- reading -----------------------------------------------------------------------
    async def _on_text(self, text: str) -> None:
        session = self.session
        size = len(text)
        if size * 4 > self.limit:
            size = len(text.encode())
        if size > self.limit:
            self._error(
                VirtwireError(
                    ErrorCode.MESSAGE_TOO_BIG,
                    self.gateway.catalogue("message.too_big", size=size, limit=self.limit),
                    details={"size": size, "limit": self.limit},
                )
            )
            session.close(CloseCode.MESSAGE_TOO_BIG, "message too big")
            return
        if text == "ping":
            session.outbox.put("pong")
            return
        try:
            frame = decode_frame(text)
        except VirtwireError as exc:
            self._error(exc, _salvage_id(text))
            return
        if not self.limiter.allow():
            self._error(
                VirtwireError(
                    ErrorCode.RATE_LIMITED, self.gateway.catalogue("message.rate_limited")
                ),
                frame.id,
            )
            return
        if frame.type == "auth":
            token = (frame.data or {}).get("token")
            if not isinstance(token, str):
                self._error(
                    VirtwireError(
                        ErrorCode.INVALID_MESSAGE,
                        "invalid data.token: Expected `str`",
                        details={"field": "data.token", "reason": "Expected `str`"},
                    ),
                    frame.id,
                )
                return
            self._authenticate(token, frame.id, explicit=True)
            return
        if frame.type == "ping":
            if frame.id is not None:
                session.send("pong", frame.data or {}, frame.id)
            else:
                session.send("pong", frame.data or {})
            return
        if session.state is not State.OPEN:
            self._error(
                VirtwireError(ErrorCode.AUTH_REQUIRED, self.gateway.catalogue("auth.required")),
                frame.id,
            )
            return
        handler = self.gateway.handlers.get(frame.type)
        if handler is None:
            self._error(
                VirtwireError(
                    ErrorCode.UNKNOWN_TYPE,
                    self.gateway.catalogue("message.unknown_type", type=frame.type),
                    details={"type": frame.type, "known": sorted(self.gateway.handlers)},
                ),
                frame.id,
            )
            return
        if handler.concurrent:
            if len(self.tasks) >= self.max_tasks:
                self._error(
                    VirtwireError(
                        ErrorCode.RATE_LIMITED,
                        self.gateway.catalogue("message.busy", limit=self.max_tasks),
                    ),
                    frame.id,
                )
                return
            task = asyncio.create_task(self._dispatch(handler, frame))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        else:
            await self._dispatch(handler, frame)

    async def _dispatch(self, handler: MessageHandler, frame: Frame) -> None:
        session = self.session
        try:
            session.require(handler.scope)
            data = (
                convert_data(frame.data, handler.schema)
                if handler.schema is not None
                else (frame.data if frame.data is not None else {})
            )
            result = await handler.handler(session, data)
        except VirtwireError as exc:
            self._error(exc, frame.id)
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            owner = self.gateway.owners.get(handler.type, "?")
            session.log.exception(
                "handler failed", plugin=owner, type=handler.type, error=f"{type(exc).__name__}"
            )
            self._error(
                VirtwireError(ErrorCode.INTERNAL_ERROR, self.gateway.catalogue("internal")),
                frame.id,
            )
            return
        then = None
        if isinstance(result, Reply):
            result, then = result.data, result.then
        if frame.id is not None:
            session.send(f"{frame.type}-response", result if result is not None else {}, frame.id)
        if then is not None:
            then()

    # -- auth --------------------------------------------------------------------------
    def _authenticate(self, token: str, id_: Any, *, explicit: bool = False) -> None:
        session = self.session
        gateway = self.gateway
        text = gateway.catalogue
        try:
            principal = gateway.auth.verify(token)
        except VirtwireError as exc:
            message = (
                text("auth.expired")
                if exc.code == ErrorCode.TOKEN_EXPIRED
                else text("auth.failed", reason=exc.message)
            )
            error = VirtwireError(exc.code, message, details={"reason": exc.message})
            session.log.info("authentication failed", code=exc.code, reason=exc.message)
            self._error(error, id_)
            if session.state is not State.OPEN:
                session.close(CloseCode.AUTH, exc.code)
            return
        previous = session.principal
        if previous is not None and previous.user_id != principal.user_id:
            self._error(
                VirtwireError(
                    ErrorCode.AUTH_FAILED,
                    text("auth.user_changed", old=previous.user_id, new=principal.user_id),
                ),
                id_,
            )
            return
        session.principal = principal
        if session.state is State.AUTHENTICATING:
            session.state = State.OPEN
            gateway.hub.sessions.add(session)
        session.log = session.log.bind(user=principal.user_id)
        if self._auth_timer is not None:
            self._auth_timer.cancel()
            self._auth_timer = None
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
            self._expiry_timer = None
        if principal.expires_at is not None:
            delay = max(0.0, principal.expires_at - time.time() + gateway.settings.auth.leeway)
            self._expiry_timer = asyncio.get_running_loop().call_later(delay, self._expired)
        session.log.info("authenticated", refreshed=previous is not None)
        if explicit and id_ is not None:
            session.send(
                "auth-response",
                {
                    "userId": principal.user_id,
                    "scopes": sorted(principal.scopes),
                    "expiresAt": principal.expires_at,
                },
                id_,
            )

    def _auth_timeout(self) -> None:
        session = self.session
        if session.state is State.AUTHENTICATING:
            seconds = self.gateway.settings.auth.auth_timeout
            self._error(
                VirtwireError(
                    ErrorCode.AUTH_REQUIRED, self.gateway.catalogue("auth.timeout", seconds=seconds)
                )
            )
            session.close(CloseCode.AUTH, "auth timeout")

    def _expired(self) -> None:
        session = self.session
        if session.state is State.OPEN:
            self._error(
                VirtwireError(ErrorCode.TOKEN_EXPIRED, self.gateway.catalogue("auth.expired"))
            )
            session.close(CloseCode.AUTH, ErrorCode.TOKEN_EXPIRED)

    # -- cleanup -----------------------------------------------------------------------
    async def _cleanup(self, writer: asyncio.Task[None], code: int | None) -> None:
        session = self.session
        gateway = self.gateway
        for timer in (self._auth_timer, self._expiry_timer):
            if timer is not None:
                timer.cancel()
        session.state = State.CLOSING
        gateway.hub.sessions.discard(session)
        for task in list(self.tasks):
            task.cancel()
        try:
            await gateway.console_sessions.close_session(session)
        except Exception:
            session.log.exception("console close failed")
        subscriptions = list(session.subscriptions.values())
        session.subscriptions.clear()
        for sub in subscriptions:
            try:
                result = sub.close()
                if asyncio.iscoroutine(result):
                    await result
            except Exception:
                session.log.exception("subscription close failed")
        session.outbox.close()
        session.outbox.clear()
        writer.cancel()
        await asyncio.gather(writer, *self.tasks, return_exceptions=True)
        session.state = State.CLOSED
        gateway.sessions.discard(session)
        session.finished.set()
        session.log.info("connection closed", code=code, server_code=session.close_code)


def _reason(text: str) -> str:
    """A close reason fits in 123 bytes of UTF-8."""
    data = text.encode()
    if len(data) <= 123:
        return text
    return data[:123].decode(errors="ignore")


def _salvage_id(text: str) -> Any:
    """The ``id`` of a frame that failed validation, if the JSON had one."""
    try:
        value = decode_json(text)
    except Exception:
        return None
    if isinstance(value, dict):
        id_ = value.get("id")
        if isinstance(id_, str | int) and not isinstance(id_, bool):
            return id_
    return None


__all__ = ["Connection", "WebSocketEndpoint", "origin_allowed", "token_from_scope"]
