"""Open a NIB on the backend a controller is configured for."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Literal

from pdsno.audit.chain import EventSigner
from pdsno.errors import ConfigError
from pdsno.nib.sql import Database, SqlNIBStore

Backend = Literal["sqlite", "postgresql"]


async def open_nib(
    backend: Backend,
    *,
    path: Path | None = None,
    dsn: str | None = None,
    signer: EventSigner | None = None,
    pool_size: int = 4,
    busy_timeout_ms: int = 5000,
    create: bool = False,
    migrate: bool = False,
) -> SqlNIBStore:
    """Connect to a NIB whose schema is current.

    ``migrate`` brings an existing NIB's schema up to date instead of refusing an old one; ``create``
    also makes a new SQLite file (a PostgreSQL database must exist already: the DSN names it).
    """
    db: Database
    if backend == "sqlite":
        if path is None:
            raise ConfigError("the sqlite NIB needs a path")
        from pdsno.nib.sqlite import SqliteDatabase

        db = await asyncio.to_thread(
            SqliteDatabase, path, workers=pool_size, busy_timeout_ms=busy_timeout_ms, create=create
        )
    elif backend == "postgresql":
        if dsn is None:
            raise ConfigError("the postgresql NIB needs a dsn")
        from pdsno.nib.postgres import PostgresDatabase

        db = await asyncio.to_thread(PostgresDatabase, dsn, pool_size=pool_size)
    else:
        raise ConfigError(f"unknown NIB backend {backend!r} (sqlite or postgresql)")
    store = SqlNIBStore(db, signer)
    try:
        if create or migrate:
            await store.migrate()
        else:
            await store.check_schema()
    except BaseException:
        await store.close()
        raise
    return store
