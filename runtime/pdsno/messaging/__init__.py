"""The signed message layer: envelopes, message keys, sealing, verification and the in-process bus.

``envelope`` defines the wire format, ``keys`` the signing and verification keys, ``sign`` builds
envelopes, ``verify`` checks received ones, ``messages`` types every payload and ``bus`` carries
envelopes between controllers of one process through the same verification as REST and MQTT.
"""

from pdsno.messaging.bus import InProcessBus, UnknownRecipient
from pdsno.messaging.envelope import BROADCAST, SCHEMA_VERSION, Envelope, MessageRejected, MessageType
from pdsno.messaging.keys import KeyRing, SigningKey, key_is_current, new_ed25519_key, new_hmac_key
from pdsno.messaging.messages import PAYLOAD_MODELS, typed_payload
from pdsno.messaging.sign import draft, seal, sign_envelope
from pdsno.messaging.verify import Verifier

__all__ = [
    "BROADCAST",
    "PAYLOAD_MODELS",
    "SCHEMA_VERSION",
    "Envelope",
    "InProcessBus",
    "KeyRing",
    "MessageRejected",
    "MessageType",
    "SigningKey",
    "UnknownRecipient",
    "Verifier",
    "draft",
    "key_is_current",
    "new_ed25519_key",
    "new_hmac_key",
    "seal",
    "sign_envelope",
    "typed_payload",
]
