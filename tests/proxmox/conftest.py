"""Fixtures for the Proxmox plugin: the stand-in Proxmox server and a real QEMU display."""

from __future__ import annotations

from pve_fixtures import cluster, pve_cert, qemu_display, standin

__all__ = ["cluster", "pve_cert", "qemu_display", "standin"]
