"""Group commit for the replay cache.

Every accepted message is remembered in the NIB before it is acted on, so a replay is refused even
after a restart. One transaction per message costs a thread-pool round trip each (~0.5 ms, most of a
signed request's price); here the messages that arrive while a write is under way wait for the next
one and share it. Nobody waits longer than one transaction.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from pdsno.nib.store import NIBStore

MAX_BATCH = 512


class ReplayGuard:
    def __init__(self, store: NIBStore, *, max_batch: int = MAX_BATCH) -> None:
        self._store = store
        self._max_batch = max_batch
        self._pending: list[tuple[tuple[str, str, datetime], asyncio.Future[bool]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def first_sighting(self, message_id: str, sender_id: str, expires_at: datetime) -> bool:
        """True if this message was never seen before (and is now remembered)."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append(((message_id, sender_id, expires_at), future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())
        return await future

    async def _write(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
            try:
                seen = await self._store.remember_messages([entry for entry, _ in batch])
            except BaseException as exc:  # every waiter learns of the failure; none is left hanging
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                continue
            for (_, future), first in zip(batch, seen, strict=True):
                if not future.done():
                    future.set_result(first)
