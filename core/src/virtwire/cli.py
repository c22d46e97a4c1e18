"""The ``virtwire`` command: ``serve``, ``token``, ``plugins``, ``new-plugin``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from . import __version__
from .auth import SCOPES
from .config import Settings, load_settings
from .errors import ConfigError


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config)
    if getattr(args, "host", None):
        settings.server.host = args.host
    if getattr(args, "port", None) is not None:
        settings.server.port = args.port
    return settings


def _serve(args: argparse.Namespace) -> int:
    from . import log as vlog
    from .app import Server, create_app, uvicorn_config

    settings = _settings(args)
    vlog.configure(settings.server.log_format, settings.server.log_level)
    app = create_app(settings)
    gateway = app.state.gateway
    server = Server(uvicorn_config(app, settings))
    host = settings.server.host
    origin = f"{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{settings.server.port}"
    url = f"ws://{origin}/ws"
    lines = [
        f"virtwire {__version__} on http://{host}:{settings.server.port}",
        "plugins: "
        + (
            ", ".join(
                f"{n}{'' if i.state == 'enabled' else ' (' + i.state + ')'}"
                for n, i in sorted(gateway.plugins.infos.items())
                if not i.builtin
            )
            or "none installed"
        ),
    ]
    if settings.audit.enabled:
        from .audit import audit_path

        where = audit_path(settings.audit, gateway.state_dir())
        lines.append(f"audit records: {where if where is not None else 'standard error'}")
    if settings.dev_secret:
        token = gateway.auth.mint("dev", SCOPES, ttl=args.token_ttl)
        lines += [
            "development mode: a generated secret signs tokens (configure [auth] for production)",
            f"token (sub=dev, all scopes, valid {args.token_ttl / 3600:g} h):",
            f"  {token}",
            f"connect: {url}?token={token}",
        ]
        lines += [f"{label}: http://{origin}{path}?token={token}" for label, path in gateway.pages]
    print("\n".join(lines), flush=True)
    server.run()
    return 0


def _token(args: argparse.Namespace) -> int:
    from .auth import Authenticator

    settings = load_settings(args.config)
    scopes = args.scope or list(SCOPES)
    for scope in scopes:
        if scope not in SCOPES:
            print(
                f"warning: scope {scope!r} is not one virtwire checks ({', '.join(SCOPES)})",
                file=sys.stderr,
            )
    token = Authenticator(settings).mint(
        args.sub, scopes, ttl=args.ttl if args.ttl > 0 else None, vms=args.vms
    )
    print(token)
    return 0


def _plugins(args: argparse.Namespace) -> int:
    from .builtins import builtin_plugins
    from .log import get_logger
    from .plugins import PluginManager

    problem = None
    try:
        settings = load_settings(args.config)
        enabled, source = settings.enabled_plugins, settings.source
    except ConfigError as exc:  # still list what is installed
        problem = str(exc)
        enabled, source = None, "config"
    manager = PluginManager(get_logger("virtwire.plugins"))
    manager.load_builtins(builtin_plugins())
    manager.load_installed(enabled, source=source, strict=False)
    rows: list[dict[str, Any]] = [
        {
            "name": i.name,
            "distribution": i.distribution,
            "version": i.version,
            "state": i.state if not i.builtin else "builtin",
            "hooks": i.hooks,
            "error": i.error,
        }
        for i in sorted(manager.infos.values(), key=lambda i: (not i.builtin, i.name))
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        widths = (
            [
                max(len(str(r[k] or "-")) for r in [*rows, dict.fromkeys(rows[0], k)])
                for k in ("name", "distribution", "version", "state")
            ]
            if rows
            else []
        )
        header = ("NAME", "DISTRIBUTION", "VERSION", "STATE")
        print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + "  HOOKS")
        for r in rows:
            cells = [str(r[k] or "-") for k in ("name", "distribution", "version", "state")]
            print(
                "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))
                + "  "
                + (", ".join(r["hooks"]) or "-")
            )
            if r["error"]:
                print(f"    error: {r['error']}")
    if problem:
        print(f"config problem: {problem}", file=sys.stderr)
    return 1 if problem or any(r["state"] == "failed" for r in rows) else 0


def _new_plugin(args: argparse.Namespace) -> int:
    from .scaffold import new_plugin

    try:
        path = new_plugin(args.name, args.kind, Path(args.directory) if args.directory else None)
    except ValueError as exc:
        print(f"virtwire new-plugin: {exc}", file=sys.stderr)
        return 2
    print(
        f"wrote {path} (plugin {args.name!r}, {args.kind})\n"
        "next:\n"
        f"  cd {path}\n"
        '  pip install -e ".[test]"\n'
        "  virtwire plugins      # lists it\n"
        "  python -m pytest      # its test starts a real gateway"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="virtwire", description="virtwire gateway")
    parser.add_argument("--version", action="version", version=f"virtwire {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def add_config(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", "-c", help="TOML config file (default: $VIRTWIRE_CONFIG)")

    serve = sub.add_parser("serve", help="run the gateway")
    add_config(serve)
    serve.add_argument("--host", help="bind address (overrides server.host)")
    serve.add_argument("--port", type=int, help="port (overrides server.port)")
    serve.add_argument(
        "--token-ttl",
        type=float,
        default=24 * 3600,
        help="lifetime in seconds of the printed development token (default: 1 day)",
    )
    serve.set_defaults(func=_serve)

    token = sub.add_parser("token", help="mint a token with the configured key")
    add_config(token)
    token.add_argument("--sub", required=True, help="user id (the sub claim)")
    token.add_argument(
        "--scope",
        action="append",
        help=f"a scope to grant (repeatable; default: all of {' '.join(SCOPES)})",
    )
    token.add_argument("--ttl", type=float, default=3600, help="seconds until exp (0: no exp)")
    token.add_argument(
        "--vms", action="append", help="glob pattern of VMs the token may access (repeatable)"
    )
    token.set_defaults(func=_token)

    plugins = sub.add_parser("plugins", help="list installed plugins")
    add_config(plugins)
    plugins.add_argument("--json", action="store_true", help="machine-readable output")
    plugins.set_defaults(func=_plugins)

    from .scaffold import KINDS

    new = sub.add_parser(
        "new-plugin",
        help="write a ready plugin project (pyproject, hooks, a passing test, README)",
    )
    new.add_argument("name", help="the plugin's name (its entry-point name), e.g. qemu-qmp")
    new.add_argument(
        "--kind",
        choices=list(KINDS),
        default="handler",
        help="what the skeleton contributes (default: handler)",
    )
    new.add_argument("--directory", "-d", help="where to write it (default: ./virtwire-NAME)")
    new.set_defaults(func=_new_plugin)
    return parser


def main(argv: list[str] | None = None) -> Any:
    args = build_parser().parse_args(argv)
    if args.command != "serve":  # serve configures logging from its settings
        from . import log as vlog

        vlog.configure("console", "warning")
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"virtwire: configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
