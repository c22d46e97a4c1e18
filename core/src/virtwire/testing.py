"""Test kit for virtwire and its plugins: a real server on a free port, tokens, clients.

Install it with ``pip install "virtwire[testing]"`` (pytest and pytest-asyncio, the async
test runner virtwire uses; set ``asyncio_mode = "auto"`` in your pytest configuration so that
``async def test_...`` functions run). Use it from pytest::

    from virtwire.testing import run_server

    async def test_hello():
        async with run_server(plugins=[my_plugin]) as server:
            async with server.client() as client:
                reply = await client.request("hello", {"name": "x"})
                assert reply["data"] == {...}

or enable the fixtures with ``pytest_plugins = ["virtwire.testing"]`` and use
``virtwire_server`` (a factory: ``async with virtwire_server(...) as server``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import queue
import socket
import tempfile
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec
from websockets.asyncio.client import ClientConnection, connect

from .app import Server, create_app, uvicorn_config
from .auth import SCOPES
from .config import Settings, load_settings
from .gateway import Gateway

__all__ = [
    "TEST_SECRET",
    "Client",
    "RunningServer",
    "TextClient",
    "free_port",
    "make_settings",
    "run_server",
    "virtwire_server",
    "virtwire_settings",
]

TEST_SECRET = "virtwire-test-secret-0123456789abcdef"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def make_settings(config: dict[str, Any] | None = None, **env: str) -> Settings:
    """Settings from a config dict (TOML layout), with a test secret and a free port unless
    given. ``env`` are extra ``VIRTWIRE_*`` overrides."""
    data: dict[str, Any] = {
        k: (dict(v) if isinstance(v, dict) else v) for k, v in (config or {}).items()
    }
    data.setdefault("server", {})
    data["server"].setdefault("port", free_port())
    data.setdefault("auth", {})
    if "public_key_file" not in data["auth"]:
        data["auth"].setdefault("secret", TEST_SECRET)
    return load_settings(data=data, environ=dict(env))


class Client:
    """A WebSocket client speaking virtwire frames, with request/response matching."""

    _ids = itertools.count(1)

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.replies: dict[Any, asyncio.Future[dict[str, Any]]] = {}
        self.texts: asyncio.Queue[str] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(Exception):
            async for raw in self.ws:
                if isinstance(raw, bytes):
                    raw = raw.decode()
                try:
                    frame = msgspec.json.decode(raw)
                except msgspec.DecodeError:
                    await self.texts.put(raw)
                    continue
                if not isinstance(frame, dict):
                    await self.texts.put(raw)
                    continue
                fut = self.replies.pop(frame.get("id"), None) if "id" in frame else None
                if fut is not None and not fut.done():
                    fut.set_result(frame)
                else:
                    await self.frames.put(frame)

    async def send(self, type_: str, data: Any = None, id_: Any = None) -> None:
        frame: dict[str, Any] = {"type": type_}
        if data is not None:
            frame["data"] = data
        if id_ is not None:
            frame["id"] = id_
        await self.ws.send(msgspec.json.encode(frame).decode())

    async def send_raw(self, text: str | bytes) -> None:
        await self.ws.send(text)

    async def request(
        self, type_: str, data: Any = None, *, timeout: float = 10.0
    ) -> dict[str, Any]:
        """Send a frame with a fresh id and return the reply frame with that id (a
        ``<type>-response`` or an ``error``)."""
        id_ = f"t{next(self._ids)}"
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.replies[id_] = fut
        await self.send(type_, data, id_)
        return await asyncio.wait_for(fut, timeout)

    async def expect(
        self,
        type_: str | None = None,
        *,
        where: Callable[[dict[str, Any]], bool] | None = None,
        timeout: float = 10.0,
    ) -> dict[str, Any]:
        """The next pushed frame of ``type_`` (and matching ``where``); frames before it that
        do not match are dropped."""

        async def wait() -> dict[str, Any]:
            while True:
                frame = await self.frames.get()
                if (type_ is None or frame.get("type") == type_) and (
                    where is None or where(frame)
                ):
                    return frame

        return await asyncio.wait_for(wait(), timeout)

    async def closed(self, timeout: float = 10.0) -> tuple[int | None, str]:
        """Wait until the server closes the connection; (code, reason)."""
        await asyncio.wait_for(self.ws.wait_closed(), timeout)
        return self.ws.close_code, self.ws.close_reason or ""

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader


class TextClient:
    """A client for plain-text WebSocket endpoints such as the log stream
    (``/api/v1/ws/logs``): every text frame the server sends, in order."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def recv(self, timeout: float = 10.0) -> str:
        """The next text frame (binary frames are decoded as UTF-8)."""
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        return raw.decode() if isinstance(raw, bytes) else raw

    async def expect(self, match: str | Callable[[str], bool], *, timeout: float = 10.0) -> str:
        """The next frame that contains ``match`` (or for which ``match(text)`` is true);
        frames before it are dropped."""
        test = match if callable(match) else (lambda text: match in text)

        async def wait() -> str:
            while True:
                text = await self.recv(timeout)
                if test(text):
                    return text

        return await asyncio.wait_for(wait(), timeout)

    async def send(self, text: str) -> None:
        await self.ws.send(text)

    async def closed(self, timeout: float = 10.0) -> tuple[int | None, str]:
        """Wait until the server closes the connection; (code, reason). Frames still
        unread are dropped."""

        async def drain() -> None:
            with contextlib.suppress(Exception):
                async for _ in self.ws:
                    pass

        await asyncio.wait_for(drain(), timeout)
        return self.ws.close_code, self.ws.close_reason or ""


@dataclass
class RunningServer:
    """A gateway serving on loopback."""

    settings: Settings
    gateway: Gateway
    server: Server
    port: int
    #: This server's own state directory (``gateway.state_dir()``): a temporary directory
    #: removed when the server stops, unless ``run_server(state_dir=...)`` chose one.
    state_dir: Path

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, path: str = "/ws", token: str | None = None) -> str:
        url = f"ws://127.0.0.1:{self.port}{path}"
        if token is not None:
            url += ("&" if "?" in url else "?") + f"token={token}"
        return url

    def token(
        self,
        sub: str = "tester",
        scopes: list[str] | tuple[str, ...] = SCOPES,
        *,
        ttl: float | None = 3600,
        vms: list[str] | None = None,
        **extra: Any,
    ) -> str:
        return self.gateway.auth.mint(sub, scopes, ttl=ttl, vms=vms, extra=extra)

    async def audit_records(
        self,
        event: str | None = None,
        *,
        count: int = 1,
        where: Callable[[dict[str, Any]], bool] | None = None,
        timeout: float = 10.0,
    ) -> list[dict[str, Any]]:
        """The records of the audit stream's file (those of ``event`` for which ``where`` is
        true), once at least ``count`` of them are written; ``TimeoutError`` after
        ``timeout`` seconds."""
        path = self.gateway.audit_log.path
        if path is None:
            raise RuntimeError("the audit stream is off or goes to standard error")

        def matching() -> list[dict[str, Any]]:
            try:
                lines = path.read_bytes().splitlines()
            except FileNotFoundError:
                return []
            records = [msgspec.json.decode(line) for line in lines if line]
            return [
                r
                for r in records
                if (event is None or r.get("event") == event) and (where is None or where(r))
            ]

        async with asyncio.timeout(timeout):
            while len(found := matching()) < count:  # noqa: ASYNC110 (written by a thread)
                await asyncio.sleep(0.01)
        return found

    @contextlib.asynccontextmanager
    async def client(
        self,
        token: str | None = "default",
        *,
        path: str = "/ws",
        **kwargs: Any,
    ) -> AsyncIterator[Client]:
        """An authenticated (``?token=``) client; ``token=None`` connects without one."""
        if token == "default":
            token = self.token()
        async with connect(self.ws_url(path, token), **kwargs) as ws:
            client = Client(ws)
            try:
                yield client
            finally:
                await client.close()

    @contextlib.asynccontextmanager
    async def text_client(
        self,
        path: str = "/api/v1/ws/logs",
        token: str | None = "default",
        *,
        query: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[TextClient]:
        """A client of a plain-text endpoint, by default the log stream: ``query`` is added
        to the URL (``query={"file": "app.log"}``); authenticated with ``?token=`` unless
        ``token=None``."""
        if token == "default":
            token = self.token()
        if query:
            path += ("&" if "?" in path else "?") + urllib.parse.urlencode(query)
        async with connect(self.ws_url(path, token), **kwargs) as ws:
            yield TextClient(ws)


@contextlib.asynccontextmanager
async def run_server(
    settings: Settings | None = None,
    *,
    plugins: list[ModuleType | object | tuple[str, object]] | None = None,
    config: dict[str, Any] | None = None,
    state_dir: str | Path | None = None,
    **uvicorn_overrides: Any,
) -> AsyncIterator[RunningServer]:
    """Start a real gateway (uvicorn, loopback, free port) in this event loop.

    :param settings: settings (default: :func:`make_settings` from ``config``).
    :param plugins: explicit plugin list (default: the installed entry points, as
        ``virtwire serve`` would load them). An item is a module, registered under the name
        of the installed entry point that points at it (else its module name), any object
        with hook functions, or a ``(name, plugin)`` pair that names it explicitly. The
        built-in plugins are always loaded.
    :param config: a config dict in the TOML layout, for :func:`make_settings`.
    :param state_dir: the gateway's state directory; by default a fresh temporary
        directory per server, removed when it stops (nothing is written to your home).
    """
    async with contextlib.AsyncExitStack() as stack:
        settings = settings or make_settings(config)
        if state_dir is None and settings.state_dir is None:
            state_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="virtwire-state-"))
        if state_dir is not None:  # the caller's settings stay as they are
            settings = msgspec.structs.replace(settings, state_dir=str(state_dir))
        running = await stack.enter_async_context(_serve(settings, plugins, uvicorn_overrides))
        yield running


@contextlib.asynccontextmanager
async def _serve(
    settings: Settings,
    plugins: list[ModuleType | object | tuple[str, object]] | None,
    uvicorn_overrides: dict[str, Any],
) -> AsyncIterator[RunningServer]:
    app = create_app(settings, plugins=plugins)
    overrides = {"loop": "asyncio", "access_log": False, **uvicorn_overrides}
    server = Server(uvicorn_config(app, settings, **overrides))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("server exited during start-up")
        await asyncio.sleep(0.005)
    port = settings.server.port
    try:
        gateway: Gateway = app.state.gateway
        yield RunningServer(settings, gateway, server, port, gateway.state_dir())
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


@contextlib.contextmanager
def serve_in_thread(
    settings: Settings | None = None,
    *,
    plugins: list[ModuleType | object] | None = None,
    config: dict[str, Any] | None = None,
) -> Iterator[RunningServer]:
    """:func:`run_server` on an event loop of its own thread, for synchronous tests (e.g.
    property-based tests with hypothesis driving a blocking client)."""
    import threading

    ready: queue.Queue[RunningServer | BaseException] = queue.Queue()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def main() -> None:
        try:
            async with run_server(settings, plugins=plugins, config=config) as server:
                ready.put(server)
                await stop.wait()
        except BaseException as exc:
            ready.put(exc)
            raise

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    started = ready.get(timeout=30)
    if isinstance(started, BaseException):
        thread.join(5)
        loop.close()
        raise started
    try:
        yield started
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()


try:  # pytest fixtures, when used as a pytest plugin
    import pytest
    import pytest_asyncio

    @pytest_asyncio.fixture
    async def virtwire_server() -> AsyncIterator[Callable[..., Any]]:
        """Factory fixture: ``async with virtwire_server(plugins=[...]) as server``."""
        yield run_server

    @pytest.fixture
    def virtwire_settings() -> Callable[..., Settings]:
        return make_settings

except ImportError:  # pragma: no cover - pytest not installed
    pass
