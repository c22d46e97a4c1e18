"""``[plugins.web]``: where the page is mounted and where its front-end libraries are."""

from __future__ import annotations

import msgspec


class WebSettings(msgspec.Struct, forbid_unknown_fields=True):
    #: Mount path of the page (starts and ends with ``/``).
    path: str = "/"
    #: Directory holding the front-end packages (a ``node_modules``): ``@novnc/novnc``,
    #: ``@xterm/xterm``, its addons and ``uplot``. Empty: the copy inside the installed wheel,
    #: else ``plugins/web/node_modules`` of a source checkout.
    assets_dir: str = ""
    #: Log names offered in the log pane's picker (any allow-listed name can be typed).
    log_files: list[str] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        if not (self.path.startswith("/") and self.path.endswith("/")):
            raise ValueError('path must start and end with \'/\' (e.g. "/" or "/console/")')
