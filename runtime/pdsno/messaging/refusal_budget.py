"""How many refusals one source may write into the audit log per minute.

Every refusal is answered, but a source sending garbage as fast as it can would otherwise grow the
signed, hash-chained log by thousands of events a second. Past the budget, refusals from that source
are counted instead, and one event records the count when its window rolls over.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

DEFAULT_PER_MINUTE = 60
MAX_SOURCES = 10_000


@dataclass(slots=True)
class _Window:
    started: float
    recorded: int = 0
    suppressed: int = 0


class RefusalBudget:
    def __init__(self, per_minute: int = DEFAULT_PER_MINUTE, *, window_s: float = 60.0) -> None:
        self._per_window = per_minute
        self._window_s = window_s
        self._windows: dict[str, _Window] = {}

    def admit(self, source: str | None) -> tuple[bool, int]:
        """Whether this refusal may be recorded, and how many from this source went unrecorded in
        the window that just ended (to be recorded once, now)."""
        key = source or "?"
        now = time.monotonic()
        window = self._windows.get(key)
        carried = 0
        if window is None or now - window.started >= self._window_s:
            carried = window.suppressed if window is not None else 0
            if len(self._windows) >= MAX_SOURCES:  # forget the oldest sources, never grow unbounded
                for stale in sorted(self._windows, key=lambda k: self._windows[k].started)[
                    : MAX_SOURCES // 10
                ]:
                    del self._windows[stale]
            window = self._windows[key] = _Window(now)
        if window.recorded < self._per_window:
            window.recorded += 1
            return True, carried
        window.suppressed += 1
        return False, carried
