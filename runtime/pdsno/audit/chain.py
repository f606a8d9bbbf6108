"""Hash chain over the event log.

Each event's hash covers its content, its sequence number and the previous event's hash; the hash is
signed with the writing controller's Ed25519 key. Editing a row breaks its hash (or, if the hash is
recomputed, its signature); deleting a row leaves a gap in the sequence and a dangling ``prev_hash``;
inserting a row breaks the next link. A verifier needs only the public keys.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from pdsno.canonical import format_ts, sha256_hex
from pdsno.nib.models import Event, EventDraft
from pdsno.security.keys import verify_signature

GENESIS_HASH = "0" * 64


class EventSigner(Protocol):
    @property
    def signer_id(self) -> str: ...

    def sign(self, data: bytes) -> str: ...


def event_hash(
    draft: EventDraft, *, seq: int, event_id: str, timestamp: datetime, prev_hash: str, signer_id: str
) -> str:
    body = draft.model_dump(mode="json")
    body.update(
        seq=seq, event_id=event_id, timestamp=format_ts(timestamp), prev_hash=prev_hash, signer_id=signer_id
    )
    return sha256_hex(body)


def seal(
    draft: EventDraft, *, seq: int, event_id: str, timestamp: datetime, prev_hash: str, signer: EventSigner
) -> Event:
    digest = event_hash(
        draft,
        seq=seq,
        event_id=event_id,
        timestamp=timestamp,
        prev_hash=prev_hash,
        signer_id=signer.signer_id,
    )
    return Event(
        **draft.model_dump(),
        seq=seq,
        event_id=event_id,
        timestamp=timestamp,
        prev_hash=prev_hash,
        hash=digest,
        signer_id=signer.signer_id,
        signature=signer.sign(digest.encode()),
    )


class Tamper(StrEnum):
    EDITED = "edited"
    DELETED = "deleted"
    INSERTED = "inserted"
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_SIGNER = "unknown_signer"
    TRUNCATED = "truncated"


@dataclass(frozen=True, slots=True)
class ChainProblem:
    kind: Tamper
    seq: int
    event_id: str | None
    detail: str

    def describe(self) -> str:
        who = f"event #{self.seq}" + (f" ({self.event_id})" if self.event_id else "")
        return f"{who} {self.kind.value.replace('_', ' ')}: {self.detail}"


@dataclass(slots=True)
class ChainReport:
    checked: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS_HASH
    problems: list[ChainProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "head_seq": self.head_seq,
            "head_hash": self.head_hash,
            "problems": [
                {"kind": p.kind.value, "seq": p.seq, "event_id": p.event_id, "detail": p.detail}
                for p in self.problems
            ],
        }


class ChainVerifier:
    """Walks events in sequence order; feed it with :meth:`feed`, then :meth:`finish`."""

    def __init__(self, keys: Mapping[str, Ed25519PublicKey]) -> None:
        self._keys = keys
        self.report = ChainReport()
        self._expected_seq = 1
        self._prev_hash = GENESIS_HASH
        self._prev_reported = False

    def feed(self, events: Iterable[Event]) -> None:
        for event in events:
            self._check(event)

    def _problem(self, kind: Tamper, event: Event, detail: str) -> None:
        self.report.problems.append(ChainProblem(kind, event.seq, event.event_id, detail))

    def _check(self, event: Event) -> None:
        report = self.report
        report.checked += 1
        if event.seq > self._expected_seq:
            missing = (
                f"#{self._expected_seq}"
                if event.seq - self._expected_seq == 1
                else f"#{self._expected_seq}..#{event.seq - 1}"
            )
            report.problems.append(
                ChainProblem(
                    Tamper.DELETED,
                    self._expected_seq,
                    None,
                    f"{missing} missing before event #{event.seq} ({event.event_id})",
                )
            )
        recomputed = event_hash(
            EventDraft.model_validate(event.model_dump(include=set(EventDraft.model_fields))),
            seq=event.seq,
            event_id=event.event_id,
            timestamp=event.timestamp,
            prev_hash=event.prev_hash,
            signer_id=event.signer_id,
        )
        problems_before = len(report.problems)
        if recomputed != event.hash:
            self._problem(Tamper.EDITED, event, "its content no longer matches its hash")
        elif (
            event.prev_hash != self._prev_hash and event.seq == self._expected_seq and not self._prev_reported
        ):
            # A broken link after an event already reported is that event's fault, not this one's.
            self._problem(Tamper.INSERTED, event, "it does not link to the event before it")
        key = self._keys.get(event.signer_id)
        if key is None:
            self._problem(Tamper.UNKNOWN_SIGNER, event, f"no public key known for signer {event.signer_id!r}")
        elif recomputed == event.hash and not verify_signature(key, event.hash.encode(), event.signature):
            self._problem(
                Tamper.BAD_SIGNATURE, event, f"signature does not verify with {event.signer_id}'s key"
            )
        self._prev_reported = len(report.problems) > problems_before
        self._expected_seq = event.seq + 1
        self._prev_hash = event.hash
        report.head_seq = event.seq
        report.head_hash = event.hash

    def finish(self, recorded_head_seq: int, recorded_head_hash: str) -> ChainReport:
        """Compare the walk with the head the store recorded at its last append (catches truncation)."""
        report = self.report
        if recorded_head_seq > report.head_seq:
            report.problems.append(
                ChainProblem(
                    Tamper.TRUNCATED,
                    report.head_seq + 1,
                    None,
                    f"the log ends at #{report.head_seq} but its head records #{recorded_head_seq}: "
                    "the last events were deleted",
                )
            )
        elif recorded_head_seq == report.head_seq and recorded_head_hash != report.head_hash:
            report.problems.append(
                ChainProblem(
                    Tamper.EDITED,
                    report.head_seq,
                    None,
                    "the last event differs from the head the log recorded",
                )
            )
        elif recorded_head_seq < report.head_seq:
            report.problems.append(
                ChainProblem(
                    Tamper.INSERTED,
                    recorded_head_seq + 1,
                    None,
                    f"events after the recorded head #{recorded_head_seq} were appended behind the NIB's back",
                )
            )
        return report
