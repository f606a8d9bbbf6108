"""Message keys: what a sender signs with (:class:`SigningKey`) and what a receiver verifies with.

The receiver's side is a :class:`~pdsno.nib.models.MessageKey` stored in the NIB and held in memory by
a :class:`KeyRing`. A key is usable while ``not_before <= now <= not_after`` (open-ended when
``not_after`` is None). Rotation is an overlap: issue the new key, then set the old key's
``not_after`` a grace period ahead, so messages signed with either verify until the old one lapses.

Per decisions.md C15, an HMAC secret is never derived from an unauthenticated exchange: it is issued
at admission, over TLS, after the challenge succeeded (:func:`new_hmac_key` makes one).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeAlias

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from pdsno.canonical import utcnow
from pdsno.nib.models import KeyKind, MessageKey
from pdsno.nib.store import NIBStore

HMAC_SECRET_BYTES = 32
_Material: TypeAlias = bytes | Ed25519PublicKey


def new_key_id(owner_id: str) -> str:
    """``{owner_id}:{64 random bits in hex}``: unique, and says whose key it is at a glance."""
    return f"{owner_id}:{secrets.token_hex(8)}"


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A sender's key: an HMAC-SHA256 secret, or an Ed25519 private key (``repr`` shows neither)."""

    key_id: str
    owner_id: str
    kind: KeyKind
    secret: bytes | None = field(default=None, repr=False)
    private_key: Ed25519PrivateKey | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.kind == KeyKind.HMAC:
            if self.secret is None or len(self.secret) < HMAC_SECRET_BYTES or self.private_key is not None:
                raise ValueError(f"an HMAC signing key needs a secret of at least {HMAC_SECRET_BYTES} bytes")
        elif self.private_key is None or self.secret is not None:
            raise ValueError("an Ed25519 signing key needs an Ed25519 private key")

    @classmethod
    def from_hmac_secret(cls, key_id: str, owner_id: str, secret: bytes | str) -> SigningKey:
        """From raw bytes, or from the base64 ``secret`` a controller receives in its VALIDATION_RESULT."""
        raw = _b64decode(secret) if isinstance(secret, str) else secret
        return cls(key_id, owner_id, KeyKind.HMAC, secret=raw)

    @classmethod
    def from_message_key(cls, key: MessageKey) -> SigningKey:
        """The signing half of an HMAC key the NIB holds (a controller's own key towards a peer)."""
        if key.kind != KeyKind.HMAC:
            raise ValueError(f"key {key.key_id} is an Ed25519 public key: it cannot sign")
        return cls.from_hmac_secret(key.key_id, key.owner_id, key.material)

    @classmethod
    def from_ed25519(cls, key_id: str, owner_id: str, private_key: Ed25519PrivateKey) -> SigningKey:
        return cls(key_id, owner_id, KeyKind.ED25519, private_key=private_key)

    def sign(self, data: bytes) -> str:
        if self.secret is not None:
            return base64.b64encode(hmac.digest(self.secret, data, hashlib.sha256)).decode()
        assert self.private_key is not None
        return base64.b64encode(self.private_key.sign(data)).decode()

    def material_b64(self) -> str:
        """What the receiver stores: the HMAC secret itself, or the Ed25519 public key."""
        if self.secret is not None:
            return base64.b64encode(self.secret).decode()
        assert self.private_key is not None
        raw = self.private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return base64.b64encode(raw).decode()

    def message_key(
        self,
        *,
        peer_id: str | None = None,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
    ) -> MessageKey:
        """The verification record for this key, to store in the NIB of ``peer_id`` (None: of anyone)."""
        return MessageKey(
            key_id=self.key_id,
            owner_id=self.owner_id,
            peer_id=peer_id,
            kind=self.kind,
            material=self.material_b64(),
            not_before=not_before or utcnow(),
            not_after=not_after,
        )


def new_hmac_key(
    owner_id: str,
    *,
    peer_id: str | None = None,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> tuple[SigningKey, MessageKey]:
    """A fresh 256-bit HMAC key for ``owner_id``: the signing half and the record receivers store.

    ``peer_id`` names the one controller that may verify it (an HMAC key per direction, so that the
    receiver, which holds the secret too, cannot use it towards anyone else).
    """
    key = SigningKey.from_hmac_secret(new_key_id(owner_id), owner_id, secrets.token_bytes(HMAC_SECRET_BYTES))
    return key, key.message_key(peer_id=peer_id, not_before=not_before, not_after=not_after)


def new_ed25519_key(
    owner_id: str,
    *,
    private_key: Ed25519PrivateKey | None = None,
    peer_id: str | None = None,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> tuple[SigningKey, MessageKey]:
    """An Ed25519 message key (a new one, or ``private_key``); receivers store only the public half."""
    key = SigningKey.from_ed25519(new_key_id(owner_id), owner_id, private_key or Ed25519PrivateKey.generate())
    return key, key.message_key(peer_id=peer_id, not_before=not_before, not_after=not_after)


def key_is_current(key: MessageKey, now: datetime | None = None) -> bool:
    at = now or utcnow()
    return key.not_before <= at and (key.not_after is None or at <= key.not_after)


class KeyRing:
    """In-memory verification keys by key id, their base64 material decoded once when added."""

    __slots__ = ("_entries",)

    def __init__(self, keys: Iterable[MessageKey] = ()) -> None:
        self._entries: dict[str, tuple[MessageKey, _Material]] = {}
        for key in keys:
            self.add(key)

    @classmethod
    async def load_from(cls, store: NIBStore, *, owner_id: str | None = None) -> KeyRing:
        return cls(await store.list_message_keys(owner_id=owner_id))

    async def reload(self, store: NIBStore) -> None:
        """Replace the contents with what the NIB holds now (after a rotation done elsewhere)."""
        fresh = KeyRing(await store.list_message_keys())
        self._entries = fresh._entries

    def add(self, key: MessageKey) -> None:
        """Add or replace ``key`` (replacing is how a new ``not_after`` takes effect)."""
        self._entries[key.key_id] = (key, _decode_material(key))

    def remove(self, key_id: str) -> None:
        self._entries.pop(key_id, None)

    def get(self, key_id: str) -> MessageKey | None:
        entry = self._entries.get(key_id)
        return entry[0] if entry is not None else None

    def keys_of(self, owner_id: str) -> list[MessageKey]:
        return [key for key, _ in self._entries.values() if key.owner_id == owner_id]

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[MessageKey]:
        return iter([key for key, _ in self._entries.values()])

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._entries

    @staticmethod
    def is_current(key: MessageKey, now: datetime | None = None) -> bool:
        return key_is_current(key, now)

    def verify(self, key: MessageKey, data: bytes, signature: str) -> bool:
        """Whether ``signature`` (base64) is ``key``'s over ``data``; HMAC compared in constant time."""
        entry = self._entries.get(key.key_id)
        material = entry[1] if entry is not None and entry[0] is key else _decode_material(key)
        try:
            raw = base64.b64decode(signature, validate=True)
        except (binascii.Error, ValueError):
            return False
        if isinstance(material, bytes):
            return hmac.compare_digest(hmac.digest(material, data, hashlib.sha256), raw)
        try:
            material.verify(raw, data)
        except InvalidSignature:
            return False
        return True


def _b64decode(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not valid base64") from None


def _decode_material(key: MessageKey) -> _Material:
    raw = _b64decode(key.material)
    if key.kind == KeyKind.HMAC:
        if len(raw) < HMAC_SECRET_BYTES:
            raise ValueError(f"HMAC key {key.key_id} is shorter than {HMAC_SECRET_BYTES} bytes")
        return raw
    try:
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise ValueError(f"key {key.key_id} is not a raw Ed25519 public key") from None
