"""The durable record of messages going up the tree: what a controller still owes its parent, and what it
has already stored from its children.

One SQLite file per controller (``<mqtt.outbox_dir>/upward.sqlite3``, beside the MQTT outbox):

* ``pending``: each upward message (its type, payload and a key naming it: report id and chunk, summary
  id) until the parent acknowledges it at the application level. The MQTT outbox only knows the broker
  took a message; this one knows the receiving controller stored it, so a broker crash, a receiver down
  or a receiver that could not store loses nothing. A key is added once: a repeat is the same message.
* ``received``: the keys a receiver has stored, per sender, so a redelivered copy is acknowledged again
  without being merged twice. Kept for :data:`RECEIVED_KEEP_S`, far longer than any sender retries.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pdsno.transport.outbox import LocalDb

__all__ = ["RECEIVED_KEEP_S", "UPWARD_FILE_NAME", "PendingMessage", "UpwardStore"]

UPWARD_FILE_NAME: Final = "upward.sqlite3"
RECEIVED_KEEP_S: Final = 7 * 86_400
_SCHEMA_VERSION: Final = 1
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS pending (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    key          TEXT    NOT NULL UNIQUE,
    message_type TEXT    NOT NULL,
    payload      BLOB    NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_at      REAL    NOT NULL,
    created_at   REAL    NOT NULL
);
CREATE TABLE IF NOT EXISTS received (
    sender TEXT NOT NULL,
    key    TEXT NOT NULL,
    at     REAL NOT NULL,
    PRIMARY KEY (sender, key)
);
CREATE INDEX IF NOT EXISTS received_at ON received (at);
"""


@dataclass(frozen=True, slots=True)
class PendingMessage:
    key: str
    message_type: str
    payload: bytes
    """The payload model as JSON; sealed afresh on every attempt (a signed envelope goes stale)."""
    attempts: int
    created_at: float


class UpwardStore(LocalDb):
    """The ``pending`` and ``received`` tables in the SQLite file ``path``."""

    what = "upward outbox"

    def __init__(self, path: Path) -> None:
        super().__init__(path, _SCHEMA, _SCHEMA_VERSION)

    def add(self, key: str, message_type: str, payload: bytes) -> bool:
        """Keep a message until :meth:`done` (on disk before this returns); False if ``key`` is already kept."""
        now = time.time()
        with self._lock:
            cursor = self._execute(
                "INSERT OR IGNORE INTO pending (key, message_type, payload, next_at, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (key, message_type, bytes(payload), now, now),
            )
        return cursor.rowcount > 0

    def due(self, now: float, limit: int = 100) -> list[PendingMessage]:
        """Messages whose next attempt is due, oldest first."""
        with self._lock:
            rows = self._execute(
                "SELECT key, message_type, payload, attempts, created_at FROM pending WHERE next_at <= ? "
                "ORDER BY id LIMIT ?",
                (now, limit),
            ).fetchall()
        return [PendingMessage(r[0], r[1], bytes(r[2]), r[3], r[4]) for r in rows]

    def next_due(self) -> float | None:
        """When the earliest pending message is due; None when nothing is pending."""
        with self._lock:
            found: float | None = self._execute("SELECT MIN(next_at) FROM pending").fetchone()[0]
        return found

    def postpone(self, key: str, next_at: float) -> None:
        """Count an attempt and set the next one."""
        with self._lock:
            self._execute(
                "UPDATE pending SET attempts = attempts + 1, next_at = ? WHERE key = ?", (next_at, key)
            )

    def done(self, key: str) -> PendingMessage | None:
        """Forget an acknowledged message; the message, or None if it was not pending (a repeated ack)."""
        with self._lock:
            row = self._execute(
                "DELETE FROM pending WHERE key = ? RETURNING key, message_type, payload, attempts, created_at",
                (key,),
            ).fetchone()
        return None if row is None else PendingMessage(row[0], row[1], bytes(row[2]), row[3], row[4])

    def __len__(self) -> int:
        with self._lock:
            count: int = self._execute("SELECT COUNT(*) FROM pending").fetchone()[0]
        return count

    def was_received(self, sender: str, key: str) -> bool:
        with self._lock:
            row = self._execute(
                "SELECT 1 FROM received WHERE sender = ? AND key = ?", (sender, key)
            ).fetchone()
        return row is not None

    def mark_received(self, sender: str, key: str) -> None:
        """Remember that ``key`` from ``sender`` is stored (and forget keys older than the keep time)."""
        now = time.time()
        with self._lock:
            self._execute("DELETE FROM received WHERE at < ?", (now - RECEIVED_KEEP_S,))
            self._execute(
                "INSERT OR REPLACE INTO received (sender, key, at) VALUES (?, ?, ?)", (sender, key, now)
            )
