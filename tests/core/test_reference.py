"""docs/reference.md moves with the code: every public name a plugin uses has a section headed
by its import path, and every public member of a class is described in that section; every
key of the message catalogue is listed."""

from __future__ import annotations

import enum
import importlib
import inspect
import re
from pathlib import Path
from types import ModuleType

import pytest
from virtwire.messages import Catalogue

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = (ROOT / "docs" / "reference.md").read_text()

#: Modules whose ``__all__`` is the plugin API.
WITH_ALL = (
    "virtwire",
    "virtwire.backends",
    "virtwire.errors",
    "virtwire.messages",
    "virtwire.logsources",
    "virtwire.collectors",
    "virtwire.topics",
    "virtwire.consoles",
    "virtwire.consolesessions",
    "virtwire.tickets",
    "virtwire.testing",
    "virtwire.audit",
)
#: Plugin-facing names of modules that are mostly the core's own.
CHOSEN = {
    "virtwire.gateway": ("Gateway",),
    "virtwire.session": ("Session",),
    "virtwire.hub": ("Channel", "Hub"),
    "virtwire.shared": ("SharedChannel",),
    "virtwire.broker": ("Broker", "History", "Entry", "close_frame"),
    "virtwire.auth": ("Principal", "SCOPES"),
    "virtwire.config": ("resolve_secret", "state_dir"),
    "virtwire.connection": ("origin_allowed",),
}
#: Members that are not part of the API (dunder-free names that are implementation).
NOT_API = {"virtwire.hub.Channel": {"publish_text"}}


def public_names() -> list[tuple[str, str, object]]:
    """(module, name, object) for every public name; the module is where it is defined."""
    out: dict[str, tuple[str, str, object]] = {}
    for modname in WITH_ALL:
        module = importlib.import_module(modname)
        for name in module.__all__:
            obj = getattr(module, name)
            out.setdefault(f"{home(module, obj)}.{name}", (home(module, obj), name, obj))
    for modname, names in CHOSEN.items():
        module = importlib.import_module(modname)
        for name in names:
            obj = getattr(module, name)
            out.setdefault(f"{modname}.{name}", (modname, name, obj))
    return sorted(out.values(), key=lambda t: (t[0], t[1]))


def home(module: ModuleType, obj: object) -> str:
    defined = getattr(obj, "__module__", None)
    if (inspect.isclass(obj) or inspect.isfunction(obj)) and isinstance(defined, str):
        if defined.startswith("virtwire"):
            return defined
    return module.__name__


def section(path: str) -> str:
    match = re.search(
        rf"^### `{re.escape(path)}(?=[`(\[])[^\n]*\n(.*?)(?=^#{{1,3}} |\Z)", REFERENCE, re.M | re.S
    )
    assert match, f"docs/reference.md lacks a section headed ### `{path}...`"
    return match.group(0)


def members(cls: type) -> set[str]:
    names: set[str] = set()
    for klass in cls.__mro__:
        if not klass.__module__.startswith("virtwire"):
            continue
        names |= {n for n in vars(klass) if not n.startswith("_")}
        names |= {n for n in getattr(klass, "__annotations__", {}) if not n.startswith("_")}
        names |= {n for n in getattr(klass, "__struct_fields__", ()) if not n.startswith("_")}
    if issubclass(cls, enum.Enum):
        names |= set(cls.__members__)
    return names


@pytest.mark.parametrize("entry", public_names(), ids=lambda e: f"{e[0]}.{e[1]}")
def test_every_public_name_has_a_section_describing_its_members(
    entry: tuple[str, str, object],
) -> None:
    modname, name, obj = entry
    text = section(f"{modname}.{name}")
    if inspect.isclass(obj):
        missing = sorted(
            m
            for m in members(obj) - NOT_API.get(f"{modname}.{name}", set())
            if not re.search(rf"`(\w+\.)?{re.escape(m)}\b", text)
        )
        assert not missing, f"the section of {modname}.{name} does not describe {missing}"


def test_top_level_exports_are_listed_with_their_home() -> None:
    import virtwire

    for name in virtwire.__all__:
        if name.startswith("__"):
            continue
        assert f"`{name}`" in section("virtwire"), f"docs/reference.md: virtwire.{name}"


def test_every_catalogue_key_is_listed() -> None:
    catalogue = Catalogue("en")
    for key in catalogue.keys():
        assert f"| `{key}` |" in REFERENCE, f"docs/reference.md lacks the catalogue key {key}"
