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
    TOKEN_ALREADY_CONSUMED = "TOKEN_ALREADY_CONSUMED"  # noqa: S105 (a reason code, not a secret)
    # audit log
    AUDIT_CHAIN_BROKEN = "AUDIT_CHAIN_BROKEN"
    AUDIT_KEY_MISSING = "AUDIT_KEY_MISSING"
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
