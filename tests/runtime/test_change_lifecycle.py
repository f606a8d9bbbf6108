"""The proposal life cycle on a real NIB (both backends): legal moves with their events, illegal ones
refused, four-eyes, and the first of two concurrent decisions winning."""

from __future__ import annotations

import asyncio

import pytest

from pdsno.changes.lifecycle import move
from pdsno.errors import PdsnoError, ReasonCode
from pdsno.nib.models import ConfigProposal, ConfigStatus, Sensitivity
from pdsno.nib.sql import SqlNIBStore

LC, RC, GC = "local_cntl_zone-a_1", "regional_cntl_zone-a_1", "global_cntl_1"
S = ConfigStatus


async def proposed(nib: SqlNIBStore, category: Sensitivity, proposed_by: str = LC) -> ConfigProposal:
    change = ConfigProposal(proposal_id=f"p-{category.value}-{proposed_by}", config_payload={"n": 1}, category=category,
                            origin=LC, proposed_by=proposed_by, target_devices=["nib-dev-a"])  # fmt: skip
    return (await nib.create_proposal(change)).unwrap()


async def test_a_medium_change_runs_its_whole_course(nib: SqlNIBStore) -> None:
    change = await proposed(nib, Sensitivity.MEDIUM)
    for to, actor in ((S.APPROVED, RC), (S.EXECUTING, LC), (S.EXECUTED, LC)):
        change = await move(nib, change, to, actor=actor)
    assert change.status is S.EXECUTED and change.approved_by == RC and change.executed_at is not None
    trail = [(e.event_type, e.actor) for e in await nib.events_about(change.proposal_id)]
    assert trail == [("CONFIG_APPROVED", RC), ("CONFIG_EXECUTING", LC), ("CONFIG_EXECUTED", LC)]


async def test_moves_not_in_the_diagram_are_refused(nib: SqlNIBStore) -> None:
    medium = await proposed(nib, Sensitivity.MEDIUM)
    for to in (S.EXECUTING, S.EXECUTED, S.ROLLED_BACK):
        with pytest.raises(PdsnoError) as refused:
            await move(nib, medium, to, actor=RC)
        assert refused.value.code is ReasonCode.INVALID_TRANSITION
    denied = await move(nib, medium, S.DENIED, actor=RC, reason="GC_TIMEOUT")
    with pytest.raises(PdsnoError):
        await move(nib, denied, S.APPROVED, actor=RC)
    assert (await nib.get_proposal(medium.proposal_id)).status is S.DENIED  # type: ignore[union-attr]


async def test_low_and_emergency_changes_may_run_without_approval(nib: SqlNIBStore) -> None:
    low = await move(nib, await proposed(nib, Sensitivity.LOW), S.EXECUTING, actor=LC)
    assert low.status is S.EXECUTING
    emergency = await proposed(nib, Sensitivity.EMERGENCY)
    for to in (S.EXECUTING, S.EXECUTED, S.ROLLING_BACK, S.ROLLED_BACK):  # denied after the fact: undone
        emergency = await move(nib, emergency, to, actor=LC)
    high = await proposed(nib, Sensitivity.HIGH)
    with pytest.raises(PdsnoError):
        await move(nib, high, S.EXECUTING, actor=LC)


async def test_a_proposer_cannot_approve_their_own_medium_or_high_change(nib: SqlNIBStore) -> None:
    for category in (Sensitivity.MEDIUM, Sensitivity.HIGH):
        own = await proposed(nib, category, proposed_by="alice")
        with pytest.raises(PdsnoError) as refused:
            await move(nib, own, S.APPROVED, actor="alice")
        assert refused.value.code is ReasonCode.FOUR_EYES_VIOLATION
        assert (await move(nib, own, S.APPROVED, actor="bob")).approved_by == "bob"
    approvals = [e.actor for e in await nib.read_events() if e.event_type == "CONFIG_APPROVED"]
    assert approvals == ["bob", "bob"], "refused approvals leave no event"


async def test_of_two_concurrent_decisions_the_first_wins(nib: SqlNIBStore) -> None:
    change = await proposed(nib, Sensitivity.MEDIUM)
    outcomes = await asyncio.gather(
        move(nib, change, S.APPROVED, actor=RC), move(nib, change, S.DENIED, actor=GC), return_exceptions=True
    )
    won = [o for o in outcomes if isinstance(o, ConfigProposal)]
    lost = [o for o in outcomes if isinstance(o, PdsnoError)]
    assert len(won) == 1 and len(lost) == 1 and lost[0].code is ReasonCode.CONFLICT
    stored = await nib.get_proposal(change.proposal_id)
    assert stored is not None and stored.status is won[0].status
    assert len(await nib.events_about(change.proposal_id)) == 1, "the loser leaves no event"
