"""A domain's IP addresses (for the ssh plugin's ``backend_addresses``), blocking: run it
with ``LibvirtBackend.run``."""

from __future__ import annotations

import ipaddress
from typing import Any

from . import sampling


def domain_addresses(conn: Any, vm_id: str, by: str) -> list[str]:
    """The running domain's addresses, IPv4 first, from libvirt's DHCP leases, else the guest
    agent, else the host's ARP table; loopback and link-local addresses left out."""
    import libvirt

    dom = sampling.lookup(conn, vm_id, by)
    sources = (
        libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE,
        libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT,
        libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_ARP,
    )
    for source in sources:
        try:
            interfaces = dom.interfaceAddresses(source, 0) or {}
        except libvirt.libvirtError:  # no agent, not running, not supported...
            continue
        found: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
        for iface in interfaces.values():
            for entry in iface.get("addrs") or []:
                try:
                    addr = ipaddress.ip_address(entry.get("addr", ""))
                except ValueError:
                    continue
                if not (addr.is_loopback or addr.is_link_local):
                    found.append(addr)
        if found:
            found.sort(key=lambda a: a.version)
            return [str(a) for a in found]
    return []
