"""The baseline server for bench_libvirt.py's ``vm-control`` round trip: the least a Python
gateway can do for the same request, written directly on the `websockets` library (on uvloop,
as virtwire runs) and libvirt-python, without virtwire.

- ``ping`` is answered at once;
- ``vm-control`` runs ``lookupByName`` and the action in a worker thread (no call on a
  hypervisor connection may block the event loop) and answers when it returns;
- libvirt's default event loop runs in its own thread with a lifecycle callback registered
  that hands each event to the asyncio loop, as any gateway that reports events needs.

Run: ``python _libvirt_floor.py PORT``."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import json
import sys
import threading
from typing import Any

import libvirt


def main() -> None:
    import uvloop
    from websockets.asyncio.server import ServerConnection, serve

    libvirt.registerErrorHandler(lambda _c, _e: None, None)
    libvirt.virEventRegisterDefaultImpl()

    def events() -> None:
        while True:
            libvirt.virEventRunDefaultImpl()

    threading.Thread(target=events, daemon=True).start()
    conn = libvirt.open("test:///default")
    pool = concurrent.futures.ThreadPoolExecutor(4)
    seen: collections.deque[tuple[str, int]] = collections.deque(maxlen=1024)

    def act(vm_id: str, action: str) -> None:
        dom = conn.lookupByName(vm_id)
        dom.suspend() if action == "pause" else dom.resume()

    async def handler(ws: ServerConnection) -> None:
        loop = asyncio.get_running_loop()
        async for text in ws:
            msg = json.loads(text)
            if msg["type"] == "vm-control":
                data = msg["data"]
                await loop.run_in_executor(pool, act, data["vmId"], data["action"])
                result: dict[str, Any] = {"vmId": data["vmId"], "status": "success"}
            else:
                result = {}
            reply = {"type": f"{msg['type']}-response", "data": result, "id": msg["id"]}
            await ws.send(json.dumps(reply))

    async def run() -> None:
        loop = asyncio.get_running_loop()

        def lifecycle(_c: Any, dom: Any, event: int, _detail: int, _o: Any) -> None:
            loop.call_soon_threadsafe(seen.append, (dom.name(), event))

        conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, lifecycle, None)
        async with serve(handler, "127.0.0.1", int(sys.argv[1]), compression=None) as server:
            await server.serve_forever()

    uvloop.run(run())


if __name__ == "__main__":
    main()
