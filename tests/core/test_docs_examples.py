"""Every Python example of the plugin author's pages runs (docs/plugins.md, "About the
examples"): file blocks are written to an importable temporary directory, other blocks are
executed in order in one namespace per page, and the test functions they define are run."""

from __future__ import annotations

import inspect
import re
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = ("plugins.md", "reference.md")
FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```\s*$", re.M | re.S)
FILE_LINE = re.compile(r"#\s*([\w./-]+\.py)\s*$")


def blocks(page: str) -> Iterator[tuple[int, str, str]]:
    """(line, language, code) of every fenced block of a page."""
    text = (ROOT / "docs" / page).read_text()
    for match in FENCE.finditer(text):
        yield text.count("\n", 0, match.start()) + 1, match.group(1), match.group(2)


def test_the_pages_have_examples() -> None:
    for page in PAGES:
        assert any(lang == "python" for _, lang, _ in blocks(page)), page


@pytest.mark.parametrize("page", PAGES)
async def test_every_python_example_runs(
    page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    namespace: dict[str, Any] = {"__name__": f"docs_{page.replace('.', '_')}"}
    ran: list[str] = []
    try:
        for line, lang, code in blocks(page):
            where = f"docs/{page}:{line}"
            if lang == "toml":
                tomllib.loads(code)
                continue
            if lang != "python":
                continue
            first = code.splitlines()[0] if code.strip() else ""
            named = FILE_LINE.fullmatch(first.strip())
            compiled = compile(code, where, "exec")
            if named:
                path = tmp_path / named.group(1)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(code)
                continue
            known = set(namespace)
            exec(compiled, namespace)
            for name in [n for n in namespace if n not in known and n.startswith("test_")]:
                fn = namespace[name]
                result = fn()
                if inspect.isawaitable(result):
                    await result
                ran.append(f"{where} {name}")
    finally:
        for name in set(sys.modules) - before:
            module = sys.modules[name]
            if str(getattr(module, "__file__", "") or "").startswith(str(tmp_path)):
                del sys.modules[name]
    if page == "plugins.md":  # the guide's complete plugins are tested, not only defined
        assert any("test_the_directory_backend" in r for r in ran), ran
        assert any("test_greet" in r for r in ran), ran
