"""The ``pdsno`` console script, run as a user runs it, against SQLite and a real PostgreSQL server.

The tamper tests edit the database the way an intruder would: with the ``sqlite3`` CLI or ``psql``,
after switching off the append-only triggers.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from pdsno.nib.sqlite import MIGRATIONS as SQLITE_MIGRATIONS
from tests.runtime.conftest import BACKENDS
from tests.runtime.controller_cli import PSQL, Controller, make_controller, pdsno
from tests.runtime.ports import free_port


@pytest.fixture(params=BACKENDS)
def controller(request: pytest.FixtureRequest, tmp_path: Path) -> Controller:
    dsn = (
        request.getfixturevalue("postgres_server").create_database()
        if request.param == "postgresql"
        else None
    )
    return make_controller(tmp_path, "data", request.param, dsn)


@pytest.fixture
def seeded(controller: Controller) -> Controller:
    """An initialised NIB with six events: NIB_INITIALISED then A..E."""
    assert controller.cli("nib", "init").returncode == 0
    asyncio.run(controller.append(["A", "B", "C", "D", "E"]))
    return controller


COMMANDS = [
    [],
    ["version"],
    ["nib"],
    ["nib", "init"],
    ["nib", "migrate"],
    ["nib", "stats"],
    ["nib", "sweep"],
    ["audit"],
    ["audit", "verify"],
    ["audit", "tail"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "pdsno")
def test_every_command_has_help(command: list[str]) -> None:
    done = pdsno(*command, "--help")
    assert done.returncode == 0, done.stderr
    assert "Usage:" in done.stdout


def test_version_matches_the_package() -> None:
    from pdsno import __version__

    assert pdsno("version").stdout.strip() == __version__
    assert __version__ in pdsno("--version").stdout


def test_init_is_idempotent_and_keeps_secrets_private(controller: Controller) -> None:
    first = controller.cli("nib", "init")
    assert first.returncode == 0, first.stderr
    assert "NIB initialised" in first.stdout and "(created)" in first.stdout
    second = controller.cli("nib", "init")
    assert second.returncode == 0, second.stderr
    assert "nothing to do" in second.stdout and "(present)" in second.stdout

    assert (controller.data_dir / "identity.key").stat().st_mode & 0o777 == 0o600
    if controller.backend == "sqlite":
        assert (controller.data_dir / "nib.sqlite3").stat().st_mode & 0o777 == 0o600
    stats = json.loads(controller.cli("nib", "stats", "--json").stdout)
    assert stats["tables"]["events"] == 1, "a second init must not write another event"
    assert stats["schema_version"] == SQLITE_MIGRATIONS.latest and stats["backend"] == controller.backend

    migrate = controller.cli("nib", "migrate")
    assert migrate.returncode == 0 and "nothing to do" in migrate.stdout


def assert_one_line_error(done: subprocess.CompletedProcess[str], code: str, exit_code: int) -> None:
    assert done.returncode == exit_code, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"pdsno: {code}: "), lines[0]


def test_user_mistakes_get_one_clear_line(tmp_path: Path) -> None:
    assert_one_line_error(
        pdsno("nib", "stats", "--config", str(tmp_path / "missing.yml")), "CONFIG_NOT_FOUND", 2
    )

    bad = tmp_path / "bad.yml"
    bad.write_text("controller: {id: global_cntl_1, role: global}\nnib: {backend: sqlite, colour: blue}\n")
    done = pdsno("nib", "init", "--config", str(bad))
    assert_one_line_error(done, "CONFIG_INVALID", 2)
    assert "nib.colour" in done.stderr and str(bad) in done.stderr

    fresh = tmp_path / "fresh.yml"
    fresh.write_text(f"controller: {{id: global_cntl_1, role: global, data_dir: {tmp_path / 'd'}}}\n")
    assert_one_line_error(pdsno("nib", "stats", "--config", str(fresh)), "NIB_NOT_INITIALISED", 1)

    port = free_port()  # nobody listens there
    unreachable = tmp_path / "pg.yml"
    unreachable.write_text(
        f"controller: {{id: global_cntl_1, role: global, data_dir: {tmp_path / 'e'}}}\n"
        f"nib: {{backend: postgresql, dsn: 'postgresql://pdsno:hunter2@127.0.0.1:{port}/nib?connect_timeout=2'}}\n"
    )
    done = pdsno("nib", "init", "--config", str(unreachable))
    assert_one_line_error(done, "NIB_UNAVAILABLE", 1)
    assert "hunter2" not in done.stderr and "***" in done.stderr

    assert pdsno("nib", "frobnicate").returncode == 2


def test_untouched_log_verifies(seeded: Controller) -> None:
    done = seeded.cli("audit", "verify")
    assert done.returncode == 0, done.stderr
    assert "intact: 6 events" in done.stdout
    report = json.loads(seeded.cli("audit", "verify", "--json").stdout)
    assert report["ok"] and report["checked"] == 6 and report["head_seq"] == 6


def test_the_database_itself_refuses_to_edit_events(seeded: Controller) -> None:
    command = (
        [
            shutil.which("sqlite3") or "sqlite3",
            str(seeded.data_dir / "nib.sqlite3"),
            "DELETE FROM events WHERE seq = 3",
        ]
        if seeded.backend == "sqlite"
        else [str(PSQL), "-X", "-At", seeded.dsn or "", "-c", "DELETE FROM events WHERE seq = 3"]
    )
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode != 0 and "append-only" in done.stderr
    assert seeded.cli("audit", "verify").returncode == 0


def test_an_edited_event_is_named(seeded: Controller) -> None:
    seeded.raw_sql(seeded.disable_append_only() + "UPDATE events SET notes = 'nothing to see' WHERE seq = 3;")
    done = seeded.cli("audit", "verify")
    assert done.returncode == 3
    first = done.stderr.splitlines()[0]
    assert "TAMPERED" in first and "event #3" in first and "edited" in first


def test_an_edited_and_rehashed_event_fails_its_signature(seeded: Controller) -> None:
    seeded.raw_sql(seeded.disable_append_only() + "UPDATE events SET signature = 'AAAA' WHERE seq = 4;")
    done = seeded.cli("audit", "verify")
    assert done.returncode == 3
    assert "event #4" in done.stderr.splitlines()[0] and "signature" in done.stderr


def test_a_deleted_event_is_named(seeded: Controller) -> None:
    seeded.raw_sql(seeded.disable_append_only() + "DELETE FROM events WHERE seq = 3;")
    done = seeded.cli("audit", "verify")
    assert done.returncode == 3
    first = done.stderr.splitlines()[0]
    assert "event #3" in first and "deleted" in first and "missing before event #4" in first


def test_deleting_the_newest_events_is_noticed(seeded: Controller) -> None:
    seeded.raw_sql(seeded.disable_append_only() + "DELETE FROM events WHERE seq >= 5;")
    done = seeded.cli("audit", "verify")
    assert done.returncode == 3
    assert "event #5" in done.stderr and "truncated" in done.stderr


def test_an_inserted_event_is_named(seeded: Controller) -> None:
    # A copy of event #2 slipped in as #7: its content no longer matches its seal.
    columns = "event_type, actor, subject, action, decision, timestamp, payload, notes, prev_hash, hash, signer_id, signature"
    seeded.raw_sql(
        f"INSERT INTO events (seq, event_id, {columns}) SELECT 7, 'forged', {columns} FROM events WHERE seq = 2;"
    )
    done = seeded.cli("audit", "verify")
    assert done.returncode == 3
    assert "event #7 (forged)" in done.stderr.splitlines()[0]


def test_tail_shows_the_newest_events_oldest_first(seeded: Controller) -> None:
    done = seeded.cli("audit", "tail", "-n", "2")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert [line.split()[2] for line in lines] == ["D", "E"]
    events = json.loads(seeded.cli("audit", "tail", "-n", "3", "--json").stdout)
    assert [e["seq"] for e in events] == [4, 5, 6]


def test_sweep_records_only_what_it_changed(seeded: Controller) -> None:
    assert seeded.cli("nib", "sweep").returncode == 0
    seeded.raw_sql(
        "INSERT INTO devices (device_id, mac_address, device_type, status, last_seen, version, created_at, updated_at) "
        "VALUES ('nib-dev-old', '02:00:00:00:00:99', 'unknown', 'active', "
        "'2020-01-01T00:00:00.000000Z', 1, '2020-01-01T00:00:00.000000Z', '2020-01-01T00:00:00.000000Z');"
    )
    swept = json.loads(seeded.cli("nib", "sweep", "--json").stdout)
    assert swept["devices_purged"] == 1
    tail = json.loads(seeded.cli("audit", "tail", "-n", "1", "--json").stdout)
    assert tail[0]["event_type"] == "NIB_RETENTION_SWEEP" and tail[0]["payload"]["devices_purged"] == 1
    assert json.loads(seeded.cli("nib", "stats", "--json").stdout)["tables"]["events"] == 7
