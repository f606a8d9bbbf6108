"""PostgreSQL backend (psycopg 3): for deployments with many writers or many devices."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from pdsno.config import redact_dsn
from pdsno.errors import NIBBusy, NIBError, ReasonCode
from pdsno.nib.migrations import MigrationSet
from pdsno.nib.sql import JsonParam, Row, ThreadedDatabase

R = TypeVar("R")

MIGRATIONS = MigrationSet(
    backend="postgresql",
    table_exists_sql="SELECT 1 AS found WHERE to_regclass('schema_migrations') IS NOT NULL",
    lock_sql="LOCK TABLE schema_migrations IN EXCLUSIVE MODE",
)

_NAMED = re.compile(r"(?<![:\w]):([a-z_][a-z0-9_]*)")


@lru_cache(maxsize=512)
def to_pyformat(sql: str) -> str:
    """``:name`` → ``%(name)s``; literal ``%`` doubled so psycopg does not read it as a placeholder."""
    return _NAMED.sub(r"%(\1)s", sql.replace("%", "%%"))


def _params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: Jsonb(v.value) if isinstance(v, JsonParam) else v for k, v in (params or {}).items()}


def _durability_gaps(conn: psycopg.Connection[Any]) -> dict[str, str]:
    """The server settings that acknowledge a commit before it is on disk (the last ones are lost in a
    crash: measured in tests/faults/test_nib_faults.py)."""
    gaps = {}
    for setting in ("fsync", "synchronous_commit"):
        row = conn.execute(f"SHOW {setting}").fetchone()
        if row is not None and row[0] == "off":
            gaps[setting] = "off"
    return gaps


class _PgTx:
    def __init__(self, cur: psycopg.Cursor[Row]) -> None:
        self._cur = cur

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> int:
        self._cur.execute(to_pyformat(sql), _params(params))
        return self._cur.rowcount

    def one(self, sql: str, params: Mapping[str, Any] | None = None) -> Row | None:
        self._cur.execute(to_pyformat(sql), _params(params))
        return self._cur.fetchone()

    def all(self, sql: str, params: Mapping[str, Any] | None = None) -> list[Row]:
        self._cur.execute(to_pyformat(sql), _params(params))
        return self._cur.fetchall()

    def many(self, sql: str, rows: Sequence[Mapping[str, Any]]) -> None:
        self._cur.executemany(to_pyformat(sql), [_params(r) for r in rows])

    def script(self, sql: str) -> None:
        self._cur.execute(sql.encode())  # no parameters: PostgreSQL takes several statements at once


class PostgresDatabase(ThreadedDatabase):
    backend = "postgresql"
    row_lock = " FOR UPDATE"
    durability_gaps: Mapping[str, str]
    migrations = MIGRATIONS

    def __init__(self, dsn: str, *, pool_size: int = 4, connect_timeout_s: float = 10.0) -> None:
        self._dsn_shown = redact_dsn(dsn)
        # One direct connection first: it fails at once with the server's own reason, where the pool
        # would keep retrying in the background until its timeout.
        try:
            with psycopg.connect(dsn, connect_timeout=max(1, int(connect_timeout_s))) as probe:
                self.durability_gaps = _durability_gaps(probe)
        except psycopg.Error as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise NIBError(
                f"cannot connect to the NIB at {self._dsn_shown}: {reason}", dsn=self._dsn_shown
            ) from None
        self._pool: ConnectionPool[psycopg.Connection[Row]] = ConnectionPool(
            dsn,
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True, "row_factory": dict_row},
            # A connection is checked as it leaves the pool (one round trip): after a server restart the
            # old ones are broken, and each would otherwise fail one transaction before being dropped.
            check=ConnectionPool.check_connection,
            open=False,
            name="pdsno-nib",
        )
        try:
            self._pool.open(wait=True, timeout=connect_timeout_s)
        except PoolTimeout:
            self._pool.close()
            raise NIBError(
                f"cannot connect to the NIB at {self._dsn_shown}: timed out", dsn=self._dsn_shown
            ) from None
        self._executor = ThreadPoolExecutor(max_workers=pool_size, thread_name_prefix="nib-pg")

    def _transaction(self, work: Callable[[_PgTx], R], write: bool) -> R:
        try:
            with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                if not write:
                    cur.execute("SET TRANSACTION READ ONLY")
                return work(_PgTx(cur))
        except (
            pg_errors.SerializationFailure,
            pg_errors.DeadlockDetected,
            pg_errors.LockNotAvailable,
        ) as exc:
            raise NIBBusy(f"the NIB is busy: {exc}") from None
        except (pg_errors.IntegrityError, pg_errors.RaiseException) as exc:
            raise NIBError(f"NIB refused the write: {exc}", code=ReasonCode.NIB_INTEGRITY) from None
        except PoolTimeout:
            raise NIBError(f"no NIB connection to {self._dsn_shown} became free in time") from None
        except psycopg.Error as exc:
            raise NIBError(f"NIB error ({self._dsn_shown}): {exc}") from None

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self._pool.close()
