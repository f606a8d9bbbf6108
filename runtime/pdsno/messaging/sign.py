"""Building envelopes: :func:`seal` for signed messages, :func:`draft` for the few that cannot be.

Before a controller holds a message key (admission: VALIDATION_REQUEST, CHALLENGE,
CHALLENGE_RESPONSE, VALIDATION_RESULT over TLS, decisions.md C15) its envelopes are drafts: same
shape, ``key_id`` and ``signature`` None. Everything else is sealed.
"""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from pdsno.canonical import canonical_json, utcnow
from pdsno.messaging.envelope import SCHEMA_VERSION, Envelope, MessageType
from pdsno.messaging.keys import SigningKey
from pdsno.metrics import runtime_counts

NONCE_BYTES = 32


def _json_payload(payload: BaseModel | Mapping[str, Any]) -> dict[str, Any]:
    """The payload as plain JSON values, exactly as the receiver will parse it back.

    Normalising here (datetimes to strings, tuples to lists, keys to strings) means the bytes signed
    now are the bytes the receiver recomputes from the wire.
    """
    if isinstance(payload, BaseModel):
        data = json.loads(payload.model_dump_json())
    else:
        data = json.loads(canonical_json(dict(payload)))
    if not isinstance(data, dict):
        raise TypeError("a payload must be a JSON object")
    return data


def draft(
    message_type: MessageType | str,
    payload: BaseModel | Mapping[str, Any],
    *,
    sender_id: str,
    recipient_id: str,
    now: datetime | None = None,
) -> Envelope:
    """An unsigned envelope with a fresh uuid4 ``message_id`` and 32-byte nonce."""
    return Envelope(
        message_id=str(uuid.uuid4()),
        message_type=MessageType(message_type),
        sender_id=sender_id,
        recipient_id=recipient_id,
        timestamp=now or utcnow(),
        nonce=base64.b64encode(secrets.token_bytes(NONCE_BYTES)).decode(),
        schema_version=SCHEMA_VERSION,
        key_id=None,
        payload=_json_payload(payload),
        signature=None,
    )


def sign_envelope(envelope: Envelope, key: SigningKey) -> Envelope:
    """``envelope`` with ``key_id`` set and signed by ``key``, which must belong to its sender."""
    if key.owner_id != envelope.sender_id:
        raise ValueError(f"key {key.key_id} belongs to {key.owner_id}, not to sender {envelope.sender_id}")
    unsigned = envelope.model_copy(update={"key_id": key.key_id, "signature": None})
    runtime_counts(key.owner_id).signed.labels(envelope.message_type.value).inc()
    return unsigned.model_copy(update={"signature": key.sign(unsigned.signing_bytes())})


def seal(
    message_type: MessageType | str,
    payload: BaseModel | Mapping[str, Any],
    *,
    sender_id: str,
    recipient_id: str,
    key: SigningKey,
    now: datetime | None = None,
) -> Envelope:
    """A new signed envelope from ``sender_id`` to ``recipient_id`` (a controller id or ``"*"``)."""
    if key.owner_id != sender_id:
        raise ValueError(f"key {key.key_id} belongs to {key.owner_id}, not to sender {sender_id}")
    return sign_envelope(
        draft(message_type, payload, sender_id=sender_id, recipient_id=recipient_id, now=now), key
    )
