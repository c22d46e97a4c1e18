"""Wheel build hook: vendor the front-end libraries (from ``npm ci``) into the package.

An editable install (the development workspace) serves ``plugins/web/node_modules`` in place
and needs nothing here. A regular wheel must carry the files, so that ``pip install
virtwire-web`` serves the page with no Node.js on the target machine: this hook runs ``npm ci``
when ``node_modules`` is missing and copies the packages listed in ``package.json`` (without
source maps, TypeScript sources and docs) to ``virtwire_web/vendor/``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SKIP_DIRS = {"src", "docs", "typings", "test", "tests", "out-esbuild", "out", ".github"}
SKIP_SUFFIXES = (".map", ".ts")


class VendorHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if version == "editable":
            return
        root = Path(self.root)
        modules = root / "node_modules"
        packages = json.loads((root / "package.json").read_text())["dependencies"]
        if not all((modules / name / "package.json").is_file() for name in packages):
            npm = shutil.which("npm")
            if npm is None:
                raise RuntimeError(
                    "virtwire-web: building a wheel needs the front-end packages: run "
                    "`npm ci` in plugins/web (Node.js + npm) first"
                )
            subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=root, check=True)
        for name in packages:
            base = modules / name
            for path in sorted(base.rglob("*")):
                rel = path.relative_to(base)
                if (
                    path.is_dir()
                    or SKIP_DIRS.intersection(rel.parts[:-1])
                    or path.name.endswith(SKIP_SUFFIXES)
                ):
                    continue
                target = f"virtwire_web/vendor/{name}/{rel.as_posix()}"
                build_data["force_include"][str(path)] = target
