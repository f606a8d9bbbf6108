"""The joining side of admission: prove the bootstrap ticket and the key, receive an identity.

Runs once per controller: the identity, its message keys and the parent's keys are stored (NIB and
``identity.json``) and later starts reuse them without asking again.
"""

from __future__ import annotations

import base64
import json
import secrets
import socket
import uuid
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from pdsno import __version__
from pdsno.admission.credentials import Certificate, DelegationCredential
from pdsno.admission.identity import Identity, save_identity
from pdsno.canonical import format_ts, utcnow
from pdsno.errors import ConfigError, PdsnoError, ReasonCode
from pdsno.messaging.envelope import SCHEMA_VERSION, Envelope, MessageType
from pdsno.messaging.messages import (
    Challenge,
    ChallengeResponse,
    ControllerMetadata,
    ValidationRequest,
    ValidationResult,
)
from pdsno.nib.models import Controller, ControllerRole, Decision, EventDraft, KeyKind, MessageKey
from pdsno.nib.store import NIBStore
from pdsno.security.keys import Ed25519Signer, public_key_b64
from pdsno.transport.rest_client import PeerClient

ADMISSION_REQUEST_PATH = "/ew/v1/admission/request"
ADMISSION_RESPONSE_PATH = "/ew/v1/admission/response"


class BootstrapFile(BaseModel):
    """The file ``pdsno token issue`` writes for one new controller."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temp_id: str
    region: str
    controller_type: ControllerRole
    token: str
    issued_by: str
    expires_at: str


def read_bootstrap_file(path: Path) -> BootstrapFile:
    try:
        return BootstrapFile.model_validate(json.loads(path.read_text()))
    except FileNotFoundError:
        raise ConfigError(f"{path}: bootstrap file not found", code=ReasonCode.CONFIG_NOT_FOUND) from None
    except (ValueError, ValidationError) as exc:
        raise ConfigError(f"{path}: not a bootstrap file from 'pdsno token issue': {exc}") from None


class AdmissionFailed(PdsnoError):
    code = ReasonCode.ADMISSION_FAILED


async def join(
    *,
    client: PeerClient,
    parent_url: str,
    parent_id: str | None,
    ticket: BootstrapFile,
    identity_key: Ed25519Signer,
    requested_id: str | None,
    rest_url: str | None,
) -> ValidationResult:
    """Run steps 1-6 against the parent; return its APPROVED result or raise with its reason code."""
    request = ValidationRequest(
        temp_id=ticket.temp_id,
        controller_type=ticket.controller_type.value,
        region=ticket.region,
        public_key=public_key_b64(identity_key.private_key),
        bootstrap_token=ticket.token,
        requested_id=requested_id,
        metadata=ControllerMetadata(
            hostname=_hostname(), software_version=__version__, capabilities=[], rest_url=rest_url
        ),
    )
    envelope = Envelope(
        message_id=str(uuid.uuid4()),
        message_type=MessageType.VALIDATION_REQUEST,
        sender_id=ticket.temp_id,
        recipient_id=parent_id or ticket.issued_by,
        timestamp=utcnow(),
        nonce=base64.b64encode(secrets.token_bytes(32)).decode(),
        schema_version=SCHEMA_VERSION,
        key_id=None,
        payload=request.model_dump(mode="json"),
        signature=None,
    )
    challenge = Challenge.model_validate(
        await client.post(parent_url + ADMISSION_REQUEST_PATH, envelope.to_bytes())
    )
    answer = ChallengeResponse(
        challenge_id=challenge.challenge_id,
        temp_id=ticket.temp_id,
        signed_nonce=identity_key.sign(base64.b64decode(challenge.nonce)),
    )
    result = ValidationResult.model_validate(
        await client.post(parent_url + ADMISSION_RESPONSE_PATH, answer.model_dump_json().encode())
    )
    if result.status != "APPROVED" or result.assigned_id is None:
        raise AdmissionFailed(f"admission {result.status}: {result.reason}")
    return result


def _hostname() -> str:
    return socket.gethostname()


async def adopt(
    result: ValidationResult,
    *,
    store: NIBStore,
    data_dir: Path,
    identity_key: Ed25519Signer,
    parent_url: str,
) -> Identity:
    """Check what the parent issued, then keep it: keys and parent in the NIB, identity on disk."""
    if (
        result.certificate is None
        or result.hmac_key is None
        or result.parent_hmac_key is None
        or result.issuer_id is None
        or result.issuer_public_key is None
    ):
        raise AdmissionFailed("the parent's answer lacks a certificate, message keys or its own identity")
    certificate = Certificate.model_validate(result.certificate)
    if certificate.public_key != public_key_b64(identity_key.private_key) or not certificate.is_valid(
        result.issuer_public_key
    ):
        raise AdmissionFailed("the certificate is not for this controller's key or not signed by the parent")
    me, parent = certificate.assigned_id, result.issuer_id
    now = utcnow()
    keys = [
        MessageKey(key_id=result.hmac_key["key_id"], owner_id=me, peer_id=parent, kind=KeyKind.HMAC,
                   material=result.hmac_key["secret"], not_before=now),
        MessageKey(key_id=result.parent_hmac_key["key_id"], owner_id=parent, peer_id=me, kind=KeyKind.HMAC,
                   material=result.parent_hmac_key["secret"], not_before=now),
    ]  # fmt: skip
    parent_role = (
        ControllerRole.GLOBAL if certificate.role is ControllerRole.REGIONAL else ControllerRole.REGIONAL
    )
    parent_row = Controller(
        controller_id=parent,
        role=parent_role,
        region=None if parent_role is ControllerRole.GLOBAL else certificate.region,
        public_key=result.issuer_public_key,
        certificate=result.issuer_certificate or {},
        rest_url=parent_url,
    )
    registered = await store.register_controller(
        parent_row,
        keys=keys,
        events=[
            EventDraft(
                event_type="CONTROLLER_ADMITTED",
                actor=me,
                subject=parent,
                action="admission",
                decision=Decision.APPROVED,
                payload={"assigned_id": me, "certificate_expires_at": format_ts(certificate.expires_at)},
            )
        ],
    )
    if not registered.success and registered.error is not ReasonCode.ALREADY_EXISTS:
        raise AdmissionFailed(f"could not record the parent and keys: {registered.message}")
    identity = Identity(
        controller_id=me,
        role=certificate.role,
        region=certificate.region,
        parent_id=parent,
        parent_url=parent_url,
        admitted_at=now,
        certificate=certificate,
        delegation=DelegationCredential.model_validate(result.delegation_credential)
        if result.delegation_credential
        else None,
        issuer_public_key=result.issuer_public_key,
        issuer_certificate=Certificate.model_validate(result.issuer_certificate)
        if result.issuer_certificate
        else None,
    )
    save_identity(data_dir, identity)
    return identity
