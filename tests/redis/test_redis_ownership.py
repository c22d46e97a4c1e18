"""One owner per VM when several gateways run the same backend, and takeover when the owner
dies (a gateway process killed with SIGKILL)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from rd_kit import DirPlugin, RedisServer, controls, fresh_prefix, gateway, until
from virtwire.testing import free_port, make_settings, run_server

HERE = Path(__file__).resolve().parent
LEASE = 1.5


async def _healthy(port: int, timeout: float = 30.0) -> dict[str, object]:
    async with httpx.AsyncClient() as http:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            try:
                body = (await http.get(f"http://127.0.0.1:{port}/healthz")).json()
                if body["broker"]["state"] == "connected" and body["broker"]["owned"]:
                    return dict(body["broker"])
            except httpx.HTTPError:
                pass
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"gateway on {port} did not become healthy")
            await asyncio.sleep(0.05)


async def test_a_killed_gateways_vms_are_taken_over(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    vms = tmp_path / "vms"
    vms.mkdir()
    (vms / "alpha.vm").write_text("running")
    prefix = fresh_prefix()
    port_a = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HERE / "rd_gateway.py"),
        str(port_a),
        redis_server.url,
        prefix,
        str(vms),
        "A",
        str(LEASE),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=HERE,
    )
    try:
        await _healthy(port_a)  # A runs and owns alpha
        options = {"owner_lease": LEASE, "request_timeout": 2.0}
        config_b = {
            "server": {"access_log": False},
            "plugins": {
                "redis": {"url": redis_server.url, "prefix": prefix, **options},
            },
        }
        plugins_b = [("redis", __import__("virtwire_redis")), ("dir", DirPlugin(vms, "B"))]
        async with (
            run_server(make_settings(config_b), plugins=plugins_b) as b,
            gateway(redis_server, prefix=prefix, **options) as c,
            c.client(c.token("alice")) as alice,
        ):
            broker_b = b.gateway.hub.broker
            assert broker_b is not None
            assert broker_b.health()["owned"] == 0  # the same backend, but A owns alpha

            await alice.request("subscribe", {"topic": "vm-status", "vmId": "alpha"})
            await alice.expect("vm-status")
            reply = await alice.request("vm-control", {"vmId": "alpha", "action": "pause"})
            assert reply["type"] == "vm-control-response", reply
            assert controls(vms) == ["A alpha pause alice"]  # run by the owner only
            event = await alice.expect("system-event")
            assert (event["data"]["event"], event["data"]["userId"]) == ("vm-paused", "alice")

            os.kill(proc.pid, signal.SIGKILL)
            await asyncio.wait_for(proc.wait(), 10)
            # the owner is gone: a clear error, never a hang
            reply = await alice.request("vm-control", {"vmId": "alpha", "action": "resume"})
            assert reply["type"] == "error"
            assert reply["data"]["code"] == "BACKEND_UNAVAILABLE"

            # B takes alpha over and publishes its status
            await until(lambda: broker_b.health()["owned"] == 1, timeout=3 * LEASE + 5)
            reply = await alice.request("vm-control", {"vmId": "alpha", "action": "resume"})
            assert reply["type"] == "vm-control-response", reply
            assert controls(vms)[-1] == "B alpha resume alice"
            status = await alice.expect(
                "vm-status", where=lambda f: f["data"]["status"] == "running"
            )
            assert status["data"]["vmId"] == "alpha"
            event = await alice.expect("system-event")
            assert (event["data"]["event"], event["data"]["userId"]) == ("vm-resumed", "alice")
    finally:
        if proc.returncode is None:
            os.kill(proc.pid, signal.SIGKILL)
            await asyncio.wait_for(proc.wait(), 10)
