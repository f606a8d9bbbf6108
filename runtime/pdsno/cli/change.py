"""``pdsno change``: propose, follow and decide configuration changes through the GC's northbound API.

Where the GC is and who you are come from ``--url``/``--token``/``--ca`` or ``PDSNO_URL``,
``PDSNO_TOKEN``, ``PDSNO_CA_PATH`` (the token is what ``pdsno operator add`` printed).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from pdsno.cli import render
from pdsno.cli.api import Api, connection_options
from pdsno.cli.output import emit_json, json_option

FINISHED = {"DENIED", "EXPIRED", "EXECUTED", "FAILED", "ROLLED_BACK", "DEGRADED"}


@click.group("change")
@connection_options
@click.pass_context
def change_group(ctx: click.Context, url: str, token: str, ca: Path | None) -> None:
    """Configuration changes: propose, list, show, approve, deny, roll back."""
    ctx.obj = Api(url, token, ca)


def _value(text: str) -> Any:
    return int(text) if text.lstrip("-").isdigit() else text


@change_group.command("propose")
@click.option("--target", "targets", multiple=True, required=True, help="A device id (repeat for more).")
@click.option("--executor", type=click.Choice(["snmp", "ansible"]), default="snmp", show_default=True)
@click.option("--set", "sets", multiple=True, metavar="OID=VALUE", help="snmp: a value to set (repeat).")
@click.option("--payload-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The executor payload as JSON (instead of --set).")  # fmt: skip
@click.option("--rollback-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A payload that undoes it (needed for MEDIUM and HIGH ansible changes).")  # fmt: skip
@click.option(
    "--tier", type=click.Choice(["LOW", "MEDIUM", "HIGH", "EMERGENCY"]), help="Your suggested tier."
)
@click.option("--intent", help="e.g. QUARANTINE (emergency changes).")
@click.option("--downtime", type=int, default=0, help="Estimated downtime in seconds.")
@click.option("--reason", help="Why (kept in the audit log).")
@click.option(
    "--check", is_flag=True, help="Show classification, approver, blast radius and diff; submit nothing."
)
@click.option("--wait", is_flag=True, help="Wait until the change is finished (or --timeout).")
@click.option("--timeout", type=float, default=120.0, show_default=True)
@json_option
@click.pass_obj
def propose(api: Api, targets: tuple[str, ...], executor: str, sets: tuple[str, ...], payload_file: Path | None,
            rollback_file: Path | None, tier: str | None, intent: str | None, downtime: int, reason: str | None,
            check: bool, wait: bool, timeout: float, as_json: bool) -> None:  # fmt: skip
    """Propose a change to one or more devices."""
    if payload_file is not None:
        payload = json.loads(payload_file.read_text())
    elif sets:
        pairs = [s.partition("=") for s in sets]
        if any(not sep for _, sep, _ in pairs):
            raise click.UsageError("--set takes OID=VALUE")
        payload = {"set": {oid.strip(): _value(v) for oid, _, v in pairs}}
    else:
        raise click.UsageError("give --set OID=VALUE or --payload-file")
    body: dict[str, Any] = {"executor": executor, "targets": list(targets), "payload": payload,
                            "estimated_downtime_s": downtime}  # fmt: skip
    for key, value in (("suggested_tier", tier), ("intent", intent), ("reason", reason)):
        if value is not None:
            body[key] = value
    if rollback_file is not None:
        body["rollback"] = json.loads(rollback_file.read_text())
    view = api.call("POST", "/proposals", params={"check": "true"} if check else None, json=body)
    if wait and not check:
        view = _wait(api, view["proposal_id"], timeout, shown=not as_json)
    if as_json:
        emit_json(view)
    elif check:
        _print_check(view)
    else:
        _show_proposal(view)
    if check and view.get("refused"):
        raise click.ClickException(f"refused: {view['refused']['code']}: {view['refused']['message']}")
    if wait and not check and view["status"] != "EXECUTED":
        # A script waits for the outcome: anything but the change in place (failed, rolled back, denied,
        # or not finished in time) is a failure.
        raise click.ClickException(
            f"{view['proposal_id']} is {view['status']}"
            + (f" ({view['reason']})" if view.get("reason") else "")
        )


def _wait(api: Api, proposal_id: str, timeout: float, *, shown: bool = True) -> Any:
    """Poll until the proposal is finished or ``timeout``; on a terminal a status line says where it is."""
    started = time.monotonic()
    deadline = started + timeout
    with render.status(f"waiting for {proposal_id}", enabled=shown) as line:
        while (view := api.call("GET", f"/proposals/{proposal_id}"))["status"] not in FINISHED:
            now = time.monotonic()
            if now > deadline:
                break
            line.update(
                f"waiting for {proposal_id}: {view['status']} [{now - started:.0f}s of {timeout:.0f}s]"
            )
            time.sleep(0.5)
    return view


def _print_check(view: dict[str, Any]) -> None:
    cls, radius = view["classification"], view["blast_radius"]
    click.echo(f"tier:        {cls['tier']} (rule {cls['rule'] or '-'}"
               + (f"; escalated: {', '.join(cls['escalated_by'])}" if cls["escalated_by"] else "") + ")")  # fmt: skip
    click.echo(
        f"approver:    {view['approver']}" + (" + an operator (four-eyes)" if view["human_approval"] else "")
    )
    click.echo(f"blast:       {radius['devices']} device(s), regions {', '.join(radius['regions']) or '-'}, "
               f"critical {', '.join(radius['critical']) or 'none'}")  # fmt: skip
    if view.get("refused"):
        click.echo(f"refused:     {view['refused']['code']}: {view['refused']['message']}")
    elif view.get("diff_error"):
        click.echo(
            f"unknown:     current values not read ({view['diff_error']['code']}: {view['diff_error']['message']})"
        )
    for device, changes in view["diff"].items():
        for c in changes:
            before = "?" if c["before"] is None else c["before"]
            click.echo(f"  {device}  {c['key']}: {before} -> {c['after']}")


def _show_proposal(view: dict[str, Any]) -> None:
    """A proposal as tables on a terminal, as the plain lines scripts parse elsewhere."""
    if render.stdout_is_terminal():
        _draw_proposal(view)
    else:
        _print_proposal(view)


def _draw_proposal(view: dict[str, Any]) -> None:
    parts: list[tuple[str, str | None]] = [(view["proposal_id"], "bold"), ("  ", None),
                                           (view["status"], render.STYLES.get(view["status"])),
                                           (f"  {view['category']}  by {view['proposed_by']}", None)]  # fmt: skip
    if view.get("approved_by"):
        parts.append((f"  approved by {view['approved_by']}", None))
    if view.get("reason"):
        parts.append((f"  ({view['reason']})", None))
    render.lines(parts)
    render.lines([("targets  ", "bold"), (", ".join(view["target_devices"]), None)])
    if view.get("execution_token_id"):
        spent = view.get("token_consumed_at")
        render.lines([("token    ", "bold"), (view["execution_token_id"], None),
                      (f"  consumed {spent}" if spent else "  not consumed", None)])  # fmt: skip
    results = view.get("device_results") or {}
    if results:
        rows = []
        for device, outcome in results.items():
            problems = [f"{label}: {outcome[key]['code']}: {outcome[key]['message']}"
                        for key, label in (("error", "error"), ("rollback_error", "rollback")) if outcome.get(key)]  # fmt: skip
            rows.append((device, outcome.get("status"), "; ".join(problems)))
        render.table(("DEVICE", "RESULT", "ERROR"), rows, terminal=True)
    events = view.get("audit", [])
    if events:
        render.table(("#", "TIME", "EVENT", "ACTOR"),
                     [(e["seq"], _when(e["timestamp"]), e["event_type"], e["actor"]) for e in events],
                     title="audit", right=(0,), terminal=True)  # fmt: skip


def _print_proposal(view: dict[str, Any]) -> None:
    click.echo(f"{view['proposal_id']}  {view['status']}  {view['category']}  by {view['proposed_by']}"
               + (f"  approved by {view['approved_by']}" if view.get("approved_by") else "")
               + (f"  ({view['reason']})" if view.get("reason") else ""))  # fmt: skip
    click.echo(f"  targets: {', '.join(view['target_devices'])}")
    if view.get("execution_token_id"):
        spent = view.get("token_consumed_at")
        click.echo(
            f"  token:   {view['execution_token_id']}  " + (f"consumed {spent}" if spent else "not consumed")
        )
    for device, outcome in (view.get("device_results") or {}).items():
        click.echo(f"  {device}  {outcome.get('status')}")
        for key, label in (("error", "error"), ("rollback_error", "rollback")):
            if outcome.get(key):
                click.echo(f"    {label}: {outcome[key]['code']}: {outcome[key]['message']}")
    for event in view.get("audit", []):
        click.echo(f"  #{event['seq']}  {event['timestamp']}  {event['event_type']}  {event['actor']}")


@change_group.command("show")
@click.argument("proposal_id")
@json_option
@click.pass_obj
def show(api: Api, proposal_id: str, as_json: bool) -> None:
    """A proposal with its audit trail."""
    view = api.call("GET", f"/proposals/{proposal_id}")
    emit_json(view) if as_json else _show_proposal(view)


def _when(stamp: str | None) -> str | None:
    """An ISO timestamp to the second, for a table: 2025-01-02 03:04:05."""
    return stamp[:19].replace("T", " ") if stamp else None


@change_group.command("list")
@click.option("--status", help="Only proposals in this state, e.g. PENDING.")
@json_option
@click.pass_obj
def list_(api: Api, status: str | None, as_json: bool) -> None:
    """Proposals, oldest first."""
    items: list[dict[str, Any]] = []
    offset: int | None = 0
    while offset is not None:
        page = api.call("GET", "/proposals", params={"status": status, "offset": offset, "limit": 1000} if status
                        else {"offset": offset, "limit": 1000})  # fmt: skip
        items += page["items"]
        offset = page["next_offset"]
    if as_json:
        emit_json(items)
        return
    if not items:
        click.echo("no proposals" + (f" in state {status}" if status else ""))
        return
    render.table(("PROPOSAL", "STATUS", "TIER", "PROPOSED BY", "DEVICES", "PROPOSED AT"),
                 [(v["proposal_id"], v["status"], v["category"], v["proposed_by"], len(v["target_devices"]),
                   _when(v.get("proposed_at"))) for v in items], right=(4,))  # fmt: skip


@change_group.command("approve")
@click.argument("proposal_id")
@click.option("--reason")
@json_option
@click.pass_obj
def approve(api: Api, proposal_id: str, reason: str | None, as_json: bool) -> None:
    """Approve a waiting change (not one you proposed)."""
    view = api.call("POST", f"/proposals/{proposal_id}/approve", json={"reason": reason})
    emit_json(view) if as_json else _show_proposal(view)


@change_group.command("deny")
@click.argument("proposal_id")
@click.option("--reason", required=True)
@json_option
@click.pass_obj
def deny(api: Api, proposal_id: str, reason: str, as_json: bool) -> None:
    """Deny a waiting change; an executed emergency change is undone."""
    view = api.call("POST", f"/proposals/{proposal_id}/deny", json={"reason": reason})
    emit_json(view) if as_json else _show_proposal(view)


@change_group.command("rollback")
@click.argument("proposal_id")
@click.option("--reason")
@json_option
@click.pass_obj
def rollback(api: Api, proposal_id: str, reason: str | None, as_json: bool) -> None:
    """Propose undoing an executed change (approved like the original)."""
    view = api.call("POST", f"/proposals/{proposal_id}/rollback", json={"reason": reason})
    emit_json(view) if as_json else _show_proposal(view)
