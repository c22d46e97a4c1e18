"""SSH web terminals for virtwire: ``terminal-connect`` with ``type: "ssh"``, over asyncssh.

Config section ``[plugins.ssh]`` (see :class:`virtwire_ssh.settings.SshSettings` and
docs/ssh.md): where each VM's SSH server is, and the host key policy.
"""

from __future__ import annotations

import logging
from typing import Any

from virtwire import hookimpl

from .settings import SshSettings

NAME = "ssh"


@hookimpl
def register_settings(register: Any) -> None:
    register(NAME, SshSettings)


@hookimpl
def register_consoles(register: Any, gateway: Any) -> None:
    from .transport import SshTransport

    if gateway.settings.server.log_level != "debug":
        # asyncssh narrates every connection at INFO; the plugin logs what matters itself
        logging.getLogger("asyncssh").setLevel(logging.WARNING)
    settings: SshSettings = gateway.plugin_config(NAME)
    register(SshTransport(settings, gateway))
