"""virtwire: a plugin-based real-time WebSocket gateway for virtual machines."""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import BackendUnavailable, ErrorCode, VirtwireError, VmNotFound
from .hookspecs import hookimpl

__all__ = [
    "BackendUnavailable",
    "ErrorCode",
    "VirtwireError",
    "VmNotFound",
    "__version__",
    "hookimpl",
]
