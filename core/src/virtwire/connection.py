"""One ``/ws`` connection's life: origin check, auth, dispatch by ``type``, cleanup."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from .audit import REQUEST_ID
from .errors import CloseCode, ErrorCode, VirtwireError, invalid_field
from .protocol import Frame, convert_data, decode_frame, encode_error, salvage_id
from .session import Session, State
from .topics import Reply, recheck_subscriptions
from .wire import abort_send, protocol_of

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

    from .gateway import Gateway
    from .topics import MessageHandler


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def token_from_scope(scope: Scope) -> str | None:
    """The token from ``?token=`` or an ``Authorization: Bearer`` header.

    Raises ``VirtwireError(AUTH_FAILED)`` when the request is ambiguous: ``token`` given more
    than once, several Authorization headers, or a query token and a header that differ.
    """
    query = scope.get("query_string", b"").decode("latin-1")
    from_query = None
    if query:
        values = parse_qs(query, keep_blank_values=True).get("token")
        if values:
            if len(values) > 1:
                raise _ambiguous()
            from_query = values[0] or None
    headers = [v for k, v in scope.get("headers", ()) if k == b"authorization"]
    if len(headers) > 1:
        raise _ambiguous()
    from_header = None
    if headers:
        auth = headers[0].decode("latin-1")
        if auth[:7].lower() == "bearer ":
            from_header = auth[7:].strip() or None
    if from_query is not None and from_header is not None and from_query != from_header:
        raise _ambiguous()
    return from_query or from_header


def _ambiguous() -> VirtwireError:
    return VirtwireError(
        ErrorCode.AUTH_FAILED, "more than one token in the request", text_key="auth.ambiguous"
    )


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
    """A token bucket per connection, with the flood streak it feeds: frames over the budget
    are dropped unread; the first of a streak is answered with one ``RATE_LIMITED``; a streak
    that lasts ``flood_close_after`` seconds closes the connection (1008)."""

    __slots__ = ("burst", "last_drop", "rate", "stamp", "streak_since", "tokens")

    #: A streak ends when no frame was dropped for this long.
    QUIET = 1.0

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = time.monotonic()
        self.streak_since: float | None = None
        self.last_drop = 0.0

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            if self.streak_since is not None and now - self.last_drop > self.QUIET:
                self.streak_since = None
            return True
        if self.streak_since is None:
            self.streak_since = now
        self.last_drop = now
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
    """Drives one session: a reader (this task) and, while frames are queued (the direct
    write path did not take them), a writer task draining the outbox."""

    __slots__ = (
        "_auth_timer",
        "_closed_now",
        "_deadline",
        "_expiry_key",
        "_tasks",
        "_writer_task",
        "gateway",
        "limit",
        "limiter",
        "max_tasks",
        "send",
        "session",
        "wire",
    )

    def __init__(self, session: Session, send: Send) -> None:
        self.session = session
        self.gateway = session.gateway
        self.send = send
        self.wire = protocol_of(send)
        self._tasks: set[asyncio.Task[None]] | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._expiry_key = 0
        server = self.gateway.settings.server
        self.limit = min(server.preauth_max_message_bytes, server.max_message_bytes)
        self.limiter = _RateLimiter(server.rate_limit, server.rate_burst)
        self.max_tasks = server.max_concurrent_requests
        self._auth_timer: asyncio.TimerHandle | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._closed_now = False
        if self.wire is not None:
            self.wire.set_max_size(self.limit * 2)
            self.wire.on_oversize = self._oversize_text

    async def run(self, scope: Scope, receive: Receive) -> None:
        session = self.session
        gateway = self.gateway
        loop = asyncio.get_running_loop()
        session.state = State.AUTHENTICATING
        gateway.sessions.add(session)
        session.log.info("connection opened", client=session.client)
        if self.wire is not None:
            session.outbox.direct = self.wire.write_text
        session.outbox.start_writer = self._start_writer
        session.on_close = self._on_close
        session.abort = self._abort
        if not self._authenticate_at_connect(scope) and session.close_code is None:
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
                    try:
                        await self._on_message(message)
                    except Exception as exc:  # a bug must not drop the connection silently
                        session.log.exception("frame handling failed", error=type(exc).__name__)
                        self._error(
                            VirtwireError(ErrorCode.INTERNAL_ERROR, gateway.catalogue("internal"))
                        )
                elif kind == "websocket.disconnect":
                    code = message.get("code")
                    break
        finally:
            await self._cleanup(code)

    def _authenticate_at_connect(self, scope: Scope) -> bool:
        """Authenticate with the handshake's token, if it has one (True). The handshake's
        headers (a browser's are a few KiB: cookies, user agent) and the query with its
        token are then dropped: not kept for the connection's life."""
        try:
            token = token_from_scope(scope)
        except VirtwireError as exc:
            self._refuse_auth(exc, None)
            token = None
        finally:
            scope["headers"] = []
            scope["query_string"] = b""
        if token is None:
            return False
        self._authenticate(token, None)
        return True

    # -- writing -----------------------------------------------------------------------
    @property
    def tasks(self) -> set[asyncio.Task[None]]:
        """Requests in flight (concurrent handlers) and close helpers."""
        if self._tasks is None:
            self._tasks = set()
        return self._tasks

    def _start_writer(self) -> None:
        self._writer_task = asyncio.get_running_loop().create_task(self._writer())

    async def _writer(self) -> None:
        """Drain the outbox, then end (the next queued frame starts another); after a
        flushing close, send the close frame."""
        session = self.session
        outbox = session.outbox
        send = self.send
        try:
            while True:
                text = outbox.pop()
                if text is None:
                    break
                await send({"type": "websocket.send", "text": text})
            if (
                outbox.closed
                and session.close_code is not None
                and session.state is not State.CLOSED
                and not self._closed_now
            ):
                await send(self._close_message())
        except (OSError, RuntimeError) as exc:  # the client went away mid-send
            session.log.debug("send failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            outbox.active = False
            self._writer_task = None

    def _close_message(self) -> dict[str, Any]:
        session = self.session
        return {
            "type": "websocket.close",
            "code": session.close_code,
            "reason": _reason(session.close_reason),
        }

    def _on_close(self, flush: bool) -> None:
        """The session is closing: start the deadline after which the connection is dropped
        (a client that stopped reading never takes its close frame); without ``flush``,
        stop the writer and put the close frame on the wire now."""
        if self._deadline is None:
            timeout = self.gateway.settings.server.close_timeout
            self._deadline = asyncio.get_running_loop().call_later(timeout, self._abort)
        if flush:
            outbox = self.session.outbox
            if not outbox.active and not self._closed_now:  # no writer: start one for the close
                outbox.active = True
                self._start_writer()
            return
        if self._closed_now:
            return
        self._closed_now = True
        if self._writer_task is not None:
            self._writer_task.cancel()
        if self.wire is not None:
            self.wire.close_now(
                self.session.close_code or CloseCode.NORMAL, _reason(self.session.close_reason)
            )
            return
        close = self._close_message()

        async def closer() -> None:
            with contextlib.suppress(OSError, RuntimeError):
                await self.send(close)

        task = asyncio.get_running_loop().create_task(closer())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _abort(self) -> None:
        self._deadline = None
        if self.session.state is State.CLOSED:
            return
        self.session.log.info("client did not take the close frame in time; dropping it")
        if self.wire is not None:
            self.wire.abort()
        else:
            abort_send(self.send)

    def _error(self, error: VirtwireError, id_: Any = None) -> None:
        self.session.send_error(error, id_)

    def _oversize_text(self, size: int) -> str | None:
        """The error frame the protocol sends before closing 1009 for a frame over its hard
        cap (the frame itself is never read, so its id is unknown)."""
        error = self._too_big(size)
        error.message = self.gateway.catalogue("message.too_big", size=size, limit=self.limit)
        return encode_error(error)

    def _too_big(self, size: int) -> VirtwireError:
        return VirtwireError(
            ErrorCode.MESSAGE_TOO_BIG,
            self.gateway.catalogue("message.too_big", size=size, limit=self.limit),
            details={"size": size, "limit": self.limit},
        )

    # -- reading -----------------------------------------------------------------------
    async def _on_message(self, message: Any) -> None:
        session = self.session
        # The budget comes first: a frame over it costs no decoding and gets no answer.
        if not self.limiter.allow():
            self._over_budget()
            return
        text = message.get("text")
        if text is None:
            raw = message.get("bytes") or b""
            if len(raw) > self.limit:
                self._error(self._too_big(len(raw)), salvage_id(raw.decode(errors="replace")))
                session.close(CloseCode.MESSAGE_TOO_BIG, "message too big")
                return
            try:
                text = raw.decode()
            except UnicodeDecodeError:
                self._error(
                    VirtwireError(
                        ErrorCode.INVALID_MESSAGE,
                        "binary frame is not UTF-8 JSON",
                        details={"reason": "binary frames must carry UTF-8 JSON"},
                        text_key="message.not_utf8",
                    )
                )
                return
        size = len(text)
        if size * 4 > self.limit:
            size = len(text.encode(errors="surrogatepass"))
        if size > self.limit:
            self._error(self._too_big(size), salvage_id(text))
            session.close(CloseCode.MESSAGE_TOO_BIG, "message too big")
            return
        if text == "ping":
            session.outbox.put("pong")
            return
        try:
            frame = decode_frame(text)
        except VirtwireError as exc:
            self._error(exc, salvage_id(text))
            return
        known = frame.type in self.gateway.handlers or frame.type in ("auth", "ping")
        self.gateway.hub.metrics.received(frame.type if known else "unknown")
        await self._on_frame(frame)

    def _over_budget(self) -> None:
        limiter = self.limiter
        session = self.session
        since = limiter.streak_since
        if since is not None and since == limiter.last_drop:  # the first drop of a streak
            self._error(
                VirtwireError(
                    ErrorCode.RATE_LIMITED,
                    self.gateway.catalogue("message.rate_limited"),
                    details={"dropped": True},
                )
            )
            return
        after = self.gateway.settings.server.flood_close_after
        if after and since is not None and limiter.last_drop - since >= after:
            session.log.warning("client flooding frames; closing", code=CloseCode.POLICY_VIOLATION)
            self._error(
                VirtwireError(ErrorCode.RATE_LIMITED, self.gateway.catalogue("message.flood"))
            )
            session.close(CloseCode.POLICY_VIOLATION, "flood")

    async def _on_frame(self, frame: Frame) -> None:
        session = self.session
        if frame.type == "auth":
            token = (frame.data or {}).get("token")
            if not isinstance(token, str):
                self._error(invalid_field("data.token", "Expected `str`"), frame.id)
                return
            self._authenticate(token, frame.id, explicit=True)
            return
        authenticated = session.state is State.OPEN
        if frame.type == "ping":
            # Before authentication a ping is answered, but its data is not echoed.
            data = (frame.data or {}) if authenticated else {}
            if frame.id is not None:
                session.send("pong", data, frame.id)
            else:
                session.send("pong", data)
            return
        if not authenticated:
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
            task = asyncio.create_task(self._dispatch_concurrent(handler, frame))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        else:
            # the request's id for the audit stream's records, for this request only
            request = REQUEST_ID.set(frame.id)
            try:
                await self._dispatch(handler, frame)
            finally:
                REQUEST_ID.reset(request)

    async def _dispatch_concurrent(self, handler: MessageHandler, frame: Frame) -> None:
        """A handler run as a task of its own: its answer goes to the socket at once instead
        of at the end of the loop tick, ahead of whatever else the tick writes (the fan-out
        of an event the request caused)."""
        REQUEST_ID.set(frame.id)  # in this task's own context: the audit records' id
        try:
            await self._dispatch(handler, frame)
        finally:
            if self.wire is not None:
                self.wire.flush()

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
    def _refuse_auth(self, exc: VirtwireError, id_: Any) -> None:
        session = self.session
        text = self.gateway.catalogue
        if exc.text_key is not None:
            message = text(exc.text_key, **exc.params)
        elif exc.code == ErrorCode.TOKEN_EXPIRED:
            message = text("auth.expired")
        else:
            message = text("auth.failed", reason=exc.message)
        error = VirtwireError(exc.code, message, details={"reason": exc.message})
        session.log.info("authentication failed", code=exc.code, reason=exc.message)
        self.gateway.audit_log.record(
            "auth-refused",
            {
                "user": session.user_id,
                "address": session.client,
                "id": id_,
                "outcome": exc.code,
                "reason": exc.message,
            },
        )
        self._error(error, id_)
        if session.state is not State.OPEN:
            session.close(CloseCode.AUTH, exc.code)

    def _authenticate(self, token: str, id_: Any, *, explicit: bool = False) -> None:
        session = self.session
        gateway = self.gateway
        text = gateway.catalogue
        try:
            principal = gateway.auth.verify(token)
        except VirtwireError as exc:
            self._refuse_auth(exc, id_)
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
            self._lift_preauth_limits()
        if self._auth_timer is not None:
            self._auth_timer.cancel()
            self._auth_timer = None
        sweep = gateway.expiry
        if principal.expires_at is not None:
            delay = max(0.0, principal.expires_at - time.time() + gateway.settings.auth.leeway)
            if not self._expiry_key:
                self._expiry_key = sweep.new_key()
            sweep.set(self._expiry_key, delay, self._expired)
        elif self._expiry_key:
            sweep.discard(self._expiry_key)
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
        if previous is not None:
            recheck_subscriptions(session)

    def _lift_preauth_limits(self) -> None:
        server = self.gateway.settings.server
        self.limit = server.max_message_bytes
        self.session.outbox.max_bytes = server.send_queue_bytes
        if self.wire is not None:
            self.wire.set_max_size(server.max_message_bytes * 2)

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
            from .consolesessions import REASON_TOKEN_EXPIRED

            self.gateway.console_sessions.announce(session, REASON_TOKEN_EXPIRED)
            session.close(CloseCode.AUTH, ErrorCode.TOKEN_EXPIRED)

    # -- cleanup -----------------------------------------------------------------------
    async def _cleanup(self, code: int | None) -> None:
        session = self.session
        gateway = self.gateway
        if self._auth_timer is not None:
            self._auth_timer.cancel()
        if self._expiry_key:
            gateway.expiry.discard(self._expiry_key)
        session.state = State.CLOSING
        gateway.hub.sessions.discard(session)
        tasks = list(self._tasks or ())
        for task in tasks:
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
        session.outbox.start_writer = None
        writer = self._writer_task
        if writer is not None:
            writer.cancel()
            tasks.append(writer)
        await asyncio.gather(*tasks, *(self._tasks or ()), return_exceptions=True)
        session.state = State.CLOSED
        if self._deadline is not None:
            self._deadline.cancel()  # from here the protocol's own deadline applies
            self._deadline = None
        gateway.sessions.discard(session)
        session.mark_finished()
        session.log.info("connection closed", code=code, server_code=session.close_code)


def _reason(text: str) -> str:
    """A close reason fits in 123 bytes of UTF-8."""
    data = text.encode()
    if len(data) <= 123:
        return text
    return data[:123].decode(errors="ignore")


__all__ = ["Connection", "WebSocketEndpoint", "origin_allowed", "token_from_scope"]
