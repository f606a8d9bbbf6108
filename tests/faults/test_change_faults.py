"""A Local controller killed in the middle of a change (``PDSNO_FAULT``, runtime/pdsno/faults.py) settles
it when it starts again: nothing half-done on the devices (read back with snmpget), the same end state
on every tier, the token refused when replayed, every audit chain intact.

The hierarchy of tests/faults/conftest.py; each test restarts lc-a1 with a fault point, proposes a LOW
change through the GC, waits for the LC to end itself there, and starts it again without the fault.
"""

from __future__ import annotations

from typing import Any

from pdsno.changes.proposals import to_wire
from pdsno.controller.changes_common import token_to_wire
from pdsno.faults import FaultPoint
from pdsno.messaging.envelope import MessageType
from pdsno.messaging.messages import ExecutionInstruction
from tests.faults.faulty import kill_at
from tests.runtime.changes_api import call, in_nib, propose, snmp_value, wait_status
from tests.runtime.hierarchy import (
    PARENT,
    World,
    operator_token,
    post_from_parent,
    seal_from_parent,
    wait_for,
)

LC = "lc-a1"
ENDED = ("EXECUTED", "FAILED", "ROLLED_BACK", "DEGRADED")


def crash_during(world: World, operator: str, point: FaultPoint, names: list[str], value: str) -> str:
    """Propose ``value`` for sysLocation of ``names`` while the LC dies at ``point``; start it again. The
    proposal's id."""
    made = kill_at(world, LC, point, lambda: propose(world, operator, names, value))
    assert made.status_code == 201, made.text
    world.start(LC)
    return str(made.json()["proposal_id"])


def assert_settled(world: World, proposal_id: str, status: str) -> dict[str, Any]:
    """The LC's copy, its RC's and the GC's all end in ``status``; the LC audited its recovery, and its
    spent token is refused when the RC's instruction is sent again."""
    lc = in_nib(world, LC, lambda s: s.get_proposal(proposal_id))
    assert lc.status.value == status, lc
    rc = wait_for(lambda: (p := in_nib(world, PARENT[LC], lambda s: s.get_proposal(proposal_id)))
                  and p.status.value in ENDED and p, 30, "the RC's copy")  # fmt: skip
    assert rc.status.value == status, rc
    trail = in_nib(world, LC, lambda s: s.last_events(500))
    assert any(e.event_type == "CHANGE_RECOVERED" and e.subject == proposal_id for e in trail)

    token = in_nib(world, LC, lambda s: s.get_token(lc.execution_token_id))
    assert token.consumed_at is not None
    rc_id = world.procs[PARENT[LC]].controller_id
    issuer = in_nib(world, LC, lambda s: s.get_controller(rc_id)).public_key
    instruction = ExecutionInstruction(proposal_id=proposal_id, proposal=to_wire(lc), issuer_public_key=issuer,
                                       execution_token=token_to_wire(token))  # fmt: skip
    again = post_from_parent(
        world, LC, seal_from_parent(world, LC, MessageType.EXECUTION_INSTRUCTION, instruction)
    )
    assert again.json().get("code") == "TOKEN_ALREADY_CONSUMED", again.text
    return rc  # type: ignore[no-any-return]


def test_killed_after_the_token_is_spent_nothing_is_written_and_the_change_fails(
    world: World, operator: str
) -> None:
    before = snmp_value(world, "acc-sw-a1-1")
    proposal_id = crash_during(world, operator, FaultPoint.TOKEN_CONSUMED, ["acc-sw-a1-1"], "never written")
    view = wait_status(world, operator, proposal_id, *ENDED, timeout=60)
    assert view["status"] == "FAILED" and view["reason"] == "CHANGE_INTERRUPTED", view
    assert snmp_value(world, "acc-sw-a1-1") == before
    assert_settled(world, proposal_id, "FAILED")


def test_killed_after_the_only_device_is_written_the_change_is_verified_and_executed(
    world: World, operator: str
) -> None:
    proposal_id = crash_during(
        world, operator, FaultPoint.DEVICE_COMMITTED, ["acc-sw-a1-2"], "written, then died"
    )
    view = wait_status(world, operator, proposal_id, *ENDED, timeout=60)
    assert view["status"] == "EXECUTED", view
    assert snmp_value(world, "acc-sw-a1-2") == "written, then died"
    assert_settled(world, proposal_id, "EXECUTED")


def test_killed_after_the_first_of_two_devices_is_written_both_are_put_back(
    world: World, operator: str
) -> None:
    names = ["acc-sw-a1-3", "acc-sw-a1-4"]
    before = [snmp_value(world, n) for n in names]
    proposal_id = crash_during(world, operator, FaultPoint.DEVICE_COMMITTED, names, "half a change")
    view = wait_status(world, operator, proposal_id, *ENDED, timeout=60)
    assert view["status"] == "ROLLED_BACK" and view["reason"] == "CHANGE_INTERRUPTED", view
    assert [snmp_value(world, n) for n in names] == before
    assert_settled(world, proposal_id, "ROLLED_BACK")


SYS_CONTACT = "1.3.6.1.2.1.1.4.0"


def test_an_rc_killed_after_approving_sends_the_instruction_once_it_is_back(
    world: World, operator: str
) -> None:
    rc = PARENT[LC]
    approver = operator_token(world, "bob", "approver")
    made = propose(world, operator, ["srv-a1-web"], "approved, then the RC died", oid=SYS_CONTACT,
                   suggested_tier="MEDIUM")  # fmt: skip
    assert made.status_code == 201 and made.json()["status"] == "PENDING", made.text
    proposal_id = made.json()["proposal_id"]
    before = snmp_value(world, "srv-a1-web", SYS_CONTACT)
    kill_at(world, rc, FaultPoint.DECISION_RECORDED,
            lambda: call(world, approver, "POST", f"/api/v1/proposals/{proposal_id}/approve", json={}))  # fmt: skip
    assert in_nib(world, rc, lambda s: s.get_proposal(proposal_id)).status.value == "APPROVED"
    assert snmp_value(world, "srv-a1-web", SYS_CONTACT) == before, "the LC was never told"
    world.start(rc)
    view = wait_status(world, operator, proposal_id, *ENDED, timeout=90)
    assert view["status"] == "EXECUTED", view
    assert snmp_value(world, "srv-a1-web", SYS_CONTACT) == "approved, then the RC died"
    executed = [e for e in in_nib(world, LC, lambda s: s.last_events(2000))
                if e.subject == proposal_id and e.event_type == "CONFIG_EXECUTED"]  # fmt: skip
    assert len(executed) == 1, executed


def test_an_rc_killed_while_deciding_a_low_change_for_the_gc_carries_it_out_when_it_is_back(
    world: World, operator: str
) -> None:
    rc = PARENT[LC]
    made = kill_at(world, rc, FaultPoint.DECISION_RECORDED,
                   lambda: propose(world, operator, ["srv-a1-mon"], "decided, then the RC died"))  # fmt: skip
    # The RC went down holding the GC's request: the GC cannot tell whether it decided, so it waits.
    assert made.status_code == 201, made.text
    assert made.json()["status"] == "PENDING" and made.json()["reason"] == "PEER_NO_ANSWER", made.json()
    proposal_id = made.json()["proposal_id"]
    world.start(rc)
    view = wait_status(world, operator, proposal_id, *ENDED, timeout=90)
    assert view["status"] == "EXECUTED", view
    assert snmp_value(world, "srv-a1-mon") == "decided, then the RC died"
