"""A real libvirtd with the QEMU driver (TCG), started for the test session and stopped by
PID, and the tiny test guest (guest/guest.S) assembled with binutils."""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).parent
LIBVIRTD = "/usr/sbin/libvirtd"
VIRTLOGD = "/usr/sbin/virtlogd"
QEMU_CONF = Path("/etc/libvirt/qemu.conf")
QEMU_SETTINGS = """# written by the virtwire libvirt tests: run QEMU as root without confinement
user = "root"
group = "root"
dynamic_ownership = 0
security_driver = "none"
"""
#: Prefix of every domain the tests define (removed at the end of the session).
PREFIX = "vwtest-"


def _need(path: str) -> None:
    if not os.path.exists(path):
        raise RuntimeError(
            f"{path} is missing: run `make install` (plugins/libvirt/apt-packages.txt lists "
            "the Debian packages)"
        )


def _prepare_host() -> None:
    """What Debian's libvirt-daemon package leaves to the admin without systemd."""
    try:
        grp.getgrnam("libvirt-qemu")
    except KeyError:
        subprocess.run(["groupadd", "-r", "libvirt-qemu"], check=True)
    try:
        pwd.getpwnam("libvirt-qemu")
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "-r",
                "-g",
                "libvirt-qemu",
                "-d",
                "/var/lib/libvirt",
                "-s",
                "/usr/sbin/nologin",
                "libvirt-qemu",
            ],
            check=True,
        )
    for d in (
        "/etc/libvirt",
        "/var/log/libvirt",
        "/run/libvirt",
        "/var/lib/libvirt",
        "/var/cache/libvirt",
    ):
        os.makedirs(d, exist_ok=True)
    if not QEMU_CONF.exists() or QEMU_CONF.read_text() != QEMU_SETTINGS:
        if QEMU_CONF.exists() and 'user = "root"' not in QEMU_CONF.read_text():
            shutil.copy(QEMU_CONF, QEMU_CONF.with_suffix(".conf.orig"))
        QEMU_CONF.write_text(QEMU_SETTINGS)


def _listening(path: str) -> bool:
    with socket.socket(socket.AF_UNIX) as sock:
        try:
            sock.connect(path)
        except OSError:
            return False
    return True


def _read_pid(path: Path, timeout: float = 15.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            return int(path.read_text().strip())
        time.sleep(0.05)
    raise RuntimeError(f"no PID file {path} within {timeout} s")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _kill(pid: int, timeout: float = 15.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@dataclass
class Daemon:
    """libvirtd listening on its own socket (``uri``), with our own config and PID file."""

    workdir: Path
    pid: int = 0
    virtlogd_pid: int = 0
    domains: list[str] = field(default_factory=list)

    @property
    def socket(self) -> Path:
        return self.workdir / "sock" / "libvirt-sock"

    @property
    def uri(self) -> str:
        return f"qemu:///system?socket={self.socket}"

    def start(self) -> None:
        pidfile = self.workdir / "libvirtd.pid"
        pidfile.unlink(missing_ok=True)
        with open(self.workdir / "libvirtd.out", "ab") as out:
            subprocess.run(
                [
                    "taskset",
                    "-c",
                    "0",
                    LIBVIRTD,
                    "-d",
                    "-f",
                    str(self.workdir / "libvirtd.conf"),
                    "-p",
                    str(pidfile),
                ],
                check=True,
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
            )
        self.pid = _read_pid(pidfile)
        self.wait_ready()

    def wait_ready(self, timeout: float = 60.0) -> None:
        import libvirt

        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if not _alive(self.pid):
                raise RuntimeError(f"libvirtd exited; see {self.workdir / 'libvirtd.out'}")
            try:
                conn = libvirt.open(self.uri)
                conn.getCapabilities()  # the first call waits for the QEMU probe
                conn.close()
                return
            except libvirt.libvirtError as exc:
                last = exc
                time.sleep(0.1)
        raise RuntimeError(f"libvirtd not ready within {timeout} s: {last}")

    def kill(self) -> None:
        """Stop libvirtd (domains keep running, as with a daemon restart)."""
        _kill(self.pid)

    def stop(self) -> None:
        import libvirt

        if _alive(self.pid):
            with contextlib.suppress(libvirt.libvirtError):
                conn = libvirt.open(self.uri)
                for dom in conn.listAllDomains(0):
                    if dom.name().startswith(PREFIX):
                        with contextlib.suppress(libvirt.libvirtError):
                            if dom.isActive():
                                dom.destroy()
                        with contextlib.suppress(libvirt.libvirtError):
                            dom.undefine()
                conn.close()
            _kill(self.pid)
        if self.virtlogd_pid:
            _kill(self.virtlogd_pid)


def start_daemon(workdir: Path) -> Daemon:
    _need(LIBVIRTD)
    _need(VIRTLOGD)
    _need("/usr/bin/qemu-system-x86_64")
    _prepare_host()
    (workdir / "sock").mkdir()
    (workdir / "libvirtd.conf").write_text(
        f'unix_sock_dir = "{workdir / "sock"}"\n'
        'unix_sock_group = "root"\nunix_sock_rw_perms = "0700"\n'
        'auth_unix_rw = "none"\nauth_unix_ro = "none"\n'
    )
    daemon = Daemon(workdir)
    logd_pid = workdir / "virtlogd.pid"
    if not _listening("/run/libvirt/virtlogd-sock"):
        with open(workdir / "virtlogd.out", "ab") as out:
            subprocess.run(
                [VIRTLOGD, "-d", "-p", str(logd_pid)],
                check=True,
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
            )
        daemon.virtlogd_pid = _read_pid(logd_pid)
    try:
        daemon.start()
    except BaseException:
        daemon.stop()
        raise
    return daemon


BANNER = b"virtwire test guest"


def banners(image: Path) -> int:
    """How many times the guest booted to its idle loop (banners on its serial log)."""
    try:
        return (image.parent / f"{image.name}.serial").read_bytes().count(BANNER)
    except FileNotFoundError:
        return 0


def build_guest(outdir: Path, *, busy: bool) -> Path:
    """Assemble guest/guest.S into a 512-byte boot sector (``busy``: spins instead of
    idling in ``hlt``)."""
    _need("/usr/bin/as")
    name = "busy" if busy else "idle"
    obj, img = outdir / f"{name}.o", outdir / f"{name}.img"
    cmd = ["as", "--32", "-o", str(obj), str(HERE / "guest" / "guest.S")]
    if busy:
        cmd[1:1] = ["--defsym", "BUSY=1"]
    subprocess.run(cmd, check=True)
    subprocess.run(
        [
            "ld",
            "-m",
            "elf_i386",
            "-Ttext",
            "0x7c00",
            "--oformat",
            "binary",
            "-o",
            str(img),
            str(obj),
        ],
        check=True,
    )
    assert img.stat().st_size == 512
    return img


def domain_xml(
    name: str,
    image: Path,
    *,
    tap: str | None = None,
    serial: str = "file",
    vnc: bool = False,
    passwd: str | None = None,
) -> str:
    """A 64 MiB TCG domain booting ``image`` from IDE, with ACPI; its serial port is
    appended to ``<image>.serial`` (the guest prints a banner there when it is ready), or with
    ``serial="pty"`` is a console libvirt's ``openConsole`` reaches. ``vnc``: a VNC display on
    127.0.0.1 (port chosen by libvirt), with ``passwd`` if given."""
    nic = (
        f"<interface type='ethernet'><target dev='{tap}'/><model type='ne2k_pci'/></interface>"
        if tap
        else ""
    )
    graphics = ""
    if vnc:
        secret = f" passwd='{passwd}'" if passwd else ""
        graphics = f"<graphics type='vnc' port='-1' listen='127.0.0.1'{secret}/>"
    port = (
        "<serial type='pty'/><console type='pty'/>"
        if serial == "pty"
        else f"<serial type='file'><source path='{image}.serial' append='on'/></serial>"
    )
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='{image}'/>
      <target dev='hda' bus='ide'/>
    </disk>
    {nic}
    {graphics}
    {port}
  </devices>
</domain>"""
