"""Pytest plugin: a throwaway PostgreSQL 15 server for the whole test session.

Register it from ``tests/conftest.py``::

    pytest_plugins = ["tests.runtime.postgres_server"]

and use the session-scoped ``postgres_server`` fixture::

    def test_something(postgres_server):
        dsn = postgres_server.create_database()  # brand-new, empty database
        ...

The server runs from a private temporary directory (initdb'd fresh every session) on a free
TCP port on 127.0.0.1, with durability switched off for speed. It never touches the system
cluster. When the tests run as root, initdb/pg_ctl run as the ``postgres`` user via
``runuser`` (initdb refuses to run as root).

The server is stopped (``pg_ctl stop -m immediate``) and its directory removed at the end of
the session, on Ctrl-C, at interpreter exit (atexit backstop) and on SIGTERM. Only the server
started here is ever stopped.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from tests.runtime.ports import free_port

PG_BINDIR = Path("/usr/lib/postgresql/15/bin")
PG_OS_USER = "postgres"
PG_SUPERUSER = "postgres"
HOST = "127.0.0.1"

_START_ATTEMPTS = 3
_NAME_PREFIX_RE = re.compile(r"[a-z_][a-z0-9_]{0,39}")


class PostgresServerError(RuntimeError):
    """The throwaway server could not be set up or driven."""


class PostgresServer:
    """One throwaway PostgreSQL server: ``initdb`` + ``pg_ctl start`` on construction."""

    def __init__(self, bindir: Path = PG_BINDIR, *, durable: bool = False) -> None:
        """``durable``: PostgreSQL's own defaults (fsync, synchronous commit); by default both are off,
        which is faster and safe while nothing crashes, but an immediate stop loses recent commits."""
        self.bindir = bindir
        self.durable = durable
        self.host = HOST
        self.user = PG_SUPERUSER
        self.port = 0
        self.create_database_seconds: list[float] = []
        self._lock = threading.Lock()
        self._counter = itertools.count(1)
        self._admin: Any = None  # psycopg.Connection, opened lazily
        self._running = False
        self._owner_pid = os.getpid()

        for tool in ("initdb", "pg_ctl", "postgres"):
            if not (bindir / tool).is_file():
                raise PostgresServerError(
                    f"PostgreSQL 15 binaries not found ({bindir / tool} is missing); run scripts/bootstrap.sh"
                )

        self._as_root = os.geteuid() == 0
        if self._as_root:
            try:
                self._pg_pw = pwd.getpwnam(PG_OS_USER)
            except KeyError:
                raise PostgresServerError(
                    f"running as root but there is no '{PG_OS_USER}' user; run scripts/bootstrap.sh"
                ) from None
            if shutil.which("runuser") is None:
                raise PostgresServerError("running as root but 'runuser' is not on PATH")

        self.basedir = Path(tempfile.mkdtemp(prefix="pdsno-pg-", dir=self._tempdir_parent()))
        self.datadir = self.basedir / "data"
        self.sockdir = self.basedir / "sock"
        self.logfile = self.basedir / "postgres.log"
        try:
            self.sockdir.mkdir()
            if self._as_root:
                for path in (self.basedir, self.sockdir):
                    os.chown(path, self._pg_pw.pw_uid, self._pg_pw.pw_gid)
            self._initdb()
            self._start()
        except BaseException:
            self.stop()
            raise

    # -- public API ------------------------------------------------------------------------

    def dsn_for(self, dbname: str) -> str:
        """The libpq URI for database ``dbname`` on this server."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    def create_database(self, name_prefix: str = "nib") -> str:
        """Create a brand-new empty database with a unique name; return its DSN."""
        import psycopg
        from psycopg import sql

        if not _NAME_PREFIX_RE.fullmatch(name_prefix):
            raise ValueError(f"name_prefix must match {_NAME_PREFIX_RE.pattern}, got {name_prefix!r}")
        started = time.perf_counter()
        with self._lock:
            if not self._running:
                raise PostgresServerError("the throwaway PostgreSQL server is not running")
            name = f"{name_prefix}_{next(self._counter)}_{uuid.uuid4().hex[:8]}"
            if self._admin is None or self._admin.closed:
                self._admin = psycopg.connect(self.dsn_for("postgres"), autocommit=True)
            self._admin.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(sql.Identifier(name))
            )
        self.create_database_seconds.append(time.perf_counter() - started)
        return self.dsn_for(name)

    def restart(self) -> None:
        """Stop the server as a crash would (immediate mode: no shutdown checkpoint, clients cut off) and
        start it again on the same port."""
        self._pg_ctl("restart", "-m", "immediate", "-w", "-t", "60", "-l", str(self.logfile))

    def stop(self) -> None:
        """Stop the server (immediate mode) and remove its directory. Idempotent."""
        if os.getpid() != self._owner_pid:  # a forked child must not tear down the parent's server
            return
        with contextlib.suppress(Exception):
            if self._admin is not None:
                self._admin.close()
        self._admin = None
        if self._running or (self.datadir / "postmaster.pid").exists():
            self._running = False
            try:
                self._pg_ctl("stop", "-m", "immediate", "-w", "-t", "30", check=False)
            finally:
                self._kill_leftover_postmaster()
        shutil.rmtree(self.basedir, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    # -- internals -------------------------------------------------------------------------

    def _tempdir_parent(self) -> str | None:
        """Where to put the temp dir; as root it must be reachable by the postgres user."""
        parent = tempfile.gettempdir()
        if not self._as_root:
            return None
        path = Path(parent).resolve()
        for part in (path, *path.parents):
            if not os.stat(part).st_mode & 0o001:  # not traversable by "others"
                return "/tmp"
        return None

    def _cmd(self, tool: str, *args: str) -> list[str]:
        cmd = [str(self.bindir / tool), *args]
        if self._as_root:
            cmd = ["runuser", "-u", PG_OS_USER, "--", *cmd]
        return cmd

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        env["LANG"] = "C"
        return env

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            self._cmd(tool, *args),
            cwd=self.basedir,
            env=self._env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and proc.returncode != 0:
            raise PostgresServerError(
                f"{tool} {' '.join(args)} failed with exit code {proc.returncode}\n"
                f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}\n"
                f"--- server log (tail) ---\n{self.log_tail()}"
            )
        return proc

    def _pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self._run("pg_ctl", "-D", str(self.datadir), *args, check=check)

    def _initdb(self) -> None:
        self._run(
            "initdb",
            "-D",
            str(self.datadir),
            "-A",
            "trust",
            "-U",
            PG_SUPERUSER,
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )

    def _start(self) -> None:
        for attempt in range(1, _START_ATTEMPTS + 1):
            self.port = free_port()
            opts = f"-c listen_addresses={HOST} -p {self.port} -k {self.sockdir} -c max_connections=200"
            if not self.durable:
                opts += " -F -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            proc = self._pg_ctl("-w", "-t", "60", "-l", str(self.logfile), "-o", opts, "start", check=False)
            if proc.returncode == 0:
                self._running = True
                return
            # Lost the race for the port (or another start failure): make sure nothing is left.
            self._kill_leftover_postmaster()
            if attempt == _START_ATTEMPTS or "Address already in use" not in self.log_tail(400):
                raise PostgresServerError(
                    f"pg_ctl start failed (exit {proc.returncode}) on port {self.port}\n"
                    f"{proc.stdout}{proc.stderr}\n--- server log (tail) ---\n{self.log_tail()}"
                )

    def _kill_leftover_postmaster(self) -> None:
        """SIGKILL the postmaster of *our* data directory if pg_ctl left it running."""
        pidfile = self.datadir / "postmaster.pid"
        try:
            lines = pidfile.read_text().splitlines()
            pid = int(lines[0])
            recorded_datadir = lines[1] if len(lines) > 1 else ""
        except (OSError, ValueError, IndexError):
            return
        if Path(recorded_datadir) != self.datadir:
            return
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return  # already gone
        if str(self.datadir).encode() not in cmdline:
            return  # pid recycled by something else: leave it alone
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        for _ in range(100):
            if not Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.05)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real, throwaway PostgreSQL 15 server shared by the whole test session."""
    try:
        server = PostgresServer()
    except PostgresServerError as exc:
        pytest.fail(str(exc), pytrace=False)

    atexit.register(server.stop)
    previous_sigterm = _install_sigterm_handler(server)
    try:
        yield server
    finally:
        try:
            server.stop()
        finally:
            atexit.unregister(server.stop)
            if previous_sigterm is not None:
                signal.signal(signal.SIGTERM, previous_sigterm)


def _install_sigterm_handler(server: PostgresServer) -> Any:
    """On SIGTERM, stop the server, then die of SIGTERM as before (only if nobody else handles it)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return None

    def _on_sigterm(signum: int, frame: FrameType | None) -> None:
        server.stop()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, _on_sigterm)
    return signal.SIG_DFL
