"""``pdsno nib``: create, upgrade, inspect, sweep, back up and restore a controller's NIB."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

import click

from pdsno.cli import render
from pdsno.cli.common import config_option, identity_signer, load
from pdsno.cli.output import emit_json, json_option, run
from pdsno.config import ControllerConfig
from pdsno.controller.nib_setup import nib_location, open_configured_nib, record_first_start
from pdsno.nib.models import EventDraft
from pdsno.nib.store import RetentionPolicy


@click.group("nib")
def nib_group() -> None:
    """Create, upgrade, inspect and sweep the Network Information Base."""


@nib_group.command("init")
@config_option
def init(config_path: Path) -> None:
    """Create the NIB and this controller's identity key, or confirm both exist (idempotent)."""
    config = load(config_path)
    signer, key_created = identity_signer(config, create=True)

    async def go() -> tuple[list[int], int, bool]:
        store = await open_configured_nib(config, signer=signer, create=True)
        try:
            applied = await store.migrate()
            first = await record_first_start(store, config, signer)
            return applied, await store.schema_version(), first
        finally:
            await store.close()

    applied, version, first = run(go())
    key_state = "created" if key_created else "present"
    click.echo(f"identity key {config.security.identity_key} ({key_state})")
    if first:
        click.echo(f"NIB initialised: {nib_location(config)} at schema version {version}")
    elif applied:
        click.echo(f"NIB upgraded: {nib_location(config)} to schema version {version}")
    else:
        click.echo(
            f"NIB already initialised: {nib_location(config)} at schema version {version}; nothing to do"
        )


@nib_group.command("migrate")
@config_option
def migrate(config_path: Path) -> None:
    """Apply pending schema migrations to an existing NIB (idempotent)."""
    config = load(config_path)

    async def go() -> tuple[list[int], int]:
        store = await open_configured_nib(config, migrate=True)
        try:
            return await store.migrate(), await store.schema_version()
        finally:
            await store.close()

    applied, version = run(go())
    if applied:
        click.echo(f"applied migrations {', '.join(str(v) for v in applied)}; schema version {version}")
    else:
        click.echo(f"schema version {version} is current; nothing to do")


@nib_group.command("stats")
@config_option
@json_option
def stats(config_path: Path, as_json: bool) -> None:
    """Show what the NIB holds: rows per table, devices per status, the audit chain head."""
    config = load(config_path)

    async def go() -> dict[str, object]:
        store = await open_configured_nib(config)
        try:
            return await store.stats()
        finally:
            await store.close()

    data = run(go())
    data["location"] = nib_location(config)
    if as_json:
        emit_json(data)
        return
    click.echo(f"NIB       {data['location']}  (schema version {data['schema_version']})")
    tables = data["tables"]
    assert isinstance(tables, dict)
    render.table(("TABLE", "ROWS"), list(tables.items()), right=(1,))
    by_status = data["devices_by_status"]
    assert isinstance(by_status, dict)
    if by_status:
        click.echo("devices   " + ", ".join(f"{status} {n}" for status, n in sorted(by_status.items())))
    head = data["audit_head"]
    assert isinstance(head, dict)
    click.echo(f"audit     head #{head['seq']} {head['hash'][:16]}")


def retention_policy(config: ControllerConfig) -> RetentionPolicy:
    r = config.retention
    return RetentionPolicy(
        device_inactive_after=timedelta(days=r.device_inactive_after_days),
        device_purge_after=timedelta(days=r.device_purge_after_days),
        proposal_purge_after=timedelta(days=r.config_proposal_retention_days),
        policy_purge_after=timedelta(days=r.old_policy_retention_days),
        report_purge_after=timedelta(days=r.discovery_report_retention_days),
    )


@nib_group.command("sweep")
@config_option
@json_option
def sweep(config_path: Path, as_json: bool) -> None:
    """Apply the retention rules now: age and purge devices, drop old proposals, policies, reports, locks.

    Events are never deleted. What the sweep changed is itself recorded as an audit event.
    """
    config = load(config_path)
    signer, _ = identity_signer(config)

    async def go() -> dict[str, int]:
        store = await open_configured_nib(config, signer=signer)
        try:
            swept = await store.sweep_retention(retention_policy(config))
            if any(swept.values()):
                await store.append_events(
                    [EventDraft(event_type="NIB_RETENTION_SWEEP", actor=config.controller.id, payload=swept)]
                )
            return swept
        finally:
            await store.close()

    swept = run(go())
    if as_json:
        emit_json(swept)
    else:
        for what, n in swept.items():
            click.echo(f"{what.replace('_', ' '):<26} {n}")


@nib_group.command("backup")
@config_option
@click.option(
    "-o",
    "--output",
    "output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Backup file to write (replaced atomically; mode 0600).",
)
@json_option
def backup(config_path: Path, output: Path, as_json: bool) -> None:
    """Copy the NIB to a file while the controller keeps running.

    SQLite through SQLite's online backup API (one consistent snapshot); PostgreSQL through
    ``pg_dump -Fc``. The identity key and TLS files are not included: back them up separately.
    """
    from pdsno.nib.backup import backup_nib

    config = load(config_path)
    summary = run(backup_nib(config, output))
    if as_json:
        emit_json(summary.as_dict())
        return
    click.echo(
        f"backed up {nib_location(config)} to {summary.path} ({summary.bytes} bytes): "
        f"{summary.events} events, audit head #{summary.audit_head_seq} {summary.audit_head_hash[:16]}"
    )


@nib_group.command("restore")
@config_option
@click.option(
    "-i",
    "--input",
    "source",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="Backup file written by 'pdsno nib backup'.",
)
@click.option("--force", is_flag=True, help="Replace an existing NIB (the controller must be stopped).")
@json_option
def restore(config_path: Path, source: Path, force: bool, as_json: bool) -> None:
    """Put a backup in place as this controller's NIB, once its audit chain verifies.

    Refuses an existing NIB without --force, a NIB a running controller has open, and a backup whose
    audit chain does not verify against this controller's identity key (exit 3, like 'audit verify').
    """
    from pdsno.cli.audit import EXIT_TAMPERED
    from pdsno.nib.backup import BackupTampered, restore_nib

    config = load(config_path)
    try:
        result = run(restore_nib(config, source, force=force))
    except BackupTampered as exc:
        if as_json:
            emit_json({"code": str(exc.code), "message": exc.message, "audit": exc.report.as_dict()})
        else:
            click.echo(f"pdsno: {exc}", err=True)
            for problem in exc.report.problems[1:]:
                click.echo(f"  also: {problem.describe()}", err=True)
        sys.exit(EXIT_TAMPERED)
    if as_json:
        emit_json(result.as_dict())
        return
    report = result.report
    click.echo(
        f"restored {source} into {result.location}: audit log intact, {report.checked} events, "
        f"head #{report.head_seq} {report.head_hash[:16]}"
    )
