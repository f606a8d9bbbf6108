"""One discovery cycle of a local controller: scan, compare with the NIB, write the delta, report.

Transport-free: the controller node decides how the reports travel (MQTT, REST fallback).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from pdsno.canonical import utcnow
from pdsno.discovery.scanner import ScanResult
from pdsno.errors import ReasonCode
from pdsno.inventory.delta import AppliedDelta, apply_delta, compute_delta
from pdsno.inventory.report import build_reports
from pdsno.messaging.messages import DiscoveryReport
from pdsno.nib.models import Decision, EventDraft
from pdsno.nib.store import NIBStore

Scan = Callable[[Sequence[str]], Awaitable[ScanResult]]


@dataclass(slots=True)
class CycleOutcome:
    result: ScanResult | None
    applied: AppliedDelta | None = None
    reports: list[DiscoveryReport] = field(default_factory=list)
    skipped: bool = False

    @property
    def failed(self) -> bool:
        return self.result is not None and self.result.cycle_failed


async def run_cycle(
    store: NIBStore,
    scan: Scan,
    *,
    lc_id: str,
    region: str,
    subnets: Sequence[str],
    missed_cycles_before_inactive: int,
    policy_version: str | None = None,
    request_id: str | None = None,
) -> CycleOutcome:
    if not subnets:
        await store.append_events(
            [EventDraft(event_type=ReasonCode.DISCOVERY_SKIPPED.value, actor=lc_id, notes="no subnets")]
        )
        return CycleOutcome(None, skipped=True)
    started = utcnow()
    result = await scan(subnets)
    ended = utcnow()
    events = [
        EventDraft(event_type=ReasonCode.SCAN_PROTOCOL_FAILED.value, actor=lc_id, subject=f.protocol,
                   decision=Decision.FLAGGED, payload={"reason": f.reason})
        for f in result.failures
    ]  # fmt: skip
    if result.cycle_failed:
        # Nothing was seen because nothing could look: change no device (reference-design §3).
        events.append(
            EventDraft(
                event_type=ReasonCode.DISCOVERY_CYCLE_FAILED.value, actor=lc_id, decision=Decision.FLAGGED
            )
        )
        await store.append_events(events)
        return CycleOutcome(result)
    if events:
        await store.append_events(events)
    applied = await _apply(store, result, lc_id=lc_id, region=region, threshold=missed_cycles_before_inactive)
    reports = build_reports(
        applied, lc_id=lc_id, region=region, scan_start=started, scan_end=ended,
        total_seen=len(result.devices), policy_version=policy_version, request_id=request_id,
    )  # fmt: skip
    return CycleOutcome(result, applied, reports)


async def _apply(
    store: NIBStore, result: ScanResult, *, lc_id: str, region: str, threshold: int
) -> AppliedDelta:
    """Write the delta; devices changed under us meanwhile are re-read and retried once."""
    known = await store.list_devices(local_controller=lc_id)
    delta = compute_delta(known, result.devices, lc_id=lc_id, region=region, now=utcnow(),
                          missed_cycles_before_inactive=threshold)  # fmt: skip
    applied = await apply_delta(store, delta, actor=lc_id)
    if not applied.conflicts:
        return applied
    await store.append_events(
        [EventDraft(event_type="DISCOVERY_WRITE_CONFLICT", actor=lc_id, subject=device_id, decision=Decision.FLAGGED)
         for device_id in applied.conflicts]
    )  # fmt: skip
    conflicted = set(applied.conflicts)
    fresh = [d for d in await store.list_devices(local_controller=lc_id) if d.device_id in conflicted]
    seen = [d for d in result.devices if d.device_id in conflicted]
    retry = compute_delta(
        fresh, seen, lc_id=lc_id, region=region, now=utcnow(), missed_cycles_before_inactive=threshold
    )
    again = await apply_delta(store, retry, actor=lc_id)
    merged_delta = applied.delta
    merged_delta.new += again.delta.new
    merged_delta.updated += again.delta.updated
    merged_delta.inactive += again.delta.inactive
    return AppliedDelta(merged_delta, [*applied.written, *again.written], again.conflicts)
