"""The docs move with the code: every hook is documented and exercised by a test."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from virtwire import hookspecs
from virtwire.config import (
    AuditConfig,
    AuthConfig,
    ConsolesConfig,
    ServerConfig,
    TerminalConfig,
)

ROOT = Path(__file__).resolve().parents[2]
GUIDE = (ROOT / "docs" / "plugins.md").read_text()
CONFIG_DOC = (ROOT / "docs" / "configuration.md").read_text()


def test_every_hook_has_a_section_with_its_signature() -> None:
    for name in hookspecs.ALL_HOOKS:
        params = ", ".join(inspect.signature(getattr(hookspecs, name)).parameters)
        heading = f"### `{name}({params})`"
        assert heading in GUIDE, f"docs/plugins.md lacks the section {heading}"
    documented = set(re.findall(r"^### `(\w+)\(", GUIDE, re.M))
    assert documented == set(hookspecs.ALL_HOOKS)


def test_all_hooks_lists_every_hookspec() -> None:
    specs = {n for n, f in vars(hookspecs).items() if hasattr(f, "virtwire_spec")}
    assert specs == set(hookspecs.ALL_HOOKS)


def test_every_hook_has_a_test() -> None:
    sources = "\n".join(
        p.read_text() for p in (ROOT / "tests").rglob("*.py") if "node_modules" not in p.parts
    )
    sources += "\n".join(p.read_text() for p in (ROOT / "plugins").rglob("*.py"))
    for name in hookspecs.ALL_HOOKS:
        assert re.search(rf"def {name}\(", sources), f"no plugin or test implements {name}"


def test_every_config_key_is_documented() -> None:
    for struct in (ServerConfig, AuthConfig, ConsolesConfig, TerminalConfig, AuditConfig):
        for field in struct.__struct_fields__:
            assert f"| `{field}` |" in CONFIG_DOC, f"docs/configuration.md lacks {field}"
