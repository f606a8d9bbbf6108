"""SQLite backend: the embedded default. One file in WAL mode, one connection per worker thread."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from pdsno.canonical import canonical_json, format_ts, parse_ts
from pdsno.errors import NIBBusy, NIBError, ReasonCode
from pdsno.nib.migrations import MigrationSet
from pdsno.nib.sql import JsonParam, Row, ThreadedDatabase

R = TypeVar("R")

# Column types declared in the schema select these converters (sqlite3.PARSE_DECLTYPES).
sqlite3.register_converter("JSON", lambda raw: json.loads(raw))
sqlite3.register_converter("TIMESTAMPTZ", lambda raw: parse_ts(raw.decode()))

MIGRATIONS = MigrationSet(
    backend="sqlite",
    table_exists_sql="SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'",
)


def _encode(value: Any) -> Any:
    if isinstance(value, JsonParam):
        return canonical_json(value.value)
    if isinstance(value, datetime):
        return format_ts(value)
    return value


def _params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: _encode(v) for k, v in (params or {}).items()}


def _dict_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> Row:
    return {col[0]: value for col, value in zip(cursor.description, row, strict=True)}


class _SqliteTx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> int:
        return self._conn.execute(sql, _params(params)).rowcount

    def one(self, sql: str, params: Mapping[str, Any] | None = None) -> Row | None:
        row: Row | None = self._conn.execute(sql, _params(params)).fetchone()
        return row

    def all(self, sql: str, params: Mapping[str, Any] | None = None) -> list[Row]:
        rows: list[Row] = self._conn.execute(sql, _params(params)).fetchall()
        return rows

    def many(self, sql: str, rows: Sequence[Mapping[str, Any]]) -> None:
        self._conn.executemany(sql, [_params(r) for r in rows])

    def script(self, sql: str) -> None:
        # executescript() would commit the open transaction; feed complete statements one by one.
        statement = ""
        for line in sql.splitlines(keepends=True):
            statement += line
            if sqlite3.complete_statement(statement):
                self._conn.execute(statement)
                statement = ""
        if statement.strip() and not statement.strip().startswith("--"):
            raise NIBError(f"incomplete SQL statement in migration: {statement.strip()[:80]}")


class SqliteDatabase(ThreadedDatabase):
    backend = "sqlite"
    row_lock = ""
    # WAL with synchronous=NORMAL, our own choice: a crash of the process loses no commit; a power cut
    # may lose the last ones, never the file.
    durability_gaps: Mapping[str, str] = {}
    migrations = MIGRATIONS

    def __init__(
        self, path: Path, *, workers: int = 4, busy_timeout_ms: int = 5000, create: bool = False
    ) -> None:
        if not create and not path.exists():
            raise NIBError(
                f"no NIB at {path} (run 'pdsno nib init')",
                code=ReasonCode.NIB_NOT_INITIALISED,
                path=str(path),
            )
        if create and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # The NIB holds tokens and the audit log: readable by its controller only (-wal/-shm follow).
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        self.path = path
        self._busy_timeout_s = busy_timeout_ms / 1000
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nib-sqlite")
        # Fail now, not at the first query, if the file cannot be opened; also switches the file to WAL.
        self._executor.submit(self._connection).result()

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(
                    self.path,
                    timeout=self._busy_timeout_s,
                    isolation_level=None,
                    detect_types=sqlite3.PARSE_DECLTYPES,
                    check_same_thread=False,
                )
                conn.row_factory = _dict_row
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
                conn.execute("PRAGMA foreign_keys = ON")
            except sqlite3.Error as exc:
                raise NIBError(f"cannot open the NIB at {self.path}: {exc}", path=str(self.path)) from None
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _transaction(self, work: Callable[[_SqliteTx], R], write: bool) -> R:
        conn = self._connection()
        try:
            # IMMEDIATE takes the write lock up front: two writers never deadlock upgrading a read lock.
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                result = work(_SqliteTx(conn))
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise NIBBusy(
                    f"the NIB at {self.path} stayed locked for {self._busy_timeout_s:g} s"
                ) from None
            raise NIBError(f"NIB error: {exc}") from None
        except sqlite3.IntegrityError as exc:
            raise NIBError(f"NIB refused the write: {exc}", code=ReasonCode.NIB_INTEGRITY) from None
        except sqlite3.DatabaseError as exc:
            raise NIBError(f"NIB error: {exc}") from None

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
