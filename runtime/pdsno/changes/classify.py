"""Classification of a change (reference-design §5 "Metadata and classification"; decisions C11).

Self-reported sensitivity is never trusted: the proposer's tier is advisory, and every approver
computes its own from the policy's rules (first match wins), then escalates where the change is wide
(global scope, several regions), long (downtime over the threshold) or touches a critical device. A
gap of more than one tier between the two is flagged (threat T1, under-labelling).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pdsno.nib.models import Device, ImpactScope, Sensitivity

ORDER = (Sensitivity.LOW, Sensitivity.MEDIUM, Sensitivity.HIGH)

# sysContact, sysName, sysLocation: descriptive objects, reversible, local.
_SYSTEM_DESCRIPTIVE = ("1.3.6.1.2.1.1.4", "1.3.6.1.2.1.1.5", "1.3.6.1.2.1.1.6")
# net-snmp's community table and SNMP-COMMUNITY-MIB: credentials are security changes (C11).
_COMMUNITIES = ("1.3.6.1.6.3.18.1.1", "1.3.6.1.4.1.8072.1.2")
# ipForwarding, ipRouteTable / inetCidrRouteTable: routing.
_ROUTING = ("1.3.6.1.2.1.4.1", "1.3.6.1.2.1.4.21", "1.3.6.1.2.1.4.24")
# ifAdminStatus: taking an interface down.
_IF_ADMIN = ("1.3.6.1.2.1.2.2.1.7",)


class Match(BaseModel):
    """Conditions on a change; every given one must hold."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    executor: str | None = None
    intents: list[str] = Field(default_factory=list, description="any of these intent names")
    oid_prefixes: list[str] = Field(default_factory=list, description="any OID set under one of these")

    def matches(self, executor: str, intent: str | None, oids: Sequence[str]) -> bool:
        if self.executor is not None and self.executor != executor:
            return False
        if self.intents and intent not in self.intents:
            return False
        return not self.oid_prefixes or any(_under(oid, p) for oid in oids for p in self.oid_prefixes)

    def matches_payload(self, payload: dict[str, Any]) -> bool:
        intent = payload.get("intent")
        return self.matches(
            str(payload.get("executor", "")), intent, [str(o) for o in payload.get("set") or {}]
        )


class Rule(Match):
    """One classification rule of the policy: the first that matches gives the tier."""

    name: str
    tier: Sensitivity


class ImmutableRule(Match):
    """A change the GC refuses at any tier (reference-design §5: escalation cannot override it)."""

    id: str = Field(min_length=1, max_length=64)


def _under(oid: str, prefix: str) -> bool:
    oid, prefix = oid.strip("."), prefix.strip(".")
    return oid == prefix or oid.startswith(prefix + ".")


DEFAULT_RULES: tuple[Rule, ...] = (
    Rule(name="snmp-credentials", tier=Sensitivity.HIGH, oid_prefixes=list(_COMMUNITIES)),
    Rule(name="routing", tier=Sensitivity.HIGH, oid_prefixes=list(_ROUTING)),
    Rule(
        name="routing-intents", tier=Sensitivity.HIGH, intents=["ENABLE_ROUTING", "CORE_ROUTING", "FIRMWARE"]
    ),
    Rule(name="interface-state", tier=Sensitivity.MEDIUM, oid_prefixes=list(_IF_ADMIN)),
    Rule(
        name="vlans-and-acls", tier=Sensitivity.MEDIUM, intents=["CREATE_VLAN", "DELETE_VLAN", "CREATE_ACL"]
    ),
    Rule(name="system-descriptive", tier=Sensitivity.LOW, oid_prefixes=list(_SYSTEM_DESCRIPTIVE)),
)
"""reference-design §5: descriptive, reversible changes LOW; limited impact MEDIUM; core, security and
routing HIGH. Anything no rule knows is MEDIUM: unknown changes deserve a human."""

UNKNOWN_TIER = Sensitivity.MEDIUM


@dataclass(frozen=True, slots=True)
class Classification:
    tier: Sensitivity
    rule: str | None
    escalated_by: list[str] = field(default_factory=list)
    suggested: Sensitivity | None = None

    @property
    def under_labelled(self) -> bool:
        """The proposer's tier is more than one below ours (threat T1)."""
        if self.suggested is None or self.suggested is Sensitivity.EMERGENCY:
            return False
        return ORDER.index(self.tier) - ORDER.index(self.suggested) > 1


def _raise(tier: Sensitivity, to: Sensitivity) -> Sensitivity:
    return to if ORDER.index(to) > ORDER.index(tier) else tier


def classify(
    payload: dict[str, Any],
    *,
    devices: Sequence[Device],
    impact_scope: ImpactScope = ImpactScope.LOCAL,
    estimated_downtime_s: int = 0,
    suggested: Sensitivity | None = None,
    rules: Sequence[Rule] = DEFAULT_RULES,
    escalation_downtime_s: int = 300,
) -> Classification:
    """The tier this controller gives the change. ``payload`` carries ``executor``, optional
    ``intent`` and, for SNMP, ``set`` (OID → value)."""
    rule = next((r for r in rules if r.matches_payload(payload)), None)
    tier = rule.tier if rule else UNKNOWN_TIER
    reasons: list[str] = []
    regions = {d.region for d in devices if d.region}
    if impact_scope is ImpactScope.GLOBAL or len(regions) > 1:
        reasons.append("spans regions")
    if estimated_downtime_s > escalation_downtime_s:
        reasons.append(f"downtime over {escalation_downtime_s} s")
    if any(d.critical for d in devices):
        reasons.append("a critical device")
    if reasons:
        tier = _raise(tier, Sensitivity.HIGH)
    elif impact_scope is ImpactScope.REGIONAL:
        tier = _raise(tier, Sensitivity.MEDIUM)
        reasons.append("regional scope")
    return Classification(
        tier=tier, rule=rule.name if rule else None, escalated_by=reasons, suggested=suggested
    )
