"""The signed envelope every East/West message travels in (decisions.md §4, reference-design §7).

On the wire an envelope is one flat JSON object::

    {message_id, message_type, sender_id, recipient_id, timestamp, nonce, schema_version,
     key_id, payload, signature}

``signature`` covers :meth:`Envelope.signing_bytes`: the canonical JSON of every other field, the
timestamp in :func:`~pdsno.canonical.format_ts` form. The verifier recomputes those bytes from the
*parsed* envelope, so what is signed is exactly what the receiver then acts on.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from enum import StrEnum
from typing import Any, Final, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pdsno.canonical import canonical_json, format_ts, parse_ts
from pdsno.errors import PdsnoError, ReasonCode

SCHEMA_VERSION: Final = "1.0"
SUPPORTED_SCHEMA_VERSIONS: Final = frozenset({SCHEMA_VERSION})
BROADCAST: Final = "*"

_UUID4 = r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"
_NONCE = r"^[A-Za-z0-9+/]{43}=$"  # base64 of exactly 32 bytes
_ID_MAX = 128  # bounds what a refused message can put into the audit log

M = TypeVar("M", bound=BaseModel)


class MessageType(StrEnum):
    """Every message of reference-design §7, documented and code-only (the key exchange excepted: C15)."""

    VALIDATION_REQUEST = "VALIDATION_REQUEST"
    CHALLENGE = "CHALLENGE"
    CHALLENGE_RESPONSE = "CHALLENGE_RESPONSE"
    VALIDATION_RESULT = "VALIDATION_RESULT"
    DISCOVERY_REQUEST = "DISCOVERY_REQUEST"
    DISCOVERY_REPORT = "DISCOVERY_REPORT"
    DISCOVERY_REPORT_ACK = "DISCOVERY_REPORT_ACK"
    DISCOVERY_SUMMARY = "DISCOVERY_SUMMARY"
    CONFIG_PROPOSAL = "CONFIG_PROPOSAL"
    APPROVAL_RESPONSE = "APPROVAL_RESPONSE"
    EXECUTION_INSTRUCTION = "EXECUTION_INSTRUCTION"
    EXECUTION_RESULT = "EXECUTION_RESULT"
    DEVICE_CLEAR = "DEVICE_CLEAR"
    POLICY_UPDATE = "POLICY_UPDATE"
    POLICY_ACK = "POLICY_ACK"
    HEARTBEAT = "HEARTBEAT"
    SYNC_REQUEST = "SYNC_REQUEST"
    SYNC_RESPONSE = "SYNC_RESPONSE"
    KEY_ROTATION_REQUEST = "KEY_ROTATION_REQUEST"
    KEY_ROTATION_ACK = "KEY_ROTATION_ACK"


_HTTP_STATUS: Final[dict[ReasonCode, int]] = {
    ReasonCode.MESSAGE_TOO_LARGE: 413,
    ReasonCode.UNSIGNED_MESSAGE: 401,
    ReasonCode.UNKNOWN_KEY: 401,
    ReasonCode.KEY_NOT_OWNED_BY_SENDER: 401,
    ReasonCode.KEY_EXPIRED: 401,
    ReasonCode.INVALID_SIGNATURE: 401,
    ReasonCode.MALFORMED_MESSAGE: 400,
    ReasonCode.UNSUPPORTED_SCHEMA_VERSION: 400,
    ReasonCode.STALE_TIMESTAMP: 400,
    ReasonCode.FUTURE_TIMESTAMP: 400,
    ReasonCode.REPLAYED_MESSAGE: 409,
    ReasonCode.MISADDRESSED_MESSAGE: 421,
    ReasonCode.CLIENT_CERTIFICATE_REQUIRED: 401,
}


class MessageRejected(PdsnoError):
    """A message refused by the envelope layer; ``http_status`` is what REST answers with."""

    code = ReasonCode.MALFORMED_MESSAGE

    def __init__(
        self, message: str, *, code: ReasonCode = ReasonCode.MALFORMED_MESSAGE, **details: Any
    ) -> None:
        super().__init__(message, code=code, **details)

    @property
    def http_status(self) -> int:
        return _HTTP_STATUS.get(self.code, 400)


class Envelope(BaseModel):
    """One message; immutable once built (``model_copy`` makes a tampered copy in tests)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    message_id: str = Field(pattern=_UUID4)
    message_type: MessageType
    sender_id: str = Field(min_length=1, max_length=_ID_MAX)
    recipient_id: str = Field(min_length=1, max_length=_ID_MAX, description='a controller id, or "*"')
    timestamp: datetime
    nonce: str = Field(pattern=_NONCE)
    schema_version: str = Field(default=SCHEMA_VERSION, max_length=16)
    key_id: str | None = Field(default=None, min_length=1, max_length=2 * _ID_MAX)
    payload: dict[str, Any]
    signature: str | None = Field(default=None, max_length=512)

    @field_validator("timestamp", mode="before")
    @classmethod
    def _timestamp(cls, value: Any) -> datetime:
        # Only an aware datetime or an ISO 8601 string with its zone: no epoch numbers, no naive times.
        if isinstance(value, datetime):
            if value.tzinfo is None:
                raise ValueError("timestamp must be timezone-aware")
            return value
        if isinstance(value, str):
            return parse_ts(value)
        raise ValueError("timestamp must be an ISO 8601 string with a timezone")

    @property
    def is_broadcast(self) -> bool:
        return self.recipient_id == BROADCAST

    def _fields(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "message_type": self.message_type.value,
            "sender_id": self.sender_id,
            "recipient_id": self.recipient_id,
            "timestamp": format_ts(self.timestamp),
            "nonce": self.nonce,
            "schema_version": self.schema_version,
            "key_id": self.key_id,
            "payload": self.payload,
        }

    def signing_bytes(self) -> bytes:
        """Canonical JSON of every field but ``signature``: the exact bytes signed and verified."""
        return canonical_json(self._fields()).encode()

    def to_bytes(self) -> bytes:
        """The wire form (canonical JSON too, so a payload survives the trip byte for byte)."""
        fields = self._fields()
        fields["signature"] = self.signature
        return canonical_json(fields).encode()

    @classmethod
    def parse(cls, raw: bytes | str) -> Envelope:
        """Parse the wire form; :class:`MessageRejected` (MALFORMED_MESSAGE or UNSUPPORTED_SCHEMA_VERSION)."""
        try:
            envelope = cls.model_validate_json(raw)
        except ValidationError as exc:
            # Slow path, refusals only: tell an unknown schema version from plain garbage.
            version = _claimed_schema_version(raw)
            if version is not None and version not in SUPPORTED_SCHEMA_VERSIONS:
                raise _unsupported(version) from None
            raise MessageRejected(
                f"malformed envelope: {_first_error(exc)}", code=ReasonCode.MALFORMED_MESSAGE
            ) from None
        if envelope.schema_version not in SUPPORTED_SCHEMA_VERSIONS:
            raise _unsupported(envelope.schema_version)
        return envelope

    def payload_as(self, model: type[M]) -> M:
        """The payload validated into ``model``; :class:`MessageRejected` MALFORMED_MESSAGE if it does not fit."""
        try:
            return model.model_validate(self.payload)
        except ValidationError as exc:
            raise MessageRejected(
                f"{self.message_type} payload does not match {model.__name__}: {_first_error(exc)}",
                code=ReasonCode.MALFORMED_MESSAGE,
                message_id=self.message_id,
            ) from None


def _claimed_schema_version(raw: bytes | str) -> str | None:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(data, dict):
        version = data.get("schema_version")
        if isinstance(version, str):
            return version
    return None


def _unsupported(version: str) -> MessageRejected:
    shown = version if len(version) <= 16 else version[:16] + "..."
    return MessageRejected(
        f"schema_version {shown!r} is not supported (this runtime speaks {', '.join(sorted(SUPPORTED_SCHEMA_VERSIONS))})",
        code=ReasonCode.UNSUPPORTED_SCHEMA_VERSION,
    )


_SAFE_LOC = re.compile(r"^[A-Za-z0-9_.\[\]-]{1,64}$")


def _first_error(exc: ValidationError) -> str:
    """A short description of what failed, never echoing the input (it may be huge or hostile)."""
    errors = exc.errors(include_input=False, include_url=False)
    if not errors:
        return "invalid"
    first = errors[0]
    loc = ".".join(str(part) for part in first.get("loc", ()))
    where = loc if loc and _SAFE_LOC.match(loc) else "envelope"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first.get('msg', 'invalid')}{more}"
