"""Every hook a virtwire plugin can implement: the plugin author's reference.

Registration hooks are cheap and synchronous: a plugin calls ``register(...)`` with typed
objects; their I/O happens later in async methods the core calls inside the gateway's
lifespan. Each hook is called once per plugin; a hook implementation that raises disables
that plugin (reported by name) and never takes the gateway down. Implementations may accept
any subset of a hook's arguments, by name.

``gateway`` is the running :class:`virtwire.gateway.Gateway`: its ``settings``,
``plugin_config(name)``, ``state_dir(plugin)``, ``hub``, ``catalogue``, ``log``, and the
registries (``backends``, ``consoles``, ``log_sources``, ``collectors``). docs/plugins.md is
the guide to these hooks; docs/reference.md documents every name they use.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from .auth import Principal
    from .backends import HypervisorBackend
    from .broker import Broker
    from .collectors import MetricCollector
    from .consoles import ConsoleTransport
    from .gateway import Gateway
    from .logsources import LogSource
    from .topics import Topic

PROJECT = "virtwire"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_settings(register: Callable[[str, type], None]) -> None:
    """Declare the schema of a plugin's ``[plugins.NAME]`` config section.

    :param register: ``register(name, schema)`` where ``name`` is the plugin's entry-point
        name and ``schema`` a ``msgspec.Struct`` type (use ``forbid_unknown_fields=True``).
        The section is validated at start-up; a bad or unknown key stops the gateway with a
        message naming the file, section and key. Get the validated value with
        ``gateway.plugin_config(name)``.
    """


@hookspec
def register_texts(register: Callable[[str, Mapping[str, str]], None]) -> None:
    """Contribute human-readable texts to the message catalogue, per locale.

    :param register: ``register(locale, {key: template})``, e.g.
        ``register("zh-CN", {"error.HELLO_QUOTA": "配额已用完（{limit}）"})``. Templates are
        ``str.format`` strings; ``gateway.catalogue(key, **params)`` formats them in the
        gateway's locale (``server.locale``), falling back to ``en``, then to the key. A
        ``VirtwireError`` whose code has an ``error.<CODE>`` text reaches the client with that
        text, formatted with ``vm_id`` and the error's ``params``. Prefix your keys with your
        plugin's name; a key the core already has is overridden. Called before every other
        registration hook except ``register_settings``.
    """


@hookspec
def register_backends(register: Callable[[HypervisorBackend], None], gateway: Gateway) -> None:
    """Contribute hypervisor backends.

    :param register: ``register(backend)`` with an object satisfying
        :class:`virtwire.backends.HypervisorBackend`. The core starts it in the lifespan
        (``await backend.start(events)``) and closes it on shutdown.
    :param gateway: the gateway being built.
    """


@hookspec
def register_consoles(register: Callable[[ConsoleTransport], None], gateway: Gateway) -> None:
    """Contribute console transports (VNC streams, terminals).

    :param register: ``register(transport)`` with a
        :class:`virtwire.consoles.ConsoleTransport`; it serves the console ``kinds`` it
        lists for the VMs its ``supports`` accepts.
    """


@hookspec
def register_log_sources(register: Callable[[LogSource], None], gateway: Gateway) -> None:
    """Contribute log sources.

    :param register: ``register(source)`` with a :class:`virtwire.logsources.LogSource`;
        its ``names()`` join the allow list of streams clients may follow.
    """


@hookspec
def register_collectors(register: Callable[[MetricCollector], None], gateway: Gateway) -> None:
    """Contribute metric collectors for the ``system-monitor`` payload.

    :param register: ``register(collector)`` with a
        :class:`virtwire.collectors.MetricCollector`. The core collects them in
        ``gateway.collectors``; the plugin that samples them (the monitor plugin's
        ``system-monitor`` topic) merges each sampler's dict into the payload in registration
        order, and reports a collector that raises by name, leaving it out of that sample.
    """


@hookspec
def register_handlers(register: Callable[..., None], gateway: Gateway) -> None:
    """Contribute client message types.

    :param register: ``register(type, handler, *, scope=None, schema=None,
        concurrent=False)``; ``handler`` is ``async def handler(session, data)`` returning
        the ``<type>-response`` data (see :class:`virtwire.topics.MessageHandler`). A type
        registered twice is an error naming both plugins.
    """


@hookspec
def register_topics(register: Callable[[Topic], None], gateway: Gateway) -> None:
    """Contribute subscription topics.

    :param register: ``register(topic)`` with a :class:`virtwire.topics.Topic`; clients
        reach it with ``{"type": "subscribe", "data": {"topic": topic.name, ...}}``.
    """


@hookspec
def register_routes(register: Callable[[BaseRoute], None], gateway: Gateway) -> None:
    """Contribute HTTP or WebSocket routes served on the gateway's port.

    :param register: ``register(route)`` with a Starlette ``Route`` or ``WebSocketRoute``.
        Routes are matched after the core's (``/ws``, ``/healthz``). Check authentication
        yourself, e.g. with ``gateway.authenticate_websocket(websocket, scope=...)``.
    """


@hookspec
def register_broker(register: Callable[[Broker], None], gateway: Gateway) -> None:
    """Contribute the broker that carries shared channels between gateways.

    :param register: ``register(broker)`` with a :class:`virtwire.broker.Broker`. At most one
        broker per gateway (two are a start-up error naming both plugins); without one the
        gateway works alone and keeps positions and history in memory. The core starts it
        (``await broker.start(gateway.hub)``) before the backends and closes it after them.
        Shared channels (``vm-status``, ``system-event``) then publish through it, and
        ``vm-control`` for a VM another gateway owns is routed through ``broker.request``.
    """


@hookspec
def startup(gateway: Gateway) -> Awaitable[None] | None:
    """Called once when the gateway starts, after backends have started.

    May return an awaitable, which is awaited. Raising stops the plugin, not the gateway.
    """


@hookspec
def shutdown(gateway: Gateway) -> Awaitable[None] | None:
    """Called once when the gateway stops, after every connection was closed.

    May return an awaitable, which is awaited.
    """


@hookspec
def authorize(principal: Principal, action: str, resource: str | None) -> bool | None:
    """Extend authorization decisions.

    Called after the built-in scope and ``vms`` checks have passed, for actions such as
    ``"vm:control"`` (resource: the vmId), ``"vm:read"``, ``"console"``, ``"logs:read"``
    (resource: the log name) and ``"monitor:read"``. Return False to deny, True or None to
    allow. Any False denies.
    """


ALL_HOOKS: tuple[str, ...] = (
    "register_settings",
    "register_texts",
    "register_backends",
    "register_consoles",
    "register_log_sources",
    "register_collectors",
    "register_handlers",
    "register_topics",
    "register_routes",
    "register_broker",
    "startup",
    "shutdown",
    "authorize",
)
