"""A stand-in for a Proxmox VE host, for tests and benchmarks only.

No Proxmox VE host can run here, so this module serves the few endpoints of the Proxmox VE
API (``/api2/json``) that virtwire's proxmox plugin uses, over HTTPS (a self-signed
certificate made at test time) and WebSocket on loopback, with the behaviour the Proxmox
sources document (pve-access-control, pve-http-server, qemu-server, pve-manager,
pve-xtermjs). It is not Proxmox VE and does not pretend to cover more than this list:

- ``POST /access/ticket``: login with ``username`` + ``password`` and ticket renewal (the
  current ticket as ``password``); refused logins and every unauthorized call are delayed
  (3 s in Proxmox, ``login_delay`` here). API tokens cannot get tickets.
- Credentials from the ``PVEAuthCookie`` cookie, ``Authorization: PVEAuthCookie=...`` or
  ``Authorization: PVEAPIToken=USER@REALM!TOKENID=SECRET``; a ``CSRFPreventionToken``
  header is required on every non-GET call made with a ticket, never with a token.
  Tickets live ``ticket_lifetime`` seconds (7200 in Proxmox); ``rotate_key`` invalidates all.
- ``GET /cluster/resources?type=vm``: one row per VM; like Proxmox, a paused VM shows as
  ``running`` here, and with ``resource_lag`` the rows are refreshed only that often
  (pvestatd broadcasts every 10 s).
- ``GET /nodes/{node}/qemu/{vmid}/status/current`` with ``qmpstatus``.
- ``POST /nodes/{node}/qemu/{vmid}/status/{start|stop|shutdown|reboot|suspend|resume|reset}``
  returning a UPID; the task finishes ``task_delay`` seconds later, failing like Proxmox's
  (``VM 100 already running``...) or as injected with :meth:`Cluster.fail_next`, with a log.
- ``GET /nodes/{node}/tasks/{upid}/status`` and ``.../log``.
- ``POST .../vncproxy`` (``websocket=1``, ``generate-password=1``: an 8-character password,
  the ticket ``<password>:PVEVNC:...``) backed by a real QEMU ``-vnc`` server whose VNC
  password is set over QMP, and ``POST .../termproxy`` backed by a real shell on a PTY
  (standing in for ``qm terminal``).
- ``GET .../vncwebsocket?port=&vncticket=``: the WebSocket upgrade (needs the API
  credentials and the VNC ticket, bound to user, VM and port, valid 40 s, one connection
  per port within 10 s); it echoes the client's subprotocol and closes at once unless
  ``binary`` was offered; client frames over 128 KiB end the connection. VNC: the raw RFB
  stream of the QEMU display (VNC authentication with the password). termproxy: the first
  message ``<user>:<ticket>\\n`` is answered ``OK``, then ``0:LEN:DATA`` (input),
  ``1:COLS:ROWS:`` (resize) and ``2`` (ping) from the client, raw terminal output back.

HTTP errors carry the standard reason phrase (Proxmox puts its message there; uvicorn
cannot), so failing actions are failing tasks here, as they are in Proxmox.

Run alone (the benchmark does): ``python pve_standin.py --port P --vms 500`` prints
``ready <port> <cert>`` and takes ``set VMID STATE`` lines on stdin.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import pty
import secrets
import signal
import socket
import struct
import termios
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

API = "/api2/json"
MAX_CLIENT_FRAME = 128 * 1024
VNC_TICKET_LIFETIME = 40.0
ACCEPT_TIMEOUT = 10.0
ACTIONS = ("start", "stop", "shutdown", "reboot", "suspend", "resume", "reset")


# -- certificate -------------------------------------------------------------------------
def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 / localhost (cert, key) in ``directory``."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pve-standin")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "pve-standin.pem", directory / "pve-standin.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


# -- state -------------------------------------------------------------------------------
@dataclass
class Display:
    """A real QEMU VNC server standing in for a VM's display (its QMP socket sets the
    VNC password, as ``qm vncproxy`` does through the VM's monitor)."""

    host: str
    port: int
    qmp: str


@dataclass
class StandInVm:
    vmid: int
    node: str
    name: str
    status: str = "stopped"  # running | stopped
    qmpstatus: str = "stopped"
    started: float = 0.0
    maxmem: int = 1 << 30
    maxcpu: int = 2
    load: float = 0.25  # cpu fraction while running and not paused
    mem_fraction: float = 0.5
    net_rate: float = 1000.0  # bytes/s in each direction while running
    netin: float = 0.0
    netout: float = 0.0
    net_at: float = 0.0
    template: int = 0
    ignore_acpi: bool = False
    display: Display | None = None

    def advance(self, now: float) -> None:
        if self.status == "running" and self.qmpstatus == "running":
            self.netin += self.net_rate * (now - self.net_at)
            self.netout += self.net_rate * 0.5 * (now - self.net_at)
        self.net_at = now

    def cpu(self) -> float:
        return self.load if self.status == "running" and self.qmpstatus == "running" else 0.0

    def row(self, now: float) -> dict[str, Any]:
        running = self.status == "running"
        return {
            "id": f"qemu/{self.vmid}",
            "type": "qemu",
            "vmid": self.vmid,
            "node": self.node,
            "name": self.name,
            "status": self.status,
            "uptime": int(now - self.started) if running else 0,
            "template": self.template,
            "maxcpu": self.maxcpu,
            "cpu": self.cpu(),
            "maxmem": self.maxmem,
            "mem": int(self.maxmem * self.mem_fraction) if running else 0,
            "maxdisk": 8 << 30,
            "disk": 0,
            "netin": int(self.netin),
            "netout": int(self.netout),
            "diskread": 0,
            "diskwrite": 0,
        }

    def current(self, now: float) -> dict[str, Any]:
        row = self.row(now)
        return {
            "vmid": self.vmid,
            "name": self.name,
            "status": self.status,
            "qmpstatus": self.qmpstatus,
            "uptime": row["uptime"],
            "cpu": row["cpu"],
            "cpus": self.maxcpu,
            "mem": row["mem"],
            "maxmem": self.maxmem,
            "netin": row["netin"],
            "netout": row["netout"],
            "pid": 4242 + self.vmid if self.status == "running" else None,
            "ha": {"managed": 0},
        }


@dataclass
class Task:
    upid: str
    node: str
    user: str
    started: float
    finish_at: float
    effect: Callable[[], str | None]  # applies the action; returns an error text or None
    log: list[str] = field(default_factory=list)
    exitstatus: str | None = None


@dataclass
class Worker:
    """A ``vncproxy``/``termproxy`` listener waiting for its one connection."""

    kind: str  # vnc | term
    vmid: int
    user: str
    port: int
    password: str | None
    deadline: float
    used: bool = False


class Cluster:
    """The stand-in's state; every method is safe to call from any thread."""

    def __init__(
        self,
        *,
        node: str = "pve1",
        users: dict[str, str] | None = None,
        tokens: dict[str, str] | None = None,
        login_delay: float = 3.0,
        ticket_lifetime: float = 7200.0,
        task_delay: float = 0.2,
        resource_lag: float = 0.0,
    ) -> None:
        self.lock = threading.RLock()
        self.node = node
        self.users = dict(users or {})
        self.tokens = dict(tokens or {})
        self.login_delay = login_delay
        self.ticket_lifetime = ticket_lifetime
        self.task_delay = task_delay
        self.resource_lag = resource_lag
        self.vms: dict[int, StandInVm] = {}
        self.tasks: dict[str, Task] = {}
        self.workers: dict[int, Worker] = {}
        self.failures: dict[tuple[int, str], tuple[str, list[str]]] = {}
        self.key = secrets.token_bytes(32)
        self._rows: list[dict[str, Any]] = []
        self._rows_at = -1e9
        self._pid = 1000
        #: Counters the tests read: requests per path kind, logins, refused logins.
        self.calls: dict[str, int] = {}
        self.logins = 0
        self.refused = 0
        self.renewals = 0
        #: Every secret this stand-in handed out (tickets, CSRF tokens, VNC passwords), so
        #: that tests can check none of them reaches a log.
        self.issued: list[str] = []

    # -- VMs -------------------------------------------------------------------------
    def add_vm(self, vmid: int, name: str, status: str = "running", **kw: Any) -> StandInVm:
        with self.lock:
            now = time.monotonic()
            vm = StandInVm(vmid, kw.pop("node", self.node), name, **kw)
            vm.net_at = now
            if status in ("running", "paused"):
                vm.status, vm.qmpstatus, vm.started = "running", status, now - 100
            self.vms[vmid] = vm
            return vm

    def remove_vm(self, vmid: int) -> None:
        with self.lock:
            self.vms.pop(vmid, None)

    def set_state(self, vmid: int, state: str) -> None:
        """Change a VM as if from elsewhere (the web UI, the guest): running|paused|stopped."""
        with self.lock:
            vm = self.vms[vmid]
            vm.advance(time.monotonic())
            if state == "stopped":
                vm.status, vm.qmpstatus = "stopped", "stopped"
            elif state == "paused":
                vm.status, vm.qmpstatus = "running", "paused"
            else:
                if vm.status != "running":
                    vm.started = time.monotonic()
                vm.status, vm.qmpstatus = "running", "running"

    def fail_next(self, vmid: int, action: str, error: str, log: list[str] | None = None) -> None:
        """The next ``action`` task on ``vmid`` fails with ``error`` after logging ``log``."""
        with self.lock:
            self.failures[(vmid, action)] = (error, list(log or []))

    def rotate_key(self) -> None:
        """A new signing key: every ticket issued so far becomes invalid."""
        with self.lock:
            self.key = secrets.token_bytes(32)

    def count(self, kind: str) -> None:
        with self.lock:
            self.calls[kind] = self.calls.get(kind, 0) + 1

    def settle(self) -> None:
        """Finish the tasks that are due (their effect happens at their end)."""
        now = time.monotonic()
        with self.lock:
            for task in self.tasks.values():
                if task.exitstatus is None and now >= task.finish_at:
                    error = task.effect()
                    if error is None:
                        task.log.append("TASK OK")
                        task.exitstatus = "OK"
                    else:
                        task.log.append(f"TASK ERROR: {error}")
                        task.exitstatus = error

    def resources(self) -> list[dict[str, Any]]:
        self.settle()
        with self.lock:
            now = time.monotonic()
            if now - self._rows_at >= self.resource_lag:
                for vm in self.vms.values():
                    vm.advance(now)
                self._rows = [vm.row(now) for vm in self.vms.values()]
                self._rows_at = now
            return list(self._rows)

    # -- tickets ---------------------------------------------------------------------
    def _sign(self, text: str) -> str:
        return base64.b64encode(hmac.new(self.key, text.encode(), hashlib.sha256).digest()).decode()

    def make_ticket(self, user: str, prefix: str = "PVE", extra: str = "") -> str:
        plain = f"{prefix}:{user}:{int(time.time()):08X}"
        return f"{plain}::{self._sign(plain + extra)}"

    def check_ticket(
        self, ticket: str, prefix: str = "PVE", extra: str = "", lifetime: float | None = None
    ) -> str | None:
        """The user of a valid ticket, else None."""
        plain, sep, sig = ticket.rpartition("::")
        parts = plain.split(":")
        if not sep or len(parts) != 3 or parts[0] != prefix:
            return None
        try:
            issued = int(parts[2], 16)
        except ValueError:
            return None
        with self.lock:
            good = hmac.compare_digest(sig, self._sign(plain + extra))
            limit = self.ticket_lifetime if lifetime is None else lifetime
        if not good or not (-300 < time.time() - issued < limit):
            return None
        return parts[1]

    def make_csrf(self, user: str) -> str:
        stamp = f"{int(time.time()):08X}"
        return f"{stamp}:{self._sign(stamp + ':' + user)}"

    def check_csrf(self, token: str, user: str) -> bool:
        stamp, _, sig = token.partition(":")
        try:
            issued = int(stamp, 16)
        except ValueError:
            return False
        with self.lock:
            good = hmac.compare_digest(sig, self._sign(stamp + ":" + user))
        return good and -300 < time.time() - issued < self.ticket_lifetime

    # -- tasks -----------------------------------------------------------------------
    def new_upid(self, kind: str, vmid: int, user: str) -> str:
        with self.lock:
            self._pid += 1
            return (
                f"UPID:{self.node}:{self._pid:08X}:{self._pid * 7:08X}:{int(time.time()):08X}:"
                f"{kind}:{vmid}:{user}:"
            )

    def start_task(self, vm: StandInVm, action: str, user: str) -> str:
        kind = {"shutdown": "qmshutdown", "stop": "qmstop"}.get(action, f"qm{action}")
        upid = self.new_upid(kind, vm.vmid, user)
        now = time.monotonic()
        injected = self.failures.pop((vm.vmid, action), None)
        delay = self.task_delay
        if action == "shutdown" and vm.ignore_acpi and vm.status == "running":
            delay = self.task_delay * 5

        def effect() -> str | None:
            if injected is not None:
                task.log.extend(injected[1])
                return injected[0]
            return self._apply(vm, action, task)

        task = Task(upid, vm.node, user, now, now + delay, effect)
        task.log.append(f"{action} VM {vm.vmid}: {upid}")
        with self.lock:
            self.tasks[upid] = task
            if len(self.tasks) > 1000:
                for old in list(self.tasks)[:100]:
                    del self.tasks[old]
        return upid

    def _apply(self, vm: StandInVm, action: str, task: Task) -> str | None:
        now = time.monotonic()
        vm.advance(now)
        running = vm.status == "running"
        if action == "start":
            if running:
                return f"VM {vm.vmid} already running"
            vm.status, vm.qmpstatus, vm.started = "running", "running", now
            return None
        if not running:
            return f"VM {vm.vmid} not running"
        if action == "stop":
            vm.status, vm.qmpstatus = "stopped", "stopped"
        elif action == "shutdown":
            if vm.ignore_acpi:
                task.log.append("waiting for the guest to power off")
                return "VM quit/powerdown failed - got timeout"
            vm.status, vm.qmpstatus = "stopped", "stopped"
        elif action in ("reboot", "reset"):
            vm.started = now
            vm.qmpstatus = "running"
        elif action == "suspend":
            vm.qmpstatus = "paused"
        elif action == "resume":
            if vm.qmpstatus != "paused":
                return f"VM {vm.vmid} not paused"
            vm.qmpstatus = "running"
        return None

    # -- consoles --------------------------------------------------------------------
    def new_worker(self, kind: str, vm: StandInVm, user: str, password: str | None) -> Worker:
        with self.lock:
            now = time.monotonic()
            for port, w in list(self.workers.items()):
                if w.used or now > w.deadline:
                    del self.workers[port]
            port = next(p for p in range(5900, 6000) if p not in self.workers)
            worker = Worker(kind, vm.vmid, user, port, password, now + ACCEPT_TIMEOUT)
            self.workers[port] = worker
            return worker

    def vnc_ticket(self, user: str, vmid: int, port: int) -> str:
        return self.make_ticket(user, "PVEVNC", f"/vms/{vmid}:{port}")

    def check_vnc_ticket(self, ticket: str, user: str, vmid: int, port: int) -> bool:
        if ticket[8:16] == ":PVEVNC:":  # "<8-char password>:PVEVNC:..." (qemu-server 9.1.7+)
            ticket = ticket[9:]
        who = self.check_ticket(ticket, "PVEVNC", f"/vms/{vmid}:{port}", VNC_TICKET_LIFETIME)
        return who == user


# -- HTTP --------------------------------------------------------------------------------
async def read_form(request: Request) -> dict[str, str]:
    """The url-encoded body (what proxmoxer and requests send)."""
    from urllib.parse import parse_qsl

    body = (await request.body()).decode(errors="replace")
    return dict(parse_qsl(body, keep_blank_values=True))


def _error(status: int, errors: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"data": None}
    if errors:
        body["errors"] = errors
    return JSONResponse(body, status_code=status)


class StandInApp:
    """The Starlette application serving :class:`Cluster` as the Proxmox VE API."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        vm = API + "/nodes/{node}/qemu/{vmid:int}"
        self.app = Starlette(
            routes=[
                Route(API + "/access/ticket", self.ticket, methods=["POST"]),
                Route(API + "/cluster/resources", self.resources, methods=["GET"]),
                Route(vm + "/status/current", self.status_current, methods=["GET"]),
                Route(vm + "/status/{action}", self.action, methods=["POST"]),
                Route(vm + "/vncproxy", self.vncproxy, methods=["POST"]),
                Route(vm + "/termproxy", self.termproxy, methods=["POST"]),
                Route(vm + "/vncwebsocket", self.vncwebsocket_get, methods=["GET"]),
                WebSocketRoute(vm + "/vncwebsocket", self.vncwebsocket),
                Route(API + "/nodes/{node}/tasks/{upid}/status", self.task_status),
                Route(API + "/nodes/{node}/tasks/{upid}/log", self.task_log),
            ]
        )

    # -- auth ------------------------------------------------------------------------
    def identify(self, headers: Any, cookies: dict[str, str]) -> tuple[str, bool] | None:
        """(authid, by_ticket) of the caller, or None."""
        c = self.cluster
        ticket = cookies.get("PVEAuthCookie")
        auth = headers.get("authorization", "")
        if ticket is None and auth.startswith("PVEAuthCookie="):
            ticket = auth.split("=", 1)[1]
        if ticket is not None:
            user = c.check_ticket(ticket)
            return (user, True) if user else None
        if auth.startswith("PVEAPIToken="):
            tokenid, sep, secret = auth[len("PVEAPIToken=") :].partition("=")
            with c.lock:
                expected = c.tokens.get(tokenid)
            if sep and expected is not None and hmac.compare_digest(secret, expected):
                return tokenid, False
        return None

    async def authorized(self, request: Request) -> tuple[str, JSONResponse | None]:
        who = self.identify(request.headers, request.cookies)
        if who is None:
            await asyncio.sleep(self.cluster.login_delay)  # "always delay unauthorized calls"
            return "", _error(401)
        user, by_ticket = who
        if by_ticket and request.method != "GET":
            csrf = request.headers.get("csrfpreventiontoken", "")
            if not self.cluster.check_csrf(csrf, user):
                return "", _error(401)
        return user, None

    def vm_of(self, request: Request) -> StandInVm | None:
        c = self.cluster
        with c.lock:
            vm = c.vms.get(request.path_params["vmid"])
        if vm is None or vm.node != request.path_params["node"]:
            return None
        return vm

    # -- endpoints -------------------------------------------------------------------
    async def ticket(self, request: Request) -> JSONResponse:
        c = self.cluster
        c.count("ticket")
        form = await read_form(request)
        username, password = str(form.get("username", "")), str(form.get("password", ""))
        with c.lock:
            good = username in c.users and hmac.compare_digest(c.users[username], password)
        renewal = not good and c.check_ticket(password) == username
        if not (good or renewal):
            with c.lock:
                c.refused += 1
            await asyncio.sleep(c.login_delay)
            return _error(401)
        ticket, csrf = c.make_ticket(username), c.make_csrf(username)
        with c.lock:
            if renewal:
                c.renewals += 1
            else:
                c.logins += 1
            c.issued += [ticket, csrf]
        return JSONResponse(
            {
                "data": {
                    "username": username,
                    "ticket": ticket,
                    "CSRFPreventionToken": csrf,
                    "cap": {"vms": {"VM.Console": 1, "VM.PowerMgmt": 1, "VM.Audit": 1}},
                }
            }
        )

    async def resources(self, request: Request) -> JSONResponse:
        self.cluster.count("resources")
        _, denied = await self.authorized(request)
        if denied:
            return denied
        kind = request.query_params.get("type")
        if kind not in (None, "vm", "storage", "node", "sdn"):
            return _error(400, {"type": "value does not match the regex pattern"})
        rows = self.cluster.resources() if kind in (None, "vm") else []
        return JSONResponse({"data": rows})

    async def status_current(self, request: Request) -> JSONResponse:
        self.cluster.count("current")
        _, denied = await self.authorized(request)
        if denied:
            return denied
        self.cluster.settle()
        vm = self.vm_of(request)
        if vm is None:
            return _error(500)
        with self.cluster.lock:
            return JSONResponse({"data": vm.current(time.monotonic())})

    async def action(self, request: Request) -> JSONResponse:
        self.cluster.count("action")
        user, denied = await self.authorized(request)
        if denied:
            return denied
        action = request.path_params["action"]
        if action not in ACTIONS:
            return _error(501)
        vm = self.vm_of(request)
        if vm is None:
            return _error(500)
        await read_form(request)
        return JSONResponse({"data": self.cluster.start_task(vm, action, user)})

    async def task_status(self, request: Request) -> JSONResponse:
        self.cluster.count("task")
        _, denied = await self.authorized(request)
        if denied:
            return denied
        self.cluster.settle()
        with self.cluster.lock:
            task = self.cluster.tasks.get(request.path_params["upid"])
            if task is None:
                return _error(500)
            data: dict[str, Any] = {
                "upid": task.upid,
                "node": task.node,
                "user": task.user,
                "status": "running" if task.exitstatus is None else "stopped",
                "type": task.upid.split(":")[5],
                "id": task.upid.split(":")[6],
                "starttime": int(time.time()),
            }
            if task.exitstatus is not None:
                data["exitstatus"] = task.exitstatus
        return JSONResponse({"data": data})

    async def task_log(self, request: Request) -> JSONResponse:
        self.cluster.count("tasklog")
        _, denied = await self.authorized(request)
        if denied:
            return denied
        with self.cluster.lock:
            task = self.cluster.tasks.get(request.path_params["upid"])
            lines = list(task.log) if task else None
        if lines is None:
            return _error(500)
        start = int(request.query_params.get("start", 0))
        limit = int(request.query_params.get("limit", 50))
        page = [{"n": i + 1, "t": t} for i, t in enumerate(lines)][start : start + limit]
        return JSONResponse({"data": page, "total": len(lines)})

    async def vncproxy(self, request: Request) -> JSONResponse:
        c = self.cluster
        c.count("vncproxy")
        user, denied = await self.authorized(request)
        if denied:
            return denied
        vm = self.vm_of(request)
        form = await read_form(request)
        if vm is None or vm.status != "running" or vm.display is None:
            return _error(500)
        if form.get("websocket") not in ("1", "true"):
            return _error(400, {"websocket": "this stand-in serves websocket=1 only"})
        password = "".join(secrets.choice([chr(i) for i in range(33, 127)]) for _ in range(8))
        await qmp_command(vm.display.qmp, "change-vnc-password", {"password": password})
        worker = c.new_worker("vnc", vm, user, password)
        upid = c.new_upid("vncproxy", vm.vmid, user)
        ticket = f"{password}:{c.vnc_ticket(user, vm.vmid, worker.port)}"
        with c.lock:
            c.issued += [password, ticket]
        return JSONResponse(
            {
                "data": {
                    "user": user,
                    "ticket": ticket,
                    "port": worker.port,
                    "upid": upid,
                    "cert": "(stand-in)",
                    "password": password,
                }
            }
        )

    async def termproxy(self, request: Request) -> JSONResponse:
        c = self.cluster
        c.count("termproxy")
        user, denied = await self.authorized(request)
        if denied:
            return denied
        vm = self.vm_of(request)
        await read_form(request)
        if vm is None or vm.status != "running":
            return _error(500)
        worker = c.new_worker("term", vm, user, None)
        upid = c.new_upid("vncshell", vm.vmid, user)
        ticket = c.vnc_ticket(user, vm.vmid, worker.port)
        with c.lock:
            c.issued.append(ticket)
        return JSONResponse(
            {
                "data": {
                    "user": user,
                    "ticket": ticket,
                    "port": worker.port,
                    "upid": upid,
                }
            }
        )

    async def vncwebsocket_get(self, request: Request) -> JSONResponse:
        _, denied = await self.authorized(request)
        if denied:
            return denied
        return JSONResponse({"data": {"port": request.query_params.get("port")}})

    async def vncwebsocket(self, websocket: WebSocket) -> None:
        c = self.cluster
        c.count("vncwebsocket")
        who = self.identify(websocket.headers, websocket.cookies)
        if who is None:
            await asyncio.sleep(c.login_delay)
            await websocket.close(code=1008)  # refused before the upgrade (HTTP 403)
            return
        user = who[0]
        vmid = websocket.path_params["vmid"]
        try:
            port = int(websocket.query_params.get("port", ""))
        except ValueError:
            await websocket.close(code=1008)
            return
        ticket = websocket.query_params.get("vncticket", "")
        with c.lock:
            worker = c.workers.get(port)
            ok = (
                worker is not None
                and worker.vmid == vmid
                and not worker.used
                and time.monotonic() <= worker.deadline
                and c.check_vnc_ticket(ticket, user, vmid, port)
            )
            if ok and worker is not None:
                worker.used = True
            vm = c.vms.get(vmid)
        if not ok or worker is None or vm is None:
            await websocket.close(code=1008)
            return
        offered = websocket.scope.get("subprotocols") or []
        await websocket.accept(subprotocol=offered[0] if offered else None)
        if "binary" not in offered:
            await websocket.close()  # pveproxy's socket closes unless 'binary' was offered
            return
        if worker.kind == "vnc":
            assert vm.display is not None
            await relay_vnc(websocket, vm.display)
        else:
            await serve_terminal(websocket, c, worker)


async def _receive_bytes(websocket: WebSocket) -> bytes | None:
    """The next client frame (text or binary), None at the end; over-long frames end it."""
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        return None
    data = message.get("bytes")
    if data is None:
        data = (message.get("text") or "").encode()
    if len(data) > MAX_CLIENT_FRAME:
        await websocket.close(code=1009)
        return None
    return data


async def relay_vnc(websocket: WebSocket, display: Display) -> None:
    reader, writer = await asyncio.open_connection(display.host, display.port)

    async def upstream() -> None:
        while True:
            data = await _receive_bytes(websocket)
            if data is None:
                return
            writer.write(data)
            await writer.drain()

    async def downstream() -> None:
        while True:
            data = await reader.read(65536)
            if not data:
                return
            await websocket.send_bytes(data)

    await _first_done(upstream(), downstream())
    writer.close()
    with contextlib.suppress(Exception):
        await websocket.close()


async def _first_done(*coros: Any) -> None:
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def parse_term_messages(buffer: bytearray) -> list[tuple[str, Any]]:
    """Complete termproxy client messages at the start of ``buffer`` (consumed):
    ``("data", bytes)``, ``("resize", (cols, rows))``, ``("ping", None)``. Unparseable
    input is skipped, as termproxy does."""
    out: list[tuple[str, Any]] = []
    while buffer:
        kind = buffer[:1]
        if kind == b"2":
            del buffer[:1]
            out.append(("ping", None))
            continue
        if kind not in (b"0", b"1") or len(buffer) < 2:
            if kind in (b"0", b"1"):
                break
            del buffer[:1]
            continue
        if buffer[1:2] != b":":
            del buffer[:1]
            continue
        end = buffer.find(b":", 2)
        if end < 0:
            if len(buffer) > 22:
                del buffer[:2]  # a number field longer than 20 bytes is dropped
                continue
            break
        try:
            first = int(buffer[2:end])
        except ValueError:
            del buffer[: end + 1]
            continue
        if kind == b"0":
            if len(buffer) < end + 1 + first:
                break
            out.append(("data", bytes(buffer[end + 1 : end + 1 + first])))
            del buffer[: end + 1 + first]
            continue
        end2 = buffer.find(b":", end + 1)
        if end2 < 0:
            break
        try:
            rows = int(buffer[end + 1 : end2])
        except ValueError:
            del buffer[: end2 + 1]
            continue
        out.append(("resize", (first, rows)))
        del buffer[: end2 + 1]
    return out


async def serve_terminal(websocket: WebSocket, cluster: Cluster, worker: Worker) -> None:
    """termproxy: check the ticket line, then a real shell on a PTY."""
    try:
        first = await asyncio.wait_for(_receive_bytes(websocket), ACCEPT_TIMEOUT)
    except TimeoutError:
        await websocket.close()
        return
    line = (first or b"").decode(errors="replace")
    user, _, ticket = line.rstrip("\n").partition(":")
    if user != worker.user or not cluster.check_vnc_ticket(ticket, user, worker.vmid, worker.port):
        await websocket.close()
        return
    await websocket.send_bytes(b"OK")
    master, slave = pty.openpty()
    _set_size(master, 80, 24)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TERM": "xterm", "PS1": "pve$ "}
    proc = await asyncio.create_subprocess_exec(
        "/bin/bash",
        "--norc",
        "--noprofile",
        "-i",
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        start_new_session=True,
        close_fds=True,
    )
    os.close(slave)
    loop = asyncio.get_running_loop()
    output: asyncio.Queue[bytes] = asyncio.Queue(64)
    paused = False

    def readable() -> None:
        nonlocal paused
        try:
            data = os.read(master, 65536)
        except OSError:
            data = b""
        output.put_nowait(data)
        if not data or output.full():
            loop.remove_reader(master)  # at the end, or until the socket catches up
            paused = bool(data)

    loop.add_reader(master, readable)

    async def downstream() -> None:
        nonlocal paused
        while True:
            data = await output.get()
            if not data:
                return
            if paused:
                paused = False
                loop.add_reader(master, readable)
            await websocket.send_bytes(data)

    async def upstream() -> None:
        buffer = bytearray()
        while True:
            data = await _receive_bytes(websocket)
            if data is None:
                return
            buffer += data
            for kind, value in parse_term_messages(buffer):
                if kind == "data":
                    os.write(master, value)
                elif kind == "resize":
                    _set_size(master, *value)

    try:
        await _first_done(upstream(), downstream())
    finally:
        with contextlib.suppress(Exception):
            loop.remove_reader(master)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        os.close(master)
        with contextlib.suppress(Exception):
            await websocket.close()


def _set_size(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


async def qmp_command(path: str, command: str, arguments: dict[str, Any] | None = None) -> Any:
    """One QMP command on a QEMU monitor socket. QEMU serves one monitor client at a time
    and may drop a connection made while it is still setting up: retry a few times."""
    for attempt in range(50):
        try:
            return await _qmp_once(path, command, arguments)
        except (ConnectionError, json.JSONDecodeError):
            if attempt == 49:
                raise
            await asyncio.sleep(0.1)
    raise AssertionError("unreachable")


async def _qmp_once(path: str, command: str, arguments: dict[str, Any] | None) -> Any:
    reader, writer = await asyncio.open_unix_connection(path)
    try:
        if not (await reader.readline()).startswith(b'{"QMP"'):  # greeting
            raise ConnectionResetError("no QMP greeting")
        for cmd in ({"execute": "qmp_capabilities"}, {"execute": command}):
            if cmd["execute"] == command and arguments:
                cmd["arguments"] = arguments
            writer.write(json.dumps(cmd).encode() + b"\n")
            await writer.drain()
            while True:
                reply = json.loads(await reader.readline())
                if "return" in reply or "error" in reply:
                    break
            if "error" in reply:
                raise RuntimeError(f"QMP {cmd['execute']}: {reply['error']}")
        return reply["return"]
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


# -- the server --------------------------------------------------------------------------
class StandIn:
    """The stand-in server on loopback: ``start()``, ``stop()`` (the host goes down) and
    ``start()`` again on the same port (it comes back with the same state)."""

    def __init__(self, cluster: Cluster, cert: Path, key: Path, port: int | None = None):
        self.cluster = cluster
        self.cert, self.key = cert, key
        self.port = port or free_port()
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transports: set[Any] = set()

    def start(self) -> None:
        import uvicorn
        from uvicorn.protocols.http.h11_impl import H11Protocol

        transports = self._transports = set()

        class Tracked(H11Protocol):
            """Remembers every connection, so that stopping cuts them all."""

            def connection_made(self, transport: Any) -> None:
                transports.add(transport)
                super().connection_made(transport)

        config = uvicorn.Config(
            StandInApp(self.cluster).app,
            host="127.0.0.1",
            port=self.port,
            ssl_certfile=str(self.cert),
            ssl_keyfile=str(self.key),
            log_config=None,  # leave the process's logging (the gateway's) alone
            log_level=None,
            access_log=False,
            lifespan="off",
            http=Tracked,
            ws="websockets-sansio",
            loop="asyncio",
            ws_per_message_deflate=False,
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="pve-standin", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the Proxmox stand-in did not start")
            time.sleep(0.01)

    def _run(self) -> None:
        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            await self._server.serve()
            for transport in list(self._transports):
                transport.abort()
            for _ in range(5):  # let the aborted transports close their sockets
                await asyncio.sleep(0)

        asyncio.run(serve())

    def _drop_everything(self) -> None:
        """The host goes away: every connection is cut at once (no TLS goodbye)."""
        self._server.should_exit = True
        for transport in list(self._transports):
            transport.abort()

    def stop(self) -> None:
        if self._server is not None and self._loop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._drop_everything)
        if self._thread is not None:
            self._thread.join(10)
        self._server = self._thread = self._loop = None

    @property
    def running(self) -> bool:
        return self._thread is not None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:  # pragma: no cover - the benchmark runs it in its own process
    import argparse
    import sys
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--vms", type=int, default=500)
    parser.add_argument("--password", default="standin-password")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="pve-standin-"))
    cert, key = make_certificate(directory)
    cluster = Cluster(users={"root@pam": args.password}, login_delay=0.05, task_delay=0.05)
    for i in range(args.vms):
        cluster.add_vm(100 + i, f"vm-{100 + i}", "running", load=0.01 + (i % 7) / 100)
    server = StandIn(cluster, cert, key, args.port or None)
    server.start()
    print(f"ready {server.port} {cert}", flush=True)
    for line in sys.stdin:
        parts = line.split()
        if len(parts) == 3 and parts[0] == "set":
            cluster.set_state(int(parts[1]), parts[2])
            print("ok", flush=True)
    server.stop()


if __name__ == "__main__":
    main()
