"""The Proxmox VE API session: proxmoxer's blocking calls in a bounded thread pool, the login
(ticket or API token), ticket renewal, and errors translated into three kinds."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from .settings import ProxmoxSettings

T = TypeVar("T")

# proxmoxer logs request data at INFO and whole responses (console tickets and passwords
# among them) at DEBUG: keep its loggers at WARNING whatever the root logger's level.
for _name in ("proxmoxer", "proxmoxer.core", "proxmoxer.backends.https", "urllib3"):
    logging.getLogger(_name).setLevel(logging.WARNING)


class Unreachable(Exception):
    """The host did not answer (refused, reset, timed out)."""


class Unauthorized(Exception):
    """The host refused the credentials (bad password, expired or revoked ticket/token)."""


class ApiError(Exception):
    """The API answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class PveClient:
    """One logged-in proxmoxer ``ProxmoxAPI`` and the threads that use it.

    ``call(fn)`` runs ``fn(api)`` in a worker (at most ``workers`` at once) bounded by
    ``call_timeout``. The first call logs in; a refused or expired ticket drops the session
    so that the next call logs in again. Secrets stay in this object and proxmoxer's.
    """

    def __init__(self, settings: ProxmoxSettings, password: str | None, token: str | None):
        self.settings = settings
        self._password = password
        self._token = token
        self._api: Any = None
        self._login_lock = asyncio.Lock()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            settings.workers, thread_name_prefix="proxmox-call"
        )
        #: Logins done (the first one and every one after a refused ticket).
        self.logins = 0

    def close(self) -> None:
        self.drop_session()
        self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def logged_in(self) -> bool:
        return self._api is not None

    def drop_session(self) -> None:
        """Forget the session (closing its connections): the next call logs in again."""
        api, self._api = self._api, None
        if api is not None:
            _close_api(api)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        # requests' own timeout bounds each socket operation; this bounds the whole call
        # (several redirects or a slow body) a little later.
        try:
            return await asyncio.wait_for(
                loop.run_in_executor(self._executor, fn, *args),
                self.settings.call_timeout * 2 + 1,
            )
        except TimeoutError:
            raise Unreachable(
                f"no answer from {self.settings.host} within {self.settings.call_timeout:g} s"
            ) from None

    async def api(self) -> Any:
        """The logged-in ``ProxmoxAPI`` (logging in if needed)."""
        api = self._api
        if api is not None:
            return api
        async with self._login_lock:
            if self._api is None:
                self._api = await self._run(self._login_sync)
                self.logins += 1
            return self._api

    async def call(self, fn: Callable[[Any], T]) -> T:
        api = await self.api()
        try:
            return await self._run(self._call_sync, fn, api)
        except Unauthorized:
            if self._api is api:
                self.drop_session()
            raise

    def tokens(self) -> tuple[str, str]:
        """The current ticket and CSRF token (ticket sessions only)."""
        if self._api is None:
            raise Unauthorized("not logged in")
        ticket, csrf = self._api.get_tokens()
        if not ticket:
            raise Unauthorized("an API token has no ticket")
        return ticket, csrf

    def authorization(self) -> dict[str, str]:
        """Headers authenticating a request outside proxmoxer (the WebSocket upgrade)."""
        s = self.settings
        if s.uses_token:
            return {"Authorization": f"PVEAPIToken={s.user}!{s.token_name}={self._token}"}
        ticket, csrf = self.tokens()
        return {"Cookie": f"PVEAuthCookie={ticket}", "CSRFPreventionToken": csrf}

    # -- in the workers ----------------------------------------------------------------
    def _login_sync(self) -> Any:
        from proxmoxer import ProxmoxAPI

        s = self.settings
        kwargs: dict[str, Any] = {
            "host": s.host,
            "port": s.port,
            "user": s.user,
            "verify_ssl": s.verify(),
            "timeout": s.call_timeout,
        }
        if s.uses_token:
            kwargs.update(token_name=s.token_name, token_value=self._token)
        else:
            kwargs["password"] = self._password
        try:
            api = ProxmoxAPI(**kwargs)
        except Exception as exc:
            raise _translate(exc) from None
        auth = getattr(getattr(api, "_backend", None), "auth", None)
        if auth is not None and hasattr(auth, "renew_age"):
            # proxmoxer renews the ticket on the first request after this age
            auth.renew_age = s.ticket_renew
        return api

    @staticmethod
    def _call_sync(fn: Callable[[Any], T], api: Any) -> T:
        try:
            return fn(api)
        except Exception as exc:
            raise _translate(exc) from None


def _close_api(api: Any) -> None:
    session = getattr(api, "_store", {}).get("session")
    if session is not None:
        with contextlib.suppress(Exception):
            session.close()


def _translate(exc: Exception) -> Exception:
    import requests
    from proxmoxer import AuthenticationError, ResourceException

    if isinstance(exc, Unreachable | Unauthorized | ApiError):
        return exc
    if isinstance(exc, AuthenticationError):
        # its text names the user and URL, never the password
        return Unauthorized(str(exc))
    if isinstance(exc, ResourceException):
        if exc.status_code == 401:
            return Unauthorized(f"401 {exc.content}".strip())
        message = str(exc.content or exc.status_message or "")
        if exc.errors:
            message = f"{message}: {exc.errors}" if message else str(exc.errors)
        return ApiError(int(exc.status_code), f"{exc.status_code} {message}".strip())
    if isinstance(exc, requests.exceptions.SSLError):
        return Unreachable(f"TLS: {_first_line(exc)}")
    if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
        return Unreachable(_first_line(exc))
    if isinstance(exc, ValueError):  # a body that is not JSON
        return ApiError(502, f"unexpected answer: {_first_line(exc)}")
    return exc


def _first_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    with contextlib.suppress(Exception):
        reason = getattr(exc, "args", [None])[0]
        inner = getattr(reason, "reason", None)
        if inner is not None:
            text = str(inner)
    return text.splitlines()[0][:300]
