"""``pdsno nib backup`` / ``pdsno nib restore`` run as an operator runs them, on SQLite and a real PostgreSQL.

A backup taken while another connection keeps appending is one consistent snapshot (its audit chain
verifies and its head matches its events); a restore goes into a fresh data directory, refuses an
existing NIB without ``--force`` and one a controller still has open, and refuses a tampered backup.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pdsno.nib.connect import open_nib
from pdsno.nib.models import EventDraft
from tests.runtime.conftest import BACKENDS
from tests.runtime.controller_cli import CONTROLLER_ID, PSQL, Controller, make_controller, pdsno

PDSNO = Path(sys.executable).with_name("pdsno")
PG_DUMP = Path("/usr/lib/postgresql/15/bin/pg_dump")


def new_database(request: pytest.FixtureRequest, backend: str) -> str | None:
    if backend == "sqlite":
        return None
    dsn: str = request.getfixturevalue("postgres_server").create_database()
    return dsn


@pytest.fixture(params=BACKENDS)
def seeded(request: pytest.FixtureRequest, tmp_path: Path) -> Controller:
    """An initialised NIB holding NIB_INITIALISED and five more events."""
    controller = make_controller(tmp_path, "data", request.param, new_database(request, request.param))
    controller.ok("nib", "init")
    asyncio.run(controller.append([f"E{i}" for i in range(5)]))
    return controller


def fresh_twin(request: pytest.FixtureRequest, tmp_path: Path, of: Controller) -> Controller:
    """The same controller on a new host: an empty data dir (and database), its identity key restored."""
    twin = make_controller(tmp_path, "restored", of.backend, new_database(request, of.backend))
    twin.data_dir.mkdir(mode=0o700)
    shutil.copy2(of.data_dir / "identity.key", twin.data_dir / "identity.key")
    return twin


def assert_one_line_error(done: subprocess.CompletedProcess[str], code: str, exit_code: int) -> None:
    assert done.returncode == exit_code, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"pdsno: {code}: "), lines[0]


class Writer:
    """Another connection appending events, one per transaction, until stopped."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.appended = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def go() -> None:
            c = self.controller
            store = await open_nib(c.backend, path=c.nib_path, dsn=c.dsn, signer=c.signer())  # type: ignore[arg-type]
            try:
                while not self._stop.is_set():
                    await store.append_events(
                        [EventDraft(event_type="W", actor=CONTROLLER_ID, payload={"n": self.appended})]
                    )
                    self.appended += 1
            finally:
                await store.close()

        try:
            asyncio.run(go())
        except BaseException as exc:
            self.error = exc

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        assert self.error is None, self.error

    def wait_for(self, n: int) -> None:
        deadline = time.monotonic() + 20
        while self.appended < n:
            assert self.error is None, self.error
            assert time.monotonic() < deadline, "the writer made no progress"
            time.sleep(0.01)


def test_backup_while_another_connection_writes_is_one_consistent_snapshot(
    seeded: Controller, tmp_path: Path
) -> None:
    backup = tmp_path / "backups" / "nib.backup"
    backup.parent.mkdir()
    with Writer(seeded) as writer:
        writer.wait_for(20)
        before = 6 + writer.appended
        done = seeded.cli("nib", "backup", "--output", str(backup), "--json")
        after = 6 + writer.appended
        writer.wait_for(writer.appended + 5)  # still writing once the backup is done
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["backend"] == seeded.backend and summary["path"] == str(backup)
    assert summary["bytes"] == backup.stat().st_size > 0
    assert backup.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in backup.parent.iterdir()] == ["nib.backup"]  # no temporary file left
    # A snapshot: the head recorded in the copy is exactly its last event, taken mid-stream.
    events = summary["events"]
    assert summary["audit_head"]["seq"] == events == summary["tables"]["events"]
    assert before <= events <= after
    if seeded.backend == "sqlite":
        assert backup.read_bytes()[:16] == b"SQLite format 3\x00"
        # The copy is one self-contained file and opens as it is.
        conn = sqlite3.connect(f"{backup.as_uri()}?mode=ro", uri=True)
        try:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
            assert conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == events
        finally:
            conn.close()
    else:
        assert backup.read_bytes()[:5] == b"PGDMP"
    # Open the copy as a controller would and verify its chain.
    twin = tmp_path / "copy.yml"
    if seeded.backend == "sqlite":
        twin.write_text(
            f"controller: {{id: {CONTROLLER_ID}, role: global, data_dir: {seeded.data_dir}}}\n"
            f"nib: {{backend: sqlite, path: {backup}}}\n"
        )
        verified = pdsno("audit", "verify", "--config", str(twin))
        assert verified.returncode == 0, verified.stderr
        assert f"intact: {events} events" in verified.stdout
        copy_stats = json.loads(pdsno("nib", "stats", "--json", "--config", str(twin)).stdout)
        assert copy_stats["tables"] == summary["tables"]


def test_restore_into_a_fresh_data_dir(
    seeded: Controller, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    backup = tmp_path / "nib.backup"
    seeded.ok("nib", "backup", "-o", str(backup))
    original = seeded.stats()
    twin = fresh_twin(request, tmp_path, seeded)

    done = twin.cli("nib", "restore", "--input", str(backup), "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["audit"]["ok"] and result["audit"]["checked"] == 6 and result["replaced"] is False
    assert "intact: 6 events" in twin.ok("audit", "verify")
    restored = twin.stats()
    assert restored["tables"] == original["tables"] and restored["audit_head"] == original["audit_head"]
    if twin.backend == "sqlite":
        assert twin.nib_path.stat().st_mode & 0o777 == 0o600
        assert sorted(p.name for p in twin.data_dir.iterdir()) == ["identity.key", "nib.sqlite3"]
    # The restored NIB is a working NIB: the controller goes on appending to the same chain.
    asyncio.run(twin.append([f"E{i}" for i in range(2)]))
    assert "intact: 8 events" in twin.ok("audit", "verify")


def test_restore_refuses_an_existing_nib_without_force(seeded: Controller, tmp_path: Path) -> None:
    backup = tmp_path / "nib.backup"
    seeded.ok("nib", "backup", "-o", str(backup))
    asyncio.run(seeded.append([f"E{i}" for i in range(3)]))  # written after the backup

    refused = seeded.cli("nib", "restore", "-i", str(backup))
    assert_one_line_error(refused, "ALREADY_EXISTS", 1)
    assert "--force" in refused.stderr
    assert seeded.stats()["tables"]["events"] == 9  # type: ignore[index]

    done = seeded.cli("nib", "restore", "-i", str(backup), "--force")
    assert done.returncode == 0, done.stderr
    assert "intact: 6 events" in seeded.ok("audit", "verify")


def test_restore_refuses_a_nib_that_is_still_open(seeded: Controller, tmp_path: Path) -> None:
    backup = tmp_path / "nib.backup"
    seeded.ok("nib", "backup", "-o", str(backup))
    asyncio.run(seeded.append([f"E{i}" for i in range(1)]))

    async def hold_open() -> None:
        store = await open_nib(
            seeded.backend,  # type: ignore[arg-type]
            path=seeded.nib_path,
            dsn=seeded.dsn,
        )
        try:
            await store.audit_head()  # a connection of a "running controller"
            done = await asyncio.to_thread(seeded.cli, "nib", "restore", "-i", str(backup), "--force")
            assert_one_line_error(done, "NIB_IN_USE", 1)
        finally:
            await store.close()

    asyncio.run(hold_open())
    assert seeded.stats()["tables"]["events"] == 7  # type: ignore[index]
    assert seeded.cli("nib", "restore", "-i", str(backup), "--force").returncode == 0
    assert seeded.stats()["tables"]["events"] == 6  # type: ignore[index]


def tamper_backup(seeded: Controller, backup: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Edit event #3 in the backup the way an intruder would (append-only triggers switched off)."""
    if seeded.backend == "sqlite":
        sql = "DROP TRIGGER events_refuse_update; UPDATE events SET notes = 'nothing to see' WHERE seq = 3;"
        done = subprocess.run(
            [shutil.which("sqlite3") or "sqlite3", str(backup), sql],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return
    # Restore it into a scratch database, edit it there, dump that.
    scratch = new_database(request, "postgresql")
    assert scratch is not None
    restored = subprocess.run(
        ["pg_restore", "--no-owner", f"--dbname={scratch}", str(backup)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert restored.returncode == 0, restored.stderr
    psql = [str(PSQL), "-X", "-q", "-v", "ON_ERROR_STOP=1", scratch, "-c"]
    sql = "ALTER TABLE events DISABLE TRIGGER USER; UPDATE events SET notes = 'nothing to see' WHERE seq = 3;"
    assert subprocess.run([*psql, sql], capture_output=True, check=False).returncode == 0
    dumped = subprocess.run(
        ["pg_dump", "--format=custom", f"--file={backup}", f"--dbname={scratch}"],
        capture_output=True,
        check=False,
    )
    assert dumped.returncode == 0, dumped.stderr


def test_a_tampered_backup_is_refused(
    seeded: Controller, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    backup = tmp_path / "nib.backup"
    seeded.ok("nib", "backup", "-o", str(backup))
    tamper_backup(seeded, backup, tmp_path, request)
    twin = fresh_twin(request, tmp_path, seeded)

    done = twin.cli("nib", "restore", "-i", str(backup))
    assert done.returncode == 3, done.stderr
    first = done.stderr.splitlines()[0]
    assert first.startswith("pdsno: AUDIT_CHAIN_BROKEN: ") and "event #3" in first and "edited" in first
    # Nothing was put in place, nothing left behind.
    assert sorted(p.name for p in twin.data_dir.iterdir()) == ["identity.key"]
    if twin.backend == "postgresql":
        assert twin.raw_sql("SELECT to_regclass('schema_migrations') IS NULL").strip() == "t"
    report = json.loads(twin.cli("nib", "restore", "-i", str(backup), "--json").stdout)
    assert report["code"] == "AUDIT_CHAIN_BROKEN" and not report["audit"]["ok"]
    assert report["audit"]["problems"][0]["seq"] == 3


def test_a_backup_signed_by_another_controller_is_refused(
    seeded: Controller, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Verification trusts this controller's key file, never the keys a backup brings along."""
    backup = tmp_path / "nib.backup"
    seeded.ok("nib", "backup", "-o", str(backup))
    stranger = make_controller(tmp_path, "stranger", seeded.backend, new_database(request, seeded.backend))
    stranger.ok("nib", "init")  # a different identity key
    done = stranger.cli("nib", "restore", "-i", str(backup), "--force")
    assert done.returncode == 3 and "AUDIT_CHAIN_BROKEN" in done.stderr and "signature" in done.stderr


@pytest.fixture
def no_pg_tools(tmp_path: Path) -> dict[str, str]:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    return {**os.environ, "PATH": str(empty)}


def test_missing_pg_dump_is_one_clear_line(tmp_path: Path, no_pg_tools: dict[str, str]) -> None:
    controller = make_controller(tmp_path, "pg", "postgresql", "postgresql://pdsno:hunter2@127.0.0.1:1/nib")
    done = controller.cli("nib", "backup", "-o", str(tmp_path / "b"), env=no_pg_tools)
    assert_one_line_error(done, "NIB_BACKUP_TOOL_MISSING", 1)
    assert "pg_dump" in done.stderr and "hunter2" not in done.stderr
    backup = tmp_path / "some.backup"
    backup.write_bytes(b"PGDMP")
    done = controller.cli("nib", "restore", "-i", str(backup), env=no_pg_tools)
    assert_one_line_error(done, "NIB_BACKUP_TOOL_MISSING", 1)
    assert not (tmp_path / "b").exists()


def test_backup_user_mistakes(tmp_path: Path) -> None:
    controller = make_controller(tmp_path, "data", "sqlite")
    assert_one_line_error(
        controller.cli("nib", "backup", "-o", str(tmp_path / "b")), "NIB_NOT_INITIALISED", 1
    )
    controller.ok("nib", "init")
    assert_one_line_error(
        controller.cli("nib", "backup", "-o", str(tmp_path / "no-such-dir" / "b")), "NIB_BACKUP_FAILED", 1
    )
    junk = tmp_path / "junk"
    junk.write_bytes(b"not a database at all" * 100)
    twin = make_controller(tmp_path, "other", "sqlite")
    # Without its identity key a controller cannot check a backup's chain: nothing is restored.
    assert_one_line_error(twin.cli("nib", "restore", "-i", str(junk)), "AUDIT_KEY_MISSING", 1)
    twin.data_dir.mkdir()
    shutil.copy2(controller.data_dir / "identity.key", twin.data_dir / "identity.key")
    assert_one_line_error(twin.cli("nib", "restore", "-i", str(junk)), "NIB_BACKUP_FAILED", 1)
    assert sorted(p.name for p in twin.data_dir.iterdir()) == ["identity.key"]
