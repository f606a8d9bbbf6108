"""Deltas reported from below, merged into a real NIB (both backends): dedup by MAC across reporters,
the fresher sighting wins, reports survive chunking."""

from __future__ import annotations

from datetime import timedelta

import pytest

from pdsno.canonical import utcnow
from pdsno.inventory.delta import AppliedDelta, Delta
from pdsno.inventory.merge import MergeResult, merge_reported
from pdsno.inventory.report import build_reports, reported_devices
from pdsno.nib.models import Device, DeviceStatus, EventDraft, Interface
from pdsno.nib.sql import SqlNIBStore

RC = "regional_cntl_zone-a_1"
LC1, LC2 = "local_cntl_zone-a_1", "local_cntl_zone-a_2"


def seen_by(lc: str, n: int, *, ago: timedelta = timedelta(0), **changes: object) -> Device:
    fields: dict[str, object] = {
        "mac_address": f"02:00:00:00:02:{n:02x}", "ip_address": f"198.18.2.{n}", "hostname": f"dev{n}",
        "region": "zone-a", "local_controller": lc, "last_seen": utcnow() - ago,
    }  # fmt: skip
    return Device.model_validate(fields | changes)


async def merge(nib: SqlNIBStore, lc: str, devices: list[Device], inactive: list[str] | None = None):  # type: ignore[no-untyped-def]
    return await merge_reported(
        nib, actor=RC, reporter=lc, owner_field="local_controller", owner_value=lc,
        new_or_updated=devices, inactive_ids=inactive or [],
    )  # fmt: skip


async def events_of(nib: SqlNIBStore, kind: str) -> list[dict[str, object]]:
    return [e.payload for e in await nib.read_events() if e.event_type == kind]


async def test_reports_from_two_lcs_merge_by_mac_and_the_fresher_wins(nib: SqlNIBStore) -> None:
    first = await merge(nib, LC1, [seen_by(LC1, 1, ago=timedelta(minutes=5)), seen_by(LC1, 2)])
    assert len(first.new) == 2
    assert [d.local_controller for d in await nib.list_devices()] == [LC1, LC1]

    # LC2 sees device 1 more recently than LC1 did: it takes it over.
    moved = await merge(nib, LC2, [seen_by(LC2, 1)])
    assert moved.reassigned == [(seen_by(LC1, 1).device_id, LC1, LC2)]
    owner = await nib.get_device(seen_by(LC1, 1).device_id)
    assert owner is not None and owner.local_controller == LC2 and owner.version == 2
    assert await events_of(nib, "DEVICE_LC_REASSIGNED") == [{"from": LC1, "to": LC2}]

    # An update that carries interfaces merges into the stored copy (nested models stay models).
    with_ports = await merge(nib, LC2, [seen_by(LC2, 1, interfaces=[Interface(if_index=1, name="ge-0/0/0")])])
    assert with_ports.updated and not with_ports.conflicts
    stored = await nib.get_device(seen_by(LC1, 1).device_id)
    assert stored is not None and stored.interfaces == [Interface(if_index=1, name="ge-0/0/0")]

    # An older sighting of device 2 by LC2 changes nothing but is logged.
    stale = await merge(nib, LC2, [seen_by(LC2, 2, ago=timedelta(hours=1))])
    assert stale.multi_reporter and not stale.updated
    kept = await nib.get_device(seen_by(LC1, 2).device_id)
    assert kept is not None and kept.local_controller == LC1 and kept.version == 1
    assert await events_of(nib, "DEVICE_MULTI_LC") == [{"owner": LC1, "also_seen_by": LC2}]


async def test_only_the_owner_can_declare_a_device_inactive(nib: SqlNIBStore) -> None:
    device = seen_by(LC1, 3)
    await merge(nib, LC1, [device])
    ignored = await merge(nib, LC2, [], inactive=[device.device_id])
    assert ignored.inactive == []
    done = await merge(nib, LC1, [], inactive=[device.device_id])
    assert [d.device_id for d in done.inactive] == [device.device_id]
    stored = await nib.get_device(device.device_id)
    assert stored is not None and stored.status is DeviceStatus.INACTIVE
    history = [e.event_type for e in await nib.read_events() if e.subject == device.device_id]
    assert history == ["DEVICE_DISCOVERED", "DEVICE_INACTIVE"]


def test_a_large_report_is_chunked_and_reads_back_whole() -> None:
    now = utcnow()
    devices = [seen_by(LC1, n % 250, hostname=f"h{n}").model_copy(update={"mac_address": f"02:00:00:01:{n >> 8:02x}:{n & 0xFF:02x}", "device_id": ""}) for n in range(600)]  # fmt: skip
    devices = [Device.model_validate(d.model_dump(exclude={"device_id"})) for d in devices]
    delta = Delta(new=devices[:550], inactive=devices[550:])
    applied = AppliedDelta(delta, written=devices, conflicts=[])
    reports = build_reports(applied, lc_id=LC1, region="zone-a", scan_start=now, scan_end=now, total_seen=550,
                            policy_version="zone-a-v1", chunk_devices=250)  # fmt: skip
    assert [r.chunk_index for r in reports] == [0, 1, 2] and {r.chunk_count for r in reports} == {3}
    assert len({r.report_id for r in reports}) == 1
    back = [d for r in reports for d in reported_devices(r)]
    assert [d.mac_address for d in back] == [d.mac_address for d in devices[:550]]
    assert sum(len(r.inactive_devices) for r in reports) == 50
    assert reports[0].write_summary.new == 550 and reports[0].write_summary.inactive == 50


async def test_a_report_whose_events_cannot_be_written_leaves_no_device_behind(nib: SqlNIBStore) -> None:
    """The report's own events share its devices' transaction: had the devices been stored without them,
    the report sent again would find them stored and this tier would pass none of them on."""
    devices = [seen_by(LC1, 5), seen_by(LC1, 6)]

    def unwritable(merged: MergeResult) -> list[EventDraft]:
        return [EventDraft(event_type="DISCOVERY_REPORT_RECEIVED", actor=RC, payload={"x": object()})]

    with pytest.raises((TypeError, ValueError)):  # not serialisable: the append fails in the transaction
        await merge_reported(
            nib, actor=RC, reporter=LC1, owner_field="local_controller", owner_value=LC1,
            new_or_updated=devices, inactive_ids=[], record=unwritable,
        )  # fmt: skip
    assert await nib.list_devices() == []
    again = await merge(nib, LC1, devices)  # the report sent again
    assert [d.device_id for d in again.new] == [d.device_id for d in devices]
