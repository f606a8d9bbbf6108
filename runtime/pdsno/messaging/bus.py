"""The in-process bus of the single-process embedded mode.

No shortcut: an envelope is serialised to bytes and goes through the recipient's own
:class:`~pdsno.messaging.verify.Verifier` (transport ``"bus"``), exactly as over REST or MQTT, so the
same message is accepted or refused for the same reason whichever way it travels.

- Unicast: the recipient's handler runs and its reply, if any, is returned to the caller, verified in
  turn by the original sender's verifier when the sender is registered on the bus (as an HTTP client
  verifies a signed response). A refusal raises :class:`MessageRejected` in the caller.
- Broadcast (``recipient_id == "*"``): delivered to every other registered controller, like an MQTT
  publish: replies are dropped and refusals stay with the receivers (each audits its own).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pdsno.errors import PdsnoError, ReasonCode
from pdsno.messaging.envelope import BROADCAST, Envelope, MessageRejected
from pdsno.messaging.verify import Verifier

Handler = Callable[[Envelope], Awaitable[Envelope | None]]
TRANSPORT = "bus"

_log = logging.getLogger(__name__)


class UnknownRecipient(PdsnoError):
    """Nobody is registered on the bus under the envelope's ``recipient_id``."""

    code = ReasonCode.NOT_FOUND


@dataclass(frozen=True, slots=True)
class _Endpoint:
    verifier: Verifier
    handler: Handler


class InProcessBus:
    def __init__(self) -> None:
        self._endpoints: dict[str, _Endpoint] = {}

    def register(self, controller_id: str, verifier: Verifier, handler: Handler) -> None:
        if verifier.self_id != controller_id:
            raise ValueError(f"the verifier of {verifier.self_id} cannot receive for {controller_id}")
        if controller_id in self._endpoints:
            raise ValueError(f"{controller_id} is already registered on the bus")
        self._endpoints[controller_id] = _Endpoint(verifier, handler)

    def unregister(self, controller_id: str) -> None:
        self._endpoints.pop(controller_id, None)

    @property
    def controllers(self) -> list[str]:
        return sorted(self._endpoints)

    async def send(self, envelope: Envelope) -> Envelope | None:
        """Deliver ``envelope``; the recipient's verified reply (unicast) or None."""
        if envelope.recipient_id == BROADCAST:
            await self._broadcast(envelope)
            return None
        endpoint = self._endpoints.get(envelope.recipient_id)
        if endpoint is None:
            raise UnknownRecipient(
                f"no controller {envelope.recipient_id} on the bus", recipient_id=envelope.recipient_id
            )
        reply = await self._deliver(endpoint, envelope.to_bytes(), envelope.sender_id)
        if reply is None:
            return None
        sender = self._endpoints.get(envelope.sender_id)
        if sender is None:
            return reply
        return await sender.verifier.verify(
            reply.to_bytes(), transport=TRANSPORT, source=envelope.recipient_id
        )

    async def _deliver(self, endpoint: _Endpoint, raw: bytes, source: str) -> Envelope | None:
        received = await endpoint.verifier.verify(raw, transport=TRANSPORT, source=source)
        with endpoint.verifier.handling(received):
            return await endpoint.handler(received)

    async def _broadcast(self, envelope: Envelope) -> None:
        raw = envelope.to_bytes()
        for controller_id, endpoint in list(self._endpoints.items()):
            if controller_id == envelope.sender_id:
                continue
            try:
                await self._deliver(endpoint, raw, envelope.sender_id)
            except MessageRejected as exc:
                _log.warning(
                    "broadcast refused by a receiver",
                    extra={
                        "receiver": controller_id,
                        "reason": exc.code.value,
                        "message_id": envelope.message_id,
                    },
                )
