"""Group commit of the replay cache on a real NIB (both backends): many concurrent first-sightings,
each answered correctly, a duplicate among them refused exactly once."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from pdsno.canonical import utcnow
from pdsno.messaging.replay import ReplayGuard
from pdsno.nib.sql import SqlNIBStore


async def test_concurrent_sightings_share_transactions_and_stay_exact(nib: SqlNIBStore) -> None:
    guard = ReplayGuard(nib, max_batch=16)
    expires = utcnow() + timedelta(seconds=600)
    ids = [f"m-{n}" for n in range(100)] + ["m-7", "m-42", "m-7"]
    results = await asyncio.gather(*(guard.first_sighting(i, "lc-1", expires) for i in ids))
    firsts = dict.fromkeys(ids, 0)
    for message_id, first in zip(ids, results, strict=True):
        firsts[message_id] += first
    assert all(count == 1 for count in firsts.values()), "each id accepted exactly once"
    assert sum(results) == 100
    assert (await nib.stats())["tables"]["replay_cache"] == 100
    assert await guard.first_sighting("m-0", "lc-1", expires) is False
