"""Plugin discovery and the isolated plugin manager.

Entry points of group ``virtwire`` are read from metadata first; only enabled plugins are
imported, once. A plugin that fails to import, or whose hook raises, is reported by name and
isolated: the others and the gateway keep working. A plugin the configuration asks for by
name that cannot be loaded is a start-up error that says how to fix it.
"""

from __future__ import annotations

import importlib.metadata
import os
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Literal

import pluggy

from . import __version__, hookspecs
from .errors import ConfigError

GROUP = "virtwire"
LOAD_ENV = "VIRTWIRE_LOAD_PLUGINS"

State = Literal["enabled", "disabled", "failed"]


@dataclass
class PluginInfo:
    """One plugin as ``virtwire plugins`` shows it."""

    name: str
    distribution: str | None = None
    version: str | None = None
    state: State = "disabled"
    error: str | None = None
    hooks: list[str] = field(default_factory=list)
    builtin: bool = False


@dataclass(frozen=True)
class Discovered:
    name: str
    entry_point: importlib.metadata.EntryPoint
    distribution: str | None
    version: str | None


def discover() -> dict[str, Discovered]:
    """Installed plugins by entry-point name, from metadata only (nothing is imported)."""
    found: dict[str, Discovered] = {}
    for ep in importlib.metadata.entry_points(group=GROUP):
        dist = getattr(ep, "dist", None)
        found.setdefault(
            ep.name,
            Discovered(
                ep.name,
                ep,
                dist.metadata["Name"] if dist is not None else None,
                dist.version if dist is not None else None,
            ),
        )
    return found


#: The plugins virtwire ships: what the embedded default (no config file) loads when they
#: are installed. Other installed plugins need a config file or ``VIRTWIRE_LOAD_PLUGINS``.
PRODUCT_PLUGINS = ("libvirt", "logs", "monitor", "proxmox", "ssh", "web")


def name_of(plugin: object) -> str:
    """The name an explicitly given plugin is registered under: the name of the installed
    entry point (group ``virtwire``) that points at this module, else its module name (or
    its type's name for an object)."""
    module = getattr(plugin, "__name__", None)
    if isinstance(plugin, ModuleType) and module:
        for ep in importlib.metadata.entry_points(group=GROUP):
            if ep.module == module and not ep.attr:
                return ep.name
        return module
    return module or type(plugin).__name__


def selected_names(
    installed: dict[str, Discovered],
    enabled: list[str] | None,
    environ: dict[str, str] | None = None,
    source: str = "config",
) -> tuple[list[str], set[str]]:
    """Which installed plugins to load, and which of them were asked for by name.

    ``VIRTWIRE_LOAD_PLUGINS`` (comma-separated; empty for none) wins over ``[plugins]
    enabled``; neither means all installed, except under the embedded default (``source``
    ``<defaults>``: no config file), which loads only the product's own plugins.
    """
    env = os.environ if environ is None else environ
    if LOAD_ENV in env:
        names = [n.strip() for n in env[LOAD_ENV].split(",") if n.strip()]
        origin = f"{LOAD_ENV}"
    elif enabled is not None:
        names = list(enabled)
        origin = f"[plugins] enabled in {source}"
    elif source.startswith("<defaults>"):
        return [n for n in sorted(installed) if n in PRODUCT_PLUGINS], set()
    else:
        return sorted(installed), set()
    missing = [n for n in names if n not in installed]
    if missing:
        have = ", ".join(sorted(installed)) or "none"
        raise ConfigError(
            f"plugin(s) {', '.join(missing)} named in {origin} are not installed "
            f"(installed: {have}); install them (pip install virtwire-NAME) or remove them "
            "from the list"
        )
    return names, set(names)


class PluginManager:
    """A pluggy manager that calls each plugin's hooks in isolation."""

    def __init__(self, log: Any) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.log = log
        self.infos: dict[str, PluginInfo] = {}

    # -- loading -----------------------------------------------------------------------
    def register(self, plugin: object, name: str, *, info: PluginInfo | None = None) -> None:
        info = info or PluginInfo(name=name)
        try:
            self.pm.register(plugin, name=name)
        except Exception as exc:  # pluggy validation: unknown hook, bad signature
            info.state = "failed"
            info.error = f"{type(exc).__name__}: {exc}"
            self.infos[name] = info
            self.log.error("plugin failed to register", plugin=name, error=info.error)
            return
        info.state = "enabled"
        info.hooks = sorted(
            h.name for h in self.pm.get_hookcallers(plugin) or [] if h.name in hookspecs.ALL_HOOKS
        )
        self.infos[name] = info

    def load_installed(
        self,
        enabled: list[str] | None,
        *,
        source: str = "config",
        environ: dict[str, str] | None = None,
        strict: bool = True,
    ) -> None:
        """Import and register the selected installed plugins. ``strict``: a plugin asked
        for by name that cannot load raises ConfigError (else it is only reported)."""
        installed = discover()
        try:
            names, required = selected_names(installed, enabled, environ, source)
        except ConfigError:
            if strict:
                raise
            names, required = [n for n in (enabled or installed) if n in installed], set()
        for name, found in sorted(installed.items()):
            info = PluginInfo(name=name, distribution=found.distribution, version=found.version)
            if name not in names:
                self.infos[name] = info
                continue
            try:
                module = found.entry_point.load()
            except Exception as exc:
                info.state = "failed"
                info.error = f"{type(exc).__name__}: {exc}"
                self.infos[name] = info
                self.log.error(
                    "plugin failed to import",
                    plugin=name,
                    error=info.error,
                    traceback=traceback.format_exc(limit=5),
                )
                if strict and name in required:
                    raise ConfigError(
                        f"plugin {name!r} ({found.distribution}) failed to import: {info.error}; "
                        f"reinstall it, or remove it from the enabled plugins"
                    ) from exc
                continue
            self.register(module, name, info=info)

    # -- calling -----------------------------------------------------------------------
    def plugin_name(self, plugin: object) -> str:
        return self.pm.get_name(plugin) or repr(plugin)

    def impls(self, hook: str) -> Iterator[tuple[str, Any]]:
        """(plugin name, hook implementation) for enabled plugins, in registration order."""
        caller = getattr(self.pm.hook, hook)
        for impl in caller.get_hookimpls():  # registration order (tryfirst/trylast apply)
            name = impl.plugin_name
            info = self.infos.get(name)
            if info is not None and info.state != "enabled":
                continue
            yield name, impl

    def call_each(self, hook: str, **kwargs: Any) -> Iterator[tuple[str, Any]]:
        """Call ``hook`` on every enabled plugin, one at a time; a raising plugin is marked
        failed and skipped. Yields (plugin name, result)."""
        for name, impl in self.impls(hook):
            args = {k: kwargs[k] for k in impl.argnames}
            try:
                result = impl.function(**args)
            except Exception as exc:
                self.fail(name, hook, exc)
                continue
            yield name, result

    def call_one(self, plugin: str, hook: str, **kwargs: Any) -> bool:
        """Call one plugin's implementation of ``hook``; False (and the plugin marked failed)
        if it raised."""
        for name, impl in self.impls(hook):
            if name != plugin:
                continue
            try:
                impl.function(**{k: kwargs[k] for k in impl.argnames})
            except Exception as exc:
                self.fail(name, hook, exc)
                return False
        return True

    def fail(self, name: str, hook: str, exc: BaseException) -> None:
        info = self.infos.setdefault(name, PluginInfo(name=name))
        info.state = "failed"
        info.error = f"{hook}: {type(exc).__name__}: {exc}"
        self.log.error(
            "plugin hook failed; plugin disabled",
            plugin=name,
            hook=hook,
            error=f"{type(exc).__name__}: {exc}",
            traceback="".join(traceback.format_exception(exc, limit=6)),
        )

    def load_builtins(self, modules: list[tuple[str, ModuleType]]) -> None:
        for name, module in modules:
            self.register(
                module,
                name,
                info=PluginInfo(
                    name=name, distribution="virtwire", version=__version__, builtin=True
                ),
            )
