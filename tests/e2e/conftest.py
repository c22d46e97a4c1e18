"""End-to-end tests across plugins (they need several workspace members installed, so they
run in the full suite, not in a member's isolated run). The Proxmox stand-in and its
fixtures come from tests/proxmox."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "proxmox"))

from pve_fixtures import cluster, pve_cert, qemu_display, standin

__all__ = ["cluster", "pve_cert", "qemu_display", "standin"]
