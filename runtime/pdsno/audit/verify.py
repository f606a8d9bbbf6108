"""Verify a NIB's whole event log against the public keys of its signers."""

from __future__ import annotations

from collections.abc import Mapping

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from pdsno.audit.chain import ChainReport, ChainVerifier
from pdsno.nib.store import NIBStore
from pdsno.security.keys import public_key_from_b64

PAGE = 5000


async def signer_keys(store: NIBStore, own: Mapping[str, Ed25519PublicKey]) -> dict[str, Ed25519PublicKey]:
    """Keys of the controllers the NIB knows, overridden by ``own``.

    The local controller's key comes from its key file, not from the database: someone who can rewrite
    the database could otherwise swap in a key of their own and re-sign the whole log.
    """
    keys = {
        c.controller_id: public_key_from_b64(c.public_key)
        for c in await store.list_controllers()
        if c.public_key
    }
    keys.update(own)
    return keys


async def verify_log(store: NIBStore, keys: Mapping[str, Ed25519PublicKey]) -> ChainReport:
    verifier = ChainVerifier(keys)
    after = 0
    while page := await store.read_events(after_seq=after, limit=PAGE):
        verifier.feed(page)
        after = page[-1].seq
    head = await store.audit_head()
    return verifier.finish(head.seq, head.hash)
