"""``pdsno broker render``: the Mosquitto files of a deployment, written only when they would change.

The Ansible ``mosquitto`` role calls it with the broker's listeners and accounts as JSON on stdin (the
passwords never touch a command line or a spec file). It reports ``changed`` the way an Ansible module
does, so a second deployment with the same inputs changes nothing: :func:`write_broker_files` salts
every password afresh, so an existing password line is kept whenever its hash still verifies.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import click
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pdsno.cli.output import emit_json, json_option
from pdsno.errors import ConfigError
from pdsno.security.keys import write_secret_file
from pdsno.transport.broker import BrokerAccount, BrokerFiles, Listener, verify_password, write_broker_files

_RESTART_FILES = ("mosquitto.conf",)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ListenerSpec(_Strict):
    port: int = Field(ge=1, le=65535)
    bind: str | None = None
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    insecure: bool = False

    def listener(self) -> Listener:
        return Listener(
            port=self.port, bind=self.bind, ca=self.ca, cert=self.cert, key=self.key, insecure=self.insecure
        )


class AccountSpec(_Strict):
    username: str
    password: str = Field(repr=False)
    role: Literal["global", "regional", "local", "monitor"]
    region: str | None = None

    def account(self) -> BrokerAccount:
        return BrokerAccount(self.username, self.password, self.role, self.region)


class BrokerSpec(_Strict):
    """What ``pdsno broker render`` reads on stdin."""

    listeners: list[ListenerSpec]
    accounts: list[AccountSpec]
    run_as: str | None = None
    persistence_dir: Path | None = None
    autosave_interval_s: int = 60
    max_queued_messages: int = 10_000
    persistent_client_expiration: str = "14d"


def _read_password_file(path: Path) -> dict[str, str]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    entries = (line.partition(":") for line in text.splitlines() if line.strip())
    return {user: hashed for user, _, hashed in entries}


def passwords_current(path: Path, accounts: list[BrokerAccount]) -> bool:
    """True when the password file holds exactly these accounts, each with its current password."""
    existing = _read_password_file(path)
    if set(existing) != {a.username for a in accounts}:
        return False
    return all(verify_password(a.password, existing[a.username]) for a in accounts)


def _rendered_files(root: Path) -> dict[str, bytes]:
    """The files :func:`write_broker_files` writes, but the password file (salted, compared apart)."""
    paths = [root / "mosquitto.conf", root / "acl", *sorted((root / "tls").glob("*"))]
    return {str(p.relative_to(root)): p.read_bytes() for p in paths if p.is_file()}


def stale_files(directory: Path, spec: BrokerSpec) -> list[str]:
    """The files (relative to ``directory``) that rendering ``spec`` would change; nothing is written
    to ``directory``: the files are rendered in a scratch directory beside it and compared."""
    directory = directory.absolute()
    accounts = [a.account() for a in spec.accounts]
    directory.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".pdsno-broker-", dir=directory.parent))
    try:
        _render(scratch, spec)
        wanted = {
            name: data.replace(str(scratch).encode(), str(directory).encode())
            for name, data in _rendered_files(scratch).items()
        }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    have = _rendered_files(directory) if directory.is_dir() else {}
    stale = sorted(name for name in wanted.keys() | have.keys() if wanted.get(name) != have.get(name))
    if not passwords_current(directory / "passwd", accounts):
        stale.append("passwd")
    return stale


def _render(directory: Path, spec: BrokerSpec) -> BrokerFiles:
    return write_broker_files(
        directory,
        listeners=[listener.listener() for listener in spec.listeners],
        accounts=[a.account() for a in spec.accounts],
        persistence_dir=spec.persistence_dir,
        run_as=spec.run_as,
        autosave_interval_s=spec.autosave_interval_s,
        max_queued_messages=spec.max_queued_messages,
        persistent_client_expiration=spec.persistent_client_expiration,
    )


@dataclass(frozen=True, slots=True)
class RenderResult:
    config: Path
    files: list[str]
    """Files that changed (or would change, in check mode), relative to the broker directory."""

    @property
    def changed(self) -> bool:
        return bool(self.files)

    @property
    def restart(self) -> bool:
        """A changed mosquitto.conf or TLS file needs a restart; passwd and acl only a SIGHUP."""
        return any(name in _RESTART_FILES or name.startswith("tls/") for name in self.files)

    def as_dict(self) -> dict[str, object]:
        return {
            "changed": self.changed,
            "files": self.files,
            "restart": self.restart,
            "config": str(self.config),
        }


def render(directory: Path, spec: BrokerSpec, *, check: bool = False) -> RenderResult:
    """Bring ``directory`` to what ``spec`` describes (unless ``check``); report what changed."""
    stale = stale_files(directory, spec)
    if stale and not check:
        keep = (directory / "passwd").read_bytes() if "passwd" not in stale else None
        files = _render(directory, spec)
        if keep is not None:
            stat = files.password_file.stat()
            write_secret_file(files.password_file, keep)
            os.chown(files.password_file, stat.st_uid, stat.st_gid)
    return RenderResult(directory.absolute() / "mosquitto.conf", stale)


@click.group("broker")
def broker_group() -> None:
    """The Mosquitto broker's configuration, password file and ACL."""


@broker_group.command("render")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory of the broker's files (mosquitto.conf, passwd, acl, tls/).",
)
@click.option("--check", is_flag=True, help="Only report what would change.")
@json_option
def render_command(directory: Path, check: bool, as_json: bool) -> None:
    """Render the broker's files from a JSON spec on stdin: {listeners, accounts, run_as, ...}.

    Idempotent: files are rewritten only when their content would change, and a password line is kept
    while its hash verifies. Reload the broker (SIGHUP) when passwd or acl changed, restart it when
    mosquitto.conf or tls/ changed ("restart" in the JSON).
    """
    try:
        spec = BrokerSpec.model_validate_json(sys.stdin.read())
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"broker spec: {where}: {first['msg']}") from None
    result = render(directory, spec, check=check)
    if as_json:
        emit_json(result.as_dict())
    elif result.changed:
        click.echo(f"{'would change' if check else 'changed'}: {', '.join(result.files)}")
    else:
        click.echo("unchanged")
