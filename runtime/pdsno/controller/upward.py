"""Messages up the tree, delivered until the receiving controller says it stored them.

A sender (:class:`Upward`) keeps every upward message in its :class:`~pdsno.transport.upward.UpwardStore`
from the moment it is made, sends it over MQTT when the link is up and its type has a topic (discovery
reports), over signed REST otherwise (summaries, execution results), and forgets it only on the receiver's signed ``DISCOVERY_REPORT_ACK``: in the
REST answer, or on MQTT on the sender's own ack topic. Without one it tries again with bounded backoff,
sealing a fresh envelope each time (an old one would be refused as stale or replayed): over REST while
the MQTT connection that took the first copy lasts (the broker keeps that copy for a receiver that is
away; more would pile up beside it), over MQTT again once the link has reconnected (the broker may have
lost it).

A receiver (:class:`Receipts`) stores a message, remembers its key, then answers; a copy that arrives
again (the ack was lost, the broker redelivered) is answered without being stored twice. A receiver that
cannot store raises: no ack, so the sender keeps the message and the broker redelivers it.

The ack payload names a report chunk (``report_id``, ``chunk_index``), or another message by its id
(a summary, an execution result) with chunk 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Literal

from pydantic import BaseModel

from pdsno.controller.uplink import Peers, Uplink
from pdsno.errors import PdsnoError
from pdsno.faults import FaultPoint, fault_point
from pdsno.messaging.envelope import Envelope, MessageRejected, MessageType
from pdsno.messaging.messages import PAYLOAD_MODELS, DiscoveryReportAck
from pdsno.messaging.verify import Verifier
from pdsno.transport.mqtt import MqttLink
from pdsno.transport.upward import PendingMessage, UpwardStore

log = logging.getLogger(__name__)

Via = Literal["mqtt", "rest"]
Delivered = Callable[[PendingMessage, DiscoveryReportAck, Via], Awaitable[None]]
"""``async def on_delivered(message, ack, via)``: the parent answered for ``message``."""


def ack_key(message_id: str, chunk_index: int = 0) -> str:
    """The key a message is kept under, and that its ack names."""
    return f"{message_id}/{chunk_index}"


class Upward:
    """The durable sender of one controller's messages to its parent (see the module documentation).

    ``mqtt``/``mqtt_topics``: the MQTT route of the message types it names (reports, C4): a message's
    first copy goes out on it while the link is connected, another only on a later connection; every
    other attempt, and every message of another type, is REST. ``on_delivered``: per message type, what
    to do once the parent has acknowledged one.
    ``retry_s``: the wait before the first retry, doubled after each attempt up to ``max_retry_s``;
    over MQTT it is also how long an ack may take.
    """

    def __init__(
        self,
        store: UpwardStore,
        uplink: Uplink,
        *,
        verifier: Verifier,
        mqtt: MqttLink | None = None,
        mqtt_topics: Mapping[MessageType, str] | None = None,
        on_delivered: Mapping[MessageType, Delivered] | None = None,
        retry_s: float = 2.0,
        max_retry_s: float = 30.0,
    ) -> None:
        self._store = store
        self._uplink = uplink
        self._verifier = verifier
        self._mqtt = mqtt
        self._topics = dict(mqtt_topics or {})
        self._on_delivered = dict(on_delivered or {})
        self._retry_s = retry_s
        self._max_retry_s = max_retry_s
        self._wake = asyncio.Event()
        self._published: dict[str, int] = {}  # key -> the MQTT connection its last copy went out on

    def pending(self) -> int:
        return len(self._store)

    async def send(self, message_type: MessageType, payload: BaseModel, key: str) -> None:
        """Keep ``payload`` until its ack (on disk before this returns) and send it as soon as possible."""
        self._store.add(key, message_type.value, payload.model_dump_json().encode())
        self._wake.set()

    async def run_forever(self) -> None:
        """Send what is due, oldest first, and wait for the next due time or a new message."""
        while True:
            self._wake.clear()
            for message in self._store.due(time.time()):
                await self._attempt(message)
            due = self._store.next_due()
            wait = None if due is None else max(0.05, due - time.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def on_mqtt(self, topic: str, payload: bytes) -> None:
        """An ack on this controller's ack topic."""
        try:
            envelope = await self._verifier.verify(payload, transport="mqtt", source=topic)
        except MessageRejected:
            return  # audited by the verifier
        with self._verifier.handling(envelope):
            await self._acknowledged(envelope, "mqtt")

    async def _attempt(self, message: PendingMessage) -> None:
        # Counted before the attempt: a lost ack, a dead parent or a crash mid-send all mean "try again".
        retry_in = min(self._max_retry_s, self._retry_s * 2**message.attempts)
        self._store.postpone(message.key, time.time() + retry_in)
        fault_point(FaultPoint.OUTBOX_FLUSH)
        context = {"key": message.key, "message_type": message.message_type, "attempt": message.attempts + 1}
        try:
            message_type = MessageType(message.message_type)
            payload = PAYLOAD_MODELS[message_type].model_validate_json(message.payload)
        except ValueError as exc:  # written by another pdsno version: it can never be sent
            self._store.done(message.key)
            log.error("upward message dropped: unreadable", extra={**context, "error": str(exc)})
            return
        mqtt, topic = self._mqtt, self._topics.get(message_type)
        try:
            # While the connection that took a copy lasts, the broker holds it for the receiver (away,
            # perhaps): another copy would only queue up beside it, so retries go over REST, which
            # answers at once. A new connection may mean a broker that lost its state: publish again.
            if (
                mqtt is not None
                and topic is not None
                and mqtt.connected
                and self._published.get(message.key) != mqtt.connection
            ):
                await mqtt.publish(topic, await self._uplink.seal(message_type, payload), qos=1)
                self._published[message.key] = mqtt.connection
                return
            answer = await self._uplink.request(message_type, payload)
        except PdsnoError as exc:
            log.warning(
                "upward message not delivered; will retry",
                extra={**context, "code": str(exc.code), "error": exc.message, "retry_in_s": retry_in},
            )
            return
        await self._acknowledged(answer, "rest")

    async def _acknowledged(self, envelope: Envelope, via: Via) -> None:
        if (
            envelope.sender_id != self._uplink.parent_id
            or envelope.message_type is not MessageType.DISCOVERY_REPORT_ACK
        ):
            log.warning(
                "upward answer is not an ack from the parent",
                extra={"sender": envelope.sender_id, "message_type": envelope.message_type.value},
            )
            return
        ack = envelope.payload_as(DiscoveryReportAck)
        key = ack_key(ack.report_id, ack.chunk_index)
        message = self._store.done(key)
        if message is None:
            return  # an ack repeated for a copy sent again
        self._published.pop(key, None)
        log_at = log.info if ack.status == "ACCEPTED" else log.warning
        log_at(
            "upward message acknowledged",
            extra={"key": key, "status": ack.status, "reason": ack.reason, "via": via,
                   "attempts": message.attempts, "age_s": round(time.time() - message.created_at, 3)},
        )  # fmt: skip
        delivered = self._on_delivered.get(MessageType(message.message_type))
        if delivered is not None:
            try:
                await delivered(message, ack, via)
            except Exception:
                # The parent has it; only the sender's own record of that failed.
                log.exception("recording a delivered upward message failed", extra={"key": key})


class Receipts:
    """A receiver's side: store each upward message once, then answer it with a signed ack."""

    def __init__(self, store: UpwardStore, peers: Peers) -> None:
        self._store = store
        self._peers = peers
        # One message of a sender at a time: a copy over REST must not merge beside one over MQTT.
        self._senders: dict[str, asyncio.Lock] = {}

    async def take(
        self,
        envelope: Envelope,
        message_id: str,
        chunk_index: int,
        keep: Callable[[], Awaitable[bool]],
    ) -> Envelope:
        """Run ``keep`` (True: stored, False: refused) unless this message was stored already; the ack.

        An exception from ``keep`` propagates: no ack, the sender keeps the message.
        """
        key = ack_key(message_id, chunk_index)
        sender = envelope.sender_id
        async with self._senders.setdefault(sender, asyncio.Lock()):
            accepted = self._store.was_received(sender, key)
            if not accepted:
                accepted = await keep()
                if accepted:
                    self._store.mark_received(sender, key)
        ack = DiscoveryReportAck(
            report_id=message_id,
            chunk_index=chunk_index,
            status="ACCEPTED" if accepted else "REJECTED",
            reason=None if accepted else "DISCOVERY_REPORT_REJECTED",
        )
        return await self._peers.envelope(sender, MessageType.DISCOVERY_REPORT_ACK, ack)
