"""Fixtures that open a real NIB on each backend (a SQLite file, and a fresh PostgreSQL database), and a
receiver's replay cache."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pdsno.messaging.replay import ReplayLog
from pdsno.nib.connect import open_nib
from pdsno.nib.sql import SqlNIBStore
from pdsno.security.keys import Ed25519Signer

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)]


@dataclass
class NibTarget:
    """Where one test's NIB lives; ``open`` gives another independent store (own connections) on it."""

    backend: str
    path: Path | None
    dsn: str | None
    signer: Ed25519Signer

    async def open(self, *, create: bool = False, pool_size: int = 2) -> SqlNIBStore:
        return await open_nib(
            self.backend,  # type: ignore[arg-type]
            path=self.path,
            dsn=self.dsn,
            signer=self.signer,
            create=create,
            pool_size=pool_size,
        )


@pytest.fixture
def signer() -> Ed25519Signer:
    return Ed25519Signer("local_cntl_zone-a_1", Ed25519PrivateKey.generate())


@pytest.fixture(params=BACKENDS)
def nib_target(request: pytest.FixtureRequest, tmp_path: Path, signer: Ed25519Signer) -> NibTarget:
    if request.param == "sqlite":
        return NibTarget("sqlite", tmp_path / "nib.sqlite3", None, signer)
    server = request.getfixturevalue("postgres_server")
    return NibTarget("postgresql", None, server.create_database(), signer)


@pytest.fixture
def replay(tmp_path: Path) -> Iterator[ReplayLog]:
    """A receiver's replay cache, on disk as a controller keeps it."""
    log = ReplayLog(tmp_path / "replay")
    try:
        yield log
    finally:
        log.close()


@pytest.fixture
async def nib(nib_target: NibTarget) -> AsyncIterator[SqlNIBStore]:
    store = await nib_target.open(create=True, pool_size=4)
    try:
        yield store
    finally:
        await store.close()
