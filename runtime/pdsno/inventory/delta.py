"""Discovery deltas (reference-design §3 steps 4-5): compare a scan with the NIB, write only changes.

A device is keyed by MAC. Seen and unknown → NEW. Seen and different in what an operator cares about
(addresses, name, vendor, type, status) → UPDATED, keeping its id and version. Known, active and not
seen → one more missed cycle; at ``missed_cycles_before_inactive`` → INACTIVE. An unchanged device
is not written at all: the NIB records changes, not heartbeats.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pdsno.nib.models import Decision, Device, DeviceStatus, EventDraft
from pdsno.nib.store import NIBStore

COMPARED = ("ip_address", "addresses", "hostname", "vendor", "device_type", "firmware_version", "status")
# Statuses an operator set on purpose: discovery reports them but never overrides them.
HELD = frozenset({DeviceStatus.QUARANTINED, DeviceStatus.DEGRADED})


@dataclass(slots=True)
class Delta:
    new: list[Device] = field(default_factory=list)
    updated: list[tuple[Device, dict[str, Any]]] = field(default_factory=list)
    inactive: list[Device] = field(default_factory=list)
    missed: list[Device] = field(default_factory=list)
    """Known devices unseen this cycle but not yet inactive: written (their counter), not reported."""

    @property
    def is_empty(self) -> bool:
        return not (self.new or self.updated or self.inactive or self.missed)

    def writes(self) -> list[Device]:
        return [*self.new, *(d for d, _ in self.updated), *self.inactive, *self.missed]


def _changes(before: Device, after: Device) -> dict[str, Any]:
    changed: dict[str, Any] = {}
    for name in COMPARED:
        old, new = getattr(before, name), getattr(after, name)
        if old != new:
            changed[name] = {"from": old, "to": new}
    return changed


def compute_delta(
    known: Sequence[Device],
    seen: Sequence[Device],
    *,
    lc_id: str,
    region: str | None,
    now: datetime,
    missed_cycles_before_inactive: int,
) -> Delta:
    """Pure: what this cycle changes. ``known`` are the devices this LC owns in its NIB."""
    delta = Delta()
    by_mac = {d.mac_address: d for d in known}
    seen_macs = set()
    for found in seen:
        seen_macs.add(found.mac_address)
        before = by_mac.get(found.mac_address)
        if before is None:
            delta.new.append(
                found.model_copy(
                    update={"region": region, "local_controller": lc_id, "first_seen": now, "last_seen": now}
                )
            )
            continue
        status = before.status if before.status in HELD else DeviceStatus.ACTIVE
        after = before.model_copy(
            update={
                "ip_address": found.ip_address,
                "addresses": sorted(
                    set(found.addresses) | ({found.ip_address} if found.ip_address else set())
                ),
                "hostname": found.hostname,
                "vendor": found.vendor,
                "device_type": found.device_type,
                "firmware_version": found.firmware_version or before.firmware_version,
                "status": status,
                "interfaces": found.interfaces,
                "snmp_info": found.snmp_info or before.snmp_info,
                "protocol_caps": found.protocol_caps,
                "uptime_seconds": found.uptime_seconds,
                "discovery_method": found.discovery_method,
                "missed_cycles": 0,
                "last_seen": now,
            }
        )
        changes = _changes(before, after)
        if changes:
            delta.updated.append((after, changes))
        elif before.missed_cycles:
            delta.missed.append(after)  # back before it went inactive: reset the counter quietly
    for before in known:
        if before.mac_address in seen_macs or before.status is DeviceStatus.INACTIVE:
            continue
        missed = before.missed_cycles + 1
        if missed >= missed_cycles_before_inactive and before.status not in HELD:
            delta.inactive.append(
                before.model_copy(update={"status": DeviceStatus.INACTIVE, "missed_cycles": missed})
            )
        else:
            delta.missed.append(before.model_copy(update={"missed_cycles": missed}))
    return delta


def delta_events(delta: Delta, actor: str, written: Sequence[Device] | None = None) -> list[EventDraft]:
    """One event per reported change of a ``written`` device (all of them when None); with the device
    id as subject, these events are the device's history."""
    if written is not None:
        ids = {d.device_id for d in written}
        delta = Delta(
            new=[d for d in delta.new if d.device_id in ids],
            updated=[(d, c) for d, c in delta.updated if d.device_id in ids],
            inactive=[d for d in delta.inactive if d.device_id in ids],
        )
    events = [
        EventDraft(
            event_type="DEVICE_DISCOVERED", actor=actor, subject=d.device_id, action="discovery",
            decision=Decision.NOT_APPLICABLE,
            payload={"mac": d.mac_address, "addresses": d.addresses or [d.ip_address], "hostname": d.hostname,
                     "vendor": d.vendor, "device_type": d.device_type.value},
        )
        for d in delta.new
    ]  # fmt: skip
    events += [
        EventDraft(event_type="DEVICE_UPDATED", actor=actor, subject=d.device_id, action="discovery",
                   payload={"changes": changes})
        for d, changes in delta.updated
    ]  # fmt: skip
    events += [
        EventDraft(event_type="DEVICE_INACTIVE", actor=actor, subject=d.device_id, action="discovery",
                   payload={"missed_cycles": d.missed_cycles})
        for d in delta.inactive
    ]  # fmt: skip
    return events


@dataclass(slots=True)
class AppliedDelta:
    delta: Delta
    written: list[Device]
    conflicts: list[str]


async def apply_delta(store: NIBStore, delta: Delta, *, actor: str) -> AppliedDelta:
    """Write the delta and its events in one transaction; conflicting devices are reported, not forced."""
    if delta.is_empty:
        return AppliedDelta(delta, [], [])
    batch = await store.write_devices(
        delta.writes(), events_for_written=lambda written: delta_events(delta, actor, written)
    )
    return AppliedDelta(delta, batch.written, batch.conflicts)
