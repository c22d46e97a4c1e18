"""Server for bench_libvirt.py: virtwire with the libvirt plugin on libvirt's test driver and a
bench plugin whose ``bench-publish`` publishes one ``vm-status`` frame to the ``vm-status``
channel (a plain publish to the same subscribers an event reaches). Run:
``python _libvirt_server.py PORT [AUDIT]`` (AUDIT: the audit file, or ``off``; default: the
embedded default, ``audit.log`` in the state directory)."""

from __future__ import annotations

import resource
import sys
from typing import Any

import virtwire_libvirt
from virtwire import hookimpl

STATUS = {
    "vmId": "test",
    "status": "running",
    "cpu": 45.2,
    "memory": 75.0,
    "network": {"rx": 1024.0, "tx": 512.0},
}


class BenchPlugin:
    @hookimpl
    def register_handlers(self, register: Any, gateway: Any) -> None:
        async def publish(session: Any, data: dict[str, Any]) -> dict[str, Any]:
            gateway.vms.channel.publish("vm-status", STATUS, key="test")
            return {}

        register("bench-publish", publish)


def main() -> None:
    from virtwire.app import Server, create_app, uvicorn_config
    from virtwire.log import configure as configure_logging
    from virtwire.testing import make_settings

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    audit: dict[str, Any] = {}
    if len(sys.argv) > 2:
        audit = {"enabled": False} if sys.argv[2] == "off" else {"path": sys.argv[2]}
    settings = make_settings(
        {
            "audit": audit,
            "server": {
                "port": int(sys.argv[1]),
                "access_log": False,
                "log_level": "warning",
                "rate_limit": 1e9,
                "rate_burst": 10**9,
                "ping_interval": 0,
                "max_connections_per_address": 10000,
            },
            "plugins": {"libvirt": {"stats_interval": 3600}},
        }
    )
    # logging as `virtwire serve` sets it up (unconfigured, structlog prints every line)
    configure_logging(settings.server.log_format, settings.server.log_level)
    app = create_app(settings, plugins=[("libvirt", virtwire_libvirt), ("bench", BenchPlugin())])
    Server(uvicorn_config(app, settings, log_level="warning")).run()


if __name__ == "__main__":
    main()
