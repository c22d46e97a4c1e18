"""libvirt's event loop for the whole process, independent of any asyncio loop.

libvirt needs one event implementation per process, registered before the first
connection that uses events or keepalive. ``libvirtaio`` would bind it to the asyncio loop
current at that moment, which breaks every later loop (a new ``asyncio.run``, pytest's
per-test loops). Here libvirt's own default implementation runs in a daemon thread and
callbacks hand their results to whichever loop asked, with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import threading

_lock = threading.Lock()
_started = False


def _run() -> None:
    import libvirt

    while True:
        try:
            libvirt.virEventRunDefaultImpl()
        except Exception:  # an error in one iteration must not stop event delivery
            continue


def ensure_event_loop() -> None:
    """Register libvirt's default event implementation and start its thread (once)."""
    global _started
    with _lock:
        if _started:
            return
        import libvirt

        # libvirt prints every error to stderr unless a handler takes them; errors reach
        # us as exceptions anyway.
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        libvirt.virEventRegisterDefaultImpl()
        threading.Thread(target=_run, name="libvirt-events", daemon=True).start()
        _started = True
