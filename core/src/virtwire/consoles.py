"""Console transports: VNC byte streams and terminal sessions for a VM."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class ByteStream(Protocol):
    """A bidirectional byte stream (a VNC server's RFB stream)."""

    async def read(self) -> bytes:
        """The next chunk; ``b""`` at end of stream."""

    async def write(self, data: bytes) -> None: ...

    async def close(self) -> None: ...


@runtime_checkable
class TerminalSession(Protocol):
    """An interactive terminal (SSH shell, serial console)."""

    async def read(self) -> str:
        """The next decoded UTF-8 output; ``""`` at end."""

    async def write(self, data: str) -> None: ...

    async def resize(self, cols: int, rows: int) -> None: ...

    async def close(self) -> None: ...

    #: Exit status once ended, if the far end reported one.
    exit_status: int | None


@runtime_checkable
class ConsoleTransport(Protocol):
    """Opens consoles of the ``kinds`` it provides (``"vnc"``, ``"ssh"``, ``"serial"``...)."""

    name: str
    kinds: tuple[str, ...]

    def supports(self, vm_id: str, kind: str) -> bool:
        """True if this transport can open a ``kind`` console on ``vm_id``."""

    async def open_vnc(self, vm_id: str) -> ByteStream:
        """Connect to the VM's VNC server; raise ``VirtwireError(CONSOLE_UNAVAILABLE)``."""

    async def open_terminal(
        self,
        vm_id: str,
        kind: str,
        *,
        credentials: dict[str, Any],
        cols: int,
        rows: int,
    ) -> TerminalSession:
        """Open a terminal; raise ``VirtwireError(TERMINAL_AUTH_FAILED)`` on bad credentials."""
