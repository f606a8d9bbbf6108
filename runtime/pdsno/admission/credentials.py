"""Certificates and delegation credentials: JSON documents signed with the issuer's Ed25519 key.

A certificate binds a controller id, role, region and public key to the issuer that admitted it for
90 days. A delegation credential lets a regional controller admit local controllers of its region;
a local controller's certificate is checked against its RC's key, the RC's against the GC's.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Self

from pydantic import BaseModel, ConfigDict, Field

from pdsno.canonical import canonical_json, utcnow
from pdsno.nib.models import ControllerRole
from pdsno.security.keys import Ed25519Signer, public_key_from_b64, verify_signature

CERTIFICATE_LIFETIME = timedelta(days=90)
VALIDATE_LOCAL_CONTROLLERS = "validate_local_controllers"


class _Signed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    issued_by: str
    issued_at: datetime
    expires_at: datetime
    signature: str = ""

    def signed_bytes(self) -> bytes:
        return canonical_json(self.model_dump(mode="json", exclude={"signature"})).encode()

    def signed_with(self, signer: Ed25519Signer) -> Self:
        if signer.signer_id != self.issued_by:
            raise ValueError(f"{signer.signer_id} cannot sign a document issued by {self.issued_by}")
        return self.model_copy(update={"signature": signer.sign(self.signed_bytes())})

    def is_valid(self, issuer_public_key_b64: str, now: datetime | None = None) -> bool:
        at = now or utcnow()
        if not (self.issued_at <= at <= self.expires_at):
            return False
        return verify_signature(
            public_key_from_b64(issuer_public_key_b64), self.signed_bytes(), self.signature
        )


class Certificate(_Signed):
    assigned_id: str
    role: ControllerRole
    region: str | None
    public_key: str = Field(description="the holder's Ed25519 public key, base64")


class DelegationCredential(_Signed):
    delegatee_id: str
    region: str
    permitted_actions: list[str]


def identity_key_id(controller_id: str) -> str:
    """The key id of a controller's Ed25519 identity key as a message key: stable, derivable by peers."""
    return f"{controller_id}:identity"


def issue_certificate(
    signer: Ed25519Signer, *, assigned_id: str, role: ControllerRole, region: str | None, public_key: str
) -> Certificate:
    now = utcnow()
    return Certificate(
        assigned_id=assigned_id,
        role=role,
        region=region,
        public_key=public_key,
        issued_by=signer.signer_id,
        issued_at=now,
        expires_at=now + CERTIFICATE_LIFETIME,
    ).signed_with(signer)


def issue_delegation(signer: Ed25519Signer, *, delegatee_id: str, region: str) -> DelegationCredential:
    now = utcnow()
    return DelegationCredential(
        delegatee_id=delegatee_id,
        region=region,
        permitted_actions=[VALIDATE_LOCAL_CONTROLLERS],
        issued_by=signer.signer_id,
        issued_at=now,
        expires_at=now + CERTIFICATE_LIFETIME,
    ).signed_with(signer)
