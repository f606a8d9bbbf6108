"""Execution tokens on a real NIB (both backends): one redemption, before any device is touched; every
other use refused with its own code and audited."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pdsno.canonical import utcnow
from pdsno.changes.tokens import TokenRefused, check_token, issue_token, redeem, token_ttl
from pdsno.errors import ReasonCode
from pdsno.nib.models import ConfigProposal, Sensitivity
from pdsno.nib.sql import SqlNIBStore
from pdsno.security.keys import Ed25519Signer

RC, LC = "regional_cntl_zone-a_1", "local_cntl_zone-a_1"
DEVICES = ["nib-dev-a", "nib-dev-b"]


@pytest.fixture
def approver() -> Ed25519Signer:
    return Ed25519Signer(RC, Ed25519PrivateKey.generate())


@pytest.fixture
async def proposal(nib: SqlNIBStore) -> ConfigProposal:
    change = ConfigProposal(
        proposal_id="prop-7", config_payload={"executor": "snmp", "set": {"1.3.6.1.2.1.1.6.0": "rack 7"}},
        category=Sensitivity.LOW, origin=LC, proposed_by=LC, target_devices=DEVICES,
    )  # fmt: skip
    return (await nib.create_proposal(change)).unwrap()


def test_tier_lifetimes_follow_decision_c1() -> None:
    assert token_ttl(Sensitivity.LOW) == token_ttl(Sensitivity.MEDIUM) == timedelta(seconds=600)
    assert token_ttl(Sensitivity.HIGH) == timedelta(seconds=300)
    with pytest.raises(TokenRefused):
        token_ttl(Sensitivity.EMERGENCY)


async def test_a_token_is_redeemed_once(
    nib: SqlNIBStore, approver: Ed25519Signer, proposal: ConfigProposal
) -> None:
    token = issue_token(approver, proposal, ttl=token_ttl(proposal.category))
    key = approver.public_key()
    attempts = await asyncio.gather(
        *(
            redeem(nib, token, executor=LC, issuer_key=key, proposal=proposal, devices=DEVICES)
            for _ in range(6)
        ),
        return_exceptions=True,
    )
    spent = [a for a in attempts if not isinstance(a, BaseException)]
    assert len(spent) == 1 and spent[0].consumed_by == LC
    assert all(
        isinstance(a, TokenRefused) and a.code is ReasonCode.TOKEN_ALREADY_CONSUMED
        for a in attempts
        if a not in spent
    )
    events = [e.event_type for e in await nib.read_events()]
    assert events.count("EXECUTION_TOKEN_CONSUMED") == 1 and events.count("EXECUTION_ABORTED") == 5


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("expired", ReasonCode.TOKEN_EXPIRED),
        ("tampered", ReasonCode.INVALID_TOKEN),
        ("other_issuer", ReasonCode.INVALID_TOKEN),
        ("other_devices", ReasonCode.TOKEN_DEVICE_MISMATCH),
        ("other_change", ReasonCode.TOKEN_HASH_MISMATCH),
    ],
)
async def test_a_token_that_does_not_fit_is_refused_and_audited(
    nib: SqlNIBStore, approver: Ed25519Signer, proposal: ConfigProposal, case: str, code: ReasonCode
) -> None:
    token = issue_token(approver, proposal, ttl=timedelta(seconds=600))
    key, devices, target = approver.public_key(), DEVICES, proposal
    if case == "expired":
        token = issue_token(
            approver, proposal, ttl=timedelta(seconds=300), now=utcnow() - timedelta(seconds=301)
        )
    elif case == "tampered":
        token = token.model_copy(update={"target_devices": [*DEVICES, "nib-dev-c"]})
        devices = token.target_devices
    elif case == "other_issuer":
        key = Ed25519PrivateKey.generate().public_key()
    elif case == "other_devices":
        devices = ["nib-dev-a"]
    elif case == "other_change":
        target = proposal.model_copy(update={"config_hash": "0" * 64})
    with pytest.raises(TokenRefused) as refused:
        await redeem(nib, token, executor=LC, issuer_key=key, proposal=target, devices=devices)
    assert refused.value.code is code
    stored = await nib.get_token(token.token_id)
    assert stored is None, "a refused token is never recorded as spent"
    aborted = [e.payload["reason"] for e in await nib.read_events() if e.event_type == "EXECUTION_ABORTED"]
    assert aborted == [code.value]


def test_the_check_is_pure_and_order_independent_for_devices(approver: Ed25519Signer) -> None:
    change = ConfigProposal(proposal_id="p", config_payload={"x": 1}, category=Sensitivity.HIGH, origin=LC,
                            proposed_by=LC, target_devices=["b", "a"])  # fmt: skip
    token = issue_token(approver, change, ttl=token_ttl(change.category))
    check_token(token, issuer_key=approver.public_key(), proposal=change, devices=["a", "b"])
    assert token.expires_at - token.issued_at == timedelta(seconds=300)
