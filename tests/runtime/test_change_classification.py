"""Classification of changes: the approver's own tier from rules, escalations, under-labelling (pure)."""

from __future__ import annotations

import pytest

from pdsno.changes.classify import DEFAULT_RULES, Rule, classify
from pdsno.nib.models import Device, ImpactScope, Sensitivity

SYS_LOCATION = "1.3.6.1.2.1.1.6.0"
COMMUNITY = "1.3.6.1.6.3.18.1.1.1.2.1"
IF_ADMIN = "1.3.6.1.2.1.2.2.1.7.3"


def device(n: int, region: str = "zone-a", *, critical: bool = False) -> Device:
    return Device(mac_address=f"02:00:00:00:09:{n:02x}", region=region, critical=critical)


def snmp(*oids: str) -> dict[str, object]:
    return {"executor": "snmp", "set": dict.fromkeys(oids, "x")}


@pytest.mark.parametrize(
    ("payload", "tier", "rule"),
    [
        (snmp(SYS_LOCATION), Sensitivity.LOW, "system-descriptive"),
        (snmp(IF_ADMIN), Sensitivity.MEDIUM, "interface-state"),
        (snmp(COMMUNITY), Sensitivity.HIGH, "snmp-credentials"),  # decisions C11
        (snmp(SYS_LOCATION, COMMUNITY), Sensitivity.HIGH, "snmp-credentials"),  # the riskiest part decides
        ({"executor": "ansible", "intent": "CREATE_VLAN"}, Sensitivity.MEDIUM, "vlans-and-acls"),
        (
            {"executor": "ansible", "intent": "SOMETHING_NEW"},
            Sensitivity.MEDIUM,
            None,
        ),  # unknown: a human looks
    ],
)
def test_rules_give_the_tier(payload: dict[str, object], tier: Sensitivity, rule: str | None) -> None:
    result = classify(payload, devices=[device(1)])
    assert (result.tier, result.rule, result.escalated_by) == (tier, rule, [])


def test_wide_long_or_critical_changes_are_escalated_to_high() -> None:
    low = snmp(SYS_LOCATION)
    assert classify(low, devices=[device(1), device(2, "zone-b")]).escalated_by == ["spans regions"]
    assert classify(low, devices=[device(1)], impact_scope=ImpactScope.GLOBAL).tier is Sensitivity.HIGH
    assert classify(low, devices=[device(1)], estimated_downtime_s=900).tier is Sensitivity.HIGH
    assert classify(low, devices=[device(1, critical=True)]).escalated_by == ["a critical device"]
    assert classify(low, devices=[device(1)], impact_scope=ImpactScope.REGIONAL).tier is Sensitivity.MEDIUM


def test_under_labelling_by_more_than_one_tier_is_flagged() -> None:
    assert classify(snmp(COMMUNITY), devices=[device(1)], suggested=Sensitivity.LOW).under_labelled
    assert not classify(snmp(COMMUNITY), devices=[device(1)], suggested=Sensitivity.MEDIUM).under_labelled
    assert not classify(snmp(SYS_LOCATION), devices=[device(1)], suggested=Sensitivity.HIGH).under_labelled


def test_policy_rules_replace_the_defaults_first_match_wins() -> None:
    strict = [Rule(name="everything-high", tier=Sensitivity.HIGH, executor="snmp"), *DEFAULT_RULES]
    assert classify(snmp(SYS_LOCATION), devices=[device(1)], rules=strict).rule == "everything-high"
    assert Rule(name="r", tier=Sensitivity.LOW, oid_prefixes=["1.3.6.1.2.1.1.6"]).matches(
        "snmp", None, [".1.3.6.1.2.1.1.6.0"]
    )
    assert not Rule(name="r", tier=Sensitivity.LOW, oid_prefixes=["1.3.6.1.2.1.1.6"]).matches(
        "snmp", None, ["1.3.6.1.2.1.1.60"]
    )
