"""The signed message layer: envelope, keys, sealing, verification, refusals and the in-process bus.

Tests that touch a store run on SQLite and on PostgreSQL (the ``nib`` fixture); pure ones need none.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from pdsno.canonical import utcnow
from pdsno.errors import ReasonCode
from pdsno.messaging import (
    Envelope,
    InProcessBus,
    KeyRing,
    MessageRejected,
    MessageType,
    SigningKey,
    UnknownRecipient,
    Verifier,
    draft,
    new_ed25519_key,
    new_hmac_key,
    seal,
)
from pdsno.messaging.messages import (
    PAYLOAD_MODELS,
    Heartbeat,
    PolicyAck,
    ValidationResult,
    typed_payload,
)
from pdsno.messaging.replay import ReplayLog
from pdsno.nib.models import Decision, Event, KeyKind, MessageKey
from pdsno.nib.sql import SqlNIBStore
from tests.runtime.conftest import NibTarget

GC = "global_cntl_1"
RC = "regional_cntl_zone-a_1"
LC = "local_cntl_zone-a_1"
LC2 = "local_cntl_zone-a_2"


def heartbeat(controller_id: str = LC) -> Heartbeat:
    return Heartbeat(
        controller_id=controller_id,
        role="local",
        region="zone-a",
        status="online",
        uptime_s=12.5,
        nib_backend="sqlite",
        version="0.1.0",
    )


class Peers:
    """An RC that receives from two LCs; each LC holds its own per-direction HMAC key."""

    def __init__(self, store: SqlNIBStore, replay: ReplayLog) -> None:
        self.store = store
        self.lc_key, lc_record = new_hmac_key(LC, peer_id=RC)
        self.lc2_key, lc2_record = new_hmac_key(LC2, peer_id=RC)
        self.records = [lc_record, lc2_record]
        self.keyring = KeyRing(self.records)
        self.verifier = Verifier(RC, self.keyring, store, replay)

    async def persist(self) -> None:
        for record in self.records:
            (await self.store.put_message_key(record)).unwrap()

    def seal(self, key: SigningKey | None = None, **changes: Any) -> Envelope:
        fields: dict[str, Any] = {"sender_id": LC, "recipient_id": RC, "key": key or self.lc_key}
        fields.update(changes)
        return seal(MessageType.HEARTBEAT, heartbeat(fields["sender_id"]), **fields)


async def rejections(store: SqlNIBStore) -> list[Event]:
    return [e for e in await store.read_events() if e.event_type == "MESSAGE_REJECTED"]


async def refused(
    verifier: Verifier, verify: Callable[[], Awaitable[object]], code: ReasonCode
) -> tuple[MessageRejected, Event]:
    """Run ``verify``: ``verifier`` must refuse with ``code``, audit exactly once in its NIB and leave its
    replay cache alone."""
    store = verifier.store
    before_events = len(await rejections(store))
    before_cache = len(verifier.replay)
    with pytest.raises(MessageRejected) as caught:
        await verify()
    assert caught.value.code is code
    events = await rejections(store)
    assert len(events) == before_events + 1
    assert len(verifier.replay) == before_cache
    event = events[-1]
    assert event.decision is Decision.DENIED
    assert event.actor == RC
    assert event.payload["reason"] == code.value
    return caught.value, event


# --- pure: envelope, keys, sealing ------------------------------------------------------------


def test_message_types_cover_the_reference_design() -> None:
    # reference-design §7's nineteen (the key exchange excepted, C15) and DEVICE_CLEAR of our own
    assert len(MessageType) == 20
    assert set(PAYLOAD_MODELS) == set(MessageType)


def test_signing_bytes_do_not_depend_on_dict_order() -> None:
    key, _ = new_hmac_key(LC)
    envelope = seal(
        MessageType.CONFIG_PROPOSAL,
        {"b": 1, "a": {"y": 2, "x": [3, 1]}},
        sender_id=LC,
        recipient_id=RC,
        key=key,
    )
    reordered = envelope.model_copy(update={"payload": {"a": {"x": [3, 1], "y": 2}, "b": 1}})
    assert reordered.signing_bytes() == envelope.signing_bytes()
    # The wire form is canonical too, and parsing it gives back the same signing bytes.
    parsed = Envelope.parse(envelope.to_bytes())
    assert parsed == envelope
    assert parsed.signing_bytes() == envelope.signing_bytes()
    assert b"signature" not in envelope.signing_bytes()


def test_signature_covers_every_field_but_itself() -> None:
    key, record = new_hmac_key(LC)
    ring = KeyRing([record])
    envelope = seal(MessageType.HEARTBEAT, heartbeat(), sender_id=LC, recipient_id=RC, key=key)
    assert envelope.signature is not None
    assert ring.verify(record, envelope.signing_bytes(), envelope.signature)
    for field, value in {
        "recipient_id": LC2,
        "timestamp": envelope.timestamp + timedelta(microseconds=1),
        "nonce": "B" * 43 + "=",
        "message_type": MessageType.POLICY_ACK,
        "key_id": "other",
        "payload": {**envelope.payload, "uptime_s": 13},
    }.items():
        changed = envelope.model_copy(update={field: value})
        assert not ring.verify(record, changed.signing_bytes(), envelope.signature), field


def test_seal_makes_fresh_ids_and_nonces_and_refuses_a_foreign_key() -> None:
    key, _ = new_hmac_key(LC)
    first = seal(MessageType.HEARTBEAT, heartbeat(), sender_id=LC, recipient_id=RC, key=key)
    second = seal(MessageType.HEARTBEAT, heartbeat(), sender_id=LC, recipient_id=RC, key=key)
    assert first.message_id != second.message_id
    assert first.nonce != second.nonce
    assert first.key_id == key.key_id
    assert first.key_id.startswith(f"{LC}:")
    with pytest.raises(ValueError, match="belongs to"):
        seal(MessageType.HEARTBEAT, heartbeat(), sender_id=LC2, recipient_id=RC, key=key)


def test_ed25519_keys_sign_and_verify() -> None:
    key, record = new_ed25519_key(GC)
    assert record.kind is KeyKind.ED25519
    ring = KeyRing([record])
    envelope = seal(MessageType.HEARTBEAT, heartbeat(GC), sender_id=GC, recipient_id="*", key=key)
    assert envelope.signature is not None
    assert ring.verify(record, envelope.signing_bytes(), envelope.signature)
    assert not ring.verify(record, envelope.signing_bytes() + b" ", envelope.signature)
    with pytest.raises(ValueError, match="cannot sign"):
        SigningKey.from_message_key(record)


def test_signing_key_never_shows_its_secret() -> None:
    key, record = new_hmac_key(LC)
    assert record.material not in repr(key)
    assert key.secret is not None
    assert str(key.secret) not in repr(key)
    restored = SigningKey.from_message_key(record)
    assert restored.sign(b"x") == key.sign(b"x")


def test_keyring_verify_refuses_garbage_signatures() -> None:
    _, record = new_hmac_key(LC)
    ring = KeyRing([record])
    for signature in ["", "not base64!", "é", "AAAA"]:
        assert not ring.verify(record, b"data", signature)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"{not json", ReasonCode.MALFORMED_MESSAGE),
        (b"[1, 2]", ReasonCode.MALFORMED_MESSAGE),
        (b"\xff\xfe", ReasonCode.MALFORMED_MESSAGE),
        (
            json.dumps({"schema_version": "2.0", "anything": 1}).encode(),
            ReasonCode.UNSUPPORTED_SCHEMA_VERSION,
        ),
    ],
)
def test_parse_refuses_bad_input(raw: bytes, code: ReasonCode) -> None:
    with pytest.raises(MessageRejected) as caught:
        Envelope.parse(raw)
    assert caught.value.code is code
    assert caught.value.http_status == 400


def test_parse_refuses_naive_or_numeric_timestamps_and_extra_fields() -> None:
    key, _ = new_hmac_key(LC)
    wire = json.loads(
        seal(MessageType.HEARTBEAT, heartbeat(), sender_id=LC, recipient_id=RC, key=key).to_bytes()
    )
    for change in (
        {"timestamp": "2026-01-01T00:00:00"},
        {"timestamp": 1767225600},
        {"extra": 1},
        {"message_id": "x"},
    ):
        with pytest.raises(MessageRejected) as caught:
            Envelope.parse(json.dumps(wire | change).encode())
        assert caught.value.code is ReasonCode.MALFORMED_MESSAGE


def test_payload_as_validates_into_the_model() -> None:
    key, _ = new_hmac_key(LC)
    envelope = seal(MessageType.HEARTBEAT, heartbeat(), sender_id=LC, recipient_id=RC, key=key)
    assert typed_payload(envelope) == heartbeat()
    assert envelope.payload_as(Heartbeat).uptime_s == 12.5
    with pytest.raises(MessageRejected) as caught:
        envelope.payload_as(ValidationResult)
    assert caught.value.code is ReasonCode.MALFORMED_MESSAGE


def test_unsigned_drafts_have_the_same_shape() -> None:
    envelope = draft(
        MessageType.VALIDATION_REQUEST, {"temp_id": "temp-1"}, sender_id="temp-1", recipient_id=GC
    )
    assert envelope.signature is None
    assert envelope.key_id is None
    assert Envelope.parse(envelope.to_bytes()) == envelope


def test_validation_result_keeps_key_grants_out_of_its_repr() -> None:
    result = ValidationResult(status="APPROVED", hmac_key={"key_id": "k", "secret": "c2VjcmV0"})
    assert result.hmac_key is not None
    assert result.hmac_key["key_id"] == "k"
    assert "c2VjcmV0" not in repr(result)


# --- verification against a real NIB ----------------------------------------------------------


async def test_round_trip_seal_verify(nib: SqlNIBStore, replay: ReplayLog) -> None:
    peers = Peers(nib, replay)
    envelope = peers.seal()
    received = await peers.verifier.verify(envelope.to_bytes(), transport="rest", source="198.18.0.10")
    assert received == envelope
    assert received.payload_as(Heartbeat) == heartbeat()
    assert len(replay) == 1
    assert await rejections(nib) == []


async def test_broadcast_accepted_unless_disabled(nib: SqlNIBStore, replay: ReplayLog) -> None:
    peers = Peers(nib, replay)
    envelope = peers.seal(recipient_id="*")
    assert (await peers.verifier.verify(envelope.to_bytes(), transport="mqtt")).is_broadcast
    strict = Verifier(RC, peers.keyring, nib, replay, accept_broadcast=False)
    await refused(
        strict,
        lambda: strict.verify(peers.seal(recipient_id="*").to_bytes(), transport="mqtt"),
        ReasonCode.MISADDRESSED_MESSAGE,
    )


async def test_tampered_payload_is_refused(nib: SqlNIBStore, replay: ReplayLog) -> None:
    peers = Peers(nib, replay)
    envelope = peers.seal()
    tampered = envelope.model_copy(update={"payload": {**envelope.payload, "status": "offline"}})
    error, event = await refused(
        peers.verifier,
        lambda: peers.verifier.verify(tampered.to_bytes(), transport="rest", source="198.18.0.10"),
        ReasonCode.INVALID_SIGNATURE,
    )
    assert error.http_status == 401
    assert event.subject == LC
    assert event.action == MessageType.HEARTBEAT.value
    assert event.payload == {
        "reason": "INVALID_SIGNATURE",
        "message_id": envelope.message_id,
        "transport": "rest",
        "source": "198.18.0.10",
    }
    assert envelope.signature is not None
    assert envelope.signature not in json.dumps(event.model_dump(mode="json"))


async def test_another_controllers_key_is_refused(nib: SqlNIBStore, replay: ReplayLog) -> None:
    peers = Peers(nib, replay)
    # LC2 signs with its own (valid) key but claims to be LC.
    forged = seal(MessageType.HEARTBEAT, heartbeat(LC), sender_id=LC2, recipient_id=RC, key=peers.lc2_key)
    forged = forged.model_copy(update={"sender_id": LC})
    error, event = await refused(
        peers.verifier,
        lambda: peers.verifier.verify(forged.to_bytes(), transport="rest"),
        ReasonCode.KEY_NOT_OWNED_BY_SENDER,
    )
    assert error.http_status == 401
    assert event.subject == LC


async def test_unknown_key_is_refused(nib: SqlNIBStore, replay: ReplayLog) -> None:
    peers = Peers(nib, replay)
    stranger, _ = new_hmac_key(LC)
    await refused(
        peers.verifier,
        lambda: peers.verifier.verify(peers.seal(key=stranger).to_bytes(), transport="rest"),
        ReasonCode.UNKNOWN_KEY,
    )


async def test_key_for_another_receiver_is_refused(nib: SqlNIBStore, replay: ReplayLog) -> None:
    peers = Peers(nib, replay)
    lc_to_gc, record = new_hmac_key(LC, peer_id=GC)
    peers.keyring.add(record)
    await refused(
        peers.verifier,
        lambda: peers.verifier.verify(peers.seal(key=lc_to_gc).to_bytes(), transport="rest"),
        ReasonCode.UNKNOWN_KEY,
    )


@pytest.mark.parametrize(
    ("offset", "code"),
    [
        (timedelta(seconds=-301), ReasonCode.STALE_TIMESTAMP),
        (timedelta(seconds=301), ReasonCode.FUTURE_TIMESTAMP),
    ],
)
async def test_timestamps_outside_the_window_are_refused(
    nib: SqlNIBStore, offset: timedelta, code: ReasonCode, replay: ReplayLog
) -> None:
    peers = Peers(nib, replay)
    envelope = peers.seal(now=utcnow() + offset)
    error, event = await refused(
        peers.verifier, lambda: peers.verifier.verify(envelope.to_bytes(), transport="mqtt"), code
    )
    assert error.http_status == 400
    # Signed by the sender, the timestamp measures its clock: the refusal and its audit event name it.
    assert f"clock skew {offset.total_seconds():+.0f} s" in error.message
    assert error.details["clock_skew_s"] == pytest.approx(offset.total_seconds(), abs=2)
    assert event.payload["clock_skew_s"] == error.details["clock_skew_s"]
    # A timestamp nobody vouches for measures nothing.
    stranger, _ = new_hmac_key(LC, peer_id=RC)
    forged = peers.seal(key=stranger, now=utcnow() + offset)
    error, event = await refused(
        peers.verifier, lambda: peers.verifier.verify(forged.to_bytes(), transport="mqtt"), code
    )
    assert "clock_skew_s" not in error.details and "clock_skew_s" not in event.payload


@pytest.mark.parametrize("offset", [timedelta(seconds=-299), timedelta(seconds=299)])
async def test_timestamps_inside_the_window_are_accepted(
    nib: SqlNIBStore, offset: timedelta, replay: ReplayLog
) -> None:
    peers = Peers(nib, replay)
    envelope = peers.seal(now=utcnow() + offset)
    assert await peers.verifier.verify(envelope.to_bytes(), transport="mqtt") == envelope


async def test_window_boundary_with_a_fixed_clock(nib: SqlNIBStore, replay: ReplayLog) -> None:
    peers = Peers(nib, replay)
    now = utcnow()
    at_limit = peers.seal(now=now - timedelta(seconds=300))
    assert await peers.verifier.verify(at_limit.to_bytes(), transport="bus", now=now) == at_limit
    just_over = peers.seal(now=now - timedelta(seconds=300, microseconds=1))
    await refused(
        peers.verifier,
        lambda: peers.verifier.verify(just_over.to_bytes(), transport="bus", now=now),
        ReasonCode.STALE_TIMESTAMP,
    )


async def test_unsigned_message_is_refused(nib: SqlNIBStore, replay: ReplayLog) -> None:
    peers = Peers(nib, replay)
    envelope = draft(MessageType.HEARTBEAT, heartbeat(), sender_id=LC, recipient_id=RC)
    error, event = await refused(
        peers.verifier,
        lambda: peers.verifier.verify(envelope.to_bytes(), transport="rest"),
        ReasonCode.UNSIGNED_MESSAGE,
    )
    assert error.http_status == 401
    assert event.payload["message_id"] == envelope.message_id


async def test_misaddressed_message_is_refused(nib: SqlNIBStore, replay: ReplayLog) -> None:
    peers = Peers(nib, replay)
    envelope = peers.seal(recipient_id=GC)
    error, _ = await refused(
        peers.verifier,
        lambda: peers.verifier.verify(envelope.to_bytes(), transport="rest"),
        ReasonCode.MISADDRESSED_MESSAGE,
    )
    assert error.http_status == 421


async def test_too_large_message_is_refused_before_parsing(nib: SqlNIBStore, replay: ReplayLog) -> None:
    peers = Peers(nib, replay)
    small = Verifier(RC, peers.keyring, nib, replay, max_bytes=512)
    envelope = seal(
        MessageType.CONFIG_PROPOSAL, {"blob": "x" * 600}, sender_id=LC, recipient_id=RC, key=peers.lc_key
    )
    error, event = await refused(
        small, lambda: small.verify(envelope.to_bytes(), transport="rest"), ReasonCode.MESSAGE_TOO_LARGE
    )
    assert error.http_status == 413
    # Nothing of an unparsed message is kept.
    assert event.subject is None
    assert event.action is None
    assert event.payload["message_id"] is None


async def test_malformed_json_is_refused(nib: SqlNIBStore, replay: ReplayLog) -> None:
    peers = Peers(nib, replay)
    _, event = await refused(
        peers.verifier,
        lambda: peers.verifier.verify(b'{"message_id": ', transport="mqtt"),
        ReasonCode.MALFORMED_MESSAGE,
    )
    assert event.subject is None
    assert event.payload == {
        "reason": "MALFORMED_MESSAGE",
        "message_id": None,
        "transport": "mqtt",
        "source": None,
    }


async def test_unsupported_schema_version_is_refused(nib: SqlNIBStore, replay: ReplayLog) -> None:
    peers = Peers(nib, replay)
    wire = json.loads(peers.seal().to_bytes()) | {"schema_version": "2.0"}
    await refused(
        peers.verifier,
        lambda: peers.verifier.verify(json.dumps(wire).encode(), transport="rest"),
        ReasonCode.UNSUPPORTED_SCHEMA_VERSION,
    )


async def test_expired_key_is_refused(nib: SqlNIBStore, replay: ReplayLog) -> None:
    peers = Peers(nib, replay)
    old, record = new_hmac_key(
        LC, peer_id=RC, not_before=utcnow() - timedelta(days=2), not_after=utcnow() - timedelta(seconds=1)
    )
    peers.keyring.add(record)
    error, _ = await refused(
        peers.verifier,
        lambda: peers.verifier.verify(peers.seal(key=old).to_bytes(), transport="rest"),
        ReasonCode.KEY_EXPIRED,
    )
    assert error.http_status == 401


async def test_key_not_yet_valid_is_refused(nib: SqlNIBStore, replay: ReplayLog) -> None:
    peers = Peers(nib, replay)
    early, record = new_hmac_key(LC, peer_id=RC, not_before=utcnow() + timedelta(hours=1))
    peers.keyring.add(record)
    await refused(
        peers.verifier,
        lambda: peers.verifier.verify(peers.seal(key=early).to_bytes(), transport="rest"),
        ReasonCode.KEY_EXPIRED,
    )


async def test_replay_is_refused_also_after_a_restart(
    nib: SqlNIBStore, nib_target: NibTarget, replay: ReplayLog
) -> None:
    peers = Peers(nib, replay)
    await peers.persist()
    raw = peers.seal().to_bytes()
    await peers.verifier.verify(raw, transport="rest")
    error, event = await refused(
        peers.verifier, lambda: peers.verifier.verify(raw, transport="rest"), ReasonCode.REPLAYED_MESSAGE
    )
    assert error.http_status == 409
    assert event.subject == LC

    await nib.close()
    replay.close()
    reopened = await nib_target.open()
    restarted = ReplayLog(replay.directory)  # what the restarted receiver reads back from its disk
    try:
        verifier = Verifier(RC, await KeyRing.load_from(reopened), reopened, restarted)
        assert len(verifier.keyring) == 2
        await refused(verifier, lambda: verifier.verify(raw, transport="rest"), ReasonCode.REPLAYED_MESSAGE)
        # A fresh message from the same sender still goes through after the restart.
        assert await verifier.verify(peers.seal().to_bytes(), transport="rest")
    finally:
        restarted.close()
        await reopened.close()


async def test_key_rotation_overlap(nib: SqlNIBStore, replay: ReplayLog) -> None:
    peers = Peers(nib, replay)
    await peers.persist()
    now = utcnow()
    old, old_record = peers.lc_key, peers.records[0]
    new, new_record = new_hmac_key(LC, peer_id=RC, not_before=now)
    # Rotation: issue the new key, close the old one a grace period ahead.
    grace_end = now + timedelta(minutes=10)
    (await nib.put_message_key(new_record)).unwrap()
    stored_old = next(k for k in await nib.list_message_keys(owner_id=LC) if k.key_id == old_record.key_id)
    (await nib.put_message_key(stored_old.next_version(not_after=grace_end))).unwrap()
    await peers.verifier.keyring.reload(nib)
    assert len(peers.verifier.keyring.keys_of(LC)) == 2

    during = now + timedelta(minutes=5)
    for key in (old, new):
        envelope = peers.seal(key=key, now=during)
        assert await peers.verifier.verify(envelope.to_bytes(), transport="rest", now=during) == envelope

    after = grace_end + timedelta(seconds=1)
    envelope = peers.seal(key=new, now=after)
    assert await peers.verifier.verify(envelope.to_bytes(), transport="rest", now=after) == envelope
    stale_key = peers.seal(key=old, now=after)
    await refused(
        peers.verifier,
        lambda: peers.verifier.verify(stale_key.to_bytes(), transport="rest", now=after),
        ReasonCode.KEY_EXPIRED,
    )


async def test_refusal_stays_a_refusal_when_the_audit_write_fails(
    nib: SqlNIBStore, replay: ReplayLog
) -> None:
    peers = Peers(nib, replay)

    async def broken(drafts: Any) -> list[Event]:
        raise RuntimeError("disk full")

    nib.append_events = broken  # type: ignore[method-assign]
    with pytest.raises(MessageRejected) as caught:
        await peers.verifier.verify(b"garbage", transport="rest")
    assert caught.value.code is ReasonCode.MALFORMED_MESSAGE


# --- the in-process bus -----------------------------------------------------------------------


async def test_bus_delivers_and_refuses_like_any_transport(
    nib: SqlNIBStore, lc_nib: SqlNIBStore, replay: ReplayLog, tmp_path: Path
) -> None:
    # Two controllers, each with its own NIB: the RC (``nib``) and an LC (a second database).
    lc_to_rc, lc_record = new_hmac_key(LC, peer_id=RC)
    rc_to_lc, rc_record = new_hmac_key(RC, peer_id=LC)
    received: list[Envelope] = []

    async def rc_handler(envelope: Envelope) -> Envelope | None:
        received.append(envelope)
        ack = PolicyAck(policy_id="p", policy_version="1", controller_id=RC, status="APPLIED")
        return seal(MessageType.POLICY_ACK, ack, sender_id=RC, recipient_id=LC, key=rc_to_lc)

    async def lc_handler(envelope: Envelope) -> Envelope | None:
        return None

    bus = InProcessBus()
    rc_verifier = Verifier(RC, KeyRing([lc_record]), nib, replay)
    lc_replay = ReplayLog(tmp_path / "lc-replay")
    lc_verifier = Verifier(LC, KeyRing([rc_record]), lc_nib, lc_replay)
    bus.register(RC, rc_verifier, rc_handler)
    bus.register(LC, lc_verifier, lc_handler)
    assert bus.controllers == sorted([RC, LC])

    envelope = seal(MessageType.HEARTBEAT, heartbeat(), sender_id=LC, recipient_id=RC, key=lc_to_rc)
    reply = await bus.send(envelope)
    assert received == [envelope]
    assert reply is not None
    assert reply.message_type is MessageType.POLICY_ACK
    assert len(rc_verifier.replay) == 1
    assert len(lc_verifier.replay) == 1  # the reply went through the LC's verifier

    fresh = seal(MessageType.HEARTBEAT, heartbeat(), sender_id=LC, recipient_id=RC, key=lc_to_rc)
    tampered = fresh.model_copy(update={"payload": {**fresh.payload, "uptime_s": 1}})
    _, event = await refused(rc_verifier, lambda: bus.send(tampered), ReasonCode.INVALID_SIGNATURE)
    assert event.payload["transport"] == "bus"
    assert event.payload["source"] == LC
    assert received == [envelope]

    await refused(rc_verifier, lambda: bus.send(envelope), ReasonCode.REPLAYED_MESSAGE)
    assert received == [envelope]

    with pytest.raises(UnknownRecipient):
        await bus.send(seal(MessageType.HEARTBEAT, heartbeat(), sender_id=LC, recipient_id=GC, key=lc_to_rc))
    lc_replay.close()


@pytest.fixture
async def lc_nib(request: pytest.FixtureRequest, nib_target: NibTarget) -> AsyncIterator[SqlNIBStore]:
    """A second controller's NIB on the same backend as ``nib``."""
    if nib_target.backend == "sqlite":
        assert nib_target.path is not None
        other = NibTarget("sqlite", nib_target.path.with_name("lc.sqlite3"), None, nib_target.signer)
    else:
        server = request.getfixturevalue("postgres_server")
        other = NibTarget("postgresql", None, server.create_database(), nib_target.signer)
    store = await other.open(create=True)
    try:
        yield store
    finally:
        await store.close()


async def test_bus_broadcast_reaches_everyone_else(nib: SqlNIBStore, replay: ReplayLog) -> None:
    gc_key, gc_record = new_ed25519_key(GC)  # a broadcast key: no peer
    seen: list[str] = []

    def handler(name: str) -> Callable[[Envelope], Awaitable[Envelope | None]]:
        async def handle(envelope: Envelope) -> Envelope | None:
            seen.append(name)
            return None

        return handle

    bus = InProcessBus()
    bus.register(RC, Verifier(RC, KeyRing([gc_record]), nib, replay), handler(RC))
    await bus.send(seal(MessageType.HEARTBEAT, heartbeat(GC), sender_id=GC, recipient_id="*", key=gc_key))
    assert seen == [RC]


def test_bus_refuses_to_register_someone_elses_verifier(nib: SqlNIBStore, replay: ReplayLog) -> None:
    bus = InProcessBus()

    async def handle(envelope: Envelope) -> Envelope | None:
        return None

    with pytest.raises(ValueError, match="cannot receive"):
        bus.register(LC, Verifier(RC, KeyRing(), nib, replay), handle)


def test_message_key_validity_window() -> None:
    now = utcnow()
    record = MessageKey(
        key_id="k",
        owner_id=LC,
        kind=KeyKind.HMAC,
        material="A" * 44,
        not_before=now,
        not_after=now + timedelta(1),
    )
    assert KeyRing.is_current(record, now)
    assert KeyRing.is_current(record, now + timedelta(1))
    assert not KeyRing.is_current(record, now - timedelta(microseconds=1))
    assert not KeyRing.is_current(record, now + timedelta(days=1, microseconds=1))


async def test_a_flood_of_refusals_is_counted_not_written_one_by_one(
    nib: SqlNIBStore, replay: ReplayLog
) -> None:
    """Every refusal is answered; past the budget, one source's refusals become one counted event."""
    from pdsno.messaging.refusal_budget import RefusalBudget

    verifier = Verifier(RC, KeyRing(), nib, replay, refusals_per_minute=5)
    for _ in range(50):
        with pytest.raises(MessageRejected):
            await verifier.verify(b"not json", transport="rest", source="198.18.0.66")
    with pytest.raises(MessageRejected):  # another source has a budget of its own
        await verifier.verify(b"not json", transport="rest", source="198.18.0.67")
    rejected = [e for e in await nib.read_events() if e.event_type == "MESSAGE_REJECTED"]
    assert [e.payload["source"] for e in rejected] == ["198.18.0.66"] * 5 + ["198.18.0.67"]

    budget = RefusalBudget(2, window_s=0.05)
    assert [budget.admit("x")[0] for _ in range(4)] == [True, True, False, False]
    await asyncio.sleep(0.06)
    assert budget.admit("x") == (True, 2), "the next window records how many went unwritten"


async def test_a_message_whose_handling_failed_is_handled_when_delivered_again(
    nib: SqlNIBStore, replay: ReplayLog
) -> None:
    peers = Peers(nib, replay)
    handled: list[str] = []

    async def handler(envelope: Envelope) -> Envelope | None:
        if not handled:
            handled.append("failed")
            raise RuntimeError("the NIB is full")
        handled.append(envelope.message_id)
        return None

    bus = InProcessBus()
    bus.register(RC, peers.verifier, handler)
    envelope = peers.seal()
    with pytest.raises(RuntimeError):
        await bus.send(envelope)
    assert await bus.send(envelope) is None  # a redelivery, not a replay: handled this time
    assert handled == ["failed", envelope.message_id]
    await refused(peers.verifier, lambda: bus.send(envelope), ReasonCode.REPLAYED_MESSAGE)
