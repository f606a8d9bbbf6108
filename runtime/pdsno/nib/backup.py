"""Back up and restore a controller's NIB (``pdsno nib backup`` / ``pdsno nib restore``).

SQLite is copied with SQLite's online backup API: one read transaction, so the copy is a consistent
snapshot even while the controller keeps writing (WAL readers never block writers). PostgreSQL is
dumped with ``pg_dump -Fc`` and put back with ``pg_restore --clean --if-exists``.

Backups are written to a temporary file next to the target and renamed into place, mode 0600: the NIB
holds execution tokens, operator token hashes and message keys. A restore checks the backup's audit
chain (against this controller's own key file, exactly like ``pdsno audit verify``) before anything is
replaced, and refuses to replace an existing NIB without ``force`` or one a running controller has open.

Only the NIB is covered: the identity key, ``identity.json`` and the TLS files in the data directory
are backed up separately (the chain cannot be verified without the identity key).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from pdsno.admission.identity import own_audit_keys
from pdsno.audit.chain import ChainReport, ChainVerifier
from pdsno.audit.verify import PAGE, signer_keys, verify_log
from pdsno.config import ControllerConfig, redact_dsn
from pdsno.errors import AuditError, NIBError, ReasonCode
from pdsno.nib.connect import open_nib
from pdsno.nib.models import Event
from pdsno.nib.sql import _COUNTED_TABLES
from pdsno.security.keys import public_key_from_b64


class BackupTampered(AuditError):
    """The backup's audit chain does not verify: it is not put in place."""

    code = ReasonCode.AUDIT_CHAIN_BROKEN

    def __init__(self, message: str, report: ChainReport) -> None:
        super().__init__(message, problems=report.as_dict()["problems"])
        self.report = report


@dataclass
class BackupSummary:
    """What a backup file holds, read from the file itself (not from the live NIB)."""

    path: Path
    backend: str
    bytes: int
    audit_head_seq: int
    audit_head_hash: str
    events: int
    tables: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "path": str(self.path),
            "backend": self.backend,
            "bytes": self.bytes,
            "audit_head": {"seq": self.audit_head_seq, "hash": self.audit_head_hash},
            "events": self.events,
            "tables": self.tables,
        }


@dataclass
class RestoreResult:
    backup: BackupSummary
    report: ChainReport
    location: str
    replaced: bool

    def as_dict(self) -> dict[str, object]:
        return {
            "input": self.backup.as_dict(),
            "target": self.location,
            "replaced": self.replaced,
            "audit": self.report.as_dict(),
        }


# --- shared helpers ---------------------------------------------------------------------------


def _failed(message: str, **details: Any) -> NIBError:
    return NIBError(message, code=ReasonCode.NIB_BACKUP_FAILED, **details)


def _temp_next_to(target: Path) -> Path:
    """An empty 0600 file in ``target``'s directory (so the final rename stays on one file system)."""
    if not target.parent.is_dir():
        raise _failed(f"directory {target.parent} does not exist", path=str(target))
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    return Path(name)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _put_in_place(tmp: Path, target: Path) -> None:
    _fsync(tmp)
    os.replace(tmp, target)
    with contextlib.suppress(OSError):
        _fsync(target.parent)


def _own_keys(config: ControllerConfig) -> dict[str, Ed25519PublicKey]:
    """The keys ``pdsno audit verify`` trusts: never the key a (possibly forged) backup claims."""
    return own_audit_keys(config.security.identity_key, config.controller.data_dir, config.controller.id)


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise NIBError(
            f"{name} not found on PATH: install the PostgreSQL client tools (postgresql-client) "
            "matching the server's major version",
            code=ReasonCode.NIB_BACKUP_TOOL_MISSING,
            tool=name,
        )
    return found


def _pg_connection(dsn: str) -> tuple[str, dict[str, str]]:
    """A conninfo string without the password, and an environment carrying it (not the command line)."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(dsn)
    password = params.pop("password", None)
    env = {k: v for k, v in os.environ.items() if k != "PGPASSWORD"}
    if password is not None:
        env["PGPASSWORD"] = str(password)
    return make_conninfo("", **params), env


def _run_tool(command: list[str], env: Mapping[str, str] | None = None) -> None:
    done = subprocess.run(
        command, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        reason = (done.stderr.strip() or f"exit code {done.returncode}").splitlines()
        raise _failed(f"{Path(command[0]).name} failed: {reason[0]}", tool=Path(command[0]).name)


# --- SQLite -----------------------------------------------------------------------------------


def _sqlite_summary(path: Path) -> BackupSummary:
    """Row counts and the audit head of a SQLite file, opened read-only."""
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            present = {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
            }
            if "audit_head" not in present:
                raise _failed(f"{path} is not a pdsno NIB (no audit_head table)", path=str(path))
            tables = {
                t: int(conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0])
                for t in _COUNTED_TABLES
                if t in present
            }
            head = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone() or (0, "")
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise _failed(f"{path} is not a SQLite NIB: {exc}", path=str(path)) from None
    return BackupSummary(
        path=path,
        backend="sqlite",
        bytes=path.stat().st_size,
        audit_head_seq=int(head[0]),
        audit_head_hash=str(head[1]),
        events=tables.get("events", 0),
        tables=tables,
    )


def _sqlite_copy(source: Path, dest: Path, *, busy_timeout_s: float, read_only: bool) -> None:
    """Copy ``source`` into the (empty) file ``dest`` with the online backup API, one snapshot.

    ``pages=-1`` copies everything in one step inside one read transaction: a writer on another
    connection neither blocks it nor forces it to start over. The copy is switched to a rollback
    journal so that it is one self-contained file.
    """
    try:
        uri = f"{source.resolve().as_uri()}{'?mode=ro' if read_only else ''}"
        src = sqlite3.connect(uri, uri=True, timeout=busy_timeout_s)
        try:
            dst = sqlite3.connect(dest, timeout=busy_timeout_s)
            try:
                src.backup(dst, pages=-1)
                dst.execute("PRAGMA journal_mode = DELETE")
            finally:
                dst.close()
        finally:
            src.close()
    except sqlite3.DatabaseError as exc:
        raise _failed(f"cannot copy {source}: {exc}", path=str(source)) from None


def _written(output: Path, make: Callable[[Path], BackupSummary]) -> BackupSummary:
    """``make`` writes the backup into a temporary file beside ``output`` and reads its summary back; the
    file takes ``output``'s place only once it is whole."""
    tmp = _temp_next_to(output)
    try:
        summary = make(tmp)
        _put_in_place(tmp, output)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    summary.path = output.absolute()
    return summary


def _backup_sqlite(config: ControllerConfig, output: Path) -> BackupSummary:
    nib = config.nib.sqlite_path
    if not nib.exists():
        raise NIBError(
            f"no NIB at {nib} (run 'pdsno nib init')", code=ReasonCode.NIB_NOT_INITIALISED, path=str(nib)
        )
    if output.exists() and output.resolve() == nib.resolve():
        raise _failed("the backup cannot overwrite the NIB itself", path=str(output))

    def copy(tmp: Path) -> BackupSummary:
        _sqlite_copy(nib, tmp, busy_timeout_s=config.nib.busy_timeout_ms / 1000, read_only=False)
        return _sqlite_summary(tmp)

    return _written(output, copy)


def _leave_wal(path: Path) -> bool:
    """Switch ``path`` to a rollback journal; False if another connection (a running controller) has it open.

    Leaving WAL mode needs the only connection to the file; when it works the WAL is checkpointed into
    the file and removed, so no stale ``-wal`` file can be replayed onto a database put in its place.
    A file that is no database at all (the broken NIB being replaced) is not in use either.
    """
    try:
        conn = sqlite3.connect(path, timeout=0, isolation_level=None)
    except sqlite3.DatabaseError:
        return True
    try:
        row = conn.execute("PRAGMA journal_mode = DELETE").fetchone()
        return row is not None and str(row[0]).lower() == "delete"
    except sqlite3.OperationalError as exc:
        return not ("locked" in str(exc) or "busy" in str(exc))
    except sqlite3.DatabaseError:
        return True
    finally:
        conn.close()


async def _verify_sqlite(path: Path, keys: Mapping[str, Ed25519PublicKey]) -> ChainReport:
    store = await open_nib("sqlite", path=path)
    try:
        return await verify_log(store, await signer_keys(store, keys))
    finally:
        await store.close()


def _swap_in(tmp: Path, target: Path, *, exists: bool) -> None:
    """Rename the verified copy ``tmp`` over ``target`` unless a running controller has it open."""
    # Opening it for verification switched the copy to WAL: make it one file again first.
    _leave_wal(tmp)
    for suffix in ("-wal", "-shm"):
        Path(f"{tmp}{suffix}").unlink(missing_ok=True)
    if exists and not _leave_wal(target):
        raise NIBError(
            f"the NIB at {target} is open (is the controller running?): stop it first",
            code=ReasonCode.NIB_IN_USE,
            path=str(target),
        )
    for suffix in ("-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    _put_in_place(tmp, target)


async def _restore_sqlite(config: ControllerConfig, source: Path, *, force: bool) -> RestoreResult:
    target = config.nib.sqlite_path
    exists = target.exists()
    if exists and not force:
        raise NIBError(
            f"a NIB already exists at {target}: stop the controller and pass --force to replace it",
            code=ReasonCode.ALREADY_EXISTS,
            path=str(target),
        )
    keys = _own_keys(config)
    backup = await asyncio.to_thread(_sqlite_summary, source)
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = _temp_next_to(target)
    try:
        await asyncio.to_thread(_sqlite_copy, source, tmp, busy_timeout_s=5.0, read_only=True)
        report = await _verify_sqlite(tmp, keys)
        if not report.ok:
            raise BackupTampered(
                f"backup {source} fails audit verification: {report.problems[0].describe()}", report
            )
        await asyncio.to_thread(_swap_in, tmp, target, exists=exists)
    except BaseException:
        for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            leftover.unlink(missing_ok=True)
        raise
    return RestoreResult(backup=backup, report=report, location=f"sqlite {target}", replaced=exists)


# --- PostgreSQL -------------------------------------------------------------------------------

_COPY_RE = re.compile(r'^COPY (?:"?[^".\s]+"?\.)?"?([^"\s]+)"? \((.*)\) FROM stdin;$')
_ESCAPE_RE = re.compile(r"\\(x[0-9a-fA-F]{1,2}|[0-7]{1,3}|.)")
_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def _unescape(match: re.Match[str]) -> str:
    code = match.group(1)
    if code in _ESCAPES:
        return _ESCAPES[code]
    if code[0] == "x" and len(code) > 1:
        return chr(int(code[1:], 16))
    if code[0] in "01234567":
        return chr(int(code, 8))
    return code


def _copy_field(raw: str) -> str | None:
    """One field of PostgreSQL's COPY text format."""
    if raw == "\\N":
        return None
    return _ESCAPE_RE.sub(_unescape, raw) if "\\" in raw else raw


def _dump_rows(dump: Path, tables: tuple[str, ...] = ()) -> Iterator[tuple[str, dict[str, str | None]]]:
    """(table, row) for every row of the custom-format dump (or only of ``tables``), via pg_restore."""
    command = [_tool("pg_restore"), "--data-only", "--file=-"]
    command += [f"--table={t}" for t in tables]
    command.append(str(dump))
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors, encoding="utf-8"
        )
        assert proc.stdout is not None
        try:
            yield from _parse_copy(proc.stdout)
        finally:
            proc.stdout.close()
            code = proc.wait()
        if code != 0:
            errors.seek(0)
            reason = errors.read().decode(errors="replace").strip().splitlines() or [f"exit code {code}"]
            raise _failed(f"{dump} is not a readable pg_dump backup: {reason[0]}", path=str(dump))


def _parse_copy(lines: IO[str]) -> Iterator[tuple[str, dict[str, str | None]]]:
    table: str | None = None
    columns: list[str] = []
    for line in lines:
        line = line.rstrip("\n")
        if table is None:
            match = _COPY_RE.match(line)
            if match:
                table = match.group(1)
                columns = [c.strip().strip('"') for c in match.group(2).split(",")]
            continue
        if line == "\\.":
            table = None
            continue
        values = [_copy_field(v) for v in line.split("\t")]
        yield table, dict(zip(columns, values, strict=True))


def _event(row: Mapping[str, str | None]) -> Event:
    ts = row["timestamp"]
    return Event.model_validate(
        {
            **row,
            "seq": int(row["seq"] or 0),
            "timestamp": datetime.fromisoformat(ts) if ts else None,
            "payload": json.loads(row["payload"] or "null"),
        }
    )


def _dump_summary(dump: Path) -> tuple[BackupSummary, dict[str, str]]:
    """Row counts, the audit head and the controllers' public keys, read from the dump."""
    tables = dict.fromkeys(_COUNTED_TABLES, 0)
    head: tuple[int, str] = (0, "")
    controller_keys: dict[str, str] = {}
    for table, row in _dump_rows(dump):
        tables[table] = tables.get(table, 0) + 1
        if table == "audit_head":
            head = (int(row["seq"] or 0), row["hash"] or "")
        elif table == "controllers" and row.get("public_key"):
            controller_keys[str(row["controller_id"])] = str(row["public_key"])
    if "audit_head" not in tables:
        raise _failed(f"{dump} is not a pdsno NIB backup (no audit_head table)", path=str(dump))
    counted = {t: n for t, n in tables.items() if t in _COUNTED_TABLES}
    summary = BackupSummary(
        path=dump,
        backend="postgresql",
        bytes=dump.stat().st_size,
        audit_head_seq=head[0],
        audit_head_hash=head[1],
        events=tables.get("events", 0),
        tables=counted,
    )
    return summary, controller_keys


def _verify_dump(dump: Path, own: Mapping[str, Ed25519PublicKey]) -> tuple[BackupSummary, ChainReport]:
    """The same walk as ``pdsno audit verify``, over the events the dump holds, in order."""
    summary, controller_keys = _dump_summary(dump)
    keys = {cid: public_key_from_b64(b64) for cid, b64 in controller_keys.items()}
    keys.update(own)
    verifier = ChainVerifier(keys)
    page: list[Event] = []
    for _, row in _dump_rows(dump, ("events",)):
        page.append(_event(row))
        if len(page) >= PAGE:
            verifier.feed(sorted(page, key=lambda e: e.seq))
            page = []
    verifier.feed(sorted(page, key=lambda e: e.seq))
    return summary, verifier.finish(summary.audit_head_seq, summary.audit_head_hash)


def _backup_postgres(config: ControllerConfig, output: Path) -> BackupSummary:
    pg_dump = _tool("pg_dump")
    _tool("pg_restore")  # needed to read the copy back; say so before dumping
    conninfo, env = _pg_connection(config.nib.dsn or "")

    def dump(tmp: Path) -> BackupSummary:
        _run_tool([pg_dump, "--format=custom", f"--file={tmp}", f"--dbname={conninfo}"], env)
        return _dump_summary(tmp)[0]

    return _written(output, dump)


def _pg_target_state(dsn: str) -> tuple[bool, int]:
    """(the database holds a NIB, how many other sessions are connected to it)."""
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=10, autocommit=True) as conn:
            row = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
            others = conn.execute(
                "SELECT COUNT(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone()
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NIBError(f"cannot connect to the NIB at {redact_dsn(dsn)}: {reason}") from None
    return bool(row and row[0]), int(others[0]) if others else 0


async def _restore_postgres(config: ControllerConfig, source: Path, *, force: bool) -> RestoreResult:
    dsn = config.nib.dsn or ""
    shown = redact_dsn(dsn)
    pg_restore = _tool("pg_restore")
    exists, others = await asyncio.to_thread(_pg_target_state, dsn)
    if exists and not force:
        raise NIBError(
            f"a NIB already exists at {shown}: stop the controller and pass --force to replace it",
            code=ReasonCode.ALREADY_EXISTS,
            dsn=shown,
        )
    backup, report = await asyncio.to_thread(_verify_dump, source, _own_keys(config))
    if not report.ok:
        raise BackupTampered(
            f"backup {source} fails audit verification: {report.problems[0].describe()}", report
        )
    _, others = await asyncio.to_thread(_pg_target_state, dsn)
    if others:
        raise NIBError(
            f"{others} other session(s) are connected to {shown} (is the controller running?): stop it first",
            code=ReasonCode.NIB_IN_USE,
            dsn=shown,
        )
    conninfo, env = _pg_connection(dsn)
    await asyncio.to_thread(
        _run_tool,
        [
            pg_restore,
            "--clean",
            "--if-exists",
            "--single-transaction",
            "--exit-on-error",
            "--no-owner",
            f"--dbname={conninfo}",
            str(source),
        ],
        env,
    )
    return RestoreResult(backup=backup, report=report, location=f"postgresql {shown}", replaced=exists)


# --- entry points -----------------------------------------------------------------------------


async def backup_nib(config: ControllerConfig, output: Path) -> BackupSummary:
    """Write a consistent copy of the configured NIB to ``output`` (atomically, mode 0600)."""
    if config.nib.backend == "sqlite":
        return await asyncio.to_thread(_backup_sqlite, config, output)
    return await asyncio.to_thread(_backup_postgres, config, output)


async def restore_nib(config: ControllerConfig, source: Path, *, force: bool = False) -> RestoreResult:
    """Put the backup ``source`` in place as the configured NIB once its audit chain verifies."""
    if config.nib.backend == "sqlite":
        return await _restore_sqlite(config, source, force=force)
    return await _restore_postgres(config, source, force=force)
