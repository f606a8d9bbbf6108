"""The receiving side: one :class:`Verifier` per controller, shared by REST, MQTT and the in-process bus.

Checks run cheapest and least stateful first; the replay cache is written last, only for messages
that are fresh, addressed here and correctly signed, so unauthenticated traffic cannot fill it. The
replay cache (:class:`~pdsno.messaging.replay.ReplayLog`) is kept on disk, so a restart does not reopen
the window.

A message outside the clock window is refused for its timestamp even when its signature is fine, but
the signature is checked all the same: only a signed timestamp measures the sender's clock, so only
then does the refusal carry ``clock_skew_s`` (sender's clock minus ours) for the operator to see.

Every refusal appends one ``MESSAGE_REJECTED`` audit event (claimed sender and message id when the
envelope parsed; never the payload or the signature) and raises :class:`MessageRejected`. Nothing
else changes state on a refusal.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any, Final

from pdsno.canonical import utcnow
from pdsno.errors import ReasonCode
from pdsno.messaging.envelope import BROADCAST, Envelope, MessageRejected
from pdsno.messaging.keys import KeyRing, key_is_current
from pdsno.messaging.refusal_budget import DEFAULT_PER_MINUTE, RefusalBudget
from pdsno.messaging.replay import ReplayLog
from pdsno.metrics import runtime_counts
from pdsno.nib.models import Decision, EventDraft
from pdsno.nib.store import NIBStore

__all__ = ["DEFAULT_CLOCK_SKEW_S", "DEFAULT_MAX_BYTES", "MessageRejected", "Verifier"]

DEFAULT_CLOCK_SKEW_S: Final = 300  # decisions.md C14
DEFAULT_MAX_BYTES: Final = 1024 * 1024
MESSAGE_REJECTED_EVENT: Final = "MESSAGE_REJECTED"

_log = logging.getLogger(__name__)


class Verifier:
    """Verifies raw envelopes addressed to ``self_id`` against ``keyring``, remembers accepted ones in
    ``replay``; records refusals in ``store``."""

    __slots__ = (
        "_budget",
        "_skew",
        "accept_broadcast",
        "clock_skew_s",
        "keyring",
        "max_bytes",
        "replay",
        "self_id",
        "store",
    )

    def __init__(
        self,
        self_id: str,
        keyring: KeyRing,
        store: NIBStore,
        replay: ReplayLog,
        *,
        clock_skew_s: int = DEFAULT_CLOCK_SKEW_S,
        max_bytes: int = DEFAULT_MAX_BYTES,
        accept_broadcast: bool = True,
        refusals_per_minute: int = DEFAULT_PER_MINUTE,
    ) -> None:
        if clock_skew_s <= 0 or max_bytes <= 0:
            raise ValueError("clock_skew_s and max_bytes must be positive")
        self.self_id = self_id
        self.keyring = keyring
        self.store = store
        self.clock_skew_s = clock_skew_s
        self.max_bytes = max_bytes
        self.accept_broadcast = accept_broadcast
        self._skew = timedelta(seconds=clock_skew_s)
        self.replay = replay
        self._budget = RefusalBudget(refusals_per_minute)

    async def verify(
        self,
        raw: bytes,
        *,
        transport: str,
        source: str | None = None,
        now: datetime | None = None,
        retained_state: bool = False,
    ) -> Envelope:
        """The envelope in ``raw`` once every check passed; :class:`MessageRejected` otherwise.

        ``transport`` ("rest", "mqtt", "bus") and ``source`` (peer address, topic) go into the audit
        event of a refusal. ``retained_state``: a retained MQTT state message (the policy), which is meant
        to be read again long after it was sent; its age and replays are harmless because the receiver
        keeps it only if its version is newer, so only form, addressing, key and signature are checked.
        ``now`` is for tests.
        """
        if len(raw) > self.max_bytes:
            await self.record(ReasonCode.MESSAGE_TOO_LARGE, None, transport=transport, source=source)
            raise MessageRejected(
                f"message of {len(raw)} bytes exceeds the limit of {self.max_bytes}",
                code=ReasonCode.MESSAGE_TOO_LARGE,
            )
        try:
            envelope = Envelope.parse(raw)
        except MessageRejected as exc:
            await self.record(exc.code, None, transport=transport, source=source)
            raise
        return await self.check(
            envelope, transport=transport, source=source, now=now, retained_state=retained_state
        )

    async def check(
        self,
        envelope: Envelope,
        *,
        transport: str,
        source: str | None = None,
        now: datetime | None = None,
        retained_state: bool = False,
    ) -> Envelope:
        """Every check after parsing, for a transport that already holds a parsed envelope."""
        at = now or utcnow()

        def refuse(code: ReasonCode, message: str) -> MessageRejected:
            return MessageRejected(message, code=code, message_id=envelope.message_id)

        error: MessageRejected | None = None
        skew = envelope.timestamp - at
        if not envelope.signature:
            error = refuse(ReasonCode.UNSIGNED_MESSAGE, "the message is not signed")
        elif envelope.recipient_id != self.self_id and not (
            self.accept_broadcast and envelope.recipient_id == BROADCAST
        ):
            error = refuse(ReasonCode.MISADDRESSED_MESSAGE, f"the message is not addressed to {self.self_id}")
        else:
            error = self._key_refusal(envelope, envelope.signature, at)
            if (not retained_state and -skew > self._skew) or skew > self._skew:
                error = self._outside_window(envelope, skew, authentic=error is None)
            elif (
                error is None
                and not retained_state
                and not self.replay.first_sighting(envelope.message_id, envelope.timestamp + self._skew)
            ):
                error = refuse(ReasonCode.REPLAYED_MESSAGE, "the message was already received")
        if error is not None:
            skew_s = error.details.get("clock_skew_s")
            details = None if skew_s is None else {"clock_skew_s": skew_s}
            await self.record(error.code, envelope, transport=transport, source=source, details=details)
            raise error
        runtime_counts(self.self_id).verified.labels(transport).inc()
        return envelope

    @contextlib.contextmanager
    def handling(self, envelope: Envelope) -> Iterator[None]:
        """Around the handling of an accepted message: if it fails, the message is taken back from the
        replay cache, so that a copy delivered again is handled instead of refused as a replay."""
        try:
            yield
        except BaseException:
            self.replay.forget(envelope.message_id)
            raise

    def _key_refusal(self, envelope: Envelope, signature: str, at: datetime) -> MessageRejected | None:
        """Why the key or the signature does not vouch for ``envelope``; None when they do."""
        key = self.keyring.get(envelope.key_id) if envelope.key_id is not None else None
        code, message = None, ""
        if key is None:
            code, message = ReasonCode.UNKNOWN_KEY, "the message is signed with an unknown key"
        elif key.peer_id is not None and key.peer_id != self.self_id:
            # A per-direction key verifies for one controller only; to anyone else it is not a key.
            code, message = ReasonCode.UNKNOWN_KEY, f"key {key.key_id} is not one {self.self_id} verifies"
        elif key.owner_id != envelope.sender_id:
            code, message = (
                ReasonCode.KEY_NOT_OWNED_BY_SENDER,
                f"key {key.key_id} does not belong to the sender",
            )
        elif not key_is_current(key, at):
            code, message = ReasonCode.KEY_EXPIRED, f"key {key.key_id} is not valid now"
        elif not self.keyring.verify(key, envelope.signing_bytes(), signature):
            code, message = ReasonCode.INVALID_SIGNATURE, "the signature does not match the message"
        return None if code is None else MessageRejected(message, code=code, message_id=envelope.message_id)

    def _outside_window(self, envelope: Envelope, skew: timedelta, *, authentic: bool) -> MessageRejected:
        seconds = round(skew.total_seconds(), 3)
        code = ReasonCode.FUTURE_TIMESTAMP if seconds > 0 else ReasonCode.STALE_TIMESTAMP
        message = (
            f"the message's timestamp is {abs(seconds):.0f} s {'ahead of' if seconds > 0 else 'behind'} "
            f"this controller's clock (clock skew {seconds:+.0f} s, outside the ±{self.clock_skew_s} s window)"
        )
        if not authentic:
            return MessageRejected(message, code=code, message_id=envelope.message_id)
        return MessageRejected(
            f"{message}; the signature is valid: unless the message is an old one, a clock is off (run NTP)",
            code=code, message_id=envelope.message_id, clock_skew_s=seconds,
        )  # fmt: skip

    async def record(
        self,
        code: ReasonCode,
        envelope: Envelope | None,
        *,
        transport: str,
        source: str | None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Audit one refusal (within the refusal budget); for refusals decided beside the verifier too."""
        draft = EventDraft(
            event_type=MESSAGE_REJECTED_EVENT,
            actor=self.self_id,
            subject=envelope.sender_id if envelope is not None else None,
            action=envelope.message_type.value if envelope is not None else None,
            decision=Decision.DENIED,
            payload={
                "reason": code.value,
                "message_id": envelope.message_id if envelope is not None else None,
                "transport": transport,
                "source": source,
                **(details or {}),
            },
        )

        record, suppressed = self._budget.admit(source)
        drafts = [draft] if record else []
        if suppressed:
            drafts.insert(0, EventDraft(
                event_type="MESSAGE_REJECTED_SUPPRESSED", actor=self.self_id, decision=Decision.DENIED,
                payload={"source": source, "count": suppressed, "transport": transport},
            ))  # fmt: skip
        if not drafts:
            return
        try:
            await self.store.append_events(drafts)
        except Exception:
            # The message stays refused; a NIB that cannot take the audit event must not turn a
            # 4xx into a 5xx. The failure itself is logged for the operator.
            _log.exception(
                "could not record a refused message in the audit log",
                extra={"reason": code.value, "transport": transport},
            )
