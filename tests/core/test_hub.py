"""Fan-out, coalescing and bounded outboxes (virtwire/hub.py)."""

from __future__ import annotations

import asyncio

from virtwire.hub import Channel, Hub, Outbox


def test_publish_encodes_once_and_shares_the_text() -> None:
    channel = Channel("c")
    boxes = [Outbox(1 << 20, 100) for _ in range(3)]
    for box in boxes:
        channel.add(box)
    assert channel.publish("t", {"n": 1}) == 3
    texts = [box.pop() for box in boxes]
    assert texts[0] is texts[1] is texts[2]  # one encoding, same object for everyone


def test_filter_by_key() -> None:
    channel = Channel("c")
    a, b = Outbox(1 << 20, 100), Outbox(1 << 20, 100)
    channel.add(a, lambda key: key == "vm1")
    channel.add(b)
    assert channel.publish("t", {}, key="vm2") == 1
    assert a.pop() is None and b.pop() is not None


def test_latest_value_coalesces_per_key_in_place() -> None:
    channel = Channel("s", latest=True)
    box = Outbox(1 << 20, 100)
    channel.add(box)
    channel.publish("s", {"v": 1}, key="a")
    channel.publish("s", {"v": 1}, key="b")
    channel.publish("s", {"v": 2}, key="a")
    assert len(box) == 2
    first, second = box.pop(), box.pop()
    assert '"v":2' in first and '"a"' not in second  # a's newest value kept a's position
    channel.publish("s", {"v": 3}, key="a")
    assert '"v":3' in box.pop()


def test_overflow_closes_only_the_slow_one() -> None:
    overflowed: list[str] = []
    channel = Channel("c")
    slow = Outbox(10_000, 5, lambda: overflowed.append("slow"))
    fast = Outbox(10_000, 5, lambda: overflowed.append("fast"))
    channel.add(slow)
    channel.add(fast)
    for i in range(20):
        channel.publish("t", {"i": i})
        fast.pop()
    assert overflowed == ["slow"]
    assert slow.overflowed and len(slow) == 0
    assert not fast.overflowed


def test_byte_bound() -> None:
    box = Outbox(1000, 1000)
    assert box.put("x" * 600)
    assert not box.put("y" * 600)
    assert box.overflowed and box.queued_bytes == 0


async def test_get_waits_and_close_drains() -> None:
    box = Outbox(1 << 20, 100)
    waiter = asyncio.create_task(box.get())
    await asyncio.sleep(0)
    box.put("hello")
    assert await waiter == "hello"
    box.put("last")
    box.close()
    assert await box.get() == "last"
    assert await box.get() is None


def test_on_active_first_and_last() -> None:
    events: list[bool] = []
    channel = Channel("c")
    channel.on_active(events.append)
    a = channel.add(Outbox(100, 10))
    b = channel.add(Outbox(100, 10))
    channel.remove(a)
    channel.remove(b)
    channel.remove(b)
    assert events == [True, False]


def test_hub_broadcast_filters_sessions() -> None:
    class S:
        def __init__(self, ok: bool) -> None:
            self.ok = ok
            self.outbox = Outbox(1 << 20, 100)

    hub = Hub()
    yes, no = S(True), S(False)
    hub.sessions.update({yes, no})
    assert hub.broadcast("system-event", {"x": 1}, lambda s: s.ok) == 1
    assert yes.outbox.pop() is not None and no.outbox.pop() is None
    assert hub.channel("a") is hub.channel("a")


def test_discard_only_empty_channels() -> None:
    hub = Hub()
    channel = hub.channel("system-monitor:700")
    sub = channel.add(Outbox(100, 10))
    assert not hub.discard(channel)
    channel.remove(sub)
    assert hub.discard(channel)
    assert hub.channel("system-monitor:700") is not channel


def test_one_oversize_frame_fits_an_empty_queue() -> None:
    box = Outbox(100, 10)
    assert box.put("x" * 500)  # larger than the byte bound, but nothing else is queued
    assert not box.put("y")
    assert box.overflowed


async def test_an_outbox_in_a_channel_twice_gets_each_frame_once() -> None:
    """``vm-status`` for one VM and ``vm-status-all`` on one connection: one push per change,
    also on the direct write path (where queued frames cannot coalesce)."""
    written: list[str] = []
    box = Outbox(1 << 20, 100)
    box.direct = lambda text: written.append(text) is None
    box._waiter = asyncio.get_running_loop().create_future()  # the writer is idle
    channel = Channel("vm-status", latest=True)
    one = channel.add(box, lambda key: key == "vm1")
    every = channel.add(box)
    assert channel.publish("vm-status", {"vmId": "vm1"}, key="vm1") == 1
    assert channel.publish("vm-status", {"vmId": "vm2"}, key="vm2") == 1
    assert len(written) == 2
    channel.remove(every)  # back to the one-VM filter
    assert channel.publish("vm-status", {"vmId": "vm2"}, key="vm2") == 0
    assert channel.publish("vm-status", {"vmId": "vm1"}, key="vm1") == 1
    channel.remove(one)
    assert len(channel) == 0
