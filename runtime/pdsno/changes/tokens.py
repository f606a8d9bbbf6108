"""Execution tokens: the approver's signed permission to apply one proposal, once.

A token binds the proposal, its config hash, the exact device set and the issuer, and expires (LOW and
MEDIUM 600 s, HIGH 300 s: decisions C1). It is Ed25519-signed, so any controller holding the issuer's
public key can check it, and no one else can mint one. The executor checks it, then consumes it in the
NIB (a compare-and-set) **before** touching a device: a second redemption finds it spent.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from pdsno.canonical import canonical_json, utcnow
from pdsno.errors import PdsnoError, ReasonCode
from pdsno.nib.models import ConfigProposal, Decision, EventDraft, ExecutionToken, Sensitivity
from pdsno.nib.store import NIBStore
from pdsno.security.keys import Ed25519Signer, verify_signature

CONSUMED_EVENT = "EXECUTION_TOKEN_CONSUMED"
"""The event of a token's one redemption: the executor's, then every tier above as the result reaches it."""

# What the signature covers: everything that says what may be done, by whom, until when.
_SIGNED = ("token_id", "proposal_id", "config_hash", "target_devices", "approved_by", "issued_at", "expires_at",
           "constraints")  # fmt: skip


class TokenRefused(PdsnoError):
    """The token does not allow this execution; nothing was touched."""


def token_ttl(category: Sensitivity, *, low_medium_s: int = 600, high_s: int = 300) -> timedelta:
    if category is Sensitivity.EMERGENCY:
        raise TokenRefused("emergency changes run without a token", code=ReasonCode.INVALID_TOKEN)
    return timedelta(seconds=high_s if category is Sensitivity.HIGH else low_medium_s)


def signed_bytes(token: ExecutionToken) -> bytes:
    fields = token.model_dump(mode="json", include=set(_SIGNED))
    fields["target_devices"] = sorted(fields["target_devices"])
    return canonical_json(fields).encode()


def issue_token(
    signer: Ed25519Signer,
    proposal: ConfigProposal,
    *,
    ttl: timedelta,
    constraints: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> ExecutionToken:
    issued = now or utcnow()
    unsigned = ExecutionToken(
        token_id=str(uuid.uuid4()),
        proposal_id=proposal.proposal_id,
        config_hash=proposal.config_hash,
        target_devices=sorted(proposal.target_devices),
        approved_by=signer.signer_id,
        issued_at=issued,
        expires_at=issued + ttl,
        # Every constraint spelled out: the token crosses the wire as a fixed shape, and the signature
        # must verify on the far side.
        constraints={
            "max_devices_per_minute": 10,
            "rollback_required_on_failure": True,
            "maintenance_window_required": False,
            **(constraints or {}),
        },
        signature="",
    )
    return unsigned.model_copy(update={"signature": signer.sign(signed_bytes(unsigned))})


def check_token(
    token: ExecutionToken,
    *,
    issuer_key: Ed25519PublicKey,
    proposal: ConfigProposal,
    devices: Collection[str],
    now: datetime | None = None,
) -> None:
    """Refuse, with its reason code, a token that does not allow applying ``proposal`` to ``devices`` now."""
    if not verify_signature(issuer_key, signed_bytes(token), token.signature):
        raise TokenRefused(
            "the token's signature does not verify with its issuer's key", code=ReasonCode.INVALID_TOKEN
        )
    if token.proposal_id != proposal.proposal_id:
        raise TokenRefused(f"the token is for proposal {token.proposal_id}", code=ReasonCode.INVALID_TOKEN)
    if token.config_hash != proposal.config_hash:
        raise TokenRefused("the change differs from the one approved", code=ReasonCode.TOKEN_HASH_MISMATCH)
    if sorted(devices) != sorted(token.target_devices):
        raise TokenRefused("the devices differ from the ones approved", code=ReasonCode.TOKEN_DEVICE_MISMATCH)
    if (now or utcnow()) > token.expires_at:
        raise TokenRefused(f"the token expired at {token.expires_at}", code=ReasonCode.TOKEN_EXPIRED)
    if token.consumed_at is not None:
        raise TokenRefused(
            f"the token was used by {token.consumed_by}", code=ReasonCode.TOKEN_ALREADY_CONSUMED
        )


async def redeem(
    store: NIBStore,
    token: ExecutionToken,
    *,
    executor: str,
    issuer_key: Ed25519PublicKey,
    proposal: ConfigProposal,
    devices: Collection[str],
) -> ExecutionToken:
    """Check the token, then spend it in the NIB; only the first redemption returns, before any device is
    touched. Every refusal is audited (``EXECUTION_ABORTED``) and changes nothing."""
    try:
        check_token(token, issuer_key=issuer_key, proposal=proposal, devices=devices)
        # The token arrives with the execution instruction; the executor's NIB records its redemption.
        held = await store.store_token(token.model_copy(update={"version": 0}))
        if not held.success and held.error is not ReasonCode.ALREADY_EXISTS:
            raise TokenRefused(held.message, code=held.error or ReasonCode.INVALID_TOKEN)
        spent = await store.consume_token(
            token.token_id,
            executor,
            events=[EventDraft(event_type=CONSUMED_EVENT, actor=executor, subject=proposal.proposal_id,
                               decision=Decision.APPROVED, payload={"token_id": token.token_id})],
        )  # fmt: skip
        if not spent.success:
            raise TokenRefused(spent.message, code=spent.error or ReasonCode.INVALID_TOKEN)
        return spent.unwrap()
    except TokenRefused as refused:
        await store.append_events(
            [EventDraft(event_type="EXECUTION_ABORTED", actor=executor, subject=proposal.proposal_id,
                        decision=Decision.DENIED, payload={"reason": refused.code.value, "token_id": token.token_id})]
        )  # fmt: skip
        raise
