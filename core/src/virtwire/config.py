"""Typed configuration from a TOML file plus ``VIRTWIRE_*`` environment overrides.

Layout::

    [server]  host, port, allowed_origins, ...
    [auth]    secret | public_key_file, algorithms, audience, issuer, auth_timeout, ...
    [terminal] detach_timeout, scrollback_bytes, ...
    [consoles] ticket_ttl, max_per_connection, max_per_user, send_window_bytes
    [audit]   enabled, path, events, instance, queue_size
    [plugins] enabled = [...]          # default: every installed plugin
    [plugins.NAME]                     # validated by plugin NAME

Environment overrides use double underscores between levels, e.g.
``VIRTWIRE_SERVER__PORT=3001`` or ``VIRTWIRE_PLUGINS__LIBVIRT__URI=qemu:///system``; the
value is read as a TOML value when it parses as one (``3001``, ``true``, ``["a", "b"]``)
and as a plain string otherwise.
"""

from __future__ import annotations

import os
import re
import secrets
import tomllib
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec

from .errors import ConfigError
from .messages import LOCALES

T = TypeVar("T")

ENV_PREFIX = "VIRTWIRE_"
# Variables with the prefix that are not overrides.
_ENV_SPECIAL = {"VIRTWIRE_CONFIG", "VIRTWIRE_LOAD_PLUGINS", "VIRTWIRE_STATE_DIR"}


class ServerConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 3000
    #: Browser origins allowed to connect ("https://app.example.com"); "*" allows any.
    #: Same-origin requests and clients that send no Origin header are always allowed.
    allowed_origins: list[str] = msgspec.field(default_factory=list)
    #: Names the Host header may carry ("gw.example.com", "*.example.com", "10.0.0.5");
    #: None: loopback names, plus the bind address unless it is a wildcard.
    allowed_hosts: list[str] | None = None
    max_connections: int = 10000
    max_connections_per_address: int = 256
    handshake_timeout: float = 10.0
    close_timeout: float = 2.0
    max_message_bytes: int = 1024 * 1024
    preauth_max_message_bytes: int = 16 * 1024
    preauth_send_queue_bytes: int = 64 * 1024
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    send_queue_bytes: int = 4 * 1024 * 1024
    send_queue_messages: int = 4096
    rate_limit: float = 500.0
    rate_burst: int = 1000
    flood_close_after: float = 2.0
    max_concurrent_requests: int = 16
    max_subscriptions: int = 256
    #: Frames kept per shared channel (vm-status, system-event) for ``since`` recovery.
    history_size: int = 1000
    #: ``/metrics``: "token" (a Bearer token with the metrics:read scope), "open" (anyone who
    #: can reach the port: bind to a private address) or "off".
    metrics: Literal["token", "open", "off"] = "token"
    per_message_deflate: bool = False
    locale: str = "zh-CN"
    log_format: Literal["auto", "console", "json"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    access_log: bool = True
    shutdown_timeout: float = 5.0


class AuthConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    secret: str | None = None
    algorithms: list[str] = msgspec.field(default_factory=lambda: ["HS256"])
    public_key_file: str | None = None
    private_key_file: str | None = None
    audience: str | None = None
    issuer: str | None = None
    auth_timeout: float = 10.0
    require_exp: bool = True
    leeway: float = 0.0


class TerminalConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The ``[terminal]`` section: web terminal sessions (docs/configuration.md)."""

    #: Seconds a terminal with no viewer left stays alive, waiting to be reattached.
    detach_timeout: float = 60.0
    #: Bytes of recent output kept per terminal and replayed to a viewer that (re)attaches.
    scrollback_bytes: int = 64 * 1024
    #: Most characters of output in one ``terminal-output`` frame.
    frame_chars: int = 32 * 1024
    #: Reading from the terminal pauses while a viewer has this many bytes waiting to be sent.
    high_water_bytes: int = 1024 * 1024
    #: Terminals one user may hold open at a time (attached or detached).
    max_sessions_per_user: int = 16
    #: Size of a terminal whose ``terminal-connect`` gives no ``cols``/``rows``.
    default_cols: int = 80
    default_rows: int = 24


class ConsolesConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Console sessions (VNC, terminals) of every kind."""

    #: Seconds a console's one-time ticket URL (``/ws/vnc/{ticket}``) stays valid to open.
    ticket_ttl: float = 30.0
    #: Consoles one ``/ws`` connection may hold open at once (0: no limit).
    max_per_connection: int = 4
    #: Consoles one user may hold open at once over all connections (0: no limit).
    max_per_user: int = 16
    #: Bytes of console output queued for one ``/ws`` client before the console waits
    #: for it (the VM's socket is then not read: backpressure).
    send_window_bytes: int = 1024 * 1024


class AuditConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The ``[audit]`` section: the audit stream (docs/audit.md)."""

    #: Write the audit stream.
    enabled: bool = True
    #: The file records are appended to; None: ``audit.log`` in the state directory;
    #: ``"-"``: standard error.
    path: str | None = None
    #: Events to record (e.g. ``["vm-control"]``); empty: every event.
    events: list[str] = msgspec.field(default_factory=list)
    #: Written as ``gateway`` in every record; None: the host name; "": left out.
    instance: str | None = None
    #: Records waiting for the writer at most; more are dropped and counted.
    queue_size: int = 10000


class _Root(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    auth: AuthConfig = msgspec.field(default_factory=AuthConfig)
    terminal: TerminalConfig = msgspec.field(default_factory=TerminalConfig)
    consoles: ConsolesConfig = msgspec.field(default_factory=ConsolesConfig)
    audit: AuditConfig = msgspec.field(default_factory=AuditConfig)
    plugins: dict[str, Any] = msgspec.field(default_factory=dict)


class Settings(msgspec.Struct, kw_only=True):
    """The validated configuration of one gateway."""

    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    auth: AuthConfig = msgspec.field(default_factory=AuthConfig)
    terminal: TerminalConfig = msgspec.field(default_factory=TerminalConfig)
    consoles: ConsolesConfig = msgspec.field(default_factory=ConsolesConfig)
    audit: AuditConfig = msgspec.field(default_factory=AuditConfig)
    #: Plugin names from ``[plugins] enabled``; None means every installed plugin.
    enabled_plugins: list[str] | None = None
    #: Raw ``[plugins.NAME]`` tables, validated by :meth:`plugin`.
    plugin_sections: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)
    #: Where the settings came from (a path, or "<defaults>").
    source: str = "<defaults>"
    #: True when the HS256 secret was generated for development.
    dev_secret: bool = False
    #: The resolved signing/verification secret (never printed).
    resolved_secret: str | None = None
    #: This gateway's state directory; None: :func:`state_dir` (``$VIRTWIRE_STATE_DIR``...).
    #: ``virtwire.testing.run_server`` gives every server its own.
    state_dir: str | None = None

    def plugin(self, name: str, schema: type[T]) -> T:
        """Validate the ``[plugins.NAME]`` section against ``schema`` (a msgspec Struct)."""
        raw = self.plugin_sections.get(name, {})
        try:
            return msgspec.convert(raw, schema, str_keys=True)
        except msgspec.ValidationError as exc:
            raise ConfigError(_explain(exc, f"plugins.{name}", self.source)) from None


def _explain(exc: msgspec.ValidationError, root: str, source: str) -> str:
    text = str(exc)
    path = root
    match = re.search(r" - at `\$(.*)`$", text)
    if match:
        path = (root + match.group(1)).lstrip(".")
        text = text[: match.start()]
    unknown = re.match(r"Object contains unknown field `(.+)`", text)
    if unknown:
        key = f"{path}.{unknown.group(1)}" if path else unknown.group(1)
        return f"{source}: unknown key {key!r}"
    where = f" at {path!r}" if path else ""
    return f"{source}: invalid value{where}: {text}"


#: Smallest HMAC key per algorithm (RFC 7518 section 3.2: at least the hash output size; PyJWT
#: warns below it).
HMAC_MIN_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}


def resolve_secret(value: str, what: str = "secret") -> str:
    """Resolve a secret given directly or by reference: ``env:NAME`` or ``file:PATH``."""
    if value.startswith("env:"):
        name = value[4:]
        found = os.environ.get(name)
        if not found:
            raise ConfigError(f"{what} refers to environment variable {name}, which is not set")
        return found
    if value.startswith("file:"):
        path = Path(value[5:]).expanduser()
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{what} refers to file {path}: {exc.strerror}") from None
    return value


def _env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _apply_env(data: dict[str, Any], environ: dict[str, str]) -> list[str]:
    applied = []
    for key, raw in sorted(environ.items()):
        if not key.startswith(ENV_PREFIX) or key in _ENV_SPECIAL:
            continue
        parts = [p.lower() for p in key[len(ENV_PREFIX) :].split("__")]
        if len(parts) < 2 or not all(parts):
            raise ConfigError(
                f"environment variable {key}: expected VIRTWIRE_SECTION__KEY "
                "(e.g. VIRTWIRE_SERVER__PORT=3001)"
            )
        node = data
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"environment variable {key}: {part!r} is not a table")
            node = child
        node[parts[-1]] = _env_value(raw)
        applied.append(key)
    return applied


def state_dir(environ: dict[str, str] | None = None) -> Path:
    """Where virtwire keeps its state (the generated dev secret): ``$VIRTWIRE_STATE_DIR``,
    else ``$XDG_STATE_HOME/virtwire``, else ``~/.local/state/virtwire``."""
    env = os.environ if environ is None else environ
    if env.get("VIRTWIRE_STATE_DIR"):
        return Path(env["VIRTWIRE_STATE_DIR"])
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "virtwire"


def dev_secret(environ: dict[str, str] | None = None) -> str:
    """The development secret: generated once, kept (mode 0600) in :func:`state_dir`."""
    path = state_dir(environ) / "dev-secret"
    try:
        value = path.read_text().strip()
        if value:
            return value
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value


_SYMMETRIC = {"HS256", "HS384", "HS512"}
_ASYMMETRIC = {
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
}


def _check_auth(auth: AuthConfig, source: str) -> None:
    algs = set(auth.algorithms)
    if not algs:
        raise ConfigError(f"{source}: auth.algorithms must not be empty")
    unknown = algs - _SYMMETRIC - _ASYMMETRIC
    if unknown:
        raise ConfigError(
            f"{source}: auth.algorithms: unsupported {sorted(unknown)} "
            f"(use HS256/384/512, RS*, PS*, ES* or EdDSA; 'none' is never accepted)"
        )
    if algs & _SYMMETRIC and algs & _ASYMMETRIC:
        raise ConfigError(
            f"{source}: auth.algorithms mixes shared-secret and public-key algorithms; "
            "choose one family (this prevents algorithm-confusion attacks)"
        )
    if algs & _ASYMMETRIC and not auth.public_key_file:
        raise ConfigError(f"{source}: auth.algorithms {sorted(algs)} need auth.public_key_file")
    if algs & _SYMMETRIC and auth.public_key_file:
        raise ConfigError(
            f"{source}: auth.public_key_file is set but auth.algorithms are HMAC "
            f'{sorted(algs)}; set algorithms = ["RS256"] (or ES256)'
        )
    if auth.auth_timeout <= 0:
        raise ConfigError(f"{source}: auth.auth_timeout must be positive")


def _check_server(server: ServerConfig, source: str) -> None:
    if server.max_message_bytes < 1024:
        raise ConfigError(f"{source}: server.max_message_bytes must be at least 1024")
    if server.preauth_max_message_bytes < 256:
        raise ConfigError(f"{source}: server.preauth_max_message_bytes must be at least 256")
    if server.preauth_send_queue_bytes < 1024:
        raise ConfigError(f"{source}: server.preauth_send_queue_bytes must be at least 1024")
    for key in ("max_connections", "max_connections_per_address"):
        if getattr(server, key) < 0:
            raise ConfigError(f"{source}: server.{key} must be 0 (no cap) or positive")
    for key in ("handshake_timeout", "close_timeout", "shutdown_timeout"):
        if getattr(server, key) <= 0:
            raise ConfigError(f"{source}: server.{key} must be positive")
    if server.flood_close_after < 0:
        raise ConfigError(f"{source}: server.flood_close_after must be 0 (never) or positive")
    if server.rate_limit <= 0 or server.rate_burst < 1:
        raise ConfigError(f"{source}: server.rate_limit and server.rate_burst must be positive")
    if server.allowed_hosts is not None and not all(
        isinstance(h, str) and h.strip() for h in server.allowed_hosts
    ):
        raise ConfigError(f"{source}: server.allowed_hosts must be a list of host names")


def _check_terminal(term: TerminalConfig, source: str) -> None:
    checks = (
        ("detach_timeout", term.detach_timeout >= 0),
        ("scrollback_bytes", 0 <= term.scrollback_bytes <= 64 * 1024 * 1024),
        ("frame_chars", term.frame_chars >= 256),
        ("high_water_bytes", term.high_water_bytes >= 4096),
        ("max_sessions_per_user", term.max_sessions_per_user >= 1),
        ("default_cols", 1 <= term.default_cols <= 1000),
        ("default_rows", 1 <= term.default_rows <= 1000),
    )
    for name, ok in checks:
        if not ok:
            raise ConfigError(f"{source}: terminal.{name} {getattr(term, name)!r} is out of range")


def _check_consoles(consoles: ConsolesConfig, source: str) -> None:
    if consoles.ticket_ttl <= 0:
        raise ConfigError(f"{source}: consoles.ticket_ttl must be positive")
    for key in ("max_per_connection", "max_per_user"):
        if getattr(consoles, key) < 0:
            raise ConfigError(f"{source}: consoles.{key} must be 0 (no limit) or more")
    if consoles.send_window_bytes < 64 * 1024:
        raise ConfigError(f"{source}: consoles.send_window_bytes must be at least 65536")


def _check_audit(audit: AuditConfig, source: str) -> None:
    if audit.queue_size < 1:
        raise ConfigError(f"{source}: audit.queue_size must be at least 1")
    if not all(isinstance(e, str) and e for e in audit.events):
        raise ConfigError(f"{source}: audit.events must be a list of event names")


def load_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: dict[str, str] | None = None,
    data: dict[str, Any] | None = None,
) -> Settings:
    """Load settings from ``path`` (or ``$VIRTWIRE_CONFIG``), or ``data``, plus env overrides.

    Without any file and without ``data`` the embedded defaults apply: 127.0.0.1:3000 and a
    generated development secret.
    """
    env = dict(os.environ if environ is None else environ)
    if path is None and data is None and env.get("VIRTWIRE_CONFIG"):
        path = env["VIRTWIRE_CONFIG"]
    raw: dict[str, Any]
    if data is not None:
        raw = _deepcopy(data)
        source = "<config>"
    elif path is not None:
        source = str(path)
        try:
            with open(path, "rb") as fh:
                raw = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file {path} not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    else:
        raw = {}
        source = "<defaults>"
    applied = _apply_env(raw, env)
    if applied:
        source = f"{source} (+ {', '.join(applied)})"
    try:
        root = msgspec.convert(raw, _Root, str_keys=True)
    except msgspec.ValidationError as exc:
        raise ConfigError(_explain(exc, "", source)) from None

    enabled: list[str] | None = None
    sections: dict[str, dict[str, Any]] = {}
    for key, value in root.plugins.items():
        if key == "enabled":
            if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                raise ConfigError(f"{source}: plugins.enabled must be a list of plugin names")
            enabled = list(value)
        elif isinstance(value, dict):
            sections[key] = value
        else:
            raise ConfigError(
                f"{source}: unknown key 'plugins.{key}' (expected 'enabled' or a "
                f"[plugins.{key}] table)"
            )

    if root.server.locale not in LOCALES:
        raise ConfigError(
            f"{source}: server.locale {root.server.locale!r} is not available "
            f"(available: {', '.join(LOCALES)})"
        )
    if not 0 <= root.server.port <= 65535:
        raise ConfigError(f"{source}: server.port {root.server.port} is out of range")
    _check_server(root.server, source)
    _check_auth(root.auth, source)
    _check_terminal(root.terminal, source)
    _check_consoles(root.consoles, source)
    _check_audit(root.audit, source)

    settings = Settings(
        server=root.server,
        auth=root.auth,
        terminal=root.terminal,
        consoles=root.consoles,
        audit=root.audit,
        enabled_plugins=enabled,
        plugin_sections=sections,
        source=source,
    )
    if root.auth.secret is not None:
        settings.resolved_secret = resolve_secret(root.auth.secret, "auth.secret")
        need = max((HMAC_MIN_BYTES.get(a, 0) for a in root.auth.algorithms), default=32)
        have = len(settings.resolved_secret.encode())
        if have < need:
            raise ConfigError(
                f"{source}: auth.secret is too short for {', '.join(root.auth.algorithms)}: "
                f"{have} bytes, use at least {need} (RFC 7518 3.2: at least the hash size)"
            )
    elif not root.auth.public_key_file:
        if source.startswith("<defaults>"):
            settings.resolved_secret = dev_secret(env)
            settings.dev_secret = True
        else:
            raise ConfigError(
                f"{source}: no [auth] secret or public_key_file; set auth.secret "
                '(e.g. secret = "env:VIRTWIRE_SECRET") or auth.public_key_file'
            )
    return settings


def _deepcopy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deepcopy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deepcopy(v) for v in value]
    return value
