"""The ``[plugins.proxmox]`` config section."""

from __future__ import annotations

import string

import msgspec

#: Placeholders a ``vm_id`` template may use.
VM_ID_FIELDS = ("vmid", "node", "name", "cluster")


class ProxmoxSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Options of the Proxmox VE backend (docs/proxmox.md explains each).

    ``password`` and ``token_value`` are secrets: give them by reference (``"env:NAME"``,
    ``"file:PATH"``) or through ``VIRTWIRE_PLUGINS__PROXMOX__PASSWORD``; they are never
    logged.
    """

    #: Host name or address of a Proxmox VE node (any node of the cluster). Unset: the
    #: plugin serves no VMs (so installing it changes nothing until it is configured).
    host: str | None = None
    port: int = 8006
    #: ``user@realm``, e.g. ``root@pam`` or ``virtwire@pve``.
    user: str = "root@pam"
    #: Password of ``user``: a ticket session (status, control and consoles).
    password: str | None = None
    #: API token id (the part after ``!``) and its secret: status and control only.
    token_name: str | None = None
    token_value: str | None = None
    #: Check the host's TLS certificate. ``ca_file``: a PEM bundle to check it against
    #: (e.g. the cluster's ``pve-root-ca.pem``).
    verify_ssl: bool = True
    ca_file: str | None = None
    #: Only VMs on these nodes (empty: every node).
    nodes: list[str] = msgspec.field(default_factory=list)
    #: Seconds between two polls of ``/cluster/resources``.
    interval: float = 3.0
    #: What becomes the ``vmId``: a template over ``{vmid}``, ``{node}``, ``{name}``,
    #: ``{cluster}`` (the ``cluster`` option). Must stay unique across backends.
    vm_id: str = "pve:{vmid}"
    #: A label for ``{cluster}`` in ``vm_id`` (e.g. to tell two clusters apart).
    cluster: str = "pve"
    #: Upper bound in seconds of one HTTP call to the API.
    call_timeout: float = 10.0
    #: How long ``vm-control`` waits for the action's task to finish, and how often it asks.
    task_timeout: float = 120.0
    task_poll: float = 0.5
    #: Lines of the task log a failed action carries in ``details``.
    task_log_lines: int = 20
    #: Seconds after which the ticket is renewed (Proxmox tickets live 2 hours).
    ticket_renew: float = 3600.0
    #: Backoff of logins and polls after the host went away or refused: first delay, ceiling.
    retry_min: float = 1.0
    retry_max: float = 30.0
    #: Threads running the blocking API calls (at most this many calls at once).
    workers: int = 4

    def __post_init__(self) -> None:
        checks = (
            ("port", 0 < self.port < 65536),
            ("interval", self.interval >= 0.05),
            ("call_timeout", self.call_timeout > 0),
            ("task_timeout", self.task_timeout > 0),
            ("task_poll", 0 < self.task_poll <= self.task_timeout),
            ("task_log_lines", 0 <= self.task_log_lines <= 1000),
            ("ticket_renew", 0 < self.ticket_renew < 7200),
            ("retry_min", self.retry_min > 0),
            ("retry_max", self.retry_max >= self.retry_min),
            ("workers", 1 <= self.workers <= 64),
        )
        for field, ok in checks:
            if not ok:
                raise ValueError(f"invalid value for {field}: {getattr(self, field)!r}")
        try:
            names = {f for _, f, _, _ in string.Formatter().parse(self.vm_id) if f is not None}
        except ValueError as exc:
            raise ValueError(f"invalid value for vm_id: {exc}") from None
        unknown = names - set(VM_ID_FIELDS)
        if unknown:
            raise ValueError(
                f"invalid value for vm_id: unknown field {sorted(unknown)[0]!r} "
                f"(use {', '.join('{' + f + '}' for f in VM_ID_FIELDS)})"
            )
        if "vmid" not in names and "name" not in names:
            raise ValueError("invalid value for vm_id: it needs {vmid} or {name}")
        if (self.token_name is None) != (self.token_value is None):
            raise ValueError("token_name and token_value go together")
        if self.host is None:
            return
        if self.password is None and self.token_name is None:
            raise ValueError("give either password or token_name + token_value")
        if self.password is not None and self.token_name is not None:
            raise ValueError("give either password or token_name + token_value, not both")

    @property
    def uses_token(self) -> bool:
        return self.token_name is not None

    def verify(self) -> bool | str:
        """The ``verify`` argument of requests: False, True or the CA bundle's path."""
        if not self.verify_ssl:
            return False
        return self.ca_file or True
