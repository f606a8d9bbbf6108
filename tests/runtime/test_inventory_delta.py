"""Discovery deltas against a real NIB (both backends): NEW, UPDATED with history, INACTIVE after N
missed cycles and back, nothing written for an unchanged network, no event for a refused write."""

from __future__ import annotations

from datetime import timedelta

from pdsno.canonical import utcnow
from pdsno.inventory.delta import AppliedDelta, apply_delta, compute_delta
from pdsno.nib.models import Device, DeviceStatus, DeviceType
from pdsno.nib.sql import SqlNIBStore

LC, REGION = "local_cntl_zone-a_1", "zone-a"


def scanned(n: int, **changes: object) -> Device:
    fields: dict[str, object] = {
        "mac_address": f"02:00:00:00:01:{n:02x}",
        "ip_address": f"198.18.1.{n}",
        "hostname": f"sw{n}",
        "vendor": "Cisco",
        "device_type": DeviceType.SWITCH,
    }
    return Device.model_validate(fields | changes)


async def cycle(nib: SqlNIBStore, seen: list[Device], *, threshold: int = 3) -> AppliedDelta:
    known = await nib.list_devices(local_controller=LC)
    delta = compute_delta(
        known, seen, lc_id=LC, region=REGION, now=utcnow(), missed_cycles_before_inactive=threshold
    )
    return await apply_delta(nib, delta, actor=LC)


async def history(nib: SqlNIBStore, device_id: str) -> list[str]:
    return [e.event_type for e in await nib.read_events() if e.subject == device_id]


async def test_first_cycle_finds_everything_new_and_a_quiet_cycle_writes_nothing(nib: SqlNIBStore) -> None:
    first = await cycle(nib, [scanned(1), scanned(2)])
    assert [d.hostname for d in first.delta.new] == ["sw1", "sw2"] and not first.conflicts
    stored = await nib.list_devices(local_controller=LC)
    assert {d.region for d in stored} == {REGION} and all(d.version == 1 for d in stored)
    head = (await nib.audit_head()).seq

    quiet = await cycle(nib, [scanned(1), scanned(2)])
    assert quiet.delta.is_empty and quiet.written == []
    assert (await nib.audit_head()).seq == head, "an unchanged network leaves no trace"


async def test_a_renamed_device_is_updated_with_its_history(nib: SqlNIBStore) -> None:
    await cycle(nib, [scanned(1)])
    renamed = await cycle(nib, [scanned(1, hostname="core-sw1", addresses=["198.18.1.1", "198.18.9.1"])])
    device, changes = renamed.delta.updated[0]
    assert changes["hostname"] == {"from": "sw1", "to": "core-sw1"}
    assert changes["addresses"]["to"] == ["198.18.1.1", "198.18.9.1"]
    stored = await nib.get_device(device.device_id)
    assert stored is not None and stored.hostname == "core-sw1" and stored.version == 2
    assert await history(nib, device.device_id) == ["DEVICE_DISCOVERED", "DEVICE_UPDATED"]


async def test_a_silent_device_goes_inactive_after_the_threshold_and_comes_back(nib: SqlNIBStore) -> None:
    await cycle(nib, [scanned(1), scanned(2)])
    gone = scanned(2).device_id
    for expected_missed in (1, 2):
        applied = await cycle(nib, [scanned(1)])
        assert not applied.delta.inactive
        still = await nib.get_device(gone)
        assert (
            still is not None
            and still.status is DeviceStatus.ACTIVE
            and still.missed_cycles == expected_missed
        )
    third = await cycle(nib, [scanned(1)])
    assert [d.device_id for d in third.delta.inactive] == [gone]
    assert (await nib.get_device(gone)).status is DeviceStatus.INACTIVE  # type: ignore[union-attr]
    assert not (await cycle(nib, [scanned(1)])).delta.inactive, "inactive once, not every cycle"

    back = await cycle(nib, [scanned(1), scanned(2)])
    ((device, changes),) = back.delta.updated
    assert device.device_id == gone and changes["status"] == {"from": "inactive", "to": "active"}
    returned = await nib.get_device(gone)
    assert returned is not None and returned.status is DeviceStatus.ACTIVE and returned.missed_cycles == 0
    assert await history(nib, gone) == ["DEVICE_DISCOVERED", "DEVICE_INACTIVE", "DEVICE_UPDATED"]


async def test_an_operator_quarantine_survives_discovery(nib: SqlNIBStore) -> None:
    await cycle(nib, [scanned(1)])
    device = (await nib.list_devices())[0]
    (await nib.update_device_status(device.device_id, DeviceStatus.QUARANTINED, device.version)).unwrap()
    for _ in range(4):
        await cycle(nib, [])
    await cycle(nib, [scanned(1)])
    assert (await nib.get_device(device.device_id)).status is DeviceStatus.QUARANTINED  # type: ignore[union-attr]


async def test_a_refused_write_leaves_no_event(nib: SqlNIBStore) -> None:
    await cycle(nib, [scanned(1)])
    known = await nib.list_devices(local_controller=LC)
    delta = compute_delta(known, [scanned(1, hostname="renamed")], lc_id=LC, region=REGION, now=utcnow(),
                          missed_cycles_before_inactive=3)  # fmt: skip
    # Someone else changes the device between the read and the write.
    (await nib.put_device(known[0].next_version(vendor="Juniper"))).unwrap()
    head = (await nib.audit_head()).seq
    applied = await apply_delta(nib, delta, actor=LC)
    assert applied.conflicts == [known[0].device_id] and applied.written == []
    assert (await nib.audit_head()).seq == head


def test_a_device_seen_again_within_the_threshold_is_not_reported() -> None:
    now = utcnow()
    known = [scanned(1).model_copy(update={"version": 3, "missed_cycles": 2, "region": REGION, "local_controller": LC,
                                           "addresses": ["198.18.1.1"],
                                           "first_seen": now - timedelta(hours=1), "last_seen": now - timedelta(minutes=10)})]  # fmt: skip
    delta = compute_delta(
        known, [scanned(1)], lc_id=LC, region=REGION, now=now, missed_cycles_before_inactive=3
    )
    assert not delta.new and not delta.updated and not delta.inactive
    assert [d.missed_cycles for d in delta.missed] == [0]
