"""The life of a proposal (decisions C6; reference-design §5 "Timeouts and states").

Only the moves drawn here are possible; each is a version-guarded write with its event, so when two
controllers or operators decide at once, the first writer wins and the other learns it lost. Whoever
proposed a MEDIUM or HIGH change cannot approve it (decisions §5, four-eyes).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pdsno.canonical import utcnow
from pdsno.errors import PdsnoError, ReasonCode
from pdsno.nib.models import ConfigProposal, ConfigStatus, Decision, EventDraft, Sensitivity
from pdsno.nib.store import NIBStore

S = ConfigStatus
MOVES: dict[ConfigStatus, frozenset[ConfigStatus]] = {
    S.PENDING: frozenset({S.QUEUED, S.APPROVED, S.DENIED, S.EXPIRED, S.EXECUTING}),
    S.QUEUED: frozenset({S.PENDING, S.DENIED, S.EXPIRED}),
    S.APPROVED: frozenset({S.EXECUTING, S.EXPIRED, S.DENIED}),
    S.EXECUTING: frozenset({S.EXECUTED, S.FAILED, S.ROLLING_BACK}),
    S.EXECUTED: frozenset({S.ROLLING_BACK}),
    S.FAILED: frozenset({S.ROLLING_BACK}),
    S.ROLLING_BACK: frozenset({S.ROLLED_BACK, S.DEGRADED}),
    S.DENIED: frozenset(),
    S.EXPIRED: frozenset(),
    S.ROLLED_BACK: frozenset(),
    S.DEGRADED: frozenset(),
}
# Straight from PENDING to EXECUTING: a LOW change the LC may run itself, or an EMERGENCY one.
_WITHOUT_APPROVAL = frozenset({Sensitivity.LOW, Sensitivity.EMERGENCY})
# Undoing a change that completed: an emergency change denied after the fact.
_UNDO_AFTER_SUCCESS = frozenset({Sensitivity.EMERGENCY})
_FOUR_EYES = frozenset({Sensitivity.MEDIUM, Sensitivity.HIGH})


def check_move(proposal: ConfigProposal, to: ConfigStatus, actor: str) -> None:
    at = proposal.status
    allowed = to in MOVES[at]
    if at is S.PENDING and to is S.EXECUTING:
        allowed = proposal.category in _WITHOUT_APPROVAL
    if at is S.EXECUTED and to is S.ROLLING_BACK:
        allowed = proposal.category in _UNDO_AFTER_SUCCESS
    if not allowed:
        raise PdsnoError(
            f"a {proposal.category.value} proposal cannot go from {at.value} to {to.value}",
            code=ReasonCode.INVALID_TRANSITION,
        )
    if to is S.APPROVED and proposal.category in _FOUR_EYES and actor == proposal.proposed_by:
        raise PdsnoError(
            f"{actor} proposed this {proposal.category.value} change and cannot approve it",
            code=ReasonCode.FOUR_EYES_VIOLATION,
        )


async def move(
    store: NIBStore,
    proposal: ConfigProposal,
    to: ConfigStatus,
    *,
    actor: str,
    reason: str | None = None,
    fields: Mapping[str, Any] | None = None,
    **details: Any,
) -> ConfigProposal:
    """Write the move (guarded by the version read) with its ``CONFIG_<STATUS>`` event; refusals change nothing.
    ``fields`` are other columns of the proposal written with it; ``details`` go into the event."""
    check_move(proposal, to, actor)
    now = utcnow()
    changes: dict[str, Any] = {**(fields or {}), "status": to, "reason": reason or proposal.reason}
    if to is S.APPROVED:
        changes.update(approved_by=actor, approved_at=now)
    if to is S.EXECUTED:
        changes["executed_at"] = now
    decision = {S.APPROVED: Decision.APPROVED, S.DENIED: Decision.DENIED}.get(to, Decision.NOT_APPLICABLE)
    written = await store.update_proposal(
        proposal.next_version(**changes),
        events=[EventDraft(event_type=f"CONFIG_{to.value}", actor=actor, subject=proposal.proposal_id,
                           decision=decision, notes=reason, payload={"from": proposal.status.value, **details})],
    )  # fmt: skip
    if not written.success:
        raise PdsnoError(written.message, code=written.error or ReasonCode.CONFLICT)
    return written.unwrap()


def path_to(proposal: ConfigProposal, to: ConfigStatus) -> list[ConfigStatus]:
    """The shortest legal sequence of moves from the proposal's status to ``to`` (empty if already there).

    A controller that mirrors a proposal decided elsewhere (the GC following its RC, the RC following
    its LC) learns only the outcome; it records every step in between, so its copy tells the same story.
    """
    frontier: list[list[ConfigStatus]] = [[proposal.status]]
    seen = {proposal.status}
    while frontier:
        path = frontier.pop(0)
        if path[-1] is to:
            return path[1:]
        for nxt in sorted(MOVES[path[-1]], key=lambda s: s.value):
            probe = proposal.model_copy(update={"status": path[-1]})
            try:
                check_move(probe, nxt, actor="")
            except PdsnoError:
                continue
            if nxt not in seen:
                seen.add(nxt)
                frontier.append([*path, nxt])
    raise PdsnoError(
        f"a {proposal.category.value} proposal cannot reach {to.value} from {proposal.status.value}",
        code=ReasonCode.INVALID_TRANSITION,
    )


async def follow(
    store: NIBStore,
    proposal: ConfigProposal,
    to: ConfigStatus,
    *,
    actor: str,
    reason: str | None = None,
    fields: Mapping[str, Any] | None = None,
    **details: Any,
) -> ConfigProposal:
    """Move ``proposal`` to ``to`` through every step in between, one event each; ``fields`` are written
    with the last step."""
    path = path_to(proposal, to)
    for step in path:
        last = step is path[-1]
        proposal = await move(store, proposal, step, actor=actor, reason=reason,
                              fields=fields if last else None, **details)  # fmt: skip
    return proposal
