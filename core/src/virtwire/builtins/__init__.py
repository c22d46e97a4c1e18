"""Core features, built as plugins on the same hooks third-party plugins use."""

from __future__ import annotations

from types import ModuleType


def builtin_plugins() -> list[tuple[str, ModuleType]]:
    from . import subscriptions, terminal, vms, vnc

    return [
        ("virtwire.subscriptions", subscriptions),
        ("virtwire.vms", vms),
        ("virtwire.vnc", vnc),
        ("virtwire.terminal", terminal),
    ]
