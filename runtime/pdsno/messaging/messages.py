"""One model per message payload, fields as in reference-design §2, §3, §5, §6 and §7. No logic here.

``PAYLOAD_MODELS`` maps each :class:`MessageType` to its model; :func:`typed_payload` validates an
envelope's payload with it. Timestamps of a message as a whole live in the envelope; the ones here are
the spec's own (scan times, token lifetimes...).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, with_config
from typing_extensions import TypedDict  # pydantic validates only this one on Python 3.11

from pdsno.messaging.envelope import Envelope, MessageType
from pdsno.nib.models import ControllerRole, ImpactScope, KeyKind, PolicyScope, Sensitivity


class _Payload(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --- admission (§2) -------------------------------------------------------------------------


class ControllerMetadata(_Payload):
    hostname: str
    ip_address: str | None = Field(default=None, description="the validator also records the peer address")
    software_version: str
    capabilities: list[str] = Field(default_factory=list)
    rest_url: str | None = Field(default=None, description="where the newcomer serves East/West REST")


class ValidationRequest(_Payload):
    temp_id: str
    controller_type: Literal["regional", "local"]
    region: str
    public_key: str = Field(description="base64 raw Ed25519 public key")
    bootstrap_token: str
    requested_id: str | None = None
    metadata: ControllerMetadata


class Challenge(_Payload):
    challenge_id: str
    temp_id: str
    nonce: str = Field(description="base64 of 32 random bytes")
    issued_at: datetime
    expires_at: datetime


class ChallengeResponse(_Payload):
    challenge_id: str
    temp_id: str
    signed_nonce: str = Field(description="base64 Ed25519 signature over the nonce's bytes")


@with_config(ConfigDict(extra="forbid"))
class HmacKeyGrant(TypedDict):
    """A message key issued at admission, over TLS (decisions.md C15): ``secret`` is base64."""

    key_id: str
    secret: str


class ValidationResult(_Payload):
    status: Literal["APPROVED", "REJECTED", "ERROR"]
    assigned_id: str | None = None
    certificate: dict[str, Any] | None = None
    delegation_credential: dict[str, Any] | None = None
    role: ControllerRole | None = None
    region: str | None = None
    reason: str | None = None
    hmac_key: HmacKeyGrant | None = Field(default=None, repr=False, description="the newcomer signs with it")
    parent_hmac_key: HmacKeyGrant | None = Field(
        default=None, repr=False, description="the validator signs with it"
    )
    issuer_id: str | None = None
    issuer_public_key: str | None = Field(default=None, description="base64 Ed25519 key of the validator")
    issuer_certificate: dict[str, Any] | None = Field(default=None, description="the validator's own")
    issuer_delegation: dict[str, Any] | None = Field(default=None, description="an RC's from the GC")


# --- discovery (§3) -------------------------------------------------------------------------


class DiscoveryRequest(_Payload):
    request_id: str
    trigger: Literal["SCHEDULED", "ON_DEMAND", "EVENT", "BOOTSTRAP", "RC_REQUESTED_OVERDUE"]
    subnets: list[str] = Field(default_factory=list, description="empty: the policy's discovery_subnets")
    protocols: list[str] = Field(default_factory=list, description="empty: the policy's protocols")
    lc_ids: list[str] = Field(default_factory=list, description="empty: every LC of the receiving RC")


class WriteSummary(_Payload):
    new: int = Field(default=0, ge=0)
    updated: int = Field(default=0, ge=0)
    inactive: int = Field(default=0, ge=0)
    conflicts: int = Field(default=0, ge=0)


class DiscoveryReport(_Payload):
    """Deltas only; a large report is sent in ``chunk_count`` parts sharing one ``report_id``."""

    report_id: str
    lc_id: str
    region: str
    scan_start: datetime
    scan_end: datetime
    new_devices: list[dict[str, Any]] = Field(default_factory=list)
    updated_devices: list[dict[str, Any]] = Field(default_factory=list)
    inactive_devices: list[str] = Field(default_factory=list, description="device ids")
    total_devices_seen: int = Field(default=0, ge=0)
    write_summary: WriteSummary = Field(default_factory=WriteSummary)
    policy_version: str | None = None
    chunk_index: int = Field(default=0, ge=0)
    chunk_count: int = Field(default=1, ge=1)
    request_id: str | None = Field(default=None, description="the DISCOVERY_REQUEST this cycle answers")


class DiscoveryReportAck(_Payload):
    """The receiver stored (ACCEPTED) or refused (REJECTED) one report chunk, or one summary (its id as
    ``report_id``): until this arrives the sender keeps the message and sends it again."""

    report_id: str
    chunk_index: int = Field(default=0, ge=0)
    status: Literal["ACCEPTED", "REJECTED"]
    reason: str | None = None
    flags: list[str] = Field(default_factory=list, description="e.g. DISCOVERY_REPORT_STALE_POLICY")


class DiscoverySummary(_Payload):
    summary_id: str
    rc_id: str
    region: str
    cycle_start: datetime
    cycle_end: datetime
    total_new: int = Field(default=0, ge=0)
    total_updated: int = Field(default=0, ge=0)
    total_inactive: int = Field(default=0, ge=0)
    total_devices_in_region: int = Field(default=0, ge=0)
    anomalies_flagged: list[dict[str, Any]] = Field(default_factory=list)
    lcs_reported: list[str] = Field(default_factory=list)
    lcs_missing: list[str] = Field(default_factory=list)
    # The device deltas themselves, so the GC's inventory follows the region's (deltas only).
    new_devices: list[dict[str, Any]] = Field(default_factory=list)
    updated_devices: list[dict[str, Any]] = Field(default_factory=list)
    inactive_devices: list[str] = Field(default_factory=list, description="device ids")
    request_id: str | None = None


# --- configuration changes (§5) -------------------------------------------------------------


class RegionalContext(_Payload):
    """Added by the RC when it escalates a HIGH proposal to the GC."""

    blast_radius: int = Field(default=0, ge=0)
    affected_critical_devices: list[str] = Field(default_factory=list)
    regional_policy_version: str | None = None


class ConfigProposal(_Payload):
    proposal_id: str
    category: Sensitivity | None = Field(default=None, description="the sender's classification")
    proposed_by: str | None = Field(default=None, description="the operator who asked for it")
    config_payload: dict[str, Any]
    config_hash: str = Field(description="sha256 of the canonical JSON of config_payload")
    target_devices: list[str] = Field(min_length=1)
    suggested_sensitivity: Sensitivity
    impact_scope: ImpactScope = ImpactScope.LOCAL
    estimated_downtime_seconds: int = Field(default=0, ge=0)
    requires_maintenance_window: bool = False
    rollback_payload: dict[str, Any] | None = None
    timestamp: datetime
    policy_version: str | None = None
    origin: str
    origin_signature: str | None = None
    regional_context: RegionalContext | None = None
    check: bool = Field(default=False, description="plan only: answer the diff, store and change nothing")


class TokenConstraints(_Payload):
    max_devices_per_minute: int | None = Field(default=None, ge=1)
    rollback_required_on_failure: bool = True
    maintenance_window_required: bool = False


class ExecutionTokenData(_Payload):
    """The execution token as it travels (§5 "Execution token"); ``signature`` covers the rest."""

    token_id: str
    proposal_id: str
    config_hash: str
    target_devices: list[str] = Field(min_length=1)
    approved_by: str
    issued_at: datetime
    expires_at: datetime
    constraints: TokenConstraints = Field(default_factory=TokenConstraints)
    signature: str


class ApprovalResponse(_Payload):
    """A decision on a proposal. ``QUEUE``: a target is locked by another change (``DENY_CONFLICT``);
    the decision follows when the lock is released. On an EMERGENCY change already executed, ``APPROVE``
    acknowledges it and ``DENY`` orders it undone."""

    proposal_id: str
    decision: Literal["APPROVE", "DENY", "ESCALATE", "QUEUE"]
    responder: str
    timestamp: datetime
    responder_signature: str | None = None
    reason: str | None = None
    escalation_target: str | None = None
    execution_token: ExecutionTokenData | None = Field(default=None, description="with APPROVE")
    issuer_public_key: str | None = Field(
        default=None, description="base64 Ed25519 key of the token's issuer"
    )
    regional_context: RegionalContext | None = Field(default=None, description="with ESCALATE to the GC")
    category: Sensitivity | None = Field(default=None, description="the responder's own classification")


class ExecutionInstruction(_Payload):
    """Apply ``proposal``. The token is the approver's; its issuer's public key comes from the parent, which
    the executor already trusts. An EMERGENCY change carries no token."""

    proposal_id: str
    proposal: ConfigProposal
    execution_token: ExecutionTokenData | None = None
    issuer_public_key: str | None = None
    execute_at: datetime | None = None
    plan_only: bool = Field(
        default=False, description="answer the plan (EXECUTION_RESULT PLANNED), touch nothing"
    )


class TokenSpent(_Payload):
    """The executor's record of spending the execution token (its ``EXECUTION_TOKEN_CONSUMED``)."""

    token_id: str
    consumed_by: str
    consumed_at: datetime


class ExecutionResult(_Payload):
    proposal_id: str
    executor: str
    status: Literal["EXECUTED", "FAILED", "ROLLED_BACK", "DEGRADED", "PLANNED"]
    device_results: dict[str, Any] = Field(default_factory=dict)
    timestamp: datetime
    execution_signature: str | None = None
    reason: str | None = Field(
        default=None, description="the reason code when nothing or not all was applied"
    )
    message: str | None = Field(default=None, description="what failed, in words (with ``reason``)")
    token: TokenSpent | None = Field(default=None, description="absent for an emergency change")


class DeviceClear(_Payload):
    """An operator cleared a device left DEGRADED by a failed rollback: automation may touch it again."""

    device_id: str
    cleared_by: str
    reason: str | None = None


# --- policy (§6) ----------------------------------------------------------------------------


class PolicyUpdate(_Payload):
    policy_id: str
    policy_version: str
    scope: PolicyScope
    target_region: str | None = None
    content: dict[str, Any]
    distributed_by: str
    valid_from: datetime | None = None
    valid_until: datetime | None = None


class PolicyAck(_Payload):
    policy_id: str
    policy_version: str
    controller_id: str
    status: Literal["APPLIED", "REJECTED"]
    reason: str | None = None


# --- liveness, resync, keys (§7, code-only) -------------------------------------------------


class AuditStatus(_Payload):
    """A controller's last check of its own audit chain (:mod:`pdsno.audit.watch`)."""

    ok: bool
    checked: int = Field(ge=0)
    head_seq: int = Field(ge=0)
    verified_at: datetime
    problem: str | None = None


class ChildStatus(_Payload):
    """What a controller's parent passes up of it, from its last verified heartbeat: so the GC shows
    the local controllers it holds no key for."""

    controller_id: str
    role: ControllerRole
    region: str | None = None
    last_seen: datetime
    clock_skew_s: float
    audit: AuditStatus | None = None


class Heartbeat(_Payload):
    controller_id: str
    role: ControllerRole
    region: str | None = None
    status: Literal["online", "offline"]
    uptime_s: float = Field(ge=0)
    nib_backend: str
    version: str
    audit: AuditStatus | None = None
    children: list[ChildStatus] = Field(default_factory=list, max_length=1000)


SyncEntity = Literal["devices", "controllers", "policies", "proposals"]


class SyncRequest(_Payload):
    """Full resync after a reconnect (``since`` None) or version-stamped deltas since a time."""

    request_id: str
    entities: list[SyncEntity] = Field(min_length=1)
    region: str | None = None
    since: datetime | None = None
    cursor: str | None = Field(default=None, description="continue a paged response")


class SyncResponse(_Payload):
    request_id: str
    as_of: datetime
    entities: dict[SyncEntity, list[dict[str, Any]]] = Field(default_factory=dict)
    complete: bool = True
    next_cursor: str | None = None


class KeyRotationRequest(_Payload):
    """Announces ``owner_id``'s new key and when its current one stops being accepted.

    ``material`` is the base64 Ed25519 public key, or for an HMAC key the new secret, which may only
    travel point to point over TLS (decisions.md C15), never on a shared MQTT topic.
    """

    key_id: str
    owner_id: str
    kind: KeyKind
    material: str = Field(repr=False)
    not_before: datetime
    not_after: datetime | None = None
    retire_key_id: str | None = None
    retire_at: datetime | None = None


class KeyRotationAck(_Payload):
    key_id: str
    status: Literal["ACCEPTED", "REJECTED"]
    reason: str | None = None


PAYLOAD_MODELS: dict[MessageType, type[BaseModel]] = {
    MessageType.VALIDATION_REQUEST: ValidationRequest,
    MessageType.CHALLENGE: Challenge,
    MessageType.CHALLENGE_RESPONSE: ChallengeResponse,
    MessageType.VALIDATION_RESULT: ValidationResult,
    MessageType.DISCOVERY_REQUEST: DiscoveryRequest,
    MessageType.DISCOVERY_REPORT: DiscoveryReport,
    MessageType.DISCOVERY_REPORT_ACK: DiscoveryReportAck,
    MessageType.DISCOVERY_SUMMARY: DiscoverySummary,
    MessageType.CONFIG_PROPOSAL: ConfigProposal,
    MessageType.APPROVAL_RESPONSE: ApprovalResponse,
    MessageType.EXECUTION_INSTRUCTION: ExecutionInstruction,
    MessageType.EXECUTION_RESULT: ExecutionResult,
    MessageType.DEVICE_CLEAR: DeviceClear,
    MessageType.POLICY_UPDATE: PolicyUpdate,
    MessageType.POLICY_ACK: PolicyAck,
    MessageType.HEARTBEAT: Heartbeat,
    MessageType.SYNC_REQUEST: SyncRequest,
    MessageType.SYNC_RESPONSE: SyncResponse,
    MessageType.KEY_ROTATION_REQUEST: KeyRotationRequest,
    MessageType.KEY_ROTATION_ACK: KeyRotationAck,
}


def typed_payload(envelope: Envelope) -> BaseModel:
    """``envelope``'s payload validated with the model of its type (MALFORMED_MESSAGE if it does not fit)."""
    return envelope.payload_as(PAYLOAD_MODELS[envelope.message_type])
