"""Bounded retry for optimistic-locking conflicts (reference-design §4: re-read, retry, max 3)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from pdsno.errors import NIBBusy
from pdsno.nib.store import NIBResult

T = TypeVar("T")


async def retry_on_conflict(
    attempt: Callable[[], Awaitable[NIBResult[T]]],
    *,
    max_retries: int = 3,
    base_delay_s: float = 0.005,
) -> NIBResult[T]:
    """Run ``attempt`` (which must re-read what it writes) until it stops conflicting.

    Gives up after ``max_retries`` retries and returns the last conflict, so a caller always learns
    that its write did not land. Backoff is jittered so that competing writers spread out.
    """
    if max_retries < 0:
        raise ValueError("max_retries must be >= 0")
    result: NIBResult[T] | None = None
    for retry in range(max_retries + 1):
        if retry:
            await asyncio.sleep(base_delay_s * (2 ** (retry - 1)) * random.uniform(0.5, 1.5))  # noqa: S311
        try:
            result = await attempt()
        except NIBBusy as busy:
            result = NIBResult.stale(busy.message)
        if not result.conflict:
            return result
    assert result is not None
    return result
