"""Versioned schema migrations, one directory of numbered SQL files per backend.

``apply`` runs every pending migration in the caller's transaction, so a failed upgrade leaves the
schema as it was, and two controllers upgrading at once serialise on the migrations table.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING

from pdsno.canonical import utcnow
from pdsno.errors import NIBError, ReasonCode

if TYPE_CHECKING:
    from pdsno.nib.sql import Tx

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True)
class MigrationSet:
    backend: str
    table_exists_sql: str
    """Returns one row when ``schema_migrations`` exists, none otherwise."""
    lock_sql: str | None = None
    """Serialises concurrent upgrades where the backend's write transaction does not already."""

    @property
    def migrations(self) -> list[Migration]:
        found = []
        for entry in resources.files(__package__).joinpath(self.backend).iterdir():
            match = _FILE.match(entry.name)
            if match:
                found.append(
                    Migration(int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8"))
                )
        return sorted(found, key=lambda m: m.version)

    @property
    def latest(self) -> int:
        return max((m.version for m in self.migrations), default=0)

    def current(self, tx: Tx) -> int:
        if tx.one(self.table_exists_sql) is None:
            return 0
        row = tx.one("SELECT MAX(version) AS v FROM schema_migrations")
        return int(row["v"]) if row and row["v"] is not None else 0

    def apply(self, tx: Tx) -> list[int]:
        """Apply what is pending; return the versions applied (empty when already up to date)."""
        tx.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
            "checksum TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL)"
        )
        if self.lock_sql:
            tx.execute(self.lock_sql)
        applied = {
            int(r["version"]): str(r["checksum"])
            for r in tx.all("SELECT version, checksum FROM schema_migrations")
        }
        known = self.migrations
        newest_known = max((m.version for m in known), default=0)
        if applied and max(applied) > newest_known:
            raise NIBError(
                f"the NIB schema is at version {max(applied)}, newer than this pdsno knows ({newest_known})",
                code=ReasonCode.NIB_SCHEMA_MISMATCH,
            )
        done = []
        for migration in known:
            if migration.version in applied:
                if applied[migration.version] != migration.checksum:
                    raise NIBError(
                        f"migration {migration.version:04d}_{migration.name} differs from the one applied to this "
                        "NIB; refusing to continue",
                        code=ReasonCode.NIB_SCHEMA_MISMATCH,
                    )
                continue
            tx.script(migration.sql)
            tx.execute(
                "INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (:v, :n, :c, :at)",
                {"v": migration.version, "n": migration.name, "c": migration.checksum, "at": utcnow()},
            )
            done.append(migration.version)
        return done
