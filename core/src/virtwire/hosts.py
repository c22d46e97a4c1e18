"""The ``Host`` allow list (DNS rebinding): a page on an attacker's name that resolves to the
gateway's address sends that name in ``Host``, so only configured names are served."""

from __future__ import annotations

import ipaddress

#: Names always taken to mean this machine.
LOOPBACK = ("localhost", "*.localhost", "127.0.0.0/8", "::1")
_WILDCARDS = {"", "0.0.0.0", "::", "*"}


def host_name(value: str) -> str:
    """The host part of a ``Host`` header value, lower-case, without port or brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[1:end] if end > 0 else value
    name, sep, port = value.rpartition(":")
    if sep and port.isdigit() and ":" not in name:
        value = name
    return value.rstrip(".")


def default_hosts(bind: str) -> list[str]:
    """Without ``server.allowed_hosts``: loopback names, plus the bind address; any name when
    bound to every interface (the operator should then list the names)."""
    if bind.strip() in _WILDCARDS:
        return ["*"]
    hosts = list(LOOPBACK)
    name = host_name(bind)
    if name not in hosts:
        hosts.append(name)
    return hosts


class HostCheck:
    """Matches ``Host`` values against patterns: ``*`` (any), ``*.example.com`` (that domain
    and its subdomains), an exact name, an IP address or a CIDR network."""

    def __init__(self, patterns: list[str]) -> None:
        self.any = "*" in patterns
        self.names: set[str] = set()
        self.suffixes: list[str] = []
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for raw in patterns:
            pattern = host_name(raw) if "/" not in raw else raw.strip().lower()
            if pattern.startswith("*."):
                self.suffixes.append(pattern[1:])
                self.names.add(pattern[2:])
                continue
            try:
                self.networks.append(ipaddress.ip_network(pattern, strict=False))
            except ValueError:
                self.names.add(pattern)

    def __call__(self, host: str | None) -> bool:
        """True if a request with this ``Host`` header (None: absent) may be served."""
        if self.any or host is None:
            return True
        name = host_name(host)
        if name in self.names or any(name.endswith(s) for s in self.suffixes):
            return True
        if self.networks:
            try:
                address = ipaddress.ip_address(name)
            except ValueError:
                return False
            return any(address in net for net in self.networks)
        return False
