"""Blocking libvirt calls that read domains (run in worker threads, never on the loop)."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from typing import Any

from .stats import Sample, memory_percent

#: States in which a domain has a QEMU process with counters (running, blocked, paused,
#: shutting down, PM-suspended).
ACTIVE_STATES = frozenset({1, 2, 3, 4, 7})


#: Bound of the interface-device cache (one entry per domain run).
IFACE_CACHE_MAX = 4096


class NoDomain(Exception):
    """The domain does not exist (libvirt's VIR_ERR_NO_DOMAIN)."""


def domain_key(dom: Any, by: str) -> str:
    return str(dom.name() if by == "name" else dom.UUIDString())


def lookup(conn: Any, vm_id: str, by: str) -> Any:
    import libvirt

    try:
        if by == "name":
            return conn.lookupByName(vm_id)
        return conn.lookupByUUIDString(vm_id)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() in (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_INVALID_ARG):
            raise NoDomain(vm_id) from exc
        raise


def interfaces(dom: Any) -> list[str]:
    """Target device names of the domain's network interfaces (as ``interfaceStats``
    takes them)."""
    root = ET.fromstring(dom.XMLDesc(0))
    out = []
    for iface in root.findall("./devices/interface"):
        target = iface.find("target")
        if target is not None and target.get("dev"):
            out.append(target.get("dev", ""))
        else:
            mac = iface.find("mac")
            if mac is not None and mac.get("address"):
                out.append(mac.get("address", ""))
    return out


def sample(dom: Any, iface_cache: dict[tuple[str, int], list[str]]) -> Sample:
    """One domain's counters now. ``iface_cache`` maps (uuid, domain id) to its interface
    devices: they change with every start, so the key includes the run's id."""
    import libvirt

    state, max_kib, cur_kib, vcpus, cpu_time = dom.info()
    now = time.monotonic()
    s = Sample(state=state, wall=now, cpu_time=cpu_time, vcpus=vcpus or 1)
    if state not in ACTIVE_STATES:
        return s
    try:
        mem = dom.memoryStats()
    except libvirt.libvirtError:
        mem = {}
    s.memory = memory_percent(mem, max_kib, cur_kib)
    key = (dom.UUIDString(), dom.ID())
    devs = iface_cache.get(key)
    if devs is None:
        if len(iface_cache) >= IFACE_CACHE_MAX:  # entries of past runs: start afresh
            iface_cache.clear()
        devs = iface_cache[key] = interfaces(dom)
    for dev in devs:
        try:
            st = dom.interfaceStats(dev)
        except libvirt.libvirtError:
            continue
        s.rx += st[0]
        s.tx += st[4]
    return s


def sample_one(conn: Any, vm_id: str, by: str, cache: dict[tuple[str, int], list[str]]) -> Sample:
    import libvirt

    dom = lookup(conn, vm_id, by)
    try:
        return sample(dom, cache)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            raise NoDomain(vm_id) from exc
        raise


def sample_all(
    conn: Any, by: str, cache: dict[tuple[str, int], list[str]]
) -> list[tuple[str, Sample]]:
    import libvirt

    out = []
    for dom in conn.listAllDomains(0):
        try:
            out.append((domain_key(dom, by), sample(dom, cache)))
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                continue  # went away while we listed
            raise
    return out


def run_action(dom: Any, action: str, force: bool) -> None:
    """The libvirt call behind each ``vm-control`` action."""
    if action == "start":
        dom.create()
    elif action == "stop":
        if force:
            dom.destroy()
        else:
            dom.shutdown()
    elif action == "restart":
        if force:
            dom.reset()
        else:
            dom.reboot(0)
    elif action == "pause":
        dom.suspend()
    elif action == "resume":
        dom.resume()
    elif action == "reset":
        dom.reset()
    else:  # the core validates actions; this is a programming error
        raise ValueError(f"unknown action {action!r}")
