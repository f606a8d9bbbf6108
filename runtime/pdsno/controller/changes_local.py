"""The LC's part in a change (reference-design §5 "LC: execute", "Rollback", "Emergency").

An ``EXECUTION_INSTRUCTION`` arrives from the RC with the proposal and the approver's token. Before a
device is touched: the token is checked against the proposal, its hash and its devices, and spent in
this NIB (a second redemption is refused); the targets must still be active here and not left DEGRADED
(``DEVICE_STATE_CHANGED``, ``DEVICE_DEGRADED``). The RC learns of a refusal in the answer. The change
then runs in the background (plan, commit rate-limited, verify; any device failing rolls back all) and
the ``EXECUTION_RESULT`` goes up.

An EMERGENCY change comes without a token: within ``emergency_rate_limit_per_hour`` it runs at once with
an ``EMERGENCY_EXECUTION`` event holding the full payload and the limiter's state (over the limit the RC
is told ``EMERGENCY_RATE_LIMITED`` and re-files it as HIGH). The RC and the GC must acknowledge it within
``emergency_ack_timeout_s``; a deny, or silence, undoes it.

Every device's rollback payload is in the NIB before the first device is written, so a change this LC
was carrying when it died is settled when it starts again (``CHANGE_RECOVERED``): one whose token was
spent but whose plan was not kept wrote nothing and ends FAILED (``CHANGE_INTERRUPTED``); one cut off
while writing is read back from its devices and ends EXECUTED if every device holds it, else is put back
(ROLLED_BACK, or DEGRADED); an undo cut off is done again. The spent token stays spent.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any

from pdsno.canonical import utcnow
from pdsno.changes.apply import (
    ChangeOutcome,
    ChangeStatus,
    apply_change,
    plan_change,
    recover_change,
    undo_change,
)
from pdsno.changes.executors.base import Executor
from pdsno.changes.lifecycle import follow, move
from pdsno.changes.proposals import check_targets, from_wire, rollback_target
from pdsno.changes.tokens import redeem
from pdsno.controller.changes_common import (
    RESULT_STATUS,
    Background,
    mark_degraded,
    result_id,
    result_moves,
    token_from_wire,
)
from pdsno.controller.policy_duty import PolicyHolder
from pdsno.controller.uplink import Uplink
from pdsno.controller.upward import Upward, ack_key
from pdsno.errors import PdsnoError, ReasonCode
from pdsno.faults import FaultPoint, fault_point
from pdsno.messaging import messages as wire
from pdsno.messaging.envelope import Envelope, MessageType
from pdsno.nib.models import ConfigProposal, ConfigStatus, Decision, Device, EventDraft, Sensitivity
from pdsno.nib.store import NIBStore
from pdsno.security.keys import public_key_from_b64

log = logging.getLogger(__name__)

S = ConfigStatus
HOUR = timedelta(hours=1)
EMERGENCY_EVENT = "EMERGENCY_EXECUTION"


class LocalChanges:
    def __init__(
        self,
        store: NIBStore,
        *,
        me: str,
        uplink: Uplink,
        upward: Upward,
        policy: PolicyHolder,
        executors: Callable[[str], Executor],
    ) -> None:
        self._store = store
        self._me = me
        self._uplink = uplink
        self._upward = upward
        self._policy = policy
        self._executors = executors
        self._emergencies: deque[Any] = deque()
        self._acks: dict[str, set[str]] = {}
        self._tasks = Background(log)

    async def start(self) -> None:
        """The emergency limiter remembers the last hour across restarts (from the audit log); changes cut
        off by the last stop are settled in the background."""
        since = utcnow() - HOUR
        for event in await self._store.last_events(1000):
            if event.event_type == EMERGENCY_EVENT and event.timestamp > since:
                self._emergencies.append(event.timestamp)
        for status in (S.APPROVED, S.EXECUTING, S.ROLLING_BACK):
            for proposal in await self._store.list_proposals(status=status):
                if proposal.execution_token_id is not None or status is not S.APPROVED:
                    self._spawn(self._recover(proposal))

    # --- instructions -----------------------------------------------------------------------

    async def on_instruction(self, envelope: Envelope) -> Envelope | None:
        instruction = envelope.payload_as(wire.ExecutionInstruction)
        wanted = from_wire(instruction.proposal)
        executor = self._executors(str(wanted.config_payload.get("executor")))
        if rollback_target(wanted.config_payload) is None:
            executor.validate(wanted.config_payload)
        if instruction.plan_only:
            return await self._plan(envelope.sender_id, wanted, executor)
        if instruction.execution_token is None:
            if wanted.category is not Sensitivity.EMERGENCY:
                raise PdsnoError(
                    "only an emergency change runs without a token", code=ReasonCode.INVALID_TOKEN
                )
            proposal = await self._receive(wanted, sender=envelope.sender_id)
            devices = await self._targets(proposal)
            proposal = await self._start_emergency(proposal)
        else:
            # Spent first, whatever follows: a replayed instruction finds it consumed.
            token = token_from_wire(instruction.execution_token)
            if instruction.issuer_public_key is None:
                raise PdsnoError(
                    "the instruction does not name the token's issuer key", code=ReasonCode.INVALID_TOKEN
                )
            proposal = await self._receive(wanted, sender=envelope.sender_id, replay_ok=True)
            spent = await redeem(self._store, token, executor=self._me, issuer_key=public_key_from_b64(instruction.issuer_public_key),
                                 proposal=wanted, devices=wanted.target_devices)  # fmt: skip
            proposal = await move(self._store, proposal, S.APPROVED, actor=token.approved_by, token_id=token.token_id,
                                  fields={"execution_token_id": token.token_id, "token_consumed_at": spent.consumed_at})  # fmt: skip
            try:
                devices = await self._targets(proposal)
            except PdsnoError as changed:
                await move(self._store, proposal, S.DENIED, actor=self._me, reason=changed.code.value)
                raise
            proposal = await move(self._store, proposal, S.EXECUTING, actor=self._me)
        rate = token_rate(instruction) or self._policy.content.max_devices_per_minute
        self._spawn(self._execute(proposal, executor, devices, rate))
        return None

    async def _plan(self, asker: str, wanted: ConfigProposal, executor: Executor) -> Envelope:
        """What the change would do to each device (``--check``): read, never written, nothing stored."""
        devices = await self._targets(wanted)
        plans: dict[str, Any] = {}
        failure: dict[str, Any] | None = None
        if rollback_target(wanted.config_payload) is None:
            # Every device's answer, not only the first refusal: the operator sees all that will not go.
            planned = await plan_change(executor, devices, wanted.config_payload)
            plans = {d: r.as_dict() for d, r in planned.results.items()}
            failure = planned.failure
        result = self._result(wanted, "PLANNED", plans, failure)
        return await self._uplink.peers.envelope(asker, MessageType.EXECUTION_RESULT, result)

    async def _receive(
        self, proposal: ConfigProposal, *, sender: str, replay_ok: bool = False
    ) -> ConfigProposal:
        """This LC's copy of the proposal (made now if new). A copy already past PENDING is refused unless
        the token's redemption will tell the replay apart (``replay_ok``)."""
        known = await self._store.get_proposal(proposal.proposal_id)
        if known is not None:
            if known.status is not S.PENDING and not replay_ok:
                raise PdsnoError(f"proposal {proposal.proposal_id} is already {known.status.value} here",
                                 code=ReasonCode.INVALID_TRANSITION)  # fmt: skip
            return known
        created = await self._store.create_proposal(
            proposal,
            events=[EventDraft(event_type="CONFIG_RECEIVED", actor=self._me, subject=proposal.proposal_id,
                               payload={"from": sender, "category": proposal.category.value})],
        )  # fmt: skip
        return created.unwrap()

    async def _targets(self, proposal: ConfigProposal) -> list[Device]:
        """The targets as this LC sees them now; anything else than the approver saw refuses the change."""
        try:
            return check_targets(
                proposal, {d: await self._store.get_device(d) for d in proposal.target_devices}
            )
        except PdsnoError as changed:
            if changed.code is ReasonCode.DEVICE_DEGRADED:
                raise
            raise PdsnoError(changed.message, code=ReasonCode.DEVICE_STATE_CHANGED) from None

    async def _start_emergency(self, proposal: ConfigProposal) -> ConfigProposal:
        limit = self._policy.content.emergency_rate_limit_per_hour
        now = utcnow()
        while self._emergencies and now - self._emergencies[0] > HOUR:
            self._emergencies.popleft()
        if len(self._emergencies) >= limit:
            raise PdsnoError(f"{len(self._emergencies)} emergency changes in the last hour (limit {limit})",
                             code=ReasonCode.EMERGENCY_RATE_LIMITED)  # fmt: skip
        self._emergencies.append(now)
        await self._store.append_events([EventDraft(
            event_type=EMERGENCY_EVENT, actor=self._me, subject=proposal.proposal_id, decision=Decision.APPROVED,
            payload={"config_payload": proposal.config_payload, "target_devices": proposal.target_devices,
                     "proposed_by": proposal.proposed_by,
                     "limiter": {"used_last_hour": len(self._emergencies), "limit_per_hour": limit}})])  # fmt: skip
        self._acks[proposal.proposal_id] = set()
        return await move(self._store, proposal, S.EXECUTING, actor=self._me)

    # --- running ----------------------------------------------------------------------------

    async def _execute(self, proposal: ConfigProposal, executor: Executor, devices: list[Device],
                       rate: int | None) -> None:  # fmt: skip
        async def keep_plan(rollbacks: dict[str, dict[str, Any]]) -> None:
            nonlocal proposal
            proposal = await self._keep_rollbacks(proposal, rollbacks)

        fault_point(FaultPoint.TOKEN_CONSUMED)
        try:
            original = rollback_target(proposal.config_payload)
            if original is None:
                outcome = await apply_change(executor, devices, proposal.config_payload,
                                             max_devices_per_minute=rate, keep_plan=keep_plan)  # fmt: skip
            else:
                outcome = await self._undo_original(original, executor, devices)
        except PdsnoError as exc:
            await self._fail(proposal, exc.code, exc.message)
            return
        if original is not None or outcome.status is ChangeStatus.FAILED:
            proposal = await self._keep_rollbacks(proposal, outcome.rollback_payloads)
        await self._record(proposal, outcome)
        if outcome.status == "EXECUTED" and proposal.category is Sensitivity.EMERGENCY:
            self._spawn(self._await_acks(proposal.proposal_id))

    async def _keep_rollbacks(
        self, proposal: ConfigProposal, rollbacks: dict[str, dict[str, Any]]
    ) -> ConfigProposal:
        kept = {**(proposal.rollback_payload or {}), "devices": rollbacks}
        return (await self._store.update_proposal(proposal.next_version(rollback_payload=kept))).unwrap()

    async def _fail(self, proposal: ConfigProposal, code: ReasonCode, message: str) -> None:
        failed = self._result(proposal, "FAILED", {}, {"code": code.value, "message": message})
        await follow(self._store, proposal, S.FAILED, actor=self._me, **result_moves(failed))
        await self._report(failed)

    async def _recover(self, proposal: ConfigProposal) -> None:
        """Settle a change the last stop cut off (module docstring)."""
        log.warning("settling a change interrupted by the last stop",
                    extra={"proposal_id": proposal.proposal_id, "status": proposal.status.value})  # fmt: skip
        await self._store.append_events([EventDraft(
            event_type="CHANGE_RECOVERED", actor=self._me, subject=proposal.proposal_id,
            payload={"status": proposal.status.value})])  # fmt: skip
        executor = self._executors(str(proposal.config_payload.get("executor")))
        devices = [d for d in [await self._store.get_device(i) for i in proposal.target_devices] if d]
        stored = (proposal.rollback_payload or {}).get("devices")
        if proposal.status is S.ROLLING_BACK:
            await self._record(proposal, await undo_change(executor, devices, stored or {}))
        elif rollback_target(proposal.config_payload) is not None:
            await self._execute(proposal, executor, devices, rate=None)  # undoing again is harmless
        elif proposal.status is S.APPROVED or stored is None:
            await self._fail(proposal, ReasonCode.CHANGE_INTERRUPTED,
                             "the controller stopped before any device was written; nothing was changed")  # fmt: skip
        else:
            await self._record(
                proposal, await recover_change(executor, devices, proposal.config_payload, stored)
            )

    async def _undo_original(
        self, original_id: str, executor: Executor, devices: list[Device]
    ) -> ChangeOutcome:
        """A rollback change: put back what the original's plan read. Undone is what it was asked to do."""
        original = await self._store.get_proposal(original_id)
        if original is None or original.status is not S.EXECUTED:
            raise PdsnoError(
                f"{original_id} is not an executed change here", code=ReasonCode.INVALID_TRANSITION
            )
        outcome = await undo_change(executor, devices, (original.rollback_payload or {}).get("devices", {}))
        if outcome.status is ChangeStatus.ROLLED_BACK:
            outcome.status = ChangeStatus.EXECUTED
        return outcome

    async def _record(self, proposal: ConfigProposal, outcome: ChangeOutcome) -> None:
        result = self._result(proposal, str(outcome.status), outcome.device_results(), outcome.error)
        await follow(
            self._store, proposal, RESULT_STATUS[result.status], actor=self._me, **result_moves(result)
        )
        await mark_degraded(self._store, outcome.degraded_devices, actor=self._me)
        await self._report(result)

    def _result(self, proposal: ConfigProposal, status: str, results: dict[str, Any],
                failure: dict[str, Any] | None) -> wire.ExecutionResult:  # fmt: skip
        """The ``EXECUTION_RESULT`` of ``proposal``; ``failure`` is the ``{code, message}`` that decided it."""
        spent = None
        if proposal.execution_token_id is not None and proposal.token_consumed_at is not None:
            spent = wire.TokenSpent(token_id=proposal.execution_token_id, consumed_by=self._me,
                                    consumed_at=proposal.token_consumed_at)  # fmt: skip
        return wire.ExecutionResult(proposal_id=proposal.proposal_id, executor=self._me, status=status,
                                    device_results=results, timestamp=utcnow(), token=spent,
                                    reason=failure["code"] if failure else None,
                                    message=failure["message"] if failure else None)  # fmt: skip

    async def _report(self, result: wire.ExecutionResult) -> None:
        """Up through the durable outbox: kept until the RC has stored it, across restarts."""
        await self._upward.send(MessageType.EXECUTION_RESULT, result, ack_key(result_id(result)))

    # --- emergency acknowledgements ------------------------------------------------------------

    async def on_approval(self, envelope: Envelope) -> None:
        """An acknowledgement (APPROVE) or a retroactive deny of an emergency change, relayed by the RC."""
        answer = envelope.payload_as(wire.ApprovalResponse)
        proposal = await self._store.get_proposal(answer.proposal_id)
        if proposal is None or proposal.category is not Sensitivity.EMERGENCY:
            raise PdsnoError(f"no emergency change {answer.proposal_id} here", code=ReasonCode.NOT_FOUND)
        await self._store.append_events([EventDraft(
            event_type="EMERGENCY_ACKNOWLEDGED" if answer.decision == "APPROVE" else "EMERGENCY_DENIED",
            actor=answer.responder, subject=proposal.proposal_id,
            decision=Decision.APPROVED if answer.decision == "APPROVE" else Decision.DENIED, notes=answer.reason)])  # fmt: skip
        if answer.decision == "APPROVE":
            self._acks.setdefault(proposal.proposal_id, set()).add(answer.responder)
        elif answer.decision == "DENY":
            self._acks.pop(proposal.proposal_id, None)
            self._spawn(self._undo(proposal.proposal_id, answer.reason or ReasonCode.GC_DENIED.value))

    async def _await_acks(self, proposal_id: str) -> None:
        policy = self._policy.content
        deadline = asyncio.get_running_loop().time() + policy.emergency_ack_timeout_s
        parent = self._uplink.parent_id
        while asyncio.get_running_loop().time() < deadline:
            acks = self._acks.get(proposal_id)
            if acks is None:
                return  # denied meanwhile: the undo is already under way
            if parent in acks and len(acks) >= 2:
                self._acks.pop(proposal_id, None)
                return
            await asyncio.sleep(min(1.0, policy.emergency_ack_timeout_s))
        if self._acks.pop(proposal_id, None) is not None:
            await self._undo(proposal_id, ReasonCode.EMERGENCY_ACK_TIMEOUT.value)

    async def _undo(self, proposal_id: str, reason: str) -> None:
        proposal = await self._store.get_proposal(proposal_id)
        if proposal is None or proposal.status is not S.EXECUTED:
            return
        executor = self._executors(str(proposal.config_payload.get("executor")))
        devices = [
            d for d in [await self._store.get_device(i) for i in proposal.target_devices] if d is not None
        ]
        payloads = (proposal.rollback_payload or {}).get("devices", {})
        proposal = await move(self._store, proposal, S.ROLLING_BACK, actor=self._me, reason=reason)
        outcome = await undo_change(executor, devices, payloads)
        await self._record(proposal, outcome)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self._tasks.spawn(coro)

    async def on_clear(self, envelope: Envelope) -> None:
        clear = envelope.payload_as(wire.DeviceClear)
        await mark_degraded(self._store, [], cleared=[clear.device_id], actor=clear.cleared_by)


def token_rate(instruction: wire.ExecutionInstruction) -> int | None:
    token = instruction.execution_token
    return token.constraints.max_devices_per_minute if token is not None else None
