"""The RC's part in a change (reference-design §5 "RC: decide", "GC: HIGH").

A proposal arrives from the GC. The RC checks it again under its own copy of the policy (duplicate,
policy version, targets, its own classification), queues it behind a change that holds a target's lock
(``DENY_CONFLICT``) or locks every target (a lost race releases them all: ``LOCK_RACE``), then:
LOW is approved here (policy ``auto_approve_low``); a tier that needs a human waits for an operator's
decision relayed by the GC, checked four-eyes; HIGH is escalated to the GC and denied ``GC_TIMEOUT`` if
no answer comes within ``gc_timeout_s``. An approval becomes an execution token and an
``EXECUTION_INSTRUCTION`` to the local controller serving the targets. Results come back up; the locks
are released and the next queued change on those devices is decided.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Iterable
from datetime import timedelta
from typing import Any

from pdsno.canonical import utcnow
from pdsno.changes.lifecycle import MOVES, follow, move
from pdsno.changes.proposals import (
    as_classified,
    blast_radius,
    classify_under,
    from_wire,
    load_targets,
    refuse_duplicate,
    to_wire,
)
from pdsno.changes.tokens import check_token, issue_token, token_ttl
from pdsno.controller.changes_common import (
    RESULT_STATUS,
    Background,
    approval,
    degraded_in,
    mark_degraded,
    note_token_spent,
    result_id,
    result_moves,
    take_result,
    token_from_wire,
    token_to_wire,
)
from pdsno.controller.policy_duty import PolicyHolder
from pdsno.controller.uplink import Peers, Uplink
from pdsno.controller.upward import Receipts, Upward, ack_key
from pdsno.errors import PdsnoError, ReasonCode
from pdsno.faults import FaultPoint, fault_point
from pdsno.messaging import messages as wire
from pdsno.messaging.envelope import Envelope, MessageType
from pdsno.nib.models import (
    ConfigProposal,
    ConfigStatus,
    Decision,
    Device,
    EventDraft,
    ExecutionToken,
    LockType,
    Sensitivity,
)
from pdsno.nib.store import NIBStore
from pdsno.security.keys import Ed25519Signer, public_key_b64, public_key_from_b64

log = logging.getLogger(__name__)

S = ConfigStatus


class RegionalChanges:
    def __init__(self, store: NIBStore, *, signer: Ed25519Signer, peers: Peers, uplink: Uplink, upward: Upward,
                 receipts: Receipts, policy: PolicyHolder) -> None:  # fmt: skip
        self._store = store
        self._signer = signer
        self._me = signer.signer_id
        self._peers = peers
        self._uplink = uplink
        self._upward = upward
        self._receipts = receipts
        self._policy = policy
        self._timers: dict[str, asyncio.Task[None]] = {}
        self._tasks = Background(log)
        self._decisions = asyncio.Lock()

    # --- from the GC ------------------------------------------------------------------------

    async def on_proposal(self, envelope: Envelope) -> Envelope:
        message = envelope.payload_as(wire.ConfigProposal)
        if message.check:
            return await self._plan(envelope.sender_id, message)
        proposal = await self._store.get_proposal(message.proposal_id)
        if proposal is None:
            created = await self._store.create_proposal(
                from_wire(message),
                events=[EventDraft(event_type="CONFIG_PROPOSED", actor=self._me, subject=message.proposal_id,
                                   payload={"from": envelope.sender_id, "category": (message.category or
                                            message.suggested_sensitivity).value})],
            )  # fmt: skip
            proposal = created.unwrap()
            answer = await self._decide(proposal)
        else:
            answer = approval(proposal.proposal_id, "QUEUE" if proposal.status is S.QUEUED else "ESCALATE",
                              responder=self._me, reason="already received")  # fmt: skip
        return await self._peers.envelope(envelope.sender_id, MessageType.APPROVAL_RESPONSE, answer)

    async def _plan(self, asker: str, message: wire.ConfigProposal) -> Envelope:
        """``--check``: the local controller's plan, passed on; nothing is stored or locked."""
        lc = await self._executor_of(from_wire(message))
        planned = await self._peers.request(lc, MessageType.EXECUTION_INSTRUCTION,
                                            wire.ExecutionInstruction(proposal_id=message.proposal_id, proposal=message,
                                                                      plan_only=True))  # fmt: skip
        result = planned.payload_as(wire.ExecutionResult)
        return await self._peers.envelope(asker, MessageType.EXECUTION_RESULT, result)

    async def on_approval(self, envelope: Envelope) -> None:
        """The GC's decision on an escalated HIGH change, or an operator's on one that waits for a human."""
        answer = envelope.payload_as(wire.ApprovalResponse)
        proposal = await self._get(answer.proposal_id)
        if proposal.category is Sensitivity.EMERGENCY:
            await self._relay_to_executor(proposal, answer)
            return
        self._cancel_timer(proposal.proposal_id)
        if answer.decision == "DENY":
            await move(self._store, proposal, S.DENIED, actor=answer.responder,
                       reason=answer.reason or ReasonCode.GC_DENIED.value)  # fmt: skip
            await self._release(proposal)
            return
        if answer.decision != "APPROVE":
            raise PdsnoError(f"cannot act on {answer.decision} here", code=ReasonCode.INVALID_REQUEST)
        if answer.execution_token is not None:
            gc = await self._store.get_controller(envelope.sender_id)
            if gc is None or gc.public_key is None or answer.issuer_public_key != gc.public_key:
                raise PdsnoError("the token's issuer key is not the GC's", code=ReasonCode.INVALID_TOKEN)
            token = token_from_wire(answer.execution_token)
            check_token(token, issuer_key=public_key_from_b64(gc.public_key), proposal=proposal,
                        devices=proposal.target_devices)  # fmt: skip
            await self._approve(proposal, actor=answer.responder, token=token, issuer_key=gc.public_key)
        elif proposal.category is Sensitivity.HIGH:
            raise PdsnoError("a HIGH change needs the GC's execution token", code=ReasonCode.INVALID_TOKEN)
        else:
            await self._approve(proposal, actor=answer.responder)

    async def on_clear(self, envelope: Envelope) -> None:
        clear = envelope.payload_as(wire.DeviceClear)
        await mark_degraded(self._store, [], cleared=[clear.device_id], actor=clear.cleared_by)
        device = await self._store.get_device(clear.device_id)
        if device is not None and device.local_controller:
            await self._peers.post_to(device.local_controller, MessageType.DEVICE_CLEAR, clear)

    # --- from the local controller -----------------------------------------------------------

    async def on_result(self, envelope: Envelope) -> Envelope:
        """An LC's result: this copy follows it, and it goes on to the GC (both acknowledged, durable)."""
        return await take_result(self._receipts, envelope, self._store,
                                 lambda result: self._keep_result(envelope.sender_id, result))  # fmt: skip

    async def _keep_result(self, executor: str, result: wire.ExecutionResult) -> None:
        proposal = await note_token_spent(self._store, await self._get(result.proposal_id), result)
        await follow(
            self._store, proposal, RESULT_STATUS[result.status], actor=executor, **result_moves(result)
        )
        await mark_degraded(self._store, degraded_in(result), actor=executor)
        await self._upward.send(MessageType.EXECUTION_RESULT, result, ack_key(result_id(result)))
        if proposal.category is Sensitivity.EMERGENCY:
            if result.status == "EXECUTED":
                await self._relay_to_executor(proposal, approval(proposal.proposal_id, "APPROVE",
                                                                 responder=self._me, reason="acknowledged"))  # fmt: skip
            return
        await self._release(proposal)

    # --- deciding ---------------------------------------------------------------------------

    async def _decide(self, proposal: ConfigProposal) -> wire.ApprovalResponse:
        """What becomes of a proposal now: approved, waiting (human, GC, a lock) or denied."""
        async with self._decisions:
            try:
                if proposal.category is Sensitivity.EMERGENCY:
                    return await self._emergency(proposal)
                return await self._decide_routine(proposal)
            except PdsnoError as refused:
                await self._deny(proposal, refused.code, refused.message)
                return approval(proposal.proposal_id, "DENY", responder=self._me, reason=refused.code.value)

    async def _decide_routine(self, proposal: ConfigProposal) -> wire.ApprovalResponse:
        policy = self._policy.content
        if proposal.policy_version is not None and proposal.policy_version != self._policy.version:
            raise PdsnoError(
                f"made under policy version {proposal.policy_version}; this region is at {self._policy.version}",
                code=ReasonCode.POLICY_VERSION_MISMATCH,
            )
        await refuse_duplicate(self._store, proposal, window_s=policy.freshness_window_s)
        devices = await load_targets(self._store, proposal)
        found = classify_under(
            policy, await as_classified(self._store, proposal), devices, suggested=proposal.category
        )
        if found.tier is not proposal.category:
            proposal = (await self._store.update_proposal(
                proposal.next_version(category=found.tier),
                events=[EventDraft(event_type="CONFIG_RECLASSIFIED", actor=self._me, subject=proposal.proposal_id,
                                   payload={"from": proposal.category.value, "to": found.tier.value,
                                            "rule": found.rule, "escalated_by": found.escalated_by})],
            )).unwrap()  # fmt: skip
        if await self._locked_by_another(proposal):
            await move(self._store, proposal, S.QUEUED, actor=self._me, reason=ReasonCode.DENY_CONFLICT.value)
            return approval(proposal.proposal_id, "QUEUE", responder=self._me,
                            reason=ReasonCode.DENY_CONFLICT.value, category=proposal.category)  # fmt: skip
        await self._lock(proposal)
        if proposal.category is Sensitivity.HIGH:
            await self._store.append_events([EventDraft(event_type="CONFIG_ESCALATED", actor=self._me,
                                                        subject=proposal.proposal_id, payload={"to": "GC"})])  # fmt: skip
            self._start_timer(proposal.proposal_id, policy.gc_timeout_s)
            context = _context(devices, self._policy.version)
            return approval(proposal.proposal_id, "ESCALATE", responder=self._me, escalation_target="GC",
                            category=proposal.category, regional_context=context)  # fmt: skip
        if proposal.category in policy.human_approval_tiers or (
            proposal.category is Sensitivity.LOW and not policy.auto_approve_low
        ):
            return approval(proposal.proposal_id, "ESCALATE", responder=self._me, escalation_target="operator",
                            category=proposal.category)  # fmt: skip
        await self._approve(proposal, actor=self._me)
        return approval(proposal.proposal_id, "APPROVE", responder=self._me, category=proposal.category)

    async def _emergency(self, proposal: ConfigProposal) -> wire.ApprovalResponse:
        """Checked, then sent straight to the executor; over the LC's rate limit it is re-filed as HIGH."""
        policy = self._policy.content
        intent = proposal.config_payload.get("intent")
        if intent not in policy.emergency_permitted_intents:
            raise PdsnoError(f"emergency intent {intent!r} is not permitted (policy emergency_permitted_intents)",
                             code=ReasonCode.EMERGENCY_TYPE_NOT_PERMITTED)  # fmt: skip
        devices = await load_targets(self._store, proposal)
        core = [d.device_id for d in devices if d.critical or d.protected]
        if core:
            raise PdsnoError(f"emergency changes are for edge devices only, not {', '.join(core)}",
                             code=ReasonCode.EMERGENCY_TYPE_NOT_PERMITTED)  # fmt: skip
        try:
            await self._instruct(proposal, token=None, issuer_key=None)
        except PdsnoError as refused:
            if refused.code is not ReasonCode.EMERGENCY_RATE_LIMITED:
                raise
            proposal = (await self._store.update_proposal(
                proposal.next_version(category=Sensitivity.HIGH),
                events=[EventDraft(event_type="CONFIG_REFILED", actor=self._me, subject=proposal.proposal_id,
                                   payload={"from": "EMERGENCY", "to": "HIGH", "reason": refused.code.value})],
            )).unwrap()  # fmt: skip
            return await self._decide_routine(proposal)
        return approval(proposal.proposal_id, "APPROVE", responder=self._me, reason="emergency: executing",
                        category=proposal.category)  # fmt: skip

    async def _approve(self, proposal: ConfigProposal, *, actor: str, token: ExecutionToken | None = None,
                       issuer_key: str | None = None) -> None:  # fmt: skip
        policy = self._policy.content
        if token is None:
            token = issue_token(
                self._signer, proposal,
                ttl=token_ttl(proposal.category, low_medium_s=policy.token_ttl_low_medium_s, high_s=policy.token_ttl_high_s),
                constraints={"max_devices_per_minute": policy.max_devices_per_minute},
            )  # fmt: skip
            issuer_key = public_key_b64(self._signer.private_key)
        # Kept with the decision, so that a restart between the two can still send the instruction.
        kept = await self._store.store_token(token.model_copy(update={"version": 0}))
        if not kept.success and kept.error is not ReasonCode.ALREADY_EXISTS:
            raise PdsnoError(kept.message, code=kept.error or ReasonCode.NIB_UNAVAILABLE)
        approved = await move(self._store, proposal, S.APPROVED, actor=actor, token_id=token.token_id,
                              fields={"execution_token_id": token.token_id})  # fmt: skip
        fault_point(FaultPoint.DECISION_RECORDED)
        try:
            await self._instruct(approved, token=token, issuer_key=issuer_key)
        except PdsnoError as refused:
            await self._deny(approved, refused.code, refused.message)
            raise

    async def _instruct(
        self, proposal: ConfigProposal, *, token: ExecutionToken | None, issuer_key: str | None
    ) -> None:
        lc = await self._executor_of(proposal)
        instruction = wire.ExecutionInstruction(
            proposal_id=proposal.proposal_id,
            proposal=to_wire(proposal),
            execution_token=token_to_wire(token) if token is not None else None,
            issuer_public_key=issuer_key,
        )
        await self._peers.post_to(lc, MessageType.EXECUTION_INSTRUCTION, instruction)

    async def _deny(self, proposal: ConfigProposal, code: ReasonCode, message: str) -> None:
        current = await self._store.get_proposal(proposal.proposal_id)
        if current is not None and S.DENIED in MOVES[current.status]:
            await move(self._store, current, S.DENIED, actor=self._me, reason=code.value, message=message)
        await self._release(proposal)

    # --- locks, timers, the queue -------------------------------------------------------------

    async def _locked_by_another(self, proposal: ConfigProposal) -> bool:
        for device_id in proposal.target_devices:
            lock = await self._store.check_lock(device_id, LockType.CONFIG)
            if lock is not None and lock.associated_request != proposal.proposal_id:
                return True
        return False

    async def _lock(self, proposal: ConfigProposal) -> None:
        ttl = timedelta(seconds=self._policy.content.lock_ttl_s)
        taken: list[str] = []
        for device_id in proposal.target_devices:
            got = await self._store.acquire_lock(device_id, LockType.CONFIG, self._me, ttl,
                                                 associated_request=proposal.proposal_id)  # fmt: skip
            if not got.success:
                for lock_id in taken:
                    await self._store.release_lock(lock_id, self._me)
                raise PdsnoError(f"lost the lock on {device_id} to another change", code=ReasonCode.LOCK_RACE)
            taken.append(got.unwrap().lock_id)

    async def _release(self, proposal: ConfigProposal) -> None:
        for device_id in proposal.target_devices:
            lock = await self._store.check_lock(device_id, LockType.CONFIG)
            if lock is not None and lock.associated_request == proposal.proposal_id:
                await self._store.release_lock(lock.lock_id, self._me)
        self._spawn(self._next_in_queue(proposal.target_devices))

    async def _next_in_queue(self, devices: Iterable[str]) -> None:
        """A lock was released: decide the oldest queued change on those devices."""
        freed = set(devices)
        for queued in await self._store.list_proposals(status=S.QUEUED):
            if freed & set(queued.target_devices):
                pending = await move(self._store, queued, S.PENDING, actor=self._me, reason="lock released")
                answer = await self._decide(pending)
                try:
                    await self._uplink.post(MessageType.APPROVAL_RESPONSE, answer)
                except PdsnoError as exc:
                    log.warning("could not tell the GC about a queued change", extra={"error": exc.message})
                return

    def _start_timer(self, proposal_id: str, seconds: int) -> None:
        self._cancel_timer(proposal_id)
        self._timers[proposal_id] = asyncio.create_task(self._gc_timeout(proposal_id, seconds))

    def _cancel_timer(self, proposal_id: str) -> None:
        timer = self._timers.pop(proposal_id, None)
        if timer is not None and timer is not asyncio.current_task():
            timer.cancel()

    async def _gc_timeout(self, proposal_id: str, seconds: int) -> None:
        await asyncio.sleep(seconds)
        self._timers.pop(proposal_id, None)
        proposal = await self._store.get_proposal(proposal_id)
        if proposal is None or proposal.status is not S.PENDING:
            return
        log.warning("the GC did not answer in time", extra={"proposal_id": proposal_id, "waited_s": seconds})
        await self._deny(proposal, ReasonCode.GC_TIMEOUT, f"no answer from the GC within {seconds} s")
        # The GC is what did not answer; it denies its own copy when it finds it overdue.
        with contextlib.suppress(PdsnoError):
            await self._uplink.post(MessageType.APPROVAL_RESPONSE, approval(
                proposal_id, "DENY", responder=self._me, reason=ReasonCode.GC_TIMEOUT.value))  # fmt: skip

    async def resume(self) -> None:
        """After a restart: escalations still waiting get the rest of their time; approvals the stop cut off
        before their instruction reached the LC are sent again."""
        for proposal in await self._store.list_proposals(status=S.PENDING):
            if proposal.category is Sensitivity.HIGH and proposal.updated_at is not None:
                waited = (utcnow() - proposal.updated_at).total_seconds()
                self._start_timer(
                    proposal.proposal_id, max(0, int(self._policy.content.gc_timeout_s - waited))
                )
        for proposal in await self._store.list_proposals(status=S.APPROVED):
            self._spawn(self._instruct_again(proposal))

    async def _instruct_again(self, proposal: ConfigProposal) -> None:
        """The approval is in the NIB, the instruction may not have left: send it with the same token. An
        LC that spent the token already has it (its result is on the way); any other refusal, or a token
        gone stale meanwhile, denies the change here and at the GC."""
        token = await self._store.get_token(proposal.execution_token_id or "")
        try:
            if token is None:
                raise PdsnoError("the approval's token was not kept", code=ReasonCode.CHANGE_INTERRUPTED)
            if utcnow() > token.expires_at:
                raise PdsnoError(f"the token expired at {token.expires_at} while this controller was down",
                                 code=ReasonCode.TOKEN_EXPIRED)  # fmt: skip
            await self._instruct(proposal, token=token, issuer_key=await self._issuer_key(token))
        except PdsnoError as refused:
            if refused.code is ReasonCode.TOKEN_ALREADY_CONSUMED:
                return
            await self._deny(proposal, refused.code, refused.message)
            with contextlib.suppress(PdsnoError):
                await self._uplink.post(MessageType.APPROVAL_RESPONSE, approval(
                    proposal.proposal_id, "DENY", responder=self._me, reason=refused.code.value))  # fmt: skip

    async def _issuer_key(self, token: ExecutionToken) -> str:
        if token.approved_by == self._me:
            return public_key_b64(self._signer.private_key)
        issuer = await self._store.get_controller(token.approved_by)
        if issuer is None or issuer.public_key is None:
            raise PdsnoError(f"no public key of {token.approved_by}", code=ReasonCode.INVALID_TOKEN)
        return issuer.public_key

    # --- plumbing -----------------------------------------------------------------------------

    async def _get(self, proposal_id: str) -> ConfigProposal:
        proposal = await self._store.get_proposal(proposal_id)
        if proposal is None:
            raise PdsnoError(f"no proposal {proposal_id}", code=ReasonCode.NOT_FOUND)
        return proposal

    async def _executor_of(self, proposal: ConfigProposal, *, ready: bool = True) -> str:
        """The local controller serving every target. ``ready``: the targets must also be fit for a
        change now (not so when relaying a decision on one already made)."""
        if ready:
            devices = await load_targets(self._store, proposal)
        else:
            devices = [d for d in [await self._store.get_device(i) for i in proposal.target_devices] if d]
        lcs = {d.local_controller for d in devices}
        if len(lcs) != 1 or None in lcs:
            raise PdsnoError(
                "the targets are not all served by one local controller", code=ReasonCode.INVALID_REQUEST
            )
        return str(lcs.pop())

    async def _relay_to_executor(self, proposal: ConfigProposal, answer: wire.ApprovalResponse) -> None:
        await self._store.append_events([EventDraft(
            event_type="EMERGENCY_ACKNOWLEDGED" if answer.decision == "APPROVE" else "EMERGENCY_DENIED",
            actor=answer.responder, subject=proposal.proposal_id,
            decision=Decision.APPROVED if answer.decision == "APPROVE" else Decision.DENIED,
            notes=answer.reason)])  # fmt: skip
        await self._peers.post_to(
            await self._executor_of(proposal, ready=False), MessageType.APPROVAL_RESPONSE, answer
        )

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self._tasks.spawn(coro)


def _context(devices: list[Device], version: str | None) -> wire.RegionalContext:
    radius = blast_radius(devices)
    return wire.RegionalContext(blast_radius=radius["devices"], affected_critical_devices=radius["critical"],
                                regional_policy_version=version)  # fmt: skip
