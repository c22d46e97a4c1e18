"""One timer for every connection's token expiry (virtwire/expiry.py)."""

from __future__ import annotations

import asyncio

from virtwire.expiry import ExpirySweep


async def test_owners_expire_in_order_once_and_only_when_still_registered() -> None:
    sweep = ExpirySweep()
    fired: list[str] = []
    done = asyncio.Event()
    keys = {name: sweep.new_key() for name in "abcd"}
    sweep.set(keys["a"], 0.03, lambda: fired.append("a"))
    sweep.set(keys["b"], 0.01, lambda: fired.append("b"))
    sweep.set(keys["c"], 0.02, lambda: fired.append("c"))
    sweep.set(keys["c"], 0.04, lambda: fired.append("c2"))  # refreshed: the first is stale
    sweep.set(keys["d"], 0.015, lambda: fired.append("d"))
    sweep.discard(keys["d"])  # closed before it expired
    sweep.set(sweep.new_key(), 0.05, done.set)
    await asyncio.wait_for(done.wait(), 5)
    assert fired == ["b", "a", "c2"]
    assert len(sweep) == 0


async def test_stale_entries_do_not_accumulate() -> None:
    sweep = ExpirySweep()
    key = sweep.new_key()
    for _ in range(10000):  # a connection refreshing its token again and again
        sweep.set(key, 3600, lambda: None)
    assert len(sweep) == 1
    assert len(sweep._heap) <= 2 * len(sweep) + 65
    sweep.discard(key)
