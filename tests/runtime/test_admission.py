"""Admission, steps 1-6 of reference-design §2, against a real NIB on both backends.

Each refusal must carry its own reason code, leave exactly one VALIDATION_REJECTED audit event and
admit no one. The joining side here is the real joiner code talking to the validator directly.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pdsno.admission.credentials import Certificate, DelegationCredential, issue_certificate, issue_delegation
from pdsno.admission.provisioning import BootstrapTicket, ProvisioningStore
from pdsno.admission.validator import AdmissionRefused, Validator
from pdsno.canonical import utcnow
from pdsno.errors import ReasonCode
from pdsno.messaging.envelope import MessageType
from pdsno.messaging.messages import (
    ChallengeResponse,
    ControllerMetadata,
    ValidationRequest,
    ValidationResult,
)
from pdsno.messaging.sign import draft
from pdsno.nib.models import ControllerRole, KeyKind
from pdsno.nib.sql import SqlNIBStore
from pdsno.security.keys import Ed25519Signer, public_key_b64


@dataclass
class Newcomer:
    ticket: BootstrapTicket
    key: Ed25519PrivateKey

    def request(self, *, age: timedelta = timedelta(0), **changes: object) -> object:
        payload = ValidationRequest(
            temp_id=self.ticket.temp_id,
            controller_type=self.ticket.controller_type,  # type: ignore[arg-type]
            region=self.ticket.region,
            public_key=public_key_b64(self.key),
            bootstrap_token=self.ticket.token,
            metadata=ControllerMetadata(hostname="host", software_version="test"),
        ).model_copy(update=changes)
        return draft(
            MessageType.VALIDATION_REQUEST, payload, sender_id=self.ticket.temp_id, recipient_id="validator",
            now=utcnow() - age,
        )  # fmt: skip

    def answer(
        self, challenge_id: str, nonce_b64: str, *, key: Ed25519PrivateKey | None = None
    ) -> ChallengeResponse:
        signature = (key or self.key).sign(base64.b64decode(nonce_b64))
        return ChallengeResponse(
            challenge_id=challenge_id,
            temp_id=self.ticket.temp_id,
            signed_nonce=base64.b64encode(signature).decode(),
        )


@pytest.fixture
def provisioning(tmp_path: Path) -> ProvisioningStore:
    return ProvisioningStore(tmp_path / "provisioning.sqlite3")


@pytest.fixture
def gc_signer(signer: Ed25519Signer) -> Ed25519Signer:
    return Ed25519Signer("global_cntl_1", signer.private_key)


def make_gc(
    nib: SqlNIBStore, provisioning: ProvisioningStore, gc_signer: Ed25519Signer, **options: object
) -> Validator:
    nib.use_signer(gc_signer)
    return Validator(
        signer=gc_signer, role=ControllerRole.GLOBAL, region=None, store=nib, provisioning=provisioning,
        valid_regions=["zone-a", "zone-b"], **options,  # type: ignore[arg-type]
    )  # fmt: skip


def newcomer(provisioning: ProvisioningStore, controller_type: str = "regional", region: str = "zone-a",
             ttl: timedelta = timedelta(minutes=5), issued_by: str = "global_cntl_1") -> Newcomer:  # fmt: skip
    ticket = provisioning.issue(region=region, controller_type=controller_type, issued_by=issued_by, ttl=ttl)
    return Newcomer(ticket, Ed25519PrivateKey.generate())


async def admit(validator: Validator, joiner: Newcomer) -> ValidationResult:
    challenge = await validator.request(joiner.request(), source="127.0.0.1")  # type: ignore[arg-type]
    return await validator.respond(joiner.answer(challenge.challenge_id, challenge.nonce), source="127.0.0.1")


async def rejected_events(nib: SqlNIBStore) -> list[str]:
    return [e.payload["reason"] for e in await nib.read_events() if e.event_type == "VALIDATION_REJECTED"]


async def test_a_regional_controller_is_admitted(
    nib: SqlNIBStore, provisioning: ProvisioningStore, gc_signer: Ed25519Signer
) -> None:
    gc = make_gc(nib, provisioning, gc_signer)
    joiner = newcomer(provisioning)
    result = await admit(gc, joiner)

    assert result.status == "APPROVED" and result.assigned_id == "regional_cntl_zone-a_1"
    certificate = Certificate.model_validate(result.certificate)
    assert certificate.is_valid(public_key_b64(gc_signer.private_key))
    assert certificate.public_key == public_key_b64(joiner.key)
    assert certificate.expires_at - certificate.issued_at == timedelta(days=90)
    delegation = DelegationCredential.model_validate(result.delegation_credential)
    assert delegation.is_valid(public_key_b64(gc_signer.private_key)) and delegation.region == "zone-a"

    stored = await nib.get_controller("regional_cntl_zone-a_1")
    assert (
        stored is not None
        and stored.public_key == public_key_b64(joiner.key)
        and stored.temp_id == joiner.ticket.temp_id
    )
    keys = {k.key_id: k for k in await nib.list_message_keys()}
    assert result.hmac_key is not None and result.parent_hmac_key is not None
    assert keys[result.hmac_key["key_id"]].owner_id == "regional_cntl_zone-a_1"
    assert keys[result.parent_hmac_key["key_id"]].owner_id == "global_cntl_1"
    assert keys["regional_cntl_zone-a_1:identity"].kind is KeyKind.ED25519
    validated = [e for e in await nib.read_events() if e.event_type == "CONTROLLER_VALIDATED"]
    assert [e.subject for e in validated] == ["regional_cntl_zone-a_1"]

    second = await admit(gc, newcomer(provisioning))
    assert second.assigned_id == "regional_cntl_zone-a_2"


async def test_a_requested_id_is_honoured_when_it_fits(
    nib: SqlNIBStore, provisioning: ProvisioningStore, gc_signer: Ed25519Signer
) -> None:
    gc = make_gc(nib, provisioning, gc_signer)
    joiner = newcomer(provisioning)
    challenge = await gc.request(joiner.request(requested_id="regional_cntl_zone-a_7"), source=None)  # type: ignore[arg-type]
    result = await gc.respond(joiner.answer(challenge.challenge_id, challenge.nonce), source=None)
    assert result.assigned_id == "regional_cntl_zone-a_7"


@pytest.fixture
async def refusal_checked(nib: SqlNIBStore) -> Iterator[object]:
    """Asserts, after the test, that exactly its one refusal was audited and no one was admitted."""
    before = len(await rejected_events(nib))
    yield
    assert len(await rejected_events(nib)) == before + 1
    assert await nib.list_controllers(role=ControllerRole.REGIONAL) == []


async def expect_refusal(code: ReasonCode, awaitable: object) -> None:
    with pytest.raises(AdmissionRefused) as refused:
        await awaitable  # type: ignore[misc]
    assert refused.value.code is code, refused.value


@pytest.mark.usefixtures("refusal_checked")
async def test_a_reused_bootstrap_token_is_refused(
    nib: SqlNIBStore, provisioning: ProvisioningStore, gc_signer: Ed25519Signer
) -> None:
    gc = make_gc(nib, provisioning, gc_signer)
    joiner = newcomer(provisioning)
    await gc.request(joiner.request(), source=None)  # type: ignore[arg-type]  # consumes the token
    await expect_refusal(ReasonCode.BOOTSTRAP_TOKEN_REUSED, gc.request(joiner.request(), source=None))  # type: ignore[arg-type]


def forged(token: str) -> str:
    """The token with its first character changed (always changed: a fixed letter may be the one there)."""
    return ("B" if token[0] == "A" else "A") + token[1:]


@pytest.mark.usefixtures("refusal_checked")
async def test_a_forged_bootstrap_token_is_refused(
    nib: SqlNIBStore, provisioning: ProvisioningStore, gc_signer: Ed25519Signer
) -> None:
    gc = make_gc(nib, provisioning, gc_signer)
    joiner = newcomer(provisioning)
    await expect_refusal(
        ReasonCode.INVALID_BOOTSTRAP_TOKEN,
        gc.request(joiner.request(bootstrap_token=forged(joiner.ticket.token)), source=None),  # type: ignore[arg-type]
    )


@pytest.mark.usefixtures("refusal_checked")
async def test_an_expired_bootstrap_token_is_refused(
    nib: SqlNIBStore, provisioning: ProvisioningStore, gc_signer: Ed25519Signer
) -> None:
    gc = make_gc(nib, provisioning, gc_signer)
    joiner = newcomer(provisioning, ttl=timedelta(seconds=-1))
    await expect_refusal(ReasonCode.BOOTSTRAP_TOKEN_EXPIRED, gc.request(joiner.request(), source=None))  # type: ignore[arg-type]


@pytest.mark.usefixtures("refusal_checked")
@pytest.mark.parametrize(
    ("age", "code"),
    [
        (timedelta(seconds=301), ReasonCode.STALE_TIMESTAMP),
        (timedelta(seconds=-301), ReasonCode.FUTURE_TIMESTAMP),
    ],
    ids=["stale", "future"],
)
async def test_requests_outside_the_clock_window_are_refused(
    nib: SqlNIBStore,
    provisioning: ProvisioningStore,
    gc_signer: Ed25519Signer,
    age: timedelta,
    code: ReasonCode,
) -> None:
    gc = make_gc(nib, provisioning, gc_signer)
    joiner = newcomer(provisioning)
    await expect_refusal(code, gc.request(joiner.request(age=age), source=None))  # type: ignore[arg-type]


@pytest.mark.usefixtures("refusal_checked")
async def test_a_blocklisted_newcomer_is_refused(
    nib: SqlNIBStore, provisioning: ProvisioningStore, gc_signer: Ed25519Signer
) -> None:
    gc = make_gc(nib, provisioning, gc_signer)
    provisioning.block("198.18.0.66", "seen probing")
    await expect_refusal(
        ReasonCode.BLOCKLISTED, gc.request(newcomer(provisioning).request(), source="198.18.0.66")
    )  # type: ignore[arg-type]


@pytest.mark.usefixtures("refusal_checked")
async def test_an_expired_challenge_is_refused(
    nib: SqlNIBStore, provisioning: ProvisioningStore, gc_signer: Ed25519Signer
) -> None:
    gc = make_gc(nib, provisioning, gc_signer, challenge_timeout=timedelta(seconds=-1))
    joiner = newcomer(provisioning)
    challenge = await gc.request(joiner.request(), source=None)  # type: ignore[arg-type]
    await expect_refusal(
        ReasonCode.CHALLENGE_EXPIRED,
        gc.respond(joiner.answer(challenge.challenge_id, challenge.nonce), source=None),
    )


async def test_a_nonce_signed_by_another_key_is_refused(
    nib: SqlNIBStore, provisioning: ProvisioningStore, gc_signer: Ed25519Signer
) -> None:
    gc = make_gc(nib, provisioning, gc_signer)
    joiner = newcomer(provisioning)
    challenge = await gc.request(joiner.request(), source=None)  # type: ignore[arg-type]
    impostor = Ed25519PrivateKey.generate()
    await expect_refusal(
        ReasonCode.INVALID_SIGNATURE,
        gc.respond(joiner.answer(challenge.challenge_id, challenge.nonce, key=impostor), source=None),
    )
    # The challenge is gone whatever the outcome: no second try with the right key.
    await expect_refusal(
        ReasonCode.UNKNOWN_CHALLENGE,
        gc.respond(joiner.answer(challenge.challenge_id, challenge.nonce), source=None),
    )


async def test_a_challenge_answered_for_another_temp_id_is_refused(
    nib: SqlNIBStore, provisioning: ProvisioningStore, gc_signer: Ed25519Signer
) -> None:
    gc = make_gc(nib, provisioning, gc_signer)
    joiner = newcomer(provisioning)
    challenge = await gc.request(joiner.request(), source=None)  # type: ignore[arg-type]
    answer = joiner.answer(challenge.challenge_id, challenge.nonce).model_copy(
        update={"temp_id": "temp-other"}
    )
    await expect_refusal(ReasonCode.TEMP_ID_MISMATCH, gc.respond(answer, source=None))
    assert await rejected_events(nib) == ["TEMP_ID_MISMATCH"]


@pytest.mark.usefixtures("refusal_checked")
async def test_a_region_the_gc_does_not_know_is_refused(
    nib: SqlNIBStore, provisioning: ProvisioningStore, gc_signer: Ed25519Signer
) -> None:
    gc = make_gc(nib, provisioning, gc_signer)
    await expect_refusal(ReasonCode.INVALID_REGION, admit(gc, newcomer(provisioning, region="zone-z")))


@pytest.mark.usefixtures("refusal_checked")
async def test_the_gc_admits_no_local_controller(
    nib: SqlNIBStore, provisioning: ProvisioningStore, gc_signer: Ed25519Signer
) -> None:
    gc = make_gc(nib, provisioning, gc_signer)
    await expect_refusal(
        ReasonCode.CONTROLLER_TYPE_NOT_PERMITTED, admit(gc, newcomer(provisioning, controller_type="local"))
    )


async def test_the_quota_per_region_holds(
    nib: SqlNIBStore, provisioning: ProvisioningStore, gc_signer: Ed25519Signer
) -> None:
    gc = make_gc(nib, provisioning, gc_signer, max_per_region=1)
    await admit(gc, newcomer(provisioning))
    await expect_refusal(ReasonCode.CONTROLLER_QUOTA_EXCEEDED, admit(gc, newcomer(provisioning)))
    assert len(await nib.list_controllers(role=ControllerRole.REGIONAL)) == 1
    assert await rejected_events(nib) == ["CONTROLLER_QUOTA_EXCEEDED"]


def make_rc(nib: SqlNIBStore, provisioning: ProvisioningStore, gc_signer: Ed25519Signer) -> Validator:
    rc_signer = Ed25519Signer("regional_cntl_zone-a_1", Ed25519PrivateKey.generate())
    nib.use_signer(rc_signer)
    certificate = issue_certificate(
        gc_signer, assigned_id=rc_signer.signer_id, role=ControllerRole.REGIONAL, region="zone-a",
        public_key=public_key_b64(rc_signer.private_key),
    )  # fmt: skip
    delegation = issue_delegation(gc_signer, delegatee_id=rc_signer.signer_id, region="zone-a")
    return Validator(
        signer=rc_signer, role=ControllerRole.REGIONAL, region="zone-a", store=nib, provisioning=provisioning,
        own_certificate=certificate, own_delegation=delegation,
    )  # fmt: skip


async def test_a_regional_controller_admits_a_local_one_under_its_delegation(
    nib: SqlNIBStore, provisioning: ProvisioningStore, gc_signer: Ed25519Signer
) -> None:
    rc = make_rc(nib, provisioning, gc_signer)
    result = await admit(
        rc, newcomer(provisioning, controller_type="local", issued_by="regional_cntl_zone-a_1")
    )
    assert result.assigned_id == "local_cntl_zone-a_1" and result.delegation_credential is None
    assert result.issuer_certificate is not None and result.issuer_delegation is not None
    assert Certificate.model_validate(result.issuer_certificate).is_valid(
        public_key_b64(gc_signer.private_key)
    )


async def test_a_local_controller_of_another_region_is_refused(
    nib: SqlNIBStore, provisioning: ProvisioningStore, gc_signer: Ed25519Signer
) -> None:
    rc = make_rc(nib, provisioning, gc_signer)
    # A token for zone-b minted with this RC's store (a mistake an operator can make): step 5 stops it.
    joiner = newcomer(
        provisioning, controller_type="local", region="zone-b", issued_by="regional_cntl_zone-a_1"
    )
    await expect_refusal(ReasonCode.REGION_NOT_SERVED_BY_THIS_RC, admit(rc, joiner))
    assert await nib.list_controllers(role=ControllerRole.LOCAL) == []
    assert await rejected_events(nib) == ["REGION_NOT_SERVED_BY_THIS_RC"]
