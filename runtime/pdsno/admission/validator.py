"""The validator side of admission: the GC admits regional controllers, an RC local ones.

The six steps of reference-design §2, in order. Every refusal names its reason code, writes one
``VALIDATION_REJECTED`` audit event and changes nothing else (a redeemed bootstrap token stays used:
that is what single-use means). Challenges live in memory only and expire after 30 s.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from pdsno.admission.credentials import (
    Certificate,
    DelegationCredential,
    identity_key_id,
    issue_certificate,
    issue_delegation,
)
from pdsno.admission.provisioning import ProvisioningStore
from pdsno.canonical import utcnow
from pdsno.config import Role as ConfigRole
from pdsno.config import assigned_controller_id, controller_id_matches
from pdsno.errors import PdsnoError, ReasonCode
from pdsno.messaging.envelope import Envelope
from pdsno.messaging.keys import KeyRing, new_hmac_key
from pdsno.messaging.messages import Challenge, ChallengeResponse, ValidationRequest, ValidationResult
from pdsno.nib.models import (
    Controller,
    ControllerRole,
    ControllerStatus,
    Decision,
    EventDraft,
    KeyKind,
    LockType,
    MessageKey,
)
from pdsno.nib.store import NIBStore
from pdsno.security.keys import Ed25519Signer, public_key_b64, public_key_from_b64, verify_signature

_CLIENT_ERRORS = {
    ReasonCode.STALE_TIMESTAMP,
    ReasonCode.FUTURE_TIMESTAMP,
    ReasonCode.UNKNOWN_CHALLENGE,
    ReasonCode.CHALLENGE_EXPIRED,
    ReasonCode.TEMP_ID_MISMATCH,
}


class AdmissionRefused(PdsnoError):
    """The request failed a check (REJECTED) or the validator failed (ERROR)."""

    @property
    def http_status(self) -> int:
        if self.code is ReasonCode.IDENTITY_ASSIGNMENT_FAILED:
            return 500
        return 400 if self.code in _CLIENT_ERRORS else 403


@dataclass(frozen=True, slots=True)
class _PendingChallenge:
    challenge: Challenge
    nonce: bytes
    request: ValidationRequest
    source: str | None


class Validator:
    def __init__(
        self,
        *,
        signer: Ed25519Signer,
        role: ControllerRole,
        region: str | None,
        store: NIBStore,
        provisioning: ProvisioningStore,
        own_certificate: Certificate | None = None,
        own_delegation: DelegationCredential | None = None,
        valid_regions: Sequence[str] = (),
        max_per_region: int = 10,
        challenge_timeout: timedelta = timedelta(seconds=30),
        clock_skew: timedelta = timedelta(seconds=300),
        lock_ttl: timedelta = timedelta(seconds=60),
        keyring: KeyRing | None = None,
    ) -> None:
        if role is ControllerRole.LOCAL:
            raise ValueError("local controllers validate nothing")
        if role is ControllerRole.REGIONAL and own_delegation is None:
            raise ValueError(
                "a regional controller admits local controllers only under a delegation credential"
            )
        self._signer = signer
        self._role = role
        self._region = region
        self._store = store
        self._provisioning = provisioning
        self._own_certificate = own_certificate
        self._own_delegation = own_delegation
        self._valid_regions = frozenset(valid_regions)
        self._max_per_region = max_per_region
        self._challenge_timeout = challenge_timeout
        self._clock_skew = clock_skew
        self._lock_ttl = lock_ttl
        self._pending: dict[str, _PendingChallenge] = {}
        self._keyring = keyring

    @property
    def admits(self) -> ControllerRole:
        return ControllerRole.REGIONAL if self._role is ControllerRole.GLOBAL else ControllerRole.LOCAL

    # --- refusals ---------------------------------------------------------------------------

    async def _refuse(
        self, code: ReasonCode, message: str, *, temp_id: str | None, source: str | None
    ) -> AdmissionRefused:
        await self._store.append_events(
            [
                EventDraft(
                    event_type="VALIDATION_REJECTED",
                    actor=self._signer.signer_id,
                    subject=temp_id,
                    action="admission",
                    decision=Decision.DENIED,
                    payload={"reason": code.value, "source": source},
                    notes=message,
                )
            ]
        )
        return AdmissionRefused(message, code=code)

    # --- steps 1-3: request -> challenge ----------------------------------------------------

    async def request(self, envelope: Envelope, *, source: str | None) -> Challenge:
        request = envelope.payload_as(ValidationRequest)
        temp_id = request.temp_id
        age = utcnow() - envelope.timestamp
        if age > self._clock_skew:
            raise await self._refuse(
                ReasonCode.STALE_TIMESTAMP,
                f"request is {age.total_seconds():.0f} s old",
                temp_id=temp_id,
                source=source,
            )
        if age < -self._clock_skew:
            raise await self._refuse(
                ReasonCode.FUTURE_TIMESTAMP, "request is dated in the future", temp_id=temp_id, source=source
            )
        if await asyncio.to_thread(self._provisioning.is_blocked, temp_id, source):
            raise await self._refuse(
                ReasonCode.BLOCKLISTED,
                f"{temp_id} or {source} is blocklisted",
                temp_id=temp_id,
                source=source,
            )
        refusal = await asyncio.to_thread(
            self._provisioning.redeem,
            temp_id=temp_id,
            region=request.region,
            controller_type=request.controller_type,
            token=request.bootstrap_token,
            source=source,
        )
        if refusal is not None:
            raise await self._refuse(
                refusal, f"bootstrap token for {temp_id} refused", temp_id=temp_id, source=source
            )
        self._forget_expired()
        now = utcnow()
        nonce = secrets.token_bytes(32)
        challenge = Challenge(
            challenge_id=str(uuid.uuid4()),
            temp_id=temp_id,
            nonce=base64.b64encode(nonce).decode(),
            issued_at=now,
            expires_at=now + self._challenge_timeout,
        )
        self._pending[challenge.challenge_id] = _PendingChallenge(challenge, nonce, request, source)
        return challenge

    def _forget_expired(self) -> None:
        now = utcnow()
        for challenge_id in [k for k, p in self._pending.items() if p.challenge.expires_at < now]:
            del self._pending[challenge_id]

    # --- steps 4-6: response -> identity ----------------------------------------------------

    async def respond(self, response: ChallengeResponse, *, source: str | None) -> ValidationResult:
        # Deleted whatever the outcome: a failed answer means a new flow, never a second try.
        pending = self._pending.pop(response.challenge_id, None)
        temp_id = response.temp_id
        if pending is None:
            raise await self._refuse(
                ReasonCode.UNKNOWN_CHALLENGE,
                "no such challenge (or it was already answered)",
                temp_id=temp_id,
                source=source,
            )
        if pending.challenge.expires_at < utcnow():
            raise await self._refuse(
                ReasonCode.CHALLENGE_EXPIRED, "the challenge expired", temp_id=temp_id, source=source
            )
        if pending.challenge.temp_id != temp_id:
            raise await self._refuse(
                ReasonCode.TEMP_ID_MISMATCH,
                f"challenge was issued to {pending.challenge.temp_id}",
                temp_id=temp_id,
                source=source,
            )
        request = pending.request
        try:
            submitted_key = public_key_from_b64(request.public_key)
        except PdsnoError:
            raise await self._refuse(
                ReasonCode.INVALID_SIGNATURE,
                "the submitted public key is not Ed25519",
                temp_id=temp_id,
                source=source,
            ) from None
        if not verify_signature(submitted_key, pending.nonce, response.signed_nonce):
            raise await self._refuse(
                ReasonCode.INVALID_SIGNATURE,
                "the nonce was not signed with the submitted key",
                temp_id=temp_id,
                source=source,
            )
        await self._check_policy(request, source)

        lock = await self._store.acquire_lock(
            f"{request.controller_type}:{request.region}",
            LockType.VALIDATION,
            self._signer.signer_id,
            self._lock_ttl,
        )
        if not lock.success:
            raise await self._refuse(
                ReasonCode.CONTROLLER_QUOTA_EXCEEDED,
                "another admission for this region is in progress; retry",
                temp_id=temp_id,
                source=source,
            )
        try:
            await self._check_quota(request, source)
            return await self._assign_identity(request, source)
        finally:
            await self._store.release_lock(lock.unwrap().lock_id, self._signer.signer_id)

    async def _check_policy(self, request: ValidationRequest, source: str | None) -> None:
        temp_id = request.temp_id
        if request.controller_type != self.admits.value:
            raise await self._refuse(
                ReasonCode.CONTROLLER_TYPE_NOT_PERMITTED,
                f"a {self._role.value} controller admits {self.admits.value} controllers, not {request.controller_type}",
                temp_id=temp_id,
                source=source,
            )
        if self._role is ControllerRole.REGIONAL and request.region != self._region:
            raise await self._refuse(
                ReasonCode.REGION_NOT_SERVED_BY_THIS_RC,
                f"this regional controller serves {self._region}, not {request.region}",
                temp_id=temp_id,
                source=source,
            )
        if self._valid_regions and request.region not in self._valid_regions:
            raise await self._refuse(
                ReasonCode.INVALID_REGION,
                f"{request.region} is not a valid region",
                temp_id=temp_id,
                source=source,
            )

    async def _check_quota(self, request: ValidationRequest, source: str | None) -> None:
        peers = await self._store.list_controllers(role=self.admits, region=request.region)
        active = [c for c in peers if c.status is ControllerStatus.ACTIVE]
        if len(active) >= self._max_per_region:
            raise await self._refuse(
                ReasonCode.CONTROLLER_QUOTA_EXCEEDED,
                f"{request.region} already has {len(active)} {self.admits.value} controllers (max {self._max_per_region})",
                temp_id=request.temp_id,
                source=source,
            )

    async def _choose_id(self, request: ValidationRequest) -> str:
        taken = {
            c.controller_id
            for c in await self._store.list_controllers(role=self.admits, region=request.region)
        }
        role = ConfigRole(self.admits.value)
        wanted = request.requested_id
        if (
            wanted
            and wanted not in taken
            and controller_id_matches(wanted, role, request.region, allow_temp=False)
        ):
            return wanted
        n = 1
        while assigned_controller_id(role, request.region, n) in taken:
            n += 1
        return assigned_controller_id(role, request.region, n)

    async def _assign_identity(self, request: ValidationRequest, source: str | None) -> ValidationResult:
        assigned_id = await self._choose_id(request)
        me = self._signer.signer_id
        certificate = issue_certificate(
            self._signer,
            assigned_id=assigned_id,
            role=self.admits,
            region=request.region,
            public_key=request.public_key,
        )
        delegation = (
            issue_delegation(self._signer, delegatee_id=assigned_id, region=request.region)
            if self.admits is ControllerRole.REGIONAL
            else None
        )
        # One key per direction: the newcomer signs with its own, verifies ours with the other.
        child_signing, child_key = new_hmac_key(assigned_id)
        own_signing, own_key = new_hmac_key(me)
        now = utcnow()
        controller = Controller(
            controller_id=assigned_id,
            role=self.admits,
            region=request.region,
            parent_id=me,
            temp_id=request.temp_id,
            public_key=request.public_key,
            certificate=certificate.model_dump(mode="json"),
            validated_by=me,
            status=ControllerStatus.ACTIVE,
            admitted_at=now,
            expires_at=certificate.expires_at,
            rest_url=request.metadata.rest_url if request.metadata else None,
        )
        event = EventDraft(
            event_type="CONTROLLER_VALIDATED",
            actor=me,
            subject=assigned_id,
            action="admission",
            decision=Decision.APPROVED,
            payload={
                "temp_id": request.temp_id,
                "role": self.admits.value,
                "region": request.region,
                "public_key": request.public_key,
                "source": source,
                "certificate_expires_at": certificate.expires_at,
            },
        )
        keys = [
            child_key.model_copy(update={"peer_id": me}),
            own_key.model_copy(update={"peer_id": assigned_id}),
            # Its identity key verifies what it broadcasts (heartbeats).
            MessageKey(
                key_id=identity_key_id(assigned_id),
                owner_id=assigned_id,
                kind=KeyKind.ED25519,
                material=request.public_key,
                not_before=now - self._clock_skew,
            ),
        ]
        try:
            registered = await self._store.register_controller(controller, keys=keys, events=[event])
        except PdsnoError as exc:
            registered_error: str | None = exc.message
        else:
            registered_error = None if registered.success else registered.message
        if registered_error is not None:
            # No certificate leaves without a recorded identity; the failure is audited if the NIB still can.
            with contextlib.suppress(PdsnoError):
                await self._store.append_events(
                    [
                        EventDraft(
                            event_type="VALIDATION_COMMIT_FAILURE",
                            actor=me,
                            subject=request.temp_id,
                            decision=Decision.FLAGGED,
                            notes=registered_error,
                        )
                    ]
                )
            raise AdmissionRefused(
                f"could not record the new identity: {registered_error}",
                code=ReasonCode.IDENTITY_ASSIGNMENT_FAILED,
            )
        if self._keyring is not None:
            for key in keys:  # the newcomer's messages verify from its first heartbeat on
                self._keyring.add(key)
        return ValidationResult(
            status="APPROVED",
            assigned_id=assigned_id,
            role=self.admits.value,
            region=request.region,
            certificate=certificate.model_dump(mode="json"),
            delegation_credential=delegation.model_dump(mode="json") if delegation else None,
            hmac_key={"key_id": child_signing.key_id, "secret": child_key.material},
            parent_hmac_key={"key_id": own_signing.key_id, "secret": own_key.material},
            issuer_id=me,
            issuer_public_key=public_key_b64(self._signer.private_key),
            issuer_certificate=self._own_certificate.model_dump(mode="json")
            if self._own_certificate
            else None,
            issuer_delegation=self._own_delegation.model_dump(mode="json") if self._own_delegation else None,
            reason=None,
        )
