"""Messages up the tree survive their sender's death and their receiver's absence: what a Local controller
owes its RC waits in its durable outbox (``<data_dir>/mqtt-outbox/upward.sqlite3``) until the RC has
stored it, and is stored there once.

The hierarchy of tests/faults/conftest.py.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from pdsno.faults import FaultPoint
from tests.faults.faulty import kill_at
from tests.runtime.changes_api import in_nib, propose, snmp_value, status_at_gc, wait_status
from tests.runtime.hierarchy import PARENT, World, run_cycle, wait_for

LC = "lc-a1"
RC = PARENT[LC]


def owed(world: World, host: str) -> dict[str, str]:
    """What ``host`` still owes its parent: {key: message type}, read from its outbox file."""
    path = world.procs[host].data_dir / "mqtt-outbox" / "upward.sqlite3"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return dict(db.execute("SELECT key, message_type FROM pending"))


def reports_stored(world: World, host: str) -> list[tuple[Any, Any]]:
    """(report id, chunk) of every report chunk ``host`` has stored, one entry per time it was stored."""
    events = in_nib(world, host, lambda s: s.last_events(5000))
    return [
        (e.payload["report_id"], e.payload["chunk"])
        for e in events
        if e.event_type == "DISCOVERY_REPORT_RECEIVED"
    ]


def test_killed_in_the_middle_of_an_outbox_flush_the_report_is_sent_after_the_restart(world: World) -> None:
    # The LC's first discovery cycle after a start makes a report; sending it is where it dies.
    kill_at(world, LC, FaultPoint.OUTBOX_FLUSH, lambda: None)
    left = [k for k, kind in owed(world, LC).items() if kind == "DISCOVERY_REPORT"]
    assert left, "the report the LC died sending is still in its outbox"
    world.start(LC)
    wait_for(lambda: not set(left) & set(owed(world, LC)), 60, "the outbox to be flushed")
    stored = reports_stored(world, RC)
    for key in left:
        report_id, chunk = key.rsplit("/", 1)
        assert stored.count((report_id, int(chunk))) == 1, (key, stored)


def test_a_result_made_while_the_rc_is_down_waits_and_arrives_when_it_is_back(
    world: World, operator: str
) -> None:
    made = kill_at(world, LC, FaultPoint.DEVICE_COMMITTED,
                   lambda: propose(world, operator, ["srv-a1-dns"], "told once the RC is back"))  # fmt: skip
    assert made.status_code == 201, made.text
    proposal_id = made.json()["proposal_id"]
    world.stop(RC)
    try:
        world.start(LC)  # settles the change: the device holds it, so EXECUTED
        key = f"{proposal_id}:EXECUTED/0"
        wait_for(lambda: key in owed(world, LC), 60, "the LC's result in its outbox")
        assert status_at_gc(world, operator, proposal_id)["status"] not in ("EXECUTED", "FAILED"), (
            "not told yet"
        )
    finally:
        world.start(RC)
    view = wait_status(
        world, operator, proposal_id, "EXECUTED", "FAILED", "ROLLED_BACK", "DEGRADED", timeout=90
    )
    assert view["status"] == "EXECUTED", view
    assert snmp_value(world, "srv-a1-dns") == "told once the RC is back"
    wait_for(lambda: key not in owed(world, LC), 30, "the acknowledged result to leave the outbox")
    assert in_nib(world, RC, lambda s: s.get_proposal(proposal_id)).status.value == "EXECUTED"


def test_summaries_made_while_the_rc_is_cut_off_from_the_gc_arrive_once_the_link_is_back(
    world: World,
) -> None:
    def at_gc() -> list[Any]:
        events = in_nib(world, "gc-1", lambda s: s.last_events(5000))
        return [e.payload["summary_id"] for e in events if e.event_type == "GLOBAL_DISCOVERY_CYCLE_UPDATED"]

    def summaries_owed() -> set[str]:
        return {k for k, kind in owed(world, RC).items() if kind == "DISCOVERY_SUMMARY"}

    cut = ["ip", "route", "add", "blackhole", f"{world.lab.host('gc-1').mgmt_ip}/32"]
    world.lab.exec_in(RC, cut)  # the RC's namespace: its packets to the GC go nowhere
    try:
        for _cycle in range(2):
            run_cycle(world, LC)
        sent = wait_for(lambda: len(s := summaries_owed()) >= 2 and s, 60, "two summaries owed to the GC")
    finally:
        world.lab.exec_in(RC, ["ip", "route", "del", *cut[3:]])
    wait_for(lambda: not sent & summaries_owed(), 90, "the summaries to reach the GC")
    stored = at_gc()
    assert all(stored.count(key.rsplit("/", 1)[0]) == 1 for key in sent), (sent, stored)
