"""The running gateway: settings, plugins, registries, hub, and their lifespan."""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec
from starlette.routing import BaseRoute
from starlette.websockets import WebSocket

from .audit import AuditLog, audit_path
from .auth import Authenticator, Principal
from .backends import HypervisorBackend
from .broker import Broker
from .collectors import MetricCollector
from .config import Settings, state_dir
from .consoles import ConsoleTransport
from .consolesessions import ConsoleSessions
from .errors import CloseCode, ConfigError, ErrorCode, VirtwireError
from .expiry import ExpirySweep
from .hub import Hub
from .logsources import LogSource
from .messages import Catalogue
from .plugins import PluginManager, name_of
from .session import Session, State
from .terminals import TerminalManager
from .tickets import TicketStore
from .topics import Handler, MessageHandler, Topic


class Gateway:
    """Everything one virtwire server holds. Plugins receive it in their hooks."""

    def __init__(self, settings: Settings, log: Any) -> None:
        self.settings = settings
        self.log = log
        self.catalogue = Catalogue(settings.server.locale)
        self.auth = Authenticator(settings)
        self.hub = Hub(settings.server.history_size)
        #: The audit stream (``virtwire.audit``): plugins write to it with :meth:`audit`.
        self.audit_log = AuditLog(settings.audit)
        #: Token expiry of every ``/ws`` connection, on one timer.
        self.expiry = ExpirySweep()
        self.plugins = PluginManager(log)
        self.backends: list[HypervisorBackend] = []
        self.consoles: list[ConsoleTransport] = []
        self.log_sources: list[LogSource] = []
        self.collectors: list[MetricCollector] = []
        self.handlers: dict[str, MessageHandler] = {}
        self.topics: dict[str, Topic] = {}
        self.routes: list[BaseRoute] = []
        #: Pages a browser opens, as ``(label, path)`` (a plugin adds its own in
        #: ``register_routes``); ``virtwire serve`` prints each with the development token.
        self.pages: list[tuple[str, str]] = []
        self.sessions: set[Session] = set()
        #: One-time tickets of the console endpoints (``virtwire.tickets``).
        self.tickets = TicketStore(ttl=settings.consoles.ticket_ttl)
        #: Terminal sessions (``virtwire.terminals``), by ``sessionId``.
        self.terminals = TerminalManager(settings.terminal, log, self.catalogue)
        self.terminals.on_end.append(self.tickets.revoke)
        self.terminals.audit = self.audit_log
        #: Open consoles of every connection: limits, tickets, cleanup
        #: (``virtwire.consolesessions``).
        self.console_sessions = ConsoleSessions(self)
        #: Callbacks ``closer(code, reason)`` of plugin connections (e.g. a plugin's WebSocket
        #: route) that :meth:`close_all` must close too; add on open, discard on close. A
        #: closer may return an awaitable that completes once the connection is closed.
        self.closers: set[Callable[[int, str], Awaitable[Any] | None]] = set()
        self._settings_schemas: dict[str, type] = {}
        self._plugin_configs: dict[str, Any] = {}
        self.owners: dict[str, str] = {}  # handler type / topic name -> plugin
        self.started = False
        self.pm_has_authorize = False
        self.hub.metrics.attach(self)

    # -- building ----------------------------------------------------------------------
    def load_plugins(
        self,
        plugins: list[ModuleType | object | tuple[str, object]] | None,
        builtins: list[tuple[str, ModuleType]],
    ) -> None:
        """Load the built-in plugins and either ``plugins`` (explicit) or the installed ones,
        then run every registration hook."""
        self.plugins.load_builtins(builtins)
        if plugins is None:
            self.plugins.load_installed(self.settings.enabled_plugins, source=self.settings.source)
        else:
            for plugin in plugins:
                if isinstance(plugin, tuple):
                    name, plugin = plugin
                else:
                    name = name_of(plugin)
                self.plugins.register(plugin, name)
        self._register_settings()
        self._register_texts()
        self._collect("register_backends", self.backends)
        self._collect("register_consoles", self.consoles)
        self._collect("register_log_sources", self.log_sources)
        self._collect("register_collectors", self.collectors)
        self._collect("register_routes", self.routes)
        self._register_handlers()
        self._register_topics()
        self._register_broker()
        self.pm_has_authorize = any(True for _ in self.plugins.impls("authorize"))

    def _register_settings(self) -> None:
        for plugin, _ in self.plugins.impls("register_settings"):
            staged: dict[str, type] = {}
            if not self.plugins.call_one(plugin, "register_settings", register=staged.__setitem__):
                continue
            for name, schema in staged.items():
                self._settings_schemas[name] = schema
                # A bad section is an operator error: stop with the message.
                self._plugin_configs[name] = self.settings.plugin(name, schema)
        known = set(self.plugins.infos) | set(self._settings_schemas)
        for section in self.settings.plugin_sections:
            if section not in known:
                raise ConfigError(
                    f"{self.settings.source}: [plugins.{section}]: no installed plugin is named "
                    f"{section!r} (installed: {', '.join(sorted(self.plugins.infos)) or 'none'})"
                )
            info = self.plugins.infos.get(section)
            if (
                section not in self._settings_schemas
                and info is not None
                and info.state == "enabled"
            ):
                raise ConfigError(
                    f"{self.settings.source}: [plugins.{section}]: plugin {section!r} takes no "
                    "settings; remove the section"
                )

    def _register_texts(self) -> None:
        for plugin, _ in list(self.plugins.impls("register_texts")):
            staged: list[tuple[str, Any]] = []

            def register(locale: str, texts: Any, _staged: list[tuple[str, Any]] = staged) -> None:
                texts = dict(texts)
                if not all(isinstance(k, str) and isinstance(v, str) for k, v in texts.items()):
                    raise TypeError("register_texts: texts must map str keys to str templates")
                _staged.append((locale, texts))

            if not self.plugins.call_one(plugin, "register_texts", register=register):
                continue
            for locale, texts in staged:
                self.catalogue.add(locale, texts)

    def state_dir(self, plugin: str | None = None) -> Path:
        """Where runtime files live (sockets, caches, state that outlives a restart): the
        gateway's state directory (``settings.state_dir``, else ``$VIRTWIRE_STATE_DIR``, else
        ``$XDG_STATE_HOME/virtwire``, else ``~/.local/state/virtwire``), or with ``plugin``
        that plugin's own ``plugins/NAME`` inside it. Created (mode 0700) when missing."""
        root = Path(self.settings.state_dir) if self.settings.state_dir else state_dir()
        path = root
        if plugin is not None:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", plugin):
                raise ValueError(f"not a plugin name: {plugin!r}")
            path = root / "plugins" / plugin
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        return path

    def plugin_config(self, name: str) -> Any:
        """The validated ``[plugins.NAME]`` section (defaults if absent)."""
        if name not in self._plugin_configs:
            raise KeyError(f"plugin {name!r} registered no settings")
        return self._plugin_configs[name]

    def _collect(self, hook: str, target: list[Any]) -> None:
        for plugin, _ in list(self.plugins.impls(hook)):
            staged: list[Any] = []
            ok = self.plugins.call_one(plugin, hook, register=staged.append, gateway=self)
            if ok:
                target.extend(staged)

    def _register_handlers(self) -> None:
        for plugin, _ in list(self.plugins.impls("register_handlers")):
            staged: list[MessageHandler] = []

            def register(
                type_: str,
                handler: Handler,
                *,
                scope: str | None = None,
                schema: type | None = None,
                concurrent: bool = False,
                _staged: list[MessageHandler] = staged,
            ) -> None:
                if schema is not None and not (
                    isinstance(schema, type) and issubclass(schema, msgspec.Struct)
                ):
                    raise TypeError(f"schema for {type_!r} must be a msgspec.Struct type")
                _staged.append(MessageHandler(type_, handler, scope, schema, concurrent))

            if not self.plugins.call_one(
                plugin, "register_handlers", register=register, gateway=self
            ):
                continue
            for h in staged:
                if h.type in self.handlers:
                    raise ConfigError(
                        f"message type {h.type!r} is registered by both plugin "
                        f"{self.owners[h.type]!r} and {plugin!r}; disable one of them"
                    )
                self.handlers[h.type] = h
                self.owners[h.type] = plugin

    def _register_topics(self) -> None:
        for plugin, _ in list(self.plugins.impls("register_topics")):
            staged: list[Topic] = []
            if not self.plugins.call_one(
                plugin, "register_topics", register=staged.append, gateway=self
            ):
                continue
            for topic in staged:
                key = f"topic:{topic.name}"
                if topic.name in self.topics:
                    raise ConfigError(
                        f"topic {topic.name!r} is registered by both plugin "
                        f"{self.owners[key]!r} and {plugin!r}; disable one of them"
                    )
                self.topics[topic.name] = topic
                self.owners[key] = plugin

    def _register_broker(self) -> None:
        for plugin, _ in list(self.plugins.impls("register_broker")):
            staged: list[Broker] = []
            if not self.plugins.call_one(
                plugin, "register_broker", register=staged.append, gateway=self
            ):
                continue
            for broker in staged:
                if self.hub.broker is not None:
                    raise ConfigError(
                        f"a broker is registered by both plugin {self.owners['broker']!r} and "
                        f"{plugin!r}; disable one of them"
                    )
                self.hub.broker = broker
                self.owners["broker"] = plugin

    # -- audit ---------------------------------------------------------------------------
    def audit(self, event: str, /, session: Session | None = None, **fields: Any) -> None:
        """Add a record to the audit stream (docs/audit.md): ``event`` (a short name such as
        ``"snapshot-create"``) and ``fields`` (JSON values; None values are left out). With
        ``session`` (a ``/ws`` connection), its ``user`` and ``address`` and the request's
        ``id`` are added. Cheap: the record is queued and written by another thread. Never
        pass secrets (keys named like ``token``, ``password``, ``ticket`` are redacted)."""
        if session is not None or "id" not in fields:
            fields = {**self.audit_log.session_fields(session), **fields}
        self.audit_log.record(event, fields, redact=True)

    def check_audit(self) -> None:
        """``ConfigError`` if the audit stream's file cannot be opened (before start-up)."""
        audit = self.settings.audit
        if audit.enabled:
            self.audit_log.check(audit_path(audit, self.state_dir()))

    # -- authorization -----------------------------------------------------------------
    def authorized(self, principal: Principal, action: str, resource: str | None) -> bool:
        if not self.pm_has_authorize:
            return True
        for _, result in self.plugins.call_each(
            "authorize", principal=principal, action=action, resource=resource
        ):
            if result is False:
                return False
        return True

    async def authenticate_websocket(
        self, websocket: WebSocket, *, scope: str | None = None, resource: str | None = None
    ) -> Principal:
        """Verify the token of a plugin route's WebSocket (``?token=`` or ``Authorization:
        Bearer``), check ``scope`` and ask the ``authorize`` hooks about ``resource``.
        Raises ``VirtwireError`` (AUTH_REQUIRED, AUTH_FAILED, TOKEN_EXPIRED, FORBIDDEN); a
        refused token is recorded in the audit stream (``auth-refused``)."""
        from .connection import client_address, token_from_scope

        try:
            token = token_from_scope(websocket.scope)
        except VirtwireError as exc:
            raise VirtwireError(exc.code, self.catalogue("auth.ambiguous")) from None
        if not token:
            raise VirtwireError(ErrorCode.AUTH_REQUIRED, self.catalogue("auth.required_query"))
        try:
            principal = self.auth.verify(token)
        except VirtwireError as exc:
            self.audit_log.record(
                "auth-refused",
                {
                    "address": client_address(websocket.scope),
                    "path": websocket.scope.get("path"),
                    "outcome": exc.code,
                    "reason": exc.message,
                },
            )
            raise
        if not principal.has_scope(scope) or not self.authorized(principal, scope or "", resource):
            raise VirtwireError(ErrorCode.FORBIDDEN, self.catalogue("forbidden.scope", scope=scope))
        return principal

    # -- lifespan ----------------------------------------------------------------------
    async def startup(self) -> None:
        from .builtins.vms import VmRegistry

        audit = self.settings.audit
        if audit.enabled:
            self.audit_log.start(audit_path(audit, self.state_dir()), self.log)
        self.vms = VmRegistry(self)
        if self.hub.broker is not None:
            await self.hub.broker.start(self.hub)
        await self.vms.start()
        await self._lifecycle("startup")
        self.started = True
        self.log.info(
            "gateway started",
            plugins=[n for n, i in sorted(self.plugins.infos.items()) if i.state == "enabled"],
            failed=[n for n, i in sorted(self.plugins.infos.items()) if i.state == "failed"],
        )

    async def _lifecycle(self, hook: str) -> None:
        """Call ``startup``/``shutdown`` of every plugin, awaiting what they return; a plugin
        that raises is disabled and reported."""
        for plugin, result in list(self.plugins.call_each(hook, gateway=self)):
            if inspect.isawaitable(result):
                try:
                    await result
                except Exception as exc:
                    self.plugins.fail(plugin, hook, exc)

    async def close_all(self, code: int = CloseCode.GOING_AWAY, timeout: float = 5.0) -> None:
        """Close every connection with ``code`` and wait (bounded) until they are gone."""
        sessions = list(self.sessions)
        reason = self.catalogue("close.shutdown")
        # Consoles first, while their clients can still be told (``vnc-closed``); without
        # any, nothing is awaited before the connections close (their backlogs are dropped).
        if len(self.console_sessions):
            try:
                await asyncio.wait_for(self.console_sessions.close_all(), timeout)
            except TimeoutError:
                self.log.warning("consoles did not close in time")
        for session in sessions:
            session.close(code, reason, flush=False)
        pending: list[asyncio.Future[Any]] = []
        for closer in list(self.closers):
            try:
                result = closer(code, reason)
            except Exception as exc:
                self.log.error("connection closer failed", error=f"{type(exc).__name__}: {exc}")
                continue
            if inspect.isawaitable(result):
                pending.append(asyncio.ensure_future(result))
        waits = [
            asyncio.ensure_future(s.finished.wait())
            for s in sessions
            if s.state is not State.CLOSED
        ]
        if waits or pending:
            await asyncio.wait([*waits, *pending], timeout=timeout)
        for session in sessions:  # still there: drop them, so shutdown ends on time
            if session.state is not State.CLOSED and session.abort is not None:
                session.abort()

    async def shutdown(self) -> None:
        await self.close_all(CloseCode.GOING_AWAY, self.settings.server.shutdown_timeout)
        await self._lifecycle("shutdown")
        if hasattr(self, "vms"):
            await self.vms.close()
        if self.hub.broker is not None:
            await self.hub.broker.close()
        await self.audit_log.close()
        self.started = False
