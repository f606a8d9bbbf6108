"""A running controller's watch over its own audit chain, reported in its heartbeats.

The first check walks the whole chain; each later one walks only the events appended since, against
the same running verifier, and compares the walk with the head the store recorded. An edit of an event
already checked is found by ``pdsno audit verify`` (or the dashboard's audit page), which walk it all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from pdsno.audit.chain import ChainVerifier
from pdsno.audit.verify import PAGE, signer_keys
from pdsno.canonical import utcnow
from pdsno.messaging.messages import AuditStatus
from pdsno.nib.store import NIBStore


class AuditWatch:
    def __init__(self, store: NIBStore, own_keys: Callable[[], Mapping[str, Ed25519PublicKey]]) -> None:
        self._store = store
        self._own_keys = own_keys
        self._keys: dict[str, Ed25519PublicKey] = {}
        self._verifier = ChainVerifier(self._keys)
        self.status: AuditStatus | None = None

    async def check(self) -> AuditStatus:
        # Controllers admitted since the last check sign events too; the verifier reads this same dict.
        self._keys.update(await signer_keys(self._store, self._own_keys()))
        head = await self._store.audit_head()
        report = self._verifier.report
        while report.head_seq < head.seq:
            page = [
                e
                for e in await self._store.read_events(after_seq=report.head_seq, limit=PAGE)
                if e.seq <= head.seq
            ]
            if not page:
                break
            # Hashes and signatures of a page take a while: off the event loop, which serves meanwhile.
            await asyncio.to_thread(self._verifier.feed, page)
        problem = report.problems[0].describe() if report.problems else None
        if problem is None and report.head_seq < head.seq:
            problem = f"the log ends at #{report.head_seq} but its head records #{head.seq}"
        elif problem is None and report.head_hash != head.hash:
            problem = f"event #{head.seq} differs from the head the log recorded"
        self.status = AuditStatus(ok=problem is None, checked=report.checked, head_seq=head.seq,
                                  verified_at=utcnow(), problem=problem)  # fmt: skip
        return self.status
