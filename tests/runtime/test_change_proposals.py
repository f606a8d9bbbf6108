"""What every tier checks before deciding on a proposal, and the policy a controller keeps, on a real
NIB (both backends); the classification floor and immutable rules are pure."""

from __future__ import annotations

import pytest

from pdsno.changes.classify import ImmutableRule
from pdsno.changes.lifecycle import follow, path_to
from pdsno.changes.proposals import (
    ProposalRequest,
    as_classified,
    check_targets,
    classify_under,
    immutable_rule_hit,
    new_proposal,
    refuse_duplicate,
)
from pdsno.config import PolicyContent
from pdsno.controller.policy_duty import PolicyHolder
from pdsno.errors import PdsnoError, ReasonCode
from pdsno.messaging.messages import PolicyUpdate
from pdsno.nib.models import ConfigStatus, Device, DeviceStatus, PolicyScope, Sensitivity
from pdsno.nib.sql import SqlNIBStore

S = ConfigStatus
LOCATION = {"1.3.6.1.2.1.1.6.0": "rack 1"}


def request(**extra: object) -> ProposalRequest:
    return ProposalRequest.model_validate({"executor": "snmp", "targets": ["nib-dev-a"], "payload": {"set": LOCATION},
                                           **extra})  # fmt: skip


def test_the_proposers_tier_is_a_floor_never_trusted_lower() -> None:
    device = Device(mac_address="02:00:00:00:00:01", region="zone-a")
    low = new_proposal(request(), origin="gc", proposed_by="olga", tier=Sensitivity.LOW, policy_version="1")
    assert classify_under(PolicyContent(), low, [device], suggested=None).tier is Sensitivity.LOW
    asked_high = classify_under(PolicyContent(), low, [device], suggested=Sensitivity.HIGH)
    assert asked_high.tier is Sensitivity.HIGH and "proposer" in asked_high.escalated_by
    community = new_proposal(request(payload={"set": {"1.3.6.1.6.3.18.1.1.1.2.1": "x"}}), origin="gc",
                             proposed_by="olga", tier=Sensitivity.LOW, policy_version="1")  # fmt: skip
    found = classify_under(PolicyContent(), community, [device], suggested=Sensitivity.LOW)
    assert found.tier is Sensitivity.HIGH and found.under_labelled


def test_immutable_rules_match_whatever_the_tier() -> None:
    policy = PolicyContent(
        immutable_rules=[ImmutableRule(id="no-location", oid_prefixes=["1.3.6.1.2.1.1.6"])]
    )
    low = new_proposal(request(), origin="gc", proposed_by="olga", tier=Sensitivity.LOW, policy_version="1")
    assert immutable_rule_hit(policy, low.config_payload) == "no-location"
    assert immutable_rule_hit(PolicyContent(), low.config_payload) is None


def test_targets_must_be_known_active_and_not_degraded() -> None:
    proposal = new_proposal(
        request(), origin="gc", proposed_by="olga", tier=Sensitivity.LOW, policy_version="1"
    )
    for found, code in ((None, ReasonCode.NOT_FOUND),
                        (DeviceStatus.DEGRADED, ReasonCode.DEVICE_DEGRADED),
                        (DeviceStatus.INACTIVE, ReasonCode.DEVICE_NOT_AVAILABLE)):  # fmt: skip
        device = None if found is None else Device(mac_address="02:00:00:00:00:01", status=found)
        with pytest.raises(PdsnoError) as refused:
            check_targets(proposal, {"nib-dev-a": device})
        assert refused.value.code is code


async def test_the_same_change_in_flight_is_a_duplicate_and_a_rollback_is_judged_by_its_original(
    nib: SqlNIBStore,
) -> None:
    first = new_proposal(request(), origin="gc", proposed_by="olga", tier=Sensitivity.LOW, policy_version="1")
    first = (await nib.create_proposal(first)).unwrap()
    again = new_proposal(request(), origin="gc", proposed_by="bob", tier=Sensitivity.LOW, policy_version="1")
    with pytest.raises(PdsnoError) as refused:
        await refuse_duplicate(nib, again, window_s=300)
    assert refused.value.code is ReasonCode.DUPLICATE_PROPOSAL
    undo = new_proposal(request(payload={"rollback_of": first.proposal_id}), origin="gc", proposed_by="olga",
                        tier=Sensitivity.LOW, policy_version="1")  # fmt: skip
    with pytest.raises(PdsnoError) as early:
        await as_classified(nib, undo)
    assert early.value.code is ReasonCode.INVALID_TRANSITION  # not executed yet
    first = await follow(nib, first, S.EXECUTED, actor="rc")
    assert (await as_classified(nib, undo)).config_payload == first.config_payload
    assert [e.event_type for e in await nib.events_about(first.proposal_id)] == [
        "CONFIG_EXECUTING",
        "CONFIG_EXECUTED",
    ]


def test_a_mirror_reaches_an_outcome_through_every_step_in_between() -> None:
    medium = new_proposal(
        request(), origin="gc", proposed_by="olga", tier=Sensitivity.MEDIUM, policy_version="1"
    )
    assert path_to(medium, S.ROLLED_BACK) == [S.APPROVED, S.EXECUTING, S.ROLLING_BACK, S.ROLLED_BACK]
    assert path_to(medium.model_copy(update={"category": Sensitivity.LOW}), S.EXECUTED) == [
        S.EXECUTING,
        S.EXECUTED,
    ]
    with pytest.raises(PdsnoError) as refused:
        path_to(medium.model_copy(update={"status": S.DENIED}), S.EXECUTED)
    assert refused.value.code is ReasonCode.INVALID_TRANSITION


async def test_a_controller_keeps_only_newer_policy_versions(nib: SqlNIBStore) -> None:
    holder = PolicyHolder(nib, PolicyContent())

    def update(version: str, interval: int) -> PolicyUpdate:
        content = PolicyContent(discovery_interval_s=interval).model_dump(mode="json")
        return PolicyUpdate(policy_id="pdsno-policy", policy_version=version, scope=PolicyScope.GLOBAL,
                            content=content, distributed_by="gc")  # fmt: skip

    assert await holder.keep(update("2", 180), actor="rc")
    assert not await holder.keep(update("2", 180), actor="rc"), "the same version again"
    assert not await holder.keep(update("1", 300), actor="rc"), "an older one"
    again = PolicyHolder(nib, PolicyContent())
    await again.load()
    assert again.version == "2" and again.content.discovery_interval_s == 180
    stored = await nib.get_active_policy(PolicyScope.GLOBAL)
    assert stored is not None and stored.policy_version == "2"
