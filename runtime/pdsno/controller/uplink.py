"""Signed East/West messages over HTTPS to the parent and the children."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from pdsno.controller.app import MESSAGES_PATH
from pdsno.errors import PdsnoError, ReasonCode
from pdsno.messaging.envelope import Envelope, MessageType
from pdsno.messaging.keys import SigningKey, key_is_current
from pdsno.messaging.sign import seal
from pdsno.messaging.verify import Verifier
from pdsno.nib.models import KeyKind
from pdsno.nib.store import NIBStore
from pdsno.transport.rest_client import PeerClient


async def signing_key(store: NIBStore, owner: str, peer: str) -> SigningKey:
    """``owner``'s newest current HMAC key towards ``peer`` (issued at admission, maybe rotated)."""
    keys = [
        k
        for k in await store.list_message_keys(owner_id=owner)
        if k.peer_id == peer and k.kind is KeyKind.HMAC and key_is_current(k)
    ]
    if not keys:
        raise PdsnoError(f"{owner} holds no message key towards {peer}", code=ReasonCode.UNKNOWN_KEY)
    return SigningKey.from_message_key(max(keys, key=lambda k: k.not_before))


class Peers:
    """Signed messages to the controllers this one shares keys with: its parent and its children."""

    def __init__(
        self, store: NIBStore, *, me: str, client: PeerClient, verifier: Verifier | None = None
    ) -> None:
        self.store = store
        self.me = me
        self._client = client
        self._verifier = verifier

    async def envelope(self, peer_id: str, message_type: MessageType, payload: BaseModel) -> Envelope:
        key = await signing_key(self.store, self.me, peer_id)
        return seal(message_type, payload, sender_id=self.me, recipient_id=peer_id, key=key)

    async def seal(self, peer_id: str, message_type: MessageType, payload: BaseModel) -> bytes:
        return (await self.envelope(peer_id, message_type, payload)).to_bytes()

    async def post(self, peer_id: str, url: str, message_type: MessageType, payload: BaseModel) -> Any:
        return await self._client.post(url + MESSAGES_PATH, lambda: self.seal(peer_id, message_type, payload))

    async def url_of(self, peer_id: str) -> str:
        """Where a peer this controller admitted, or was admitted by, serves REST (from the NIB)."""
        peer = await self.store.get_controller(peer_id)
        if peer is None or not peer.rest_url:
            raise PdsnoError(f"{peer_id} has no known address", code=ReasonCode.NOT_FOUND)
        return peer.rest_url

    async def post_to(self, peer_id: str, message_type: MessageType, payload: BaseModel) -> Any:
        return await self.post(peer_id, await self.url_of(peer_id), message_type, payload)

    async def request(
        self, peer_id: str, message_type: MessageType, payload: BaseModel, *, url: str | None = None
    ) -> Envelope:
        """Send a message whose answer is a signed envelope from the same peer, and verify that answer.

        ``url``: where the peer serves REST, if not its address in the NIB."""
        assert self._verifier is not None, "Peers built without a verifier cannot check answers"
        url = url or await self.url_of(peer_id)
        answer = await self.post(peer_id, url, message_type, payload)
        reply = await self._verifier.verify(json.dumps(answer).encode(), transport="rest", source=url)
        if reply.sender_id != peer_id:
            raise PdsnoError(
                f"the answer came from {reply.sender_id}, not {peer_id}", code=ReasonCode.INVALID_SIGNATURE
            )
        return reply


class Uplink:
    """The parent, as :class:`Peers` sees it."""

    def __init__(self, peers: Peers, *, parent_id: str, parent_url: str) -> None:
        self.peers = peers
        self.parent_id = parent_id
        self.parent_url = parent_url

    async def seal(self, message_type: MessageType, payload: BaseModel) -> bytes:
        return await self.peers.seal(self.parent_id, message_type, payload)

    async def post(self, message_type: MessageType, payload: BaseModel) -> Any:
        return await self.peers.post(self.parent_id, self.parent_url, message_type, payload)

    async def request(self, message_type: MessageType, payload: BaseModel) -> Envelope:
        return await self.peers.request(self.parent_id, message_type, payload, url=self.parent_url)
