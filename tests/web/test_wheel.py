"""A wheel of virtwire-web carries the front-end libraries it serves: `pip install` of it needs
no Node.js and no checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from virtwire_web.assets import PACKAGES, find_assets

ROOT = Path(__file__).resolve().parents[2]


def uv() -> str:
    found = shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")
    assert Path(found).exists(), "uv is installed by `make install`"
    return found


def test_the_wheel_vendors_the_npm_packages(tmp_path: Path) -> None:
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    subprocess.run(
        [
            uv(),
            "build",
            "--wheel",
            "-q",
            "--python",
            sys.executable,
            "-o",
            str(tmp_path),
            str(ROOT / "plugins" / "web"),
        ],
        check=True,
        env=env,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("virtwire_web-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        archive.extractall(tmp_path / "site")
    assert "virtwire_web/static/index.html" in names
    assert not [n for n in names if n.endswith((".map", ".ts"))]
    vendored = tmp_path / "site" / "virtwire_web" / "vendor"
    assert find_assets(str(vendored)) == vendored.resolve()
    for name, entry in PACKAGES.items():
        assert f"virtwire_web/vendor/{name}/{entry}" in names
    # noVNC's relative import of its vendored pako resolves inside the wheel
    assert "virtwire_web/vendor/@novnc/novnc/vendor/pako/lib/zlib/inflate.js" in names
