"""A controller's watch over its own audit chain (pdsno.audit.watch) on a real NIB, both backends."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pdsno.audit.watch import AuditWatch
from pdsno.nib.models import EventDraft
from pdsno.nib.sql import SqlNIBStore
from pdsno.security.keys import Ed25519Signer


def _events(n: int, signer: Ed25519Signer) -> list[EventDraft]:
    return [EventDraft(event_type="TEST", actor=signer.signer_id, subject=f"s{i}") for i in range(n)]


async def test_it_walks_the_chain_once_then_only_what_was_appended(
    nib: SqlNIBStore, signer: Ed25519Signer
) -> None:
    watch = AuditWatch(nib, lambda: {signer.signer_id: signer.private_key.public_key()})
    await nib.append_events(_events(3, signer))
    first = await watch.check()
    assert first.ok and first.checked == 3 and first.head_seq == 3 and first.problem is None
    await nib.append_events(_events(2, signer))
    second = await watch.check()
    assert second.ok and second.checked == 5 and second.head_seq == 5
    assert (await watch.check()).checked == 5, "nothing new: nothing walked again"


async def test_an_event_signed_by_a_key_it_does_not_know_is_reported(
    nib: SqlNIBStore, signer: Ed25519Signer
) -> None:
    stranger = Ed25519Signer("local_cntl_zone-z_9", Ed25519PrivateKey.generate())
    watch = AuditWatch(nib, lambda: {signer.signer_id: signer.private_key.public_key()})
    await nib.append_events(_events(1, signer))
    assert (await watch.check()).ok
    nib.use_signer(stranger)
    await nib.append_events(_events(1, stranger))
    status = await watch.check()
    assert not status.ok and status.head_seq == 2
    assert (
        status.problem is not None
        and "event #2" in status.problem
        and "local_cntl_zone-z_9" in status.problem
    )
