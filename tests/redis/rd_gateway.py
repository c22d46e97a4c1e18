"""A gateway in its own process (so that a test can kill it): the Redis plugin and a DirBackend.

python rd_gateway.py PORT REDIS_URL PREFIX DIRECTORY NAME OWNER_LEASE
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import virtwire_redis
from rd_kit import DirPlugin
from virtwire.testing import make_settings, run_server


async def main() -> None:
    port, url, prefix, directory, name, lease = sys.argv[1:7]
    config = {
        "server": {"port": int(port), "access_log": False, "log_level": "warning"},
        "plugins": {
            "redis": {
                "url": url,
                "prefix": prefix,
                "owner_lease": float(lease),
                "reconnect_interval": 0.1,
            }
        },
    }
    plugins = [("redis", virtwire_redis), ("dir", DirPlugin(Path(directory), name))]
    async with run_server(make_settings(config), plugins=plugins):
        print("ready", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
