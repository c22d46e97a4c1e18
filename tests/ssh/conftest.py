"""Fixtures for the ssh plugin: a real OpenSSH sshd for the whole module (sshkit.py)."""

from __future__ import annotations

from sshkit import sshd_fixture  # noqa: F401 (the sshd fixture)
