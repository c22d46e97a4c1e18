"""One gateway, two hypervisor backends: libvirt's test driver and the Proxmox stand-in."""

from __future__ import annotations

import asyncio

import virtwire_libvirt
import virtwire_proxmox
from pve_helpers import backend_of, is_event, is_status, settings_for
from pve_standin import Cluster, StandIn
from virtwire.testing import run_server


async def test_vm_status_all_shows_the_vms_of_both(standin: StandIn, cluster: Cluster) -> None:
    config = {
        "server": {"locale": "en"},
        "plugins": {
            "libvirt": {"uri": "test:///default", "stats_interval": 0.2},
            "proxmox": settings_for(standin),
        },
    }
    plugins = [("libvirt", virtwire_libvirt), ("proxmox", virtwire_proxmox)]
    async with run_server(plugins=plugins, config=config) as server:
        async with server.client(server.token("alice")) as client:
            reply = await client.request("subscribe", {"topic": "vm-status-all"})
            assert reply["data"]["count"] == 4
            got = {}
            while len(got) < 4:
                frame = await client.expect("vm-status")
                got[frame["data"]["vmId"]] = frame["data"]["status"]
            assert got == {
                "test": "running",  # libvirt's test driver
                "pve:100": "running",
                "pve:101": "stopped",
                "pve:102": "paused",
            }
            # control goes to the backend that owns each VM
            for vm, action, event in (
                ("test", "pause", "vm-paused"),
                ("pve:101", "start", "vm-started"),
            ):
                done = await client.request("vm-control", {"vmId": vm, "action": action})
                assert done["type"] == "vm-control-response", done
                frame = await client.expect("system-event", where=is_event(event, vm))
                assert frame["data"]["userId"] == "alice"
            await client.expect("vm-status", where=is_status("pve:101", "running"))
            # one backend down: the other's VMs are still served
            standin.stop()
            await asyncio.wait_for(backend_of(server).down.wait(), 10)
            again = await client.request("subscribe", {"topic": "vm-status-all"})
            assert again["data"]["count"] == 1
            standin.start()
            await asyncio.wait_for(backend_of(server).up.wait(), 10)
            again = await client.request("subscribe", {"topic": "vm-status-all"})
            assert again["data"]["count"] == 4
