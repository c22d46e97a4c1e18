"""Logins, tickets, API tokens, the host going away, secrets, config."""

from __future__ import annotations

import asyncio
import time

import pytest
import virtwire_proxmox
from pve_fixtures import PASSWORD, TOKEN_SECRET
from pve_helpers import backend_of, is_event, proxmox_server, settings_for, until
from pve_standin import Cluster, StandIn
from virtwire.errors import ConfigError
from virtwire.testing import run_server


async def test_ticket_is_renewed_before_it_expires(standin: StandIn, cluster: Cluster) -> None:
    # tickets carry whole seconds, as Proxmox's do: a 2.5 s lifetime is at least 1.5 s
    cluster.ticket_lifetime = 2.5
    async with proxmox_server(standin, ticket_renew=0.4) as server, server.client() as client:
        backend = backend_of(server)
        started = time.monotonic()
        # well past the first ticket's lifetime, every call still went through
        await until(lambda: time.monotonic() - started > 3.5 and cluster.renewals >= 3)
        assert cluster.logins == 1 and cluster.refused == 0
        assert backend.state.value == "up"
        reply = await client.request("vm-control", {"vmId": "pve:100", "action": "pause"})
        assert reply["type"] == "vm-control-response"  # a write: the renewed CSRF token too


async def test_an_invalidated_ticket_logs_in_again(standin: StandIn, cluster: Cluster) -> None:
    async with proxmox_server(standin) as server, server.client() as client:
        await client.request("subscribe", {"topic": "vm-status-all"})
        assert cluster.logins == 1
        cluster.rotate_key()  # every ticket issued so far is now refused
        await until(lambda: cluster.logins == 2)
        cluster.set_state(101, "running")
        await client.expect("system-event", where=is_event("vm-started", "pve:101"))
        reply = await client.request("vm-control", {"vmId": "pve:101", "action": "stop"})
        assert reply["type"] == "vm-control-response"


async def test_refused_login_is_reported_and_retried(standin: StandIn, cluster: Cluster) -> None:
    async with proxmox_server(standin) as server, server.client() as client:
        backend = backend_of(server)
        cluster.users["root@pam"] = "changed-elsewhere"
        cluster.rotate_key()
        await asyncio.wait_for(backend.down.wait(), 10)
        reply = await client.request("vm-control", {"vmId": "pve:100", "action": "pause"})
        assert reply["data"]["code"] == "BACKEND_UNAVAILABLE"
        assert reply["data"]["details"].startswith("login refused")
        refused = cluster.refused
        await until(lambda: cluster.refused >= refused + 2)  # retried, with backoff
        cluster.users["root@pam"] = PASSWORD
        await asyncio.wait_for(backend.up.wait(), 10)
        reply = await client.request("vm-control", {"vmId": "pve:100", "action": "pause"})
        assert reply["type"] == "vm-control-response"


async def test_host_down_and_back(standin: StandIn, cluster: Cluster) -> None:
    async with proxmox_server(standin) as server, server.client() as client:
        backend = backend_of(server)
        await client.request("subscribe", {"topic": "vm-status-all"})
        standin.stop()
        await asyncio.wait_for(backend.down.wait(), 10)
        # subscribers see the VMs as unreachable (not their last status), and why
        unreachable: set[str] = set()
        lost = None
        while len(unreachable) < 3 or lost is None:
            frame = await client.expect()
            if frame["type"] == "vm-status" and frame["data"]["status"] == "unreachable":
                unreachable.add(frame["data"]["vmId"])
            elif frame["type"] == "system-event" and frame["data"]["event"] == (
                "backend-unavailable"
            ):
                lost = frame["data"]
        assert unreachable == {"pve:100", "pve:101", "pve:102"}
        assert lost["backend"] == "proxmox" and lost["details"].startswith("unreachable")
        reply = await client.request("vm-control", {"vmId": "pve:101", "action": "start"})
        assert reply["data"]["code"] == "BACKEND_UNAVAILABLE"
        assert reply["data"]["details"].startswith("unreachable")
        status = await client.request("subscribe", {"topic": "vm-status", "vmId": "pve:100"})
        assert status["data"]["code"] == "BACKEND_UNAVAILABLE"
        cluster.set_state(101, "running")  # changed while we could not see
        standin.start()
        await asyncio.wait_for(backend.up.wait(), 10)
        await client.expect(
            "system-event", where=lambda f: f["data"]["event"] == "backend-available"
        )
        # the change made meanwhile as an event, and every VM's status again (unchanged too)
        statuses: dict[str, str] = {}
        events = []
        while len(statuses) < 3 or not events:
            frame = await client.expect()
            if frame["type"] == "vm-status":
                statuses[frame["data"]["vmId"]] = frame["data"]["status"]
            elif frame["type"] == "system-event":
                events.append((frame["data"]["event"], frame["data"]["vmId"]))
        assert statuses == {"pve:100": "running", "pve:101": "running", "pve:102": "paused"}
        assert events == [("vm-started", "pve:101")]
        reply = await client.request("vm-control", {"vmId": "pve:101", "action": "stop"})
        assert reply["type"] == "vm-control-response"


async def test_gateway_starts_while_the_host_is_down(standin: StandIn) -> None:
    standin.stop()
    async with proxmox_server(standin) as server, server.client() as client:
        backend = backend_of(server)
        reply = await client.request("subscribe", {"topic": "vm-status-all"})
        assert reply["data"]["code"] == "BACKEND_UNAVAILABLE"
        standin.start()
        await asyncio.wait_for(backend.up.wait(), 10)
        reply = await client.request("subscribe", {"topic": "vm-status-all"})
        assert reply["data"]["count"] == 3


async def test_api_token_for_status_and_control(standin: StandIn, cluster: Cluster) -> None:
    token = {"password": None, "token_name": "virtwire", "token_value": TOKEN_SECRET}
    async with proxmox_server(standin, **token) as server, server.client() as client:
        reply = await client.request("subscribe", {"topic": "vm-status-all"})
        assert reply["data"]["count"] == 3
        # writes with a token need no CSRF token; no ticket was ever asked for
        reply = await client.request("vm-control", {"vmId": "pve:101", "action": "start"})
        assert reply["type"] == "vm-control-response"
        assert cluster.logins == 0
    bad = {**token, "token_value": "wrong"}
    async with proxmox_server(standin, **bad) as server, server.client() as client:
        reply = await client.request("subscribe", {"topic": "vm-status-all"})
        assert reply["data"]["code"] == "BACKEND_UNAVAILABLE"
        assert reply["data"]["details"].startswith("login refused")


async def test_secrets_never_reach_the_log(
    standin: StandIn, cluster: Cluster, capfd: pytest.CaptureFixture[str]
) -> None:
    async with proxmox_server(standin, ticket_renew=0.2) as server, server.client() as client:
        backend = backend_of(server)
        await client.request("vm-control", {"vmId": "pve:100", "action": "start"})  # fails
        # a console: its ticket travels in a URL and a first message
        opened = await client.request("terminal-connect", {"vmId": "pve:100", "type": "proxmox"})
        assert opened["type"] == "terminal-connect-response"
        await client.request("terminal-disconnect", {"vmId": "pve:100"})
        await until(lambda: cluster.renewals >= 1)
        cluster.users["root@pam"] = "changed"
        cluster.rotate_key()
        await asyncio.wait_for(backend.down.wait(), 10)
        cluster.users["root@pam"] = PASSWORD
        await asyncio.wait_for(backend.up.wait(), 10)
    out, err = capfd.readouterr()
    logged = out + err
    assert "login refused" in logged  # the log does report what happened...
    secrets = [PASSWORD, "changed", *cluster.issued]
    assert any(s.startswith("PVEVNC:") for s in cluster.issued)
    for secret in secrets:  # ...without any password, ticket or CSRF token
        assert secret not in logged


async def test_password_from_the_environment(
    standin: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PVE_TEST_PASSWORD", PASSWORD)
    async with proxmox_server(standin, password="env:PVE_TEST_PASSWORD") as server:
        async with server.client() as client:
            reply = await client.request("subscribe", {"topic": "vm-status-all"})
            assert reply["data"]["count"] == 3


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"vm_id": "pve-{id}"}, "unknown field 'id'"),
        ({"vm_id": "pve"}, "needs {vmid} or {name}"),
        ({"password": None}, "give either password or token_name"),
        ({"token_name": "t", "token_value": "v"}, "not both"),
        ({"interval": 0}, "interval"),
        ({"polling": 1}, "polling"),
    ],
)
def test_bad_settings_stop_the_gateway(
    standin: StandIn, overrides: dict[str, object], message: str
) -> None:
    from virtwire.app import create_app
    from virtwire.testing import make_settings

    config = {"plugins": {"proxmox": settings_for(standin, **overrides)}}
    if overrides.get("password", "") is None:
        config["plugins"]["proxmox"].pop("password", None)
    with pytest.raises(ConfigError, match=message):
        create_app(make_settings(config), plugins=[("proxmox", virtwire_proxmox)])


async def test_unconfigured_plugin_serves_no_vms() -> None:
    async with run_server(plugins=[("proxmox", virtwire_proxmox)]) as server:
        assert [b for b in server.gateway.backends if b.name == "proxmox"] == []


async def test_the_certificate_is_checked(standin: StandIn) -> None:
    # the stand-in's self-signed certificate is in no trust store: refused without ca_file
    async with proxmox_server(standin, ca_file=None) as server, server.client() as client:
        reply = await client.request("subscribe", {"topic": "vm-status-all"})
        assert reply["data"]["code"] == "BACKEND_UNAVAILABLE"
        assert reply["data"]["details"].startswith("unreachable: TLS:")


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
async def test_verify_ssl_off_accepts_any_certificate(standin: StandIn) -> None:
    async with proxmox_server(standin, ca_file=None, verify_ssl=False) as server:
        async with server.client() as client:
            reply = await client.request("subscribe", {"topic": "vm-status-all"})
            assert reply["data"]["count"] == 3


def test_virtwire_plugins_lists_it(cli_env: dict[str, str], virtwire_bin: str) -> None:
    import json
    import subprocess

    done = subprocess.run(
        [virtwire_bin, "plugins", "--json"], env=cli_env, capture_output=True, text=True, timeout=60
    )
    plugins = {p["name"]: p for p in json.loads(done.stdout)}
    assert plugins["proxmox"]["distribution"] == "virtwire-proxmox"
    assert plugins["proxmox"]["state"] == "enabled"
