"""The NIB's entities: what a controller knows about devices, peers, changes, policy and history.

Columns follow reference-design §4 with the states of decisions.md §3. Every mutable entity carries
``version`` (optimistic locking) and ``created_at``/``updated_at``; the store sets those, callers only
pass back the ``version`` they read.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from enum import StrEnum
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pdsno.canonical import sha256_hex


class DeviceStatus(StrEnum):
    ACTIVE = "active"
    INACTIVE = "inactive"
    UNREACHABLE = "unreachable"
    QUARANTINED = "quarantined"
    DEGRADED = "degraded"


class DeviceType(StrEnum):
    """What kind of box a device is (NIB schema 4 added firewall, access point and wireless controller)."""

    ROUTER = "router"
    SWITCH = "switch"
    FIREWALL = "firewall"
    ACCESS_POINT = "access_point"
    WIRELESS_CONTROLLER = "wireless_controller"
    SERVER = "server"
    ENDPOINT = "endpoint"
    UNKNOWN = "unknown"


class ControllerRole(StrEnum):
    GLOBAL = "global"
    REGIONAL = "regional"
    LOCAL = "local"


class ControllerStatus(StrEnum):
    PENDING_VALIDATION = "pending_validation"
    ACTIVE = "active"
    SUSPENDED = "suspended"
    REVOKED = "revoked"
    EXPIRED = "expired"


class Sensitivity(StrEnum):
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"
    EMERGENCY = "EMERGENCY"


class ConfigStatus(StrEnum):
    """decisions.md C6."""

    PENDING = "PENDING"
    QUEUED = "QUEUED"
    APPROVED = "APPROVED"
    DENIED = "DENIED"
    EXPIRED = "EXPIRED"
    EXECUTING = "EXECUTING"
    EXECUTED = "EXECUTED"
    FAILED = "FAILED"
    ROLLING_BACK = "ROLLING_BACK"
    ROLLED_BACK = "ROLLED_BACK"
    DEGRADED = "DEGRADED"


class ImpactScope(StrEnum):
    LOCAL = "local"
    REGIONAL = "regional"
    GLOBAL = "global"


class PolicyScope(StrEnum):
    GLOBAL = "global"
    REGIONAL = "regional"


class LockType(StrEnum):
    DEVICE = "DEVICE_LOCK"
    CONFIG = "CONFIG_LOCK"
    VALIDATION = "VALIDATION_LOCK"


class LockStatus(StrEnum):
    ACTIVE = "ACTIVE"
    EXPIRED = "EXPIRED"
    RELEASED = "RELEASED"


class Decision(StrEnum):
    APPROVED = "APPROVED"
    DENIED = "DENIED"
    FLAGGED = "FLAGGED"
    NOT_APPLICABLE = "N/A"


class KeyKind(StrEnum):
    HMAC = "hmac"
    ED25519 = "ed25519"


class OperatorRole(StrEnum):
    """Northbound API roles, each allowed what the ones before it are."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    APPROVER = "approver"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return list(OperatorRole).index(self)


class _Entity(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    version: int = Field(default=0, ge=0, description="0 for an entity not yet stored")
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def next_version(self, **changes: Any) -> Self:
        """A copy with ``changes`` applied, keeping the version read so the store can guard on it."""
        return self.model_copy(update=changes)


_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def normalise_mac(mac: str) -> str:
    """``AA-BB-CC-DD-EE-FF`` or ``aabb.ccdd.eeff`` → ``aa:bb:cc:dd:ee:ff``; ``unknown-<ip>`` kept as is."""
    if mac.startswith("unknown-"):
        return mac
    digits = re.sub(r"[^0-9a-fA-F]", "", mac).lower()
    if len(digits) != 12:
        raise ValueError(f"not a MAC address: {mac!r}")
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def device_id_for_mac(mac: str) -> str:
    """Device ids derive from the MAC so every tier that sees a device names it the same way."""
    return "nib-dev-" + hashlib.sha256(normalise_mac(mac).encode()).hexdigest()[:16]


class Interface(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    if_index: int = Field(ge=0)
    name: str = ""
    mac_address: str | None = None
    admin_up: bool | None = None
    oper_up: bool | None = None
    speed_bps: int | None = Field(default=None, ge=0)


class Device(_Entity):
    device_id: str = ""
    mac_address: str
    ip_address: str | None = None
    addresses: list[str] = Field(default_factory=list, description="every IP address seen on the device")
    hostname: str | None = None
    vendor: str | None = None
    device_type: DeviceType = DeviceType.UNKNOWN
    firmware_version: str | None = None
    region: str | None = None
    local_controller: str | None = None
    status: DeviceStatus = DeviceStatus.ACTIVE
    critical: bool = False
    protected: bool = False
    suspicious: bool = False
    temp_scan_id: str | None = None
    discovery_method: str | None = None
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    missed_cycles: int = Field(default=0, ge=0)
    uptime_seconds: int | None = Field(default=None, ge=0)
    snmp_info: dict[str, Any] = Field(default_factory=dict)
    protocol_caps: list[str] = Field(default_factory=list)
    custom_tags: dict[str, Any] = Field(default_factory=dict)
    interfaces: list[Interface] = Field(default_factory=list)

    @field_validator("mac_address")
    @classmethod
    def _mac(cls, value: str) -> str:
        return normalise_mac(value)

    def model_post_init(self, context: Any, /) -> None:
        if not self.device_id:
            self.device_id = device_id_for_mac(self.mac_address)


class Controller(_Entity):
    controller_id: str
    role: ControllerRole
    region: str | None = None
    parent_id: str | None = None
    temp_id: str | None = None
    public_key: str | None = Field(default=None, description="base64 Ed25519 public key")
    certificate: dict[str, Any] = Field(default_factory=dict)
    validated_by: str | None = None
    status: ControllerStatus = ControllerStatus.ACTIVE
    rest_url: str | None = None
    admitted_at: datetime | None = None
    expires_at: datetime | None = None
    last_seen: datetime | None = None


class ConfigProposal(_Entity):
    proposal_id: str
    config_payload: dict[str, Any]
    config_hash: str = ""
    category: Sensitivity
    status: ConfigStatus = ConfigStatus.PENDING
    origin: str
    proposed_by: str
    approved_by: str | None = None
    target_devices: list[str] = Field(min_length=1)
    impact_scope: ImpactScope = ImpactScope.LOCAL
    rollback_payload: dict[str, Any] | None = None
    execution_token_id: str | None = None
    token_consumed_at: datetime | None = None
    """When the executing local controller spent the token (before touching a device)."""
    device_results: dict[str, Any] | None = None
    """How the execution ended per device: ``{status, diff, error: {code, message}}``."""
    policy_version: str | None = None
    reason: str | None = None
    proposed_at: datetime | None = None
    approved_at: datetime | None = None
    executed_at: datetime | None = None
    expires_at: datetime | None = None

    def model_post_init(self, context: Any, /) -> None:
        if not self.config_hash:
            self.config_hash = sha256_hex(self.config_payload)


class ExecutionToken(_Entity):
    token_id: str
    proposal_id: str
    config_hash: str
    target_devices: list[str]
    approved_by: str
    issued_at: datetime
    expires_at: datetime
    constraints: dict[str, Any] = Field(default_factory=dict)
    signature: str
    consumed_at: datetime | None = None
    consumed_by: str | None = None


class Policy(_Entity):
    policy_id: str
    policy_version: str
    scope: PolicyScope
    target_region: str | None = None
    content: dict[str, Any]
    distributed_by: str
    distributed_at: datetime | None = None
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    is_active: bool = True


class Lock(_Entity):
    lock_id: str
    lock_type: LockType
    subject_id: str
    held_by: str
    acquired_at: datetime
    expires_at: datetime
    status: LockStatus = LockStatus.ACTIVE
    associated_request: str | None = None


class DiscoveryReport(_Entity):
    report_id: str
    lc_id: str
    region: str
    scan_start: datetime
    scan_end: datetime
    received_at: datetime | None = None
    policy_version: str | None = None
    payload: dict[str, Any] = Field(default_factory=dict)


class MessageKey(_Entity):
    """A key that signs East/West messages of ``owner_id``: an HMAC secret or an Ed25519 public key."""

    key_id: str
    owner_id: str
    peer_id: str | None = Field(
        default=None, description="the one controller that verifies it; None for broadcast keys"
    )
    kind: KeyKind
    material: str = Field(description="base64: the HMAC secret, or the Ed25519 public key")
    not_before: datetime
    not_after: datetime | None = None


class Operator(_Entity):
    operator_id: str
    name: str = Field(min_length=1, max_length=64)
    role: OperatorRole
    token_hash: str
    disabled: bool = False


class EventDraft(BaseModel):
    """What a caller asks to record; the store numbers, chains and signs it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_type: str = Field(min_length=1, max_length=64)
    actor: str
    subject: str | None = None
    action: str | None = None
    decision: Decision = Decision.NOT_APPLICABLE
    payload: dict[str, Any] = Field(default_factory=dict)
    notes: str | None = None


class Event(EventDraft):
    """One sealed entry of the append-only, hash-chained audit log."""

    seq: int = Field(ge=1)
    event_id: str
    timestamp: datetime
    prev_hash: str
    hash: str
    signer_id: str
    signature: str
