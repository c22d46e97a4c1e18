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
    """An interactive terminal (SSH shell, serial console), as a transport opened it.

    Bytes both ways: the gateway decodes output as UTF-8 incrementally (a character split
    across reads stays whole; invalid bytes become U+FFFD), coalesces it into frames, keeps
    the scrollback and fans it out to every viewer. ``read`` should return everything
    available at once (up to ``limit`` bytes) rather than small pieces: that is what keeps
    frames few and echo fast.
    """

    async def read(self, limit: int) -> bytes:
        """The next output, at most ``limit`` bytes, waiting until there is some; ``b""``
        once the terminal ended (then ``exit_status`` and ``close_reason`` are final)."""

    async def write(self, data: bytes) -> None:
        """Send keystrokes (in order; may wait for the far end to take them)."""

    async def resize(self, cols: int, rows: int) -> None:
        """Change the terminal size (a serial console may ignore it)."""

    async def close(self) -> None:
        """End the terminal and release what it holds; idempotent."""

    #: Exit status once ended, if the far end reported one (an SSH command's exit code).
    exit_status: int | None
    #: Why it ended, once it did (``"exited"``, ``"vm-stopped"``, ...); ``""`` while open.
    close_reason: str


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
        """Open a terminal of ``cols`` x ``rows``. Raise ``VirtwireError`` with
        ``TERMINAL_AUTH_FAILED`` on bad credentials, ``CONSOLE_UNAVAILABLE`` when the far end
        cannot be reached (details naming the address), or a transport's own code."""


def find_transport(
    transports: list[ConsoleTransport], vm_id: str, kind: str
) -> ConsoleTransport | None:
    """The first transport that lists ``kind`` and supports it on ``vm_id``."""
    for transport in transports:
        if kind in transport.kinds and transport.supports(vm_id, kind):
            return transport
    return None
