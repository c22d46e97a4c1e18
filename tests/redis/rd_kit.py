"""A real redis-server per test (Debian's, started by absolute path on a free loopback port in a
temp dir, stopped by PID) and a small in-test hypervisor that several gateways can share."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import virtwire_redis
from virtwire import hookimpl
from virtwire.backends import VmStatus
from virtwire.errors import VmNotFound
from virtwire.testing import RunningServer, free_port, make_settings, run_server

REDIS_SERVER = "/usr/bin/redis-server"


class RedisServer:
    """One redis-server process; ``stop``/``start`` keep the port (for fault tests)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        conf = self.workdir / "redis.conf"
        conf.write_text(
            f'port {self.port}\nbind 127.0.0.1\nsave ""\nappendonly no\n'
            f"dir {self.workdir}\nlogfile {self.workdir / 'redis.log'}\ndaemonize no\n"
        )
        self.proc = subprocess.Popen(
            [REDIS_SERVER, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = (self.workdir / "redis.log").read_text()
                raise RuntimeError(f"redis-server exited: {log}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock,
            ):
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return
            time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        self.proc = None


class Hypervisor:
    """VMs in memory, reachable from several gateways (like one libvirt host that several
    gateways connect to): a control action changes the state and every attached backend
    reports it, as libvirt's events reach every connection."""

    STATES: ClassVar[dict[str, str]] = {
        "start": "running",
        "stop": "stopped",
        "restart": "running",
        "pause": "paused",
        "resume": "running",
        "reset": "running",
    }
    EVENTS: ClassVar[dict[str, str]] = {
        "start": "vm-started",
        "stop": "vm-stopped",
        "restart": "vm-rebooted",
        "pause": "vm-paused",
        "resume": "vm-resumed",
        "reset": "vm-rebooted",
    }

    def __init__(self, *vm_ids: str) -> None:
        self.vms = dict.fromkeys(vm_ids, "running")
        self.backends: list[Backend] = []
        self.controls: list[tuple[str, str, str | None]] = []

    def status(self, vm_id: str) -> VmStatus:
        return VmStatus(vmId=vm_id, status=self.vms[vm_id])

    def set(self, vm_id: str, state: str, event: str | None, user_id: str | None) -> None:
        self.vms[vm_id] = state
        for backend in self.backends:
            if backend.events is not None:
                backend.events.status(self.status(vm_id))
                if event is not None:
                    backend.events.event(event, vm_id, user_id=user_id)


class Backend:
    name = "fake"

    def __init__(self, hv: Hypervisor) -> None:
        self.hv = hv
        self.events: Any = None

    async def start(self, events: Any) -> None:
        self.events = events
        self.hv.backends.append(self)

    async def close(self) -> None:
        self.events = None
        if self in self.hv.backends:
            self.hv.backends.remove(self)

    async def list_vms(self) -> list[VmStatus]:
        return [self.hv.status(v) for v in self.hv.vms]

    async def get_vm(self, vm_id: str) -> VmStatus:
        if vm_id not in self.hv.vms:
            raise VmNotFound(vm_id)
        return self.hv.status(vm_id)

    async def control(
        self, vm_id: str, action: str, *, force: bool = False, user_id: str | None = None
    ) -> None:
        if vm_id not in self.hv.vms:
            raise VmNotFound(vm_id)
        self.hv.controls.append((vm_id, action, user_id))
        await asyncio.sleep(0)
        self.hv.set(vm_id, Hypervisor.STATES[action], Hypervisor.EVENTS[action], user_id)

    def set_watching(self, watching: bool) -> None:
        pass


class BackendPlugin:
    def __init__(self, hv: Hypervisor) -> None:
        self.hv = hv

    @hookimpl
    def register_backends(self, register: Any, gateway: Any) -> None:
        register(Backend(self.hv))


@contextlib.asynccontextmanager
async def gateway(
    redis: RedisServer | None,
    hv: Hypervisor | None = None,
    *,
    prefix: str = "t",
    **redis_options: Any,
) -> AsyncIterator[RunningServer]:
    """A real gateway with the Redis plugin (unless ``redis`` is None) and, if ``hv`` is given,
    a backend attached to that hypervisor."""
    plugins: list[Any] = []
    config: dict[str, Any] = {"server": {"access_log": False}}
    if redis is not None:
        plugins.append(("redis", virtwire_redis))
        options = {"url": redis.url, "prefix": prefix, "reconnect_interval": 0.1}
        config["plugins"] = {"redis": {**options, **redis_options}}
    if hv is not None:
        plugins.append(("fake", BackendPlugin(hv)))
    async with run_server(make_settings(config), plugins=plugins) as server:
        yield server


def fresh_prefix() -> str:
    return f"t{secrets.token_hex(3)}"


async def until(predicate: Any, timeout: float = 10.0, interval: float = 0.02) -> None:
    """Wait (bounded) until ``predicate()`` is true."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(interval)


class DirBackend:
    """A hypervisor several processes share: one JSON file per VM in a directory. Control
    actions rewrite the file (and are logged to ``controls.log`` with the gateway's name); a
    poller reports changes like hypervisor events."""

    name = "dir"
    REACHED: ClassVar[dict[str, str]] = {
        "running": "vm-started",
        "paused": "vm-paused",
        "stopped": "vm-stopped",
    }

    def __init__(self, directory: Path, gateway_name: str, poll: float = 0.05) -> None:
        self.dir = directory
        self.gateway_name = gateway_name
        self.poll = poll
        self.events: Any = None
        self.known: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None

    def _read(self) -> dict[str, str]:
        return {p.stem: p.read_text().strip() for p in self.dir.glob("*.vm")}

    async def start(self, events: Any) -> None:
        self.events = events
        self.known = self._read()
        self._task = asyncio.create_task(self._poller())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def list_vms(self) -> list[VmStatus]:
        return [VmStatus(vmId=v, status=s) for v, s in self._read().items()]

    async def get_vm(self, vm_id: str) -> VmStatus:
        state = self._read().get(vm_id)
        if state is None:
            raise VmNotFound(vm_id)
        return VmStatus(vmId=vm_id, status=state)

    async def control(
        self, vm_id: str, action: str, *, force: bool = False, user_id: str | None = None
    ) -> None:
        if vm_id not in self._read():
            raise VmNotFound(vm_id)
        with (self.dir / "controls.log").open("a") as log:
            log.write(f"{self.gateway_name} {vm_id} {action} {user_id}\n")
        tmp = self.dir / f".{vm_id}.tmp"
        tmp.write_text(Hypervisor.STATES[action])
        tmp.replace(self.dir / f"{vm_id}.vm")

    def set_watching(self, watching: bool) -> None:
        pass

    async def _poller(self) -> None:
        while True:
            await asyncio.sleep(self.poll)
            now = self._read()
            for vm_id, state in now.items():
                before = self.known.get(vm_id)
                if before != state:
                    self.events.status(VmStatus(vmId=vm_id, status=state))
                    if before == "paused" and state == "running":
                        self.events.event("vm-resumed", vm_id)
                    elif state in self.REACHED:
                        self.events.event(self.REACHED[state], vm_id)
            self.known = now


class DirPlugin:
    def __init__(self, directory: Path, gateway_name: str) -> None:
        self.directory = directory
        self.gateway_name = gateway_name

    @hookimpl
    def register_backends(self, register: Any, gateway: Any) -> None:
        register(DirBackend(self.directory, self.gateway_name))


def controls(directory: Path) -> list[str]:
    log = directory / "controls.log"
    return log.read_text().splitlines() if log.exists() else []
