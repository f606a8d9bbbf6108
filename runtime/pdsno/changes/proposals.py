"""A change as an operator asks for it, and what every controller checks before deciding on it.

The request (``POST /api/v1/proposals``, ``pdsno change propose``) names the executor, its payload, the
target devices and optionally a tier, an intent and a rollback. The stored proposal carries the
``config_payload`` (executor + payload + intent) and its ``config_hash`` (sha256 of the canonical
JSON), which the execution token binds.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pdsno.canonical import sha256_hex, utcnow
from pdsno.changes.classify import ORDER, Classification, classify
from pdsno.config import PolicyContent
from pdsno.errors import PdsnoError, ReasonCode
from pdsno.messaging import messages as wire
from pdsno.nib.models import ConfigProposal, ConfigStatus, Device, DeviceStatus, ImpactScope, Sensitivity
from pdsno.nib.store import NIBStore

ROLLBACK_OF = "rollback_of"
"""A payload ``{"executor": ..., "rollback_of": PROPOSAL_ID}`` undoes an executed change with the rollback
payloads its local controller captured per device; it is approved like the change it undoes."""

IN_FLIGHT = frozenset(
    {ConfigStatus.PENDING, ConfigStatus.QUEUED, ConfigStatus.APPROVED, ConfigStatus.EXECUTING}
)
TERMINAL = frozenset(
    {ConfigStatus.DENIED, ConfigStatus.EXPIRED, ConfigStatus.FAILED, ConfigStatus.ROLLED_BACK,
     ConfigStatus.DEGRADED, ConfigStatus.EXECUTED}
)  # fmt: skip


class ProposalRequest(BaseModel):
    """``POST /api/v1/proposals``: what to change, where, and how to undo it."""

    model_config = ConfigDict(extra="forbid")

    executor: str = Field(min_length=1, max_length=32, description="snmp or ansible")
    targets: list[str] = Field(min_length=1, max_length=1000, description="device ids")
    payload: dict[str, Any] = Field(description='the executor\'s, e.g. {"set": {"1.3.6.1.2.1.1.6.0": "lab"}}')
    suggested_tier: Sensitivity | None = None
    intent: str | None = Field(default=None, max_length=64, description="e.g. QUARANTINE (emergency)")
    impact_scope: ImpactScope = ImpactScope.LOCAL
    estimated_downtime_s: int = Field(default=0, ge=0)
    requires_maintenance_window: bool = False
    rollback: dict[str, Any] | None = Field(default=None, description="an executor payload that undoes it")
    policy_version: str | None = Field(default=None, description="refused if the policy has moved on")
    reason: str | None = Field(default=None, max_length=500)

    def config_payload(self) -> dict[str, Any]:
        payload = {**self.payload, "executor": self.executor}
        if self.intent:
            payload["intent"] = self.intent
        if self.rollback:
            # Part of what is approved (the hash covers it); the ansible executor runs it to undo.
            payload["rollback"] = self.rollback
        return payload


def new_proposal(request: ProposalRequest, *, origin: str, proposed_by: str, tier: Sensitivity,
                 policy_version: str | None) -> ConfigProposal:  # fmt: skip
    return ConfigProposal(
        proposal_id=f"chg-{uuid.uuid4().hex[:16]}",
        config_payload=request.config_payload(),
        category=tier,
        origin=origin,
        proposed_by=proposed_by,
        target_devices=sorted(set(request.targets)),
        impact_scope=request.impact_scope,
        rollback_payload={"requested": request.rollback} if request.rollback else None,
        policy_version=policy_version,
        reason=request.reason,
        proposed_at=utcnow(),
    )


def classify_under(policy: PolicyContent, proposal: ConfigProposal, devices: Sequence[Device],
                   *, suggested: Sensitivity | None, downtime_s: int = 0) -> Classification:  # fmt: skip
    """This controller's own tier under ``policy``; never below what the proposer asked for."""
    found = classify(
        proposal.config_payload,
        devices=devices,
        impact_scope=proposal.impact_scope,
        estimated_downtime_s=downtime_s,
        suggested=suggested,
        rules=policy.classification_rules,
        escalation_downtime_s=policy.escalation_downtime_threshold_s,
    )
    if suggested is not None and suggested in ORDER and ORDER.index(suggested) > ORDER.index(found.tier):
        return Classification(tier=suggested, rule=found.rule, escalated_by=[*found.escalated_by, "proposer"],
                              suggested=suggested)  # fmt: skip
    return found


def rollback_target(payload: dict[str, Any]) -> str | None:
    target = payload.get(ROLLBACK_OF)
    return str(target) if target is not None else None


async def as_classified(store: NIBStore, proposal: ConfigProposal) -> ConfigProposal:
    """The proposal as classification sees it: a rollback is judged by the change it undoes, which must
    have been executed."""
    original_id = rollback_target(proposal.config_payload)
    if original_id is None:
        return proposal
    original = await store.get_proposal(original_id)
    if original is None or original.status is not ConfigStatus.EXECUTED:
        raise PdsnoError(f"{original_id} is not an executed change here", code=ReasonCode.INVALID_TRANSITION)
    if sorted(original.target_devices) != sorted(proposal.target_devices):
        raise PdsnoError(
            "a rollback targets the devices of the change it undoes", code=ReasonCode.INVALID_REQUEST
        )
    return proposal.model_copy(update={"config_payload": original.config_payload})


def immutable_rule_hit(policy: PolicyContent, payload: dict[str, Any]) -> str | None:
    return next((rule.id for rule in policy.immutable_rules if rule.matches_payload(payload)), None)


def check_targets(proposal: ConfigProposal, devices: dict[str, Device | None]) -> list[Device]:
    """Every target known, reachable, not quarantined and not left DEGRADED by a failed rollback."""
    found: list[Device] = []
    for device_id in proposal.target_devices:
        device = devices.get(device_id)
        if device is None:
            raise PdsnoError(f"no device {device_id}", code=ReasonCode.NOT_FOUND)
        if device.status is DeviceStatus.DEGRADED:
            raise PdsnoError(
                f"{device_id} is degraded after a failed rollback; clear it before changing it again",
                code=ReasonCode.DEVICE_DEGRADED,
            )
        if device.status is not DeviceStatus.ACTIVE:
            raise PdsnoError(f"{device_id} is {device.status.value}", code=ReasonCode.DEVICE_NOT_AVAILABLE)
        found.append(device)
    return found


async def load_targets(store: NIBStore, proposal: ConfigProposal) -> list[Device]:
    return check_targets(proposal, {d: await store.get_device(d) for d in proposal.target_devices})


async def refuse_duplicate(store: NIBStore, proposal: ConfigProposal, *, window_s: int) -> None:
    """The same change on the same devices, still in flight or executed within ``window_s``, is a
    replay (reference-design §5 "RC: decide" 1)."""
    since = utcnow() - timedelta(seconds=window_s)
    for other in await store.list_proposals(config_hash=proposal.config_hash):
        if (
            other.proposal_id != proposal.proposal_id
            and sorted(other.target_devices) == sorted(proposal.target_devices)
            and (other.status in IN_FLIGHT or (other.status is ConfigStatus.EXECUTED
                                               and (other.executed_at or since) > since))
        ):  # fmt: skip
            raise PdsnoError(
                f"the same change is already {other.status.value} as {other.proposal_id}",
                code=ReasonCode.DUPLICATE_PROPOSAL,
                duplicate_of=other.proposal_id,
            )


def blast_radius(devices: Sequence[Device]) -> dict[str, Any]:
    return {
        "devices": len(devices),
        "regions": sorted({d.region for d in devices if d.region}),
        "local_controllers": sorted({d.local_controller for d in devices if d.local_controller}),
        "critical": sorted(d.device_id for d in devices if d.critical),
    }


def to_wire(proposal: ConfigProposal, *, downtime_s: int = 0, maintenance: bool = False,
            context: wire.RegionalContext | None = None) -> wire.ConfigProposal:  # fmt: skip
    return wire.ConfigProposal(
        proposal_id=proposal.proposal_id,
        category=proposal.category,
        proposed_by=proposal.proposed_by,
        config_payload=proposal.config_payload,
        config_hash=proposal.config_hash,
        target_devices=proposal.target_devices,
        suggested_sensitivity=proposal.category,
        impact_scope=proposal.impact_scope,
        estimated_downtime_seconds=downtime_s,
        requires_maintenance_window=maintenance,
        rollback_payload=proposal.rollback_payload,
        timestamp=proposal.proposed_at or utcnow(),
        policy_version=proposal.policy_version,
        origin=proposal.origin,
        regional_context=context,
    )


def from_wire(message: wire.ConfigProposal) -> ConfigProposal:
    if sha256_hex(message.config_payload) != message.config_hash:
        raise PdsnoError(
            "the proposal's config_hash does not match its payload", code=ReasonCode.TOKEN_HASH_MISMATCH
        )
    return ConfigProposal(
        proposal_id=message.proposal_id,
        config_payload=message.config_payload,
        config_hash=message.config_hash,
        category=message.category or message.suggested_sensitivity,
        origin=message.origin,
        proposed_by=message.proposed_by or message.origin,
        target_devices=message.target_devices,
        impact_scope=message.impact_scope,
        rollback_payload=message.rollback_payload,
        policy_version=message.policy_version,
        proposed_at=message.timestamp,
    )
