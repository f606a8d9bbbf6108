"""``pdsno audit``: read and verify the tamper-evident event log."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from pdsno.admission.identity import own_audit_keys
from pdsno.audit.chain import ChainReport
from pdsno.audit.verify import signer_keys, verify_log
from pdsno.canonical import format_ts
from pdsno.cli.common import config_option, load
from pdsno.cli.output import emit_json, json_option, run
from pdsno.controller.nib_setup import open_configured_nib
from pdsno.nib.models import Event

EXIT_TAMPERED = 3


@click.group("audit")
def audit_group() -> None:
    """Read and verify the append-only, hash-chained audit log."""


@audit_group.command("verify")
@config_option
@json_option
def verify(config_path: Path, as_json: bool) -> None:
    """Walk the whole chain; name the first event edited, deleted or inserted. Exit 3 if any."""
    config = load(config_path)
    own = own_audit_keys(config.security.identity_key, config.controller.data_dir, config.controller.id)

    async def go() -> ChainReport:
        store = await open_configured_nib(config)
        try:
            keys = await signer_keys(store, own)
            return await verify_log(store, keys)
        finally:
            await store.close()

    report = run(go())
    if as_json:
        emit_json(report.as_dict())
    elif report.ok:
        click.echo(
            f"audit log intact: {report.checked} events, head #{report.head_seq} {report.head_hash[:16]}"
        )
    else:
        first, *rest = report.problems
        click.echo(f"audit log TAMPERED: {first.describe()}", err=True)
        for problem in rest:
            click.echo(f"  also: {problem.describe()}", err=True)
    if not report.ok:
        sys.exit(EXIT_TAMPERED)


def _line(event: Event) -> str:
    parts = [f"#{event.seq:<6}", format_ts(event.timestamp), f"{event.event_type:<24}", event.actor]
    if event.subject:
        parts.append(f"subject={event.subject}")
    if event.decision.value != "N/A":
        parts.append(f"decision={event.decision.value}")
    if event.notes:
        parts.append(f"notes={event.notes!r}")
    return "  ".join(parts)


@audit_group.command("tail")
@config_option
@click.option("-n", "--lines", "count", type=click.IntRange(1, 100_000), default=20, show_default=True)
@json_option
def tail(config_path: Path, count: int, as_json: bool) -> None:
    """Show the newest events, oldest first."""
    config = load(config_path)

    async def go() -> list[Event]:
        store = await open_configured_nib(config)
        try:
            return await store.last_events(count)
        finally:
            await store.close()

    events = run(go())
    if as_json:
        emit_json([e.model_dump(mode="json") for e in events])
    else:
        for event in events:
            click.echo(_line(event))
