"""Discovery arriving from below: an RC takes its LCs' reports, the GC its RCs' summaries.

Both refuse a reporter they did not admit (or that no longer is active, or speaks for another
region), merge the deltas by MAC and flag anomalies. Anomalies are flags, never actions.
"""

from __future__ import annotations

import uuid

from pdsno.inventory.merge import MergeResult, devices_by_mac, merge_reported
from pdsno.inventory.report import device_wire, reported_devices
from pdsno.messaging.envelope import Envelope
from pdsno.messaging.messages import DiscoveryReport, DiscoverySummary
from pdsno.nib.models import ControllerRole, ControllerStatus, Decision, Device, EventDraft
from pdsno.nib.store import NIBStore


async def _reporter_ok(
    store: NIBStore, sender: str, role: ControllerRole, region: str, *, actor: str, claimed: str
) -> bool:
    known = await store.get_controller(sender)
    ok = (
        known is not None
        and known.role is role
        and known.status is ControllerStatus.ACTIVE
        and known.region == region
        and claimed == sender
    )
    if not ok:
        await store.append_events(
            [EventDraft(event_type="DISCOVERY_REPORT_REJECTED", actor=actor, subject=sender, decision=Decision.DENIED,
                        payload={"region": region, "claimed_reporter": claimed,
                                 "known": known is not None and known.status is ControllerStatus.ACTIVE})]
        )  # fmt: skip
    return ok


class RegionalIntake:
    def __init__(self, store: NIBStore, *, rc_id: str, region: str, spike_threshold: int) -> None:
        self._store = store
        self._rc_id = rc_id
        self._region = region
        self._spike_threshold = spike_threshold

    async def accept(self, envelope: Envelope) -> DiscoverySummary | None:
        """Merge one (chunk of a) report; the summary to send the GC, or None if refused."""
        report = envelope.payload_as(DiscoveryReport)
        store, me = self._store, self._rc_id
        if report.region != self._region or not await _reporter_ok(
            store, envelope.sender_id, ControllerRole.LOCAL, self._region, actor=me, claimed=report.lc_id
        ):
            return None
        anomalies = []
        if len(report.new_devices) > self._spike_threshold:
            anomalies.append(
                {"type": "ANOMALY_DISCOVERY_SPIKE", "lc_id": report.lc_id, "new": len(report.new_devices)}
            )

        def received(merged: MergeResult) -> list[EventDraft]:
            events = [
                EventDraft(event_type=a["type"], actor=me, subject=report.lc_id, decision=Decision.FLAGGED, payload=a)
                for a in anomalies
            ]  # fmt: skip
            events.append(
                EventDraft(event_type="DISCOVERY_REPORT_RECEIVED", actor=me, subject=report.lc_id,
                           payload={"report_id": report.report_id, "chunk": report.chunk_index,
                                    "new": len(merged.new), "updated": len(merged.updated), "inactive": len(merged.inactive)})
            )  # fmt: skip
            return events

        merged = await merge_reported(
            store, actor=me, reporter=report.lc_id, owner_field="local_controller", owner_value=report.lc_id,
            new_or_updated=reported_devices(report), inactive_ids=report.inactive_devices, record=received,
        )  # fmt: skip
        return _summary(merged, report, rc_id=me, anomalies=anomalies,
                        total=await store.count_devices(region=self._region))  # fmt: skip


def _summary(
    merged: MergeResult,
    report: DiscoveryReport,
    *,
    rc_id: str,
    anomalies: list[dict[str, object]],
    total: int,
) -> DiscoverySummary:
    return DiscoverySummary(
        summary_id=str(uuid.uuid4()),
        rc_id=rc_id,
        region=report.region,
        cycle_start=report.scan_start,
        cycle_end=report.scan_end,
        total_new=len(merged.new),
        total_updated=len(merged.updated),
        total_inactive=len(merged.inactive),
        total_devices_in_region=total,
        anomalies_flagged=anomalies,
        lcs_reported=[report.lc_id],
        new_devices=[device_wire(d) for d in merged.new],
        updated_devices=[device_wire(d) for d in merged.updated],
        inactive_devices=[d.device_id for d in merged.inactive],
        request_id=report.request_id,
    )


class GlobalIntake:
    def __init__(self, store: NIBStore, *, gc_id: str) -> None:
        self._store = store
        self._gc_id = gc_id

    async def accept(self, envelope: Envelope) -> MergeResult | None:
        summary = envelope.payload_as(DiscoverySummary)
        store, me = self._store, self._gc_id
        if not await _reporter_ok(
            store,
            envelope.sender_id,
            ControllerRole.REGIONAL,
            summary.region,
            actor=me,
            claimed=summary.rc_id,
        ):
            return None
        devices = [Device.model_validate(d) for d in (*summary.new_devices, *summary.updated_devices)]
        known = await devices_by_mac(store, (d.mac_address for d in devices))
        collisions = []
        for device in devices:
            mine = known[device.mac_address]
            if mine is not None and mine.region not in (None, summary.region):
                collisions.append(
                    {
                        "device_id": mine.device_id,
                        "mac": device.mac_address,
                        "regions": [mine.region, summary.region],
                    }
                )

        def updated(merged: MergeResult) -> list[EventDraft]:
            events = [
                EventDraft(event_type="ANOMALY_GLOBAL_MAC_COLLISION", actor=me, subject=c["device_id"], decision=Decision.FLAGGED, payload=c)
                for c in collisions
            ]  # fmt: skip
            events.append(
                EventDraft(event_type="GLOBAL_DISCOVERY_CYCLE_UPDATED", actor=me, subject=summary.region,
                           payload={"summary_id": summary.summary_id, "rc_id": summary.rc_id, "request_id": summary.request_id,
                                    "new": len(merged.new), "updated": len(merged.updated), "inactive": len(merged.inactive),
                                    "anomalies": summary.anomalies_flagged})
            )  # fmt: skip
            return events

        return await merge_reported(
            store, actor=me, reporter=summary.rc_id, owner_field="region", owner_value=summary.region,
            new_or_updated=devices, inactive_ids=summary.inactive_devices, known=known, record=updated,
        )  # fmt: skip
