"""A durable FIFO of MQTT messages that the broker has not acknowledged yet.

One SQLite file (WAL, ``synchronous=FULL``, mode 0600) in the controller's ``mqtt.outbox_dir``. A QoS >= 1
message is written here *before* it is handed to the MQTT client and deleted only when the broker's PUBACK
arrives, so neither a broker restart nor a controller restart loses it: the next connection sends what is
left, oldest first. Ids come from ``AUTOINCREMENT`` and are never reused, so id order is arrival order.

Not asyncio-aware on purpose: every call is one short transaction on a local file; :class:`MqttLink
<pdsno.transport.mqtt.MqttLink>` calls it from the event loop thread. Calls are serialised by a lock, so it is
also safe from other threads.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Self

from pdsno.errors import PdsnoError

__all__ = ["OUTBOX_FILE_NAME", "LocalDb", "Outbox", "OutboxEntry", "OutboxError"]

OUTBOX_FILE_NAME: Final = "mqtt-outbox.sqlite3"
_SCHEMA_VERSION: Final = 1
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS outbox (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    topic      TEXT    NOT NULL,
    payload    BLOB    NOT NULL,
    qos        INTEGER NOT NULL CHECK (qos IN (0, 1, 2)),
    retain     INTEGER NOT NULL CHECK (retain IN (0, 1)),
    created_at REAL    NOT NULL
)
"""


class OutboxError(PdsnoError):
    """The outbox file cannot be opened, read or written."""


class LocalDb:
    """A controller's own SQLite file (created 0600; WAL, ``synchronous=FULL``): every call one short
    transaction, serialised by a lock. Kept apart from the NIB, so it stays writable when the NIB is not."""

    what = "local database"

    def __init__(self, path: Path, schema: str, version: int) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # Create the file 0600 before SQLite opens it; SQLite gives the -wal and -shm files the same mode.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            os.close(fd)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)
        except OSError as exc:
            raise OutboxError(
                f"cannot open {self.what} {self.path}: {exc.strerror or exc}", path=str(self.path)
            ) from None
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            found = self._db.execute("PRAGMA user_version").fetchone()[0]
            if found > version:
                raise OutboxError(
                    f"{self.what} {self.path} has schema {found}, newer than this pdsno ({version})",
                    path=str(self.path),
                )
            self._db.executescript(schema)
            self._db.execute(f"PRAGMA user_version={version}")
        except sqlite3.Error as exc:
            self._db.close()
            raise OutboxError(f"{self.what} {self.path} is unusable: {exc}", path=str(self.path)) from None
        except BaseException:
            self._db.close()
            raise

    def _execute(self, sql: str, params: tuple[object, ...] = ()) -> sqlite3.Cursor:
        try:
            return self._db.execute(sql, params)
        except sqlite3.Error as exc:  # ProgrammingError too: the file was closed
            raise OutboxError(f"{self.what} {self.path}: {exc}", path=str(self.path)) from None

    def close(self) -> None:
        """Close the file (idempotent)."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    created_at: float
    """Unix time the message was added."""


class Outbox(LocalDb):
    """The durable FIFO in the SQLite file ``path`` (created with mode 0600 if absent)."""

    what = "MQTT outbox"

    def __init__(self, path: Path) -> None:
        super().__init__(path, _SCHEMA, _SCHEMA_VERSION)

    def add(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> int:
        """Append a message (committed to disk before this returns); return its id."""
        if qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, got {qos!r}")
        with self._lock:
            cursor = self._execute(
                "INSERT INTO outbox (topic, payload, qos, retain, created_at) VALUES (?, ?, ?, ?, ?)",
                (topic, bytes(payload), qos, int(retain), time.time()),
            )
            entry_id = cursor.lastrowid
        assert entry_id is not None
        return entry_id

    def pending(self, limit: int = 100, *, after_id: int = 0) -> list[OutboxEntry]:
        """Up to ``limit`` messages with an id above ``after_id``, oldest first."""
        with self._lock:
            rows = self._execute(
                "SELECT id, topic, payload, qos, retain, created_at FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            ).fetchall()
        return [OutboxEntry(r[0], r[1], bytes(r[2]), r[3], bool(r[4]), r[5]) for r in rows]

    def remove(self, entry_id: int) -> bool:
        """Delete a message; False if it was not there."""
        with self._lock:
            return self._execute("DELETE FROM outbox WHERE id = ?", (entry_id,)).rowcount > 0

    def __len__(self) -> int:
        with self._lock:
            count: int = self._execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        return count
