"""The GC's part in a change: the operators' entry point, and the approver of HIGH changes.

``POST /api/v1/proposals`` lands here. The GC checks the request under its policy (version, executor
payload, targets, immutable rules, regions), classifies it, stores it ``PENDING`` with its event, and
only then sends it to the RC of the targets' region, whose signed answer it mirrors: approved (LOW),
queued behind a lock, waiting for an operator, escalated back here (HIGH), or denied. An operator's
approve or deny goes to the RC; for HIGH the GC issues the execution token itself (after its immutable
rules). Execution results come up through the RC. ``check`` answers what would happen, sending nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from pdsno.canonical import utcnow
from pdsno.changes.classify import Classification
from pdsno.changes.executors.base import Executor
from pdsno.changes.lifecycle import check_move, follow, move
from pdsno.changes.proposals import (
    ROLLBACK_OF,
    TERMINAL,
    ProposalRequest,
    as_classified,
    blast_radius,
    classify_under,
    immutable_rule_hit,
    load_targets,
    new_proposal,
    refuse_duplicate,
    rollback_target,
    to_wire,
)
from pdsno.changes.tokens import issue_token, token_ttl
from pdsno.controller.changes_common import (
    RESULT_STATUS,
    approval,
    degraded_in,
    mark_degraded,
    note_token_spent,
    result_moves,
    take_result,
    token_to_wire,
)
from pdsno.controller.policy_duty import PolicyHolder
from pdsno.controller.uplink import Peers
from pdsno.controller.upward import Receipts
from pdsno.errors import PdsnoError, ReasonCode
from pdsno.messaging import messages as wire
from pdsno.messaging.envelope import Envelope, MessageType
from pdsno.nib.models import (
    ConfigProposal,
    ConfigStatus,
    ControllerRole,
    Decision,
    Device,
    EventDraft,
    Sensitivity,
)
from pdsno.nib.store import NIBStore
from pdsno.security.keys import Ed25519Signer, public_key_b64

log = logging.getLogger(__name__)

S = ConfigStatus
SWEEP_INTERVAL_S = 5.0
PLAN_TIMEOUT_S = 15.0
"""A ``check`` answers within this even when the devices do not (the diff then lacks the values read)."""
PLAN_UNKNOWN = frozenset({ReasonCode.DEVICE_UNREACHABLE.value, ReasonCode.EXECUTOR_TIMEOUT.value})
"""A device's plan failures that say nothing about the change (it did not answer now): the diff lacks the
values read, the change is not refused."""


class GlobalChanges:
    def __init__(self, store: NIBStore, *, signer: Ed25519Signer, peers: Peers, receipts: Receipts,
                 policy: PolicyHolder, executors: Callable[[str], Executor]) -> None:  # fmt: skip
        self._store = store
        self._signer = signer
        self._me = signer.signer_id
        self._peers = peers
        self._receipts = receipts
        self._policy = policy
        self._executors = executors
        # One writer at a time for the GC's copy: an RC's answer and the result of the same change can
        # arrive together.
        self._mirror = asyncio.Lock()

    # --- operators ----------------------------------------------------------------------------

    async def propose(
        self, request: ProposalRequest, *, operator: str, check: bool = False
    ) -> dict[str, Any]:
        policy, version = self._policy.content, self._policy.version
        if request.policy_version is not None and request.policy_version != version:
            raise PdsnoError(f"the policy is at version {version}, not {request.policy_version}",
                             code=ReasonCode.POLICY_VERSION_MISMATCH, current_version=version)  # fmt: skip
        if rollback_target(request.payload) is None:
            self._executors(request.executor).validate(request.config_payload())
        emergency = request.suggested_tier is Sensitivity.EMERGENCY
        draft = new_proposal(request, origin=self._me, proposed_by=operator,
                             tier=request.suggested_tier or Sensitivity.LOW, policy_version=version)  # fmt: skip
        devices = await load_targets(self._store, draft)
        judged = await as_classified(self._store, draft)
        found = classify_under(policy, judged, devices, suggested=None if emergency else request.suggested_tier,
                               downtime_s=request.estimated_downtime_s)  # fmt: skip
        tier = Sensitivity.EMERGENCY if emergency else found.tier
        proposal = draft.model_copy(update={"category": tier})
        radius = blast_radius(devices)
        blocked = self._refusal(proposal, devices, radius)
        if check:
            view = self._check_view(proposal, found, radius, blocked)
            if blocked is None:
                view["diff"], view["diff_error"], refused = await self._planned_diff(proposal, devices)
                view["refused"] = refused
            return view
        if blocked is not None:
            raise blocked
        if (
            tier in (Sensitivity.MEDIUM, Sensitivity.HIGH)
            and request.executor != "snmp"
            and not request.rollback
            # undoing runs what the original's plan named, already approved with it
            and rollback_target(request.payload) is None
        ):
            raise PdsnoError(f"a {tier.value} {request.executor} change needs a rollback payload",
                             code=ReasonCode.INVALID_REQUEST)  # fmt: skip
        await refuse_duplicate(self._store, proposal, window_s=policy.freshness_window_s)
        stored = (await self._store.create_proposal(
            proposal,
            events=[EventDraft(event_type="CONFIG_PROPOSED", actor=operator, subject=proposal.proposal_id,
                               payload={"classification": _classification(found), "blast_radius": radius,
                                        "config_payload": proposal.config_payload})],
        )).unwrap()  # fmt: skip
        rc = await self._rc_of(devices)
        try:
            reply = await self._peers.request(rc, MessageType.CONFIG_PROPOSAL,
                                        to_wire(stored, downtime_s=request.estimated_downtime_s,
                                                maintenance=request.requires_maintenance_window))  # fmt: skip
        except PdsnoError as refused:
            if refused.code is ReasonCode.PEER_NO_ANSWER:
                # The RC may have decided and will carry it out (after a restart too): the copy waits
                # for the outcome, denied by the sweep once no token of that decision can still be valid.
                waiting = (await self._store.update_proposal(
                    stored.next_version(reason=refused.code.value),
                    events=[EventDraft(event_type="CONFIG_FORWARD_UNANSWERED", actor=self._me, subject=stored.proposal_id,
                                       payload={"rc": rc, "message": refused.message})],
                )).unwrap()  # fmt: skip
                return await self.view(waiting.proposal_id)
            await move(self._store, stored, S.DENIED, actor=self._me, reason=refused.code.value,
                       message=refused.message)  # fmt: skip
            raise
        await self._apply_answer(reply.payload_as(wire.ApprovalResponse))
        return await self.view(stored.proposal_id)

    async def rollback(self, proposal_id: str, *, operator: str, reason: str | None) -> dict[str, Any]:
        """Undo an executed change: a new change, approved like the original, that puts back what the local
        controller read before it wrote."""
        original = await self._get(proposal_id)
        request = ProposalRequest(
            executor=str(original.config_payload.get("executor")),
            targets=original.target_devices,
            payload={ROLLBACK_OF: proposal_id},
            suggested_tier=Sensitivity.HIGH
            if original.category is Sensitivity.EMERGENCY
            else original.category,
            reason=reason or f"rollback of {proposal_id}",
        )
        return await self.propose(request, operator=operator)

    async def approve(self, proposal_id: str, *, operator: str, reason: str | None) -> dict[str, Any]:
        proposal = await self._get(proposal_id)
        check_move(proposal, S.APPROVED, actor=operator)
        if proposal.category is Sensitivity.EMERGENCY:
            raise PdsnoError("an emergency change is acknowledged by its controllers, not approved",
                             code=ReasonCode.INVALID_TRANSITION)  # fmt: skip
        answer = approval(proposal_id, "APPROVE", responder=operator, reason=reason)
        if proposal.category is Sensitivity.HIGH:
            rule = immutable_rule_hit(self._policy.content, proposal.config_payload)
            if rule is not None:
                raise PdsnoError(f"IMMUTABLE_RULE:{rule}", code=ReasonCode.IMMUTABLE_RULE)
            policy = self._policy.content
            token = issue_token(self._signer, proposal,
                                ttl=token_ttl(Sensitivity.HIGH, high_s=policy.token_ttl_high_s),
                                constraints={"max_devices_per_minute": policy.max_devices_per_minute,
                                             "maintenance_window_required": False})  # fmt: skip
            answer = answer.model_copy(update={"execution_token": token_to_wire(token),
                                               "issuer_public_key": public_key_b64(self._signer.private_key)})  # fmt: skip
        await self._send_to_rc(proposal, answer)
        await self._advance(proposal_id, S.APPROVED, actor=operator, reason=reason)
        return await self.view(proposal_id)

    async def deny(self, proposal_id: str, *, operator: str, reason: str) -> dict[str, Any]:
        proposal = await self._get(proposal_id)
        answer = approval(proposal_id, "DENY", responder=operator, reason=reason)
        if proposal.category is Sensitivity.EMERGENCY and proposal.status in (S.EXECUTING, S.EXECUTED):
            # After the fact: the LC undoes it; the outcome comes back as an execution result.
            await self._send_to_rc(proposal, answer)
            await self._store.append_events([EventDraft(event_type="EMERGENCY_DENIED", actor=operator,
                                                        subject=proposal_id, decision=Decision.DENIED, notes=reason)])  # fmt: skip
            return await self.view(proposal_id)
        check_move(proposal, S.DENIED, actor=operator)
        await self._send_to_rc(proposal, answer)
        await self._advance(proposal_id, S.DENIED, actor=operator, reason=reason)
        return await self.view(proposal_id)

    async def clear_device(self, device_id: str, *, operator: str, reason: str | None) -> None:
        device = await self._store.get_device(device_id)
        if device is None:
            raise PdsnoError(f"no device {device_id}", code=ReasonCode.NOT_FOUND)
        rc = await self._rc_of([device])
        await self._peers.post_to(rc, MessageType.DEVICE_CLEAR,
                               wire.DeviceClear(device_id=device_id, cleared_by=operator, reason=reason))  # fmt: skip
        await mark_degraded(self._store, [], cleared=[device_id], actor=operator)

    async def view(self, proposal_id: str, *, audit: bool = False) -> dict[str, Any]:
        proposal = await self._get(proposal_id)
        out = proposal.model_dump(mode="json")
        if audit:
            out["audit"] = [e.model_dump(mode="json") for e in await self._store.events_about(proposal_id)]
        return out

    # --- from the RCs ---------------------------------------------------------------------------

    async def on_approval(self, envelope: Envelope) -> None:
        await self._apply_answer(envelope.payload_as(wire.ApprovalResponse))

    async def on_result(self, envelope: Envelope) -> Envelope:
        """An RC's result (its LC's, passed on): the GC's copy follows it; acknowledged once stored."""
        return await take_result(self._receipts, envelope, self._store,
                                 lambda result: self._keep_result(envelope.sender_id, result))  # fmt: skip

    async def _keep_result(self, sender: str, result: wire.ExecutionResult) -> None:
        proposal = await self._get(result.proposal_id)
        await self._advance(result.proposal_id, RESULT_STATUS[result.status], actor=sender, result=result)
        await mark_degraded(self._store, degraded_in(result), actor=sender)
        if proposal.category is Sensitivity.EMERGENCY and result.status == "EXECUTED":
            await self._send_to_rc(proposal, approval(proposal.proposal_id, "APPROVE", responder=self._me,
                                                      reason="acknowledged"))  # fmt: skip

    async def sweep_overdue(self) -> None:
        """Escalations this GC never answered while it was away are denied here too (the RC already did);
        so are proposals whose RC never answered, once any token it could have issued has expired."""
        while True:
            policy = self._policy.content
            unanswered_s = max(policy.token_ttl_low_medium_s, policy.token_ttl_high_s) + SWEEP_INTERVAL_S
            for proposal in await self._store.list_proposals(status=S.PENDING):
                age = (utcnow() - (proposal.updated_at or utcnow())).total_seconds()
                if proposal.reason == ReasonCode.PEER_NO_ANSWER.value:
                    if age > unanswered_s:
                        await move(self._store, proposal, S.DENIED, actor=self._me, reason=proposal.reason)
                        # An RC that has it waiting (for an operator, a lock) lets it go too.
                        with contextlib.suppress(PdsnoError):
                            await self._send_to_rc(proposal, approval(proposal.proposal_id, "DENY",
                                                                      responder=self._me, reason=proposal.reason))  # fmt: skip
                elif proposal.category is Sensitivity.HIGH and age > policy.gc_timeout_s + 5:
                    await move(
                        self._store, proposal, S.DENIED, actor=self._me, reason=ReasonCode.GC_TIMEOUT.value
                    )
            await asyncio.sleep(SWEEP_INTERVAL_S)

    # --- plumbing -------------------------------------------------------------------------------

    async def _advance(self, proposal_id: str, to: ConfigStatus, *, actor: str, reason: str | None = None,
                       result: wire.ExecutionResult | None = None) -> None:  # fmt: skip
        """Bring the GC's copy to ``to`` unless it is there, further along, or finished; an execution
        ``result`` also brings the token's redemption and the devices' results."""
        async with self._mirror:
            proposal = await self._get(proposal_id)
            if result is not None:
                proposal = await note_token_spent(self._store, proposal, result)
            if proposal.status is to or proposal.status in TERMINAL - {S.EXECUTED}:
                return
            moves = result_moves(result) if result is not None else {"reason": reason}
            try:
                await follow(self._store, proposal, to, actor=actor, **moves)
            except PdsnoError as late:
                log.info("the GC's copy is already past this step",
                         extra={"proposal_id": proposal_id, "status": proposal.status.value, "to": to.value,
                                "error": late.message})  # fmt: skip

    async def _apply_answer(self, answer: wire.ApprovalResponse) -> None:
        async with self._mirror:
            await self._apply_answer_locked(answer)

    async def _apply_answer_locked(self, answer: wire.ApprovalResponse) -> None:
        proposal = await self._get(answer.proposal_id)
        if proposal.status in TERMINAL:
            return
        if answer.category is not None and answer.category is not proposal.category:
            proposal = (await self._store.update_proposal(
                proposal.next_version(category=answer.category),
                events=[EventDraft(event_type="CONFIG_RECLASSIFIED", actor=answer.responder, subject=proposal.proposal_id,
                                   payload={"from": proposal.category.value, "to": answer.category.value})],
            )).unwrap()  # fmt: skip
        if answer.decision == "APPROVE":
            to = S.EXECUTING if proposal.category is Sensitivity.EMERGENCY else S.APPROVED
            await follow(self._store, proposal, to, actor=answer.responder, reason=answer.reason)
        elif answer.decision == "DENY":
            await follow(self._store, proposal, S.DENIED, actor=answer.responder, reason=answer.reason)
        elif answer.decision == "QUEUE":
            await follow(self._store, proposal, S.QUEUED, actor=answer.responder, reason=answer.reason)
        else:
            if proposal.status is S.QUEUED:
                proposal = await move(self._store, proposal, S.PENDING, actor=answer.responder)
            event = "CONFIG_ESCALATED" if answer.escalation_target == "GC" else "CONFIG_AWAITING_APPROVAL"
            context = answer.regional_context.model_dump(mode="json") if answer.regional_context else {}
            await self._store.append_events([EventDraft(event_type=event, actor=answer.responder,
                                                        subject=proposal.proposal_id, payload=context)])  # fmt: skip

    def _refusal(
        self, proposal: ConfigProposal, devices: list[Device], radius: dict[str, Any]
    ) -> PdsnoError | None:
        rule = immutable_rule_hit(self._policy.content, proposal.config_payload)
        if rule is not None:
            return PdsnoError(f"IMMUTABLE_RULE:{rule}", code=ReasonCode.IMMUTABLE_RULE)
        if len(radius["regions"]) > self._policy.content.max_regions_per_change:
            return PdsnoError(
                f"the change spans {len(radius['regions'])} regions", code=ReasonCode.TOO_MANY_REGIONS
            )
        if len(radius["local_controllers"]) != 1 or any(d.local_controller is None for d in devices):
            return PdsnoError("one change goes to one local controller; split it by local controller",
                              code=ReasonCode.INVALID_REQUEST)  # fmt: skip
        return None

    def _check_view(self, proposal: ConfigProposal, found: Classification, radius: dict[str, Any],
                    blocked: PdsnoError | None) -> dict[str, Any]:  # fmt: skip
        policy = self._policy.content
        tier = proposal.category
        human = tier in policy.human_approval_tiers or (
            tier is Sensitivity.LOW and not policy.auto_approve_low
        )
        approver = {Sensitivity.HIGH: self._me, Sensitivity.EMERGENCY: "local"}.get(tier, "regional")
        return {
            "check": True,
            "config_hash": proposal.config_hash,
            "classification": {**_classification(found), "tier": tier.value},
            "approver": approver,
            "human_approval": human and tier is not Sensitivity.EMERGENCY,
            "blast_radius": radius,
            "diff": {},
            "diff_error": None,
            "policy_version": self._policy.version,
            "refused": {"code": blocked.code.value, "message": blocked.message} if blocked else None,
        }  # fmt: skip

    async def _planned_diff(
        self, proposal: ConfigProposal, devices: list[Device]
    ) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any] | None]:
        """The diff as the local controller plans it (the values read from each device now); the wanted
        values alone, with the reason, where the plan cannot be had. Third, the refusal when a device said
        no to the plan itself (it has no such object, refuses the read...): the change would fail, so the
        check says so now rather than at execution."""
        wanted = proposal.config_payload.get("set") or {}
        fallback = {
            d: [{"key": k, "before": None, "after": v} for k, v in wanted.items()]
            for d in proposal.target_devices
        }
        try:
            rc = await self._rc_of(devices)
            asked = to_wire(proposal).model_copy(update={"check": True})
            answer = await asyncio.wait_for(
                self._peers.request(rc, MessageType.CONFIG_PROPOSAL, asked), PLAN_TIMEOUT_S
            )
        except PdsnoError as failed:
            return fallback, {"code": failed.code.value, "message": failed.message}, None
        except TimeoutError:
            return fallback, {"code": ReasonCode.DEVICE_UNREACHABLE.value,
                              "message": f"no plan from the local controller within {PLAN_TIMEOUT_S:.0f} s"}, None  # fmt: skip
        planned = answer.payload_as(wire.ExecutionResult)
        diff = {
            d: r["diff"] if r.get("error") is None else fallback[d] for d, r in planned.device_results.items()
        }
        if planned.reason is None:
            return diff or fallback, None, None
        errors = {d: r["error"] for d, r in planned.device_results.items() if r.get("error") is not None}
        error = {"code": planned.reason, "message": planned.message or planned.reason, "devices": errors}
        definite = {d: e for d, e in errors.items() if e.get("code") not in PLAN_UNKNOWN}
        if not definite:
            return diff, error, None
        first = next(iter(definite.values()))
        return diff, error, {"code": first["code"], "message": first["message"], "devices": definite}

    async def _rc_of(self, devices: list[Device]) -> str:
        regions = {d.region for d in devices}
        rcs = [c for c in await self._store.list_controllers(role=ControllerRole.REGIONAL)
               if c.region in regions and c.rest_url]  # fmt: skip
        if len(rcs) != 1:
            raise PdsnoError(f"no single regional controller serves {sorted(map(str, regions))}",
                             code=ReasonCode.NOT_FOUND)  # fmt: skip
        return rcs[0].controller_id

    async def _send_to_rc(self, proposal: ConfigProposal, answer: wire.ApprovalResponse) -> None:
        devices = [
            d for d in [await self._store.get_device(i) for i in proposal.target_devices] if d is not None
        ]
        rc = await self._rc_of(devices)
        await self._peers.post_to(rc, MessageType.APPROVAL_RESPONSE, answer)

    async def _get(self, proposal_id: str) -> ConfigProposal:
        proposal = await self._store.get_proposal(proposal_id)
        if proposal is None:
            raise PdsnoError(f"no proposal {proposal_id}", code=ReasonCode.NOT_FOUND)
        return proposal


def _classification(found: Classification) -> dict[str, Any]:
    return {"tier": found.tier.value, "rule": found.rule, "escalated_by": found.escalated_by,
            "under_labelled": found.under_labelled}  # fmt: skip
