"""``virtwire new-plugin``: a ready plugin project (pyproject with the entry point, the hook
module, a passing test on ``virtwire.testing``, a README)."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from string import Template

from .. import __version__

__all__ = ["KINDS", "new_plugin"]

#: What each ``--kind`` generates: (summary, settings example for the README, note).
KINDS: dict[str, tuple[str, str, str]] = {
    "backend": (
        "A hypervisor backend: VM status, control and lifecycle events.",
        'vms = ["web-1", "web-2"]\nstats_interval = 5.0',
        "",
    ),
    "log-source": (
        "A log source: named streams of lines served on the log endpoint.",
        "interval = 1.0",
        "\nIts streams are served only while the `logs` plugin (virtwire-logs) is installed "
        "and enabled.\n",
    ),
    "collector": (
        "A metric collector: fields of the system-monitor payload.",
        "# (this plugin takes no settings)",
        "\nIts fields reach clients only while the `monitor` plugin (virtwire-monitor) is "
        "installed and enabled.\n",
    ),
    "handler": (
        "A client message type.",
        'greeting = "Hello"',
        "",
    ),
}

NAME_RE = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")


def _template(name: str) -> Template:
    text = resources.files(__package__).joinpath("templates", name).read_text(encoding="utf-8")
    return Template(text)


def new_plugin(name: str, kind: str = "handler", directory: Path | None = None) -> Path:
    """Write the project of plugin ``name`` into ``directory`` (default ``./virtwire-NAME``)
    and return its path. Raises ValueError for a bad name or kind, or a non-empty directory."""
    if not NAME_RE.fullmatch(name):
        raise ValueError(
            f"plugin name {name!r}: use lower-case letters, digits and single hyphens, "
            "starting with a letter (e.g. qemu-qmp)"
        )
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r}: choose one of {', '.join(KINDS)}")
    dist = f"virtwire-{name}"
    pkg = "virtwire_" + name.replace("-", "_")
    target = directory if directory is not None else Path.cwd() / dist
    if target.exists() and any(target.iterdir()):
        raise ValueError(f"{target} exists and is not empty")
    summary, settings_example, kind_note = KINDS[kind]
    values = {
        "name": name,
        "dist": dist,
        "pkg": pkg,
        "kind": kind,
        "summary": summary,
        "version": __version__,
        "settings_example": settings_example,
        "kind_note": kind_note,
    }
    files = {
        "pyproject.toml": "pyproject.toml.tmpl",
        "README.md": "README.md.tmpl",
        f"src/{pkg}/__init__.py": f"{kind}.py.tmpl",
        f"tests/test_{pkg}.py": f"test_{kind}.py.tmpl",
    }
    for rel, template in files.items():
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_template(template).substitute(values), encoding="utf-8")
    return target
