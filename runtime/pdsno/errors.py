"""One exception hierarchy for the whole runtime, each error carrying a stable reason code.

Reason codes are part of the public interface: the CLI prints them, the REST API returns them in
``{"code": ..., "message": ...}`` and operators grep logs for them, so a code never changes meaning.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ReasonCode(StrEnum):
    """Stable reason codes (reference-design §2 to §8 plus the runtime's own)."""

    # configuration and usage
    CONFIG_INVALID = "CONFIG_INVALID"
    CONFIG_NOT_FOUND = "CONFIG_NOT_FOUND"
    # NIB
    NIB_UNAVAILABLE = "NIB_UNAVAILABLE"
    NIB_SCHEMA_MISMATCH = "NIB_SCHEMA_MISMATCH"
    NIB_NOT_INITIALISED = "NIB_NOT_INITIALISED"
    NIB_INTEGRITY = "NIB_INTEGRITY"
    CONFLICT = "CONFLICT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    LOCK_HELD = "LOCK_HELD"
    LOCK_NOT_HELD = "LOCK_NOT_HELD"
    TOKEN_ALREADY_CONSUMED = "TOKEN_ALREADY_CONSUMED"
    # NIB backup and restore (pdsno nib backup / restore)
    NIB_BACKUP_TOOL_MISSING = "NIB_BACKUP_TOOL_MISSING"
    NIB_BACKUP_FAILED = "NIB_BACKUP_FAILED"
    NIB_IN_USE = "NIB_IN_USE"
    # audit log
    AUDIT_CHAIN_BROKEN = "AUDIT_CHAIN_BROKEN"
    AUDIT_KEY_MISSING = "AUDIT_KEY_MISSING"
    # signed messages (reference-design §7, decisions §4)
    MESSAGE_TOO_LARGE = "MESSAGE_TOO_LARGE"
    MALFORMED_MESSAGE = "MALFORMED_MESSAGE"
    UNSUPPORTED_SCHEMA_VERSION = "UNSUPPORTED_SCHEMA_VERSION"
    UNSIGNED_MESSAGE = "UNSIGNED_MESSAGE"
    MISADDRESSED_MESSAGE = "MISADDRESSED_MESSAGE"
    STALE_TIMESTAMP = "STALE_TIMESTAMP"
    FUTURE_TIMESTAMP = "FUTURE_TIMESTAMP"
    UNKNOWN_KEY = "UNKNOWN_KEY"
    KEY_NOT_OWNED_BY_SENDER = "KEY_NOT_OWNED_BY_SENDER"
    KEY_EXPIRED = "KEY_EXPIRED"
    INVALID_SIGNATURE = "INVALID_SIGNATURE"
    REPLAYED_MESSAGE = "REPLAYED_MESSAGE"
    MQTT_PUBLISH_REFUSED = "MQTT_PUBLISH_REFUSED"
    MQTT_HANDLER_FAILED = "MQTT_HANDLER_FAILED"
    MQTT_MESSAGE_DROPPED = "MQTT_MESSAGE_DROPPED"
    UNSUPPORTED_MESSAGE_TYPE = "UNSUPPORTED_MESSAGE_TYPE"
    # East/West and admission over REST take only TLS peers with a deployment CA certificate
    CLIENT_CERTIFICATE_REQUIRED = "CLIENT_CERTIFICATE_REQUIRED"
    # discovery (reference-design §3)
    SCAN_PROTOCOL_FAILED = "SCAN_PROTOCOL_FAILED"
    DISCOVERY_CYCLE_FAILED = "DISCOVERY_CYCLE_FAILED"
    # hosts answered ARP/ICMP but no SNMP agent answered with the credentials given
    SNMP_NO_ANSWER = "SNMP_NO_ANSWER"
    DISCOVERY_SKIPPED = "DISCOVERY_SKIPPED"
    DISCOVERY_REPORT_REJECTED = "DISCOVERY_REPORT_REJECTED"
    # admission (reference-design §2)
    BLOCKLISTED = "BLOCKLISTED"
    INVALID_BOOTSTRAP_TOKEN = "INVALID_BOOTSTRAP_TOKEN"
    BOOTSTRAP_TOKEN_EXPIRED = "BOOTSTRAP_TOKEN_EXPIRED"
    BOOTSTRAP_TOKEN_REUSED = "BOOTSTRAP_TOKEN_REUSED"
    UNKNOWN_CHALLENGE = "UNKNOWN_CHALLENGE"
    CHALLENGE_EXPIRED = "CHALLENGE_EXPIRED"
    TEMP_ID_MISMATCH = "TEMP_ID_MISMATCH"
    CONTROLLER_TYPE_NOT_PERMITTED = "CONTROLLER_TYPE_NOT_PERMITTED"
    INVALID_REGION = "INVALID_REGION"
    REGION_NOT_SERVED_BY_THIS_RC = "REGION_NOT_SERVED_BY_THIS_RC"
    CONTROLLER_QUOTA_EXCEEDED = "CONTROLLER_QUOTA_EXCEEDED"
    DELEGATION_INVALID = "DELEGATION_INVALID"
    IDENTITY_ASSIGNMENT_FAILED = "IDENTITY_ASSIGNMENT_FAILED"
    ADMISSION_FAILED = "ADMISSION_FAILED"
    PARENT_UNREACHABLE = "PARENT_UNREACHABLE"
    # a request went out but no answer came back (the connection broke, the wait ran out): unlike
    # PARENT_UNREACHABLE, the peer may have acted on it
    PEER_NO_ANSWER = "PEER_NO_ANSWER"
    # configuration changes (reference-design §5)
    TOKEN_EXPIRED = "TOKEN_EXPIRED"
    INVALID_TOKEN = "INVALID_TOKEN"
    TOKEN_DEVICE_MISMATCH = "TOKEN_DEVICE_MISMATCH"
    TOKEN_HASH_MISMATCH = "TOKEN_HASH_MISMATCH"
    INVALID_TRANSITION = "INVALID_TRANSITION"
    FOUR_EYES_VIOLATION = "FOUR_EYES_VIOLATION"
    DUPLICATE_PROPOSAL = "DUPLICATE_PROPOSAL"
    POLICY_VERSION_MISMATCH = "POLICY_VERSION_MISMATCH"
    DENY_CONFLICT = "DENY_CONFLICT"
    LOCK_RACE = "LOCK_RACE"
    GC_TIMEOUT = "GC_TIMEOUT"
    GC_DENIED = "GC_DENIED"
    RC_DENIED = "RC_DENIED"
    IMMUTABLE_RULE = "IMMUTABLE_RULE"
    TOO_MANY_REGIONS = "TOO_MANY_REGIONS"
    DEVICE_NOT_AVAILABLE = "DEVICE_NOT_AVAILABLE"
    DEVICE_STATE_CHANGED = "DEVICE_STATE_CHANGED"
    DEVICE_DEGRADED = "DEVICE_DEGRADED"
    EMERGENCY_TYPE_NOT_PERMITTED = "EMERGENCY_TYPE_NOT_PERMITTED"
    EMERGENCY_RATE_LIMITED = "EMERGENCY_RATE_LIMITED"
    EMERGENCY_ACK_TIMEOUT = "EMERGENCY_ACK_TIMEOUT"
    # executors: what touching a device can end in (reference-design §5 "LC: execute", "Rollback")
    DEVICE_UNREACHABLE = "DEVICE_UNREACHABLE"
    DEVICE_READ_FAILED = "DEVICE_READ_FAILED"
    DEVICE_WRITE_FAILED = "DEVICE_WRITE_FAILED"
    CHANGE_VERIFY_FAILED = "CHANGE_VERIFY_FAILED"
    # the executing controller stopped in the middle of the change; its restart settled it
    CHANGE_INTERRUPTED = "CHANGE_INTERRUPTED"
    EXECUTOR_UNAVAILABLE = "EXECUTOR_UNAVAILABLE"
    EXECUTOR_TIMEOUT = "EXECUTOR_TIMEOUT"
    # northbound API
    # the client refused the GC's TLS certificate (or the handshake failed): a trust problem, not a
    # network one, so it is told apart from PARENT_UNREACHABLE
    TLS_ERROR = "TLS_ERROR"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    FORBIDDEN = "FORBIDDEN"
    INVALID_REQUEST = "INVALID_REQUEST"
    # everything else
    INTERNAL_ERROR = "INTERNAL_ERROR"


class PdsnoError(Exception):
    """Base of every error the runtime raises on purpose."""

    code: ReasonCode = ReasonCode.INTERNAL_ERROR

    def __init__(self, message: str, *, code: ReasonCode | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details

    def as_dict(self) -> dict[str, Any]:
        return {"code": str(self.code), "message": self.message, **self.details}

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class ConfigError(PdsnoError):
    """A controller configuration file (or its environment override) is missing or invalid."""

    code = ReasonCode.CONFIG_INVALID


class NIBError(PdsnoError):
    """The Network Information Base could not do what was asked."""

    code = ReasonCode.NIB_UNAVAILABLE


class AuditError(PdsnoError):
    """The audit log cannot be written or verified."""

    code = ReasonCode.AUDIT_CHAIN_BROKEN


class NIBBusy(NIBError):
    """The database stayed locked past its timeout; callers may retry it like a version conflict."""

    code = ReasonCode.CONFLICT
