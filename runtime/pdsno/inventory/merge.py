"""Merging deltas reported from below into this controller's NIB (an RC from its LCs, the GC from
its RCs). Devices are matched by MAC across reporters; when two reporters own the same device, the
fresher ``last_seen`` wins (reference-design §3 "Dedup by MAC") and both sightings are logged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pdsno.inventory.delta import COMPARED
from pdsno.nib.models import Decision, Device, DeviceStatus, EventDraft
from pdsno.nib.store import NIBStore

# Fields that belong to the copy in this NIB, never taken from the reporter's copy.
_LOCAL = {"version", "created_at", "updated_at"}


@dataclass(slots=True)
class MergeResult:
    new: list[Device] = field(default_factory=list)
    updated: list[Device] = field(default_factory=list)
    inactive: list[Device] = field(default_factory=list)
    reassigned: list[tuple[str, str, str]] = field(default_factory=list)
    """(device id, from reporter, to reporter)"""
    multi_reporter: list[tuple[str, str, str]] = field(default_factory=list)
    """(device id, owner kept, other reporter)"""
    conflicts: list[str] = field(default_factory=list)


async def devices_by_mac(store: NIBStore, macs: Iterable[str]) -> dict[str, Device | None]:
    """This NIB's copy of each device, by (normalised) MAC: one report's hundreds of lookups in a few
    queries."""
    wanted = list(dict.fromkeys(macs))
    found = await store.get_devices_by_mac(wanted)
    return {mac: found.get(mac) for mac in wanted}


def _owner(device: Device, owner_field: str) -> str | None:
    value: str | None = getattr(device, owner_field)
    return value


async def merge_reported(
    store: NIBStore,
    *,
    actor: str,
    reporter: str,
    owner_field: str,
    owner_value: str,
    new_or_updated: Sequence[Device],
    inactive_ids: Sequence[str],
    known: Mapping[str, Device | None] | None = None,
    record: Callable[[MergeResult], Sequence[EventDraft]] | None = None,
) -> MergeResult:
    """Fold one report into the NIB in one transaction, with one event per change.

    ``owner_field`` is the column naming who is responsible for a device at this tier and
    ``owner_value`` the reporter's value there: ``local_controller`` and the LC's id on an RC,
    ``region`` and the RC's region on the GC. ``known``: what :func:`devices_by_mac` returned for
    ``new_or_updated``, if the caller has looked already. ``record``: the events about the report as a
    whole, in the same transaction as its devices: were they a transaction of their own and it failed,
    the sender would send the report again, and this tier, finding the devices stored, would pass on
    nothing of them.
    """
    result = MergeResult()
    writes: list[Device] = []
    if known is None:
        known = await devices_by_mac(store, (d.mac_address for d in new_or_updated))
    for incoming in new_or_updated:
        mine = known[incoming.mac_address]
        if mine is None:
            fresh = incoming.model_copy(update={"version": 0, "created_at": None, "updated_at": None})
            writes.append(fresh)
            result.new.append(fresh)
            continue
        owner, claimant = _owner(mine, owner_field), _owner(incoming, owner_field)
        if owner is not None and claimant is not None and owner != claimant:
            if (
                (incoming.last_seen or incoming.first_seen) is not None
                and mine.last_seen is not None
                and (incoming.last_seen or mine.last_seen) <= mine.last_seen
            ):
                result.multi_reporter.append((mine.device_id, owner, claimant))
                continue  # the current owner saw it more recently
            result.reassigned.append((mine.device_id, owner, claimant))
        # Attributes, not a dump: model_copy does not re-validate, nested models must stay models.
        taken = {name: getattr(incoming, name) for name in Device.model_fields if name not in _LOCAL}
        merged = mine.model_copy(update=taken)
        if any(getattr(mine, f) != getattr(merged, f) for f in (*COMPARED, owner_field)) or (
            merged.last_seen != mine.last_seen
        ):
            writes.append(merged)
            result.updated.append(merged)
    gone_ids = list(dict.fromkeys(inactive_ids))
    stored = await store.get_devices(gone_ids)
    for mine in (stored.get(device_id) for device_id in gone_ids):
        if mine is None or mine.status is DeviceStatus.INACTIVE:
            continue
        if _owner(mine, owner_field) not in (None, owner_value):
            continue  # another reporter owns it now; its word stands
        gone = mine.model_copy(update={"status": DeviceStatus.INACTIVE})
        writes.append(gone)
        result.inactive.append(gone)

    def events(written: Sequence[Device]) -> list[EventDraft]:
        ids = {d.device_id for d in written}
        drafts = [_event("DEVICE_DISCOVERED", actor, d, reporter) for d in result.new if d.device_id in ids]
        drafts += [_event("DEVICE_UPDATED", actor, d, reporter) for d in result.updated if d.device_id in ids]
        drafts += [
            _event("DEVICE_INACTIVE", actor, d, reporter) for d in result.inactive if d.device_id in ids
        ]
        drafts += [
            EventDraft(event_type="DEVICE_LC_REASSIGNED", actor=actor, subject=device_id, decision=Decision.FLAGGED,
                       payload={"from": old, "to": new})
            for device_id, old, new in result.reassigned if device_id in ids
        ]  # fmt: skip
        drafts += [
            EventDraft(event_type="DEVICE_MULTI_LC", actor=actor, subject=device_id, decision=Decision.FLAGGED,
                       payload={"owner": owner, "also_seen_by": other})
            for device_id, owner, other in result.multi_reporter
        ]  # fmt: skip
        return drafts

    trailing = list(record(result)) if record is not None else []
    if writes or result.multi_reporter:
        batch = await store.write_devices(
            writes, events_for_written=lambda written: [*events(written), *trailing]
        )
        result.conflicts = batch.conflicts
    elif trailing:
        await store.append_events(trailing)
    return result


def _event(kind: str, actor: str, device: Device, reporter: str) -> EventDraft:
    payload: dict[str, Any] = {
        "reported_by": reporter,
        "mac": device.mac_address,
        "addresses": device.addresses,
        "hostname": device.hostname,
        "status": device.status.value,
        "local_controller": device.local_controller,
        "region": device.region,
    }
    return EventDraft(
        event_type=kind, actor=actor, subject=device.device_id, action="discovery", payload=payload
    )
