"""virtwire: a plugin-based real-time WebSocket gateway for virtual machines.

The names a plugin uses most are importable from here; docs/reference.md documents each one
under the module that defines it.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .backends import HypervisorBackend, NetworkRates, VmEvents, VmStatus
from .collectors import MetricCollector, Sampler
from .errors import BackendUnavailable, ErrorCode, VirtwireError, VmNotFound
from .hookspecs import hookimpl
from .logsources import LogLines, LogNotice, LogSource
from .topics import ChannelTopic, Reply, Subscription, Topic

__all__ = [
    "BackendUnavailable",
    "ChannelTopic",
    "ErrorCode",
    "HypervisorBackend",
    "LogLines",
    "LogNotice",
    "LogSource",
    "MetricCollector",
    "NetworkRates",
    "Reply",
    "Sampler",
    "Subscription",
    "Topic",
    "VirtwireError",
    "VmEvents",
    "VmNotFound",
    "VmStatus",
    "__version__",
    "hookimpl",
]
