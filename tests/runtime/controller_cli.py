"""A controller as an operator (or an intruder) has it on disk: its configuration file, the ``pdsno``
command against it, raw SQL on its NIB and signed appends to its audit log."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pdsno.nib.connect import open_nib
from pdsno.nib.models import EventDraft
from pdsno.security.keys import Ed25519Signer, load_private_key

PDSNO = Path(sys.executable).with_name("pdsno")
PSQL = Path("/usr/lib/postgresql/15/bin/psql")
CONTROLLER_ID = "global_cntl_1"


def pdsno(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PDSNO), *args], capture_output=True, text=True, timeout=60, env=env, cwd=cwd, check=False
    )


@dataclass
class Controller:
    config: Path
    data_dir: Path
    backend: str
    dsn: str | None

    @property
    def nib_path(self) -> Path:
        return self.data_dir / "nib.sqlite3"

    def cli(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return pdsno(*args, "--config", str(self.config), env=env)

    def ok(self, *args: str) -> str:
        done = self.cli(*args)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def stats(self) -> dict[str, object]:
        data: dict[str, object] = json.loads(self.ok("nib", "stats", "--json"))
        return data

    def raw_sql(self, sql: str) -> str:
        if self.backend == "sqlite":
            command = [shutil.which("sqlite3") or "sqlite3", str(self.nib_path), sql]
        else:
            assert self.dsn is not None
            command = [str(PSQL), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", self.dsn, "-c", sql]
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def disable_append_only(self) -> str:
        """SQL that lifts the database's refusal to edit or delete events (what an intruder would run)."""
        if self.backend == "sqlite":
            return "DROP TRIGGER events_refuse_update; DROP TRIGGER events_refuse_delete;"
        return "ALTER TABLE events DISABLE TRIGGER USER;"

    def signer(self) -> Ed25519Signer:
        return Ed25519Signer(CONTROLLER_ID, load_private_key(self.data_dir / "identity.key"))

    async def append(self, kinds: Sequence[str]) -> None:
        """One signed event of each kind, as the controller itself would write them."""
        store = await open_nib(
            self.backend,  # type: ignore[arg-type]
            path=self.nib_path,
            dsn=self.dsn,
            signer=self.signer(),
        )
        try:
            await store.append_events(
                [EventDraft(event_type=k, actor=CONTROLLER_ID, payload={"k": k}) for k in kinds]
            )
        finally:
            await store.close()


def make_controller(tmp_path: Path, name: str, backend: str, dsn: str | None = None) -> Controller:
    """A global controller's configuration in ``tmp_path`` (data in ``tmp_path/name``); not initialised."""
    data_dir = tmp_path / name
    nib = "{backend: sqlite}" if backend == "sqlite" else f"{{backend: postgresql, dsn: '{dsn}'}}"
    config = tmp_path / f"{name}.yml"
    config.write_text(
        f"controller: {{id: {CONTROLLER_ID}, role: global, data_dir: {data_dir}}}\nnib: {nib}\n"
    )
    return Controller(config, data_dir, backend, dsn)
