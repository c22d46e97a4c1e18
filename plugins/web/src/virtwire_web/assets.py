"""Where the page's files come from: its own static files, and the npm packages it serves."""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
#: The wheel's copy of the npm packages (written by hatch_build.py at build time).
VENDORED = HERE / "vendor"
#: A source checkout's ``npm ci`` (plugins/web/node_modules), for editable installs.
CHECKOUT = HERE.parents[1] / "node_modules"
#: The packages the page loads, with the file each must contain.
PACKAGES = {
    "@novnc/novnc": "core/rfb.js",
    "@xterm/xterm": "lib/xterm.mjs",
    "@xterm/addon-attach": "lib/addon-attach.mjs",
    "@xterm/addon-fit": "lib/addon-fit.mjs",
    "uplot": "dist/uPlot.esm.js",
}


class AssetsMissing(RuntimeError):
    """The front-end packages were not found."""


def _complete(directory: Path) -> bool:
    return all((directory / name / entry).is_file() for name, entry in PACKAGES.items())


def find_assets(configured: str = "") -> Path:
    """The directory holding every package of :data:`PACKAGES`."""
    candidates = [Path(configured).expanduser()] if configured else [VENDORED, CHECKOUT]
    for candidate in candidates:
        if _complete(candidate):
            return candidate.resolve()
    looked = ", ".join(str(c) for c in candidates)
    raise AssetsMissing(
        f"front-end packages not found (looked in {looked}): run `npm ci` in plugins/web "
        "(make install does), install the virtwire-web wheel, or set [plugins.web] assets_dir "
        "to a node_modules directory holding " + ", ".join(PACKAGES)
    )


def versions(directory: Path) -> dict[str, str]:
    """Installed version of each package (shown on the page's about line)."""
    return {
        name: json.loads((directory / name / "package.json").read_text())["version"]
        for name in PACKAGES
    }
