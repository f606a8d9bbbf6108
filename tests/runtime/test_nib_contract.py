"""The NIBStore contract. Every test runs against SQLite and against a real PostgreSQL 15 server."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from pdsno.audit.verify import verify_log
from pdsno.canonical import sha256_hex, utcnow
from pdsno.errors import ReasonCode
from pdsno.nib.models import (
    ConfigProposal,
    ConfigStatus,
    Controller,
    ControllerRole,
    Device,
    DeviceStatus,
    DeviceType,
    DiscoveryReport,
    EventDraft,
    ExecutionToken,
    Interface,
    KeyKind,
    LockStatus,
    LockType,
    MessageKey,
    Operator,
    OperatorRole,
    Policy,
    PolicyScope,
    Sensitivity,
    device_id_for_mac,
)
from pdsno.nib.retry import retry_on_conflict
from pdsno.nib.sql import SqlNIBStore
from pdsno.nib.store import RetentionPolicy
from tests.runtime.conftest import NibTarget


def make_device(n: int, **changes: object) -> Device:
    fields: dict[str, object] = {
        "mac_address": f"02:00:00:{n >> 16 & 0xFF:02x}:{n >> 8 & 0xFF:02x}:{n & 0xFF:02x}",
        "ip_address": f"198.18.{n >> 8 & 0xFF}.{n & 0xFF}",
        "hostname": f"dev{n}",
        "region": "zone-a",
        "local_controller": "local_cntl_zone-a_1",
        "discovery_method": "arp",
    }
    return Device.model_validate(fields | changes)


def event(kind: str, subject: str | None = None) -> EventDraft:
    return EventDraft(event_type=kind, actor="local_cntl_zone-a_1", subject=subject, payload={"n": 1})


async def test_schema_is_current_and_migrate_is_idempotent(nib: SqlNIBStore) -> None:
    assert await nib.schema_version() >= 1
    assert await nib.migrate() == []
    await nib.check_schema()


async def test_reopening_without_create_needs_an_initialised_nib(nib_target: NibTarget) -> None:
    if nib_target.backend == "sqlite":
        from pdsno.errors import NIBError

        with pytest.raises(NIBError) as refused:
            await nib_target.open()
        assert refused.value.code == ReasonCode.NIB_NOT_INITIALISED
    store = await nib_target.open(create=True)
    await store.close()
    store = await nib_target.open()
    assert await store.schema_version() >= 1
    await store.close()


async def test_device_round_trip_with_metadata_interfaces_and_addresses(nib: SqlNIBStore) -> None:
    device = make_device(
        1,
        vendor="Cisco",
        device_type=DeviceType.ROUTER,
        addresses=["198.18.9.1"],
        interfaces=[Interface(if_index=1, name="Gi0/1", mac_address="02:00:00:00:01:01", oper_up=True)],
        snmp_info={"sysDescr": "Cisco IOS", "sysObjectID": "1.3.6.1.4.1.9.1.1"},
        protocol_caps=["arp", "icmp", "snmpv2c"],
        custom_tags={"rack": "r1", "nested": {"a": [1, 2.5, None]}},
        uptime_seconds=12345,
        critical=True,
    )
    stored = (await nib.put_device(device)).unwrap()
    assert stored.version == 1
    assert stored.device_id == device_id_for_mac("02:00:00:00:00:01")

    loaded = await nib.get_device(stored.device_id)
    assert loaded is not None
    assert loaded.addresses == ["198.18.0.1", "198.18.9.1"]
    assert loaded.interfaces == device.interfaces
    assert loaded.snmp_info == device.snmp_info
    assert loaded.custom_tags == {"rack": "r1", "nested": {"a": [1, 2.5, None]}}
    assert loaded.protocol_caps == ["arp", "icmp", "snmpv2c"]
    assert loaded.critical is True and loaded.protected is False
    assert loaded.device_type is DeviceType.ROUTER
    assert loaded.last_seen is not None and loaded.last_seen.tzinfo is not None
    assert loaded == stored

    assert await nib.get_device_by_mac("02-00-00-00-00-01") == loaded
    assert await nib.get_device("nib-dev-nope") is None
    assert [d.device_id for d in await nib.list_devices(region="zone-a")] == [loaded.device_id]
    assert await nib.list_devices(region="zone-b") == []


async def test_every_device_type_is_stored_and_filtered(nib: SqlNIBStore) -> None:
    """Schema 4's CHECK constraint takes every DeviceType; list_devices filters on each."""
    for n, kind in enumerate(DeviceType, start=100):
        (await nib.put_device(make_device(n, device_type=kind))).unwrap()
    for n, kind in enumerate(DeviceType, start=100):
        found = await nib.list_devices(device_type=kind)
        assert [d.device_id for d in found] == [device_id_for_mac(make_device(n).mac_address)], kind


async def test_second_insert_of_a_device_is_refused(nib: SqlNIBStore) -> None:
    (await nib.put_device(make_device(2))).unwrap()
    again = await nib.put_device(make_device(2, hostname="other"))
    assert not again.success and again.error == ReasonCode.ALREADY_EXISTS
    stored = await nib.get_device(device_id_for_mac("02:00:00:00:00:02"))
    assert stored is not None and stored.hostname == "dev2"


async def test_stale_write_is_a_conflict_and_never_overwrites(nib: SqlNIBStore) -> None:
    v1 = (await nib.put_device(make_device(3))).unwrap()
    v2 = (
        await nib.put_device(v1.next_version(hostname="first", interfaces=[Interface(if_index=7)]))
    ).unwrap()
    assert v2.version == 2

    stale = await nib.put_device(v1.next_version(hostname="second"))
    assert stale.conflict and not stale.success
    assert "version 2" in stale.message
    current = await nib.get_device(v1.device_id)
    assert current is not None
    assert (current.hostname, current.version, current.interfaces) == ("first", 2, [Interface(if_index=7)])


async def test_update_of_a_missing_row_is_not_found(nib: SqlNIBStore) -> None:
    ghost = make_device(4).next_version(version=3)
    result = await nib.put_device(ghost)
    assert result.error == ReasonCode.NOT_FOUND and not result.conflict


async def test_status_update_is_version_guarded(nib: SqlNIBStore) -> None:
    device = (await nib.put_device(make_device(5))).unwrap()
    quarantined = await nib.update_device_status(device.device_id, DeviceStatus.QUARANTINED, device.version)
    assert quarantined.unwrap().status is DeviceStatus.QUARANTINED and quarantined.unwrap().version == 2
    stale = await nib.update_device_status(device.device_id, DeviceStatus.ACTIVE, device.version)
    assert stale.conflict
    assert (await nib.list_devices(status=DeviceStatus.QUARANTINED))[0].device_id == device.device_id


async def test_discovery_delta_of_thousands_commits_in_one_transaction(nib: SqlNIBStore) -> None:
    devices = [make_device(n, interfaces=[Interface(if_index=1, name="eth0")]) for n in range(3000)]
    batch = await nib.write_devices(devices, events=[event("DEVICE_DISCOVERED", "batch")])
    assert len(batch.written) == 3000 and not batch.refused
    assert (await nib.stats())["tables"]["devices"] == 3000

    # An update pass where one device was changed behind the writer's back: the rest still land, their
    # interfaces replaced (more devices than one IN list holds); the refused one keeps its own.
    first = (await nib.put_device(batch.written[0].next_version(hostname="changed"))).unwrap()
    moved = [Interface(if_index=2, name="eth1")]
    updates = [d.next_version(status=DeviceStatus.INACTIVE, interfaces=moved) for d in batch.written[:600]]
    second = await nib.write_devices(updates)
    assert second.conflicts == [first.device_id]
    assert len(second.written) == 599
    inactive = await nib.list_devices(status=DeviceStatus.INACTIVE)
    assert len(inactive) == 599 and all(d.interfaces == moved for d in inactive)
    kept = await nib.get_device(first.device_id)
    assert kept is not None and [i.name for i in kept.interfaces] == ["eth0"]
    assert (await nib.stats())["tables"]["devices"] == 3000


async def test_devices_are_looked_up_by_the_batch_by_id_and_by_mac(nib: SqlNIBStore) -> None:
    batch = await nib.write_devices(
        [make_device(n, interfaces=[Interface(if_index=1, name="eth0")]) for n in range(700)]
    )
    stored = batch.written
    macs = [d.mac_address.upper().replace(":", "-") for d in stored[:650]] + ["02:ff:ff:ff:ff:ff"]
    by_mac = await nib.get_devices_by_mac(macs)  # more than one IN list; any MAC spelling; one unknown
    assert len(by_mac) == 650
    assert by_mac[stored[3].mac_address].interfaces == [Interface(if_index=1, name="eth0")]
    by_id = await nib.get_devices([stored[0].device_id, "nib-dev-unknown", stored[699].device_id])
    assert set(by_id) == {stored[0].device_id, stored[699].device_id}
    assert await nib.get_devices([]) == {} and await nib.get_devices_by_mac([]) == {}


async def test_controller_registration_and_its_event_commit_together(nib: SqlNIBStore) -> None:
    rc = Controller(controller_id="regional_cntl_zone-a_1", role=ControllerRole.REGIONAL, region="zone-a")
    head_before = await nib.audit_head()
    assert (
        await nib.register_controller(rc, events=[event("CONTROLLER_VALIDATED", rc.controller_id)])
    ).success
    assert (await nib.audit_head()).seq == head_before.seq + 1

    duplicate = await nib.register_controller(rc, events=[event("CONTROLLER_VALIDATED", rc.controller_id)])
    assert duplicate.error == ReasonCode.ALREADY_EXISTS
    assert (await nib.audit_head()).seq == head_before.seq + 1, "a refused write must not leave an event"

    assert [c.controller_id for c in await nib.list_controllers(role=ControllerRole.REGIONAL)] == [
        rc.controller_id
    ]
    stored = await nib.get_controller(rc.controller_id)
    assert stored is not None
    updated = (await nib.update_controller(stored.next_version(rest_url="https://198.18.0.2:8443"))).unwrap()
    assert updated.version == 2


async def test_proposal_lifecycle_and_single_use_token(nib: SqlNIBStore) -> None:
    device = (await nib.put_device(make_device(6))).unwrap()
    proposal = ConfigProposal(
        proposal_id="prop-1",
        config_payload={"intent": "SET_SNMP_COMMUNITY", "value": "s3cret"},
        category=Sensitivity.LOW,
        origin="local_cntl_zone-a_1",
        proposed_by="local_cntl_zone-a_1",
        target_devices=[device.device_id],
    )
    assert proposal.config_hash == sha256_hex(proposal.config_payload)
    created = (await nib.create_proposal(proposal, events=[event("CONFIG_PROPOSED", "prop-1")])).unwrap()
    approved = (
        await nib.update_proposal(
            created.next_version(status=ConfigStatus.APPROVED, approved_by="regional_cntl_zone-a_1")
        )
    ).unwrap()
    assert approved.status is ConfigStatus.APPROVED
    assert (await nib.update_proposal(created.next_version(status=ConfigStatus.DENIED))).conflict
    assert [p.proposal_id for p in await nib.list_proposals(status=ConfigStatus.APPROVED)] == ["prop-1"]
    assert [p.proposal_id for p in await nib.list_proposals(config_hash=proposal.config_hash)] == ["prop-1"]
    assert await nib.list_proposals(config_hash=sha256_hex({"other": 1})) == []

    now = utcnow()
    token = ExecutionToken(
        token_id="tok-1",
        proposal_id="prop-1",
        config_hash=proposal.config_hash,
        target_devices=[device.device_id],
        approved_by="regional_cntl_zone-a_1",
        issued_at=now,
        expires_at=now + timedelta(seconds=600),
        constraints={"max_devices_per_minute": 10},
        signature="sig",
    )
    (await nib.store_token(token)).unwrap()
    redemptions = await asyncio.gather(*(nib.consume_token("tok-1", f"lc-{i}") for i in range(8)))
    winners = [r for r in redemptions if r.success]
    assert len(winners) == 1
    assert all(r.error == ReasonCode.TOKEN_ALREADY_CONSUMED for r in redemptions if not r.success)
    stored = await nib.get_token("tok-1")
    assert stored is not None and stored.consumed_by == winners[0].unwrap().consumed_by
    assert (await nib.consume_token("tok-missing", "lc")).error == ReasonCode.NOT_FOUND


async def test_policy_distribution_is_idempotent_by_version(nib: SqlNIBStore) -> None:
    def policy(version: str, interval: int) -> Policy:
        return Policy(
            policy_id=f"pol-{version}",
            policy_version=version,
            scope=PolicyScope.REGIONAL,
            target_region="zone-a",
            content={"discovery_interval": interval},
            distributed_by="global_cntl_1",
        )

    (await nib.distribute_policy(policy("zone-a-v1", 300))).unwrap()
    (await nib.distribute_policy(policy("zone-a-v2", 180))).unwrap()
    again = (await nib.distribute_policy(policy("zone-a-v2", 180))).unwrap()
    assert again.version == 1
    active = await nib.get_active_policy(PolicyScope.REGIONAL, "zone-a")
    assert (
        active is not None
        and active.policy_version == "zone-a-v2"
        and active.content["discovery_interval"] == 180
    )
    assert await nib.get_active_policy(PolicyScope.GLOBAL) is None
    assert (await nib.stats())["tables"]["policies"] == 2


async def test_locks_are_compare_and_set_with_ttl(nib: SqlNIBStore) -> None:
    contenders = await asyncio.gather(
        *(
            nib.acquire_lock("nib-dev-1", LockType.CONFIG, f"rc-{i}", timedelta(seconds=900))
            for i in range(10)
        )
    )
    winners = [c.unwrap() for c in contenders if c.success]
    assert len(winners) == 1
    assert all(c.error == ReasonCode.LOCK_HELD for c in contenders if not c.success)
    lock = winners[0]
    held = await nib.check_lock("nib-dev-1", LockType.CONFIG)
    assert held is not None and held.lock_id == lock.lock_id

    assert (await nib.release_lock(lock.lock_id, "someone-else")).error == ReasonCode.LOCK_NOT_HELD
    assert (await nib.release_lock(lock.lock_id, lock.held_by)).unwrap().status is LockStatus.RELEASED
    assert await nib.check_lock("nib-dev-1", LockType.CONFIG) is None

    short = (
        await nib.acquire_lock("nib-dev-2", LockType.DEVICE, "lc-1", timedelta(milliseconds=50))
    ).unwrap()
    await asyncio.sleep(0.1)
    assert await nib.check_lock("nib-dev-2", LockType.DEVICE) is None
    taken_over = (await nib.acquire_lock("nib-dev-2", LockType.DEVICE, "lc-2", timedelta(seconds=5))).unwrap()
    assert taken_over.held_by == "lc-2"
    assert (await nib.release_lock(short.lock_id, "lc-1")).error == ReasonCode.LOCK_NOT_HELD

    (await nib.acquire_lock("nib-dev-3", LockType.DEVICE, "lc-1", timedelta(milliseconds=1))).unwrap()
    await asyncio.sleep(0.02)
    assert await nib.sweep_locks() == 1


async def test_events_chain_and_the_database_refuses_to_change_them(nib: SqlNIBStore, signer: object) -> None:
    sealed = await nib.append_events([event("A"), event("B"), event("C")])
    assert [e.seq for e in sealed] == [1, 2, 3]
    assert sealed[1].prev_hash == sealed[0].hash and sealed[2].prev_hash == sealed[1].hash
    assert await nib.read_events(after_seq=1, limit=1) == [sealed[1]]
    assert await nib.last_events(2) == sealed[1:]
    assert (await nib.audit_head()).hash == sealed[-1].hash

    report = await verify_log(nib, {signer.signer_id: signer.public_key()})  # type: ignore[attr-defined]
    assert report.ok and report.checked == 3

    from pdsno.errors import NIBError

    def sneak(sql: str) -> object:
        return nib._db.run(lambda tx: tx.execute(sql), write=True)

    for sql in ("UPDATE events SET notes = 'x' WHERE seq = 2", "DELETE FROM events WHERE seq = 2"):
        with pytest.raises(NIBError) as refused:
            await sneak(sql)  # type: ignore[misc]
        assert refused.value.code == ReasonCode.NIB_INTEGRITY
    assert await nib.read_events() == sealed


async def test_discovery_reports_are_kept_and_listed(nib: SqlNIBStore) -> None:
    now = utcnow()
    for n in range(3):
        report = DiscoveryReport(
            report_id=f"rep-{n}",
            lc_id="local_cntl_zone-a_1",
            region="zone-a",
            scan_start=now - timedelta(seconds=10 - n),
            scan_end=now - timedelta(seconds=5 - n),
            payload={"new_devices": n},
        )
        (await nib.save_discovery_report(report)).unwrap()
    listed = await nib.list_discovery_reports(lc_id="local_cntl_zone-a_1", limit=2)
    assert [r.report_id for r in listed] == ["rep-2", "rep-1"]
    assert listed[0].payload == {"new_devices": 2}


async def test_retention_ages_devices_and_never_touches_events(nib: SqlNIBStore) -> None:
    now = utcnow()
    fresh = make_device(10, last_seen=now)
    old = make_device(11, last_seen=now - timedelta(days=100))
    ancient = make_device(12, last_seen=now - timedelta(days=400))
    quarantined = make_device(13, last_seen=now - timedelta(days=100), status=DeviceStatus.QUARANTINED)
    await nib.write_devices([fresh, old, ancient, quarantined], events=[event("SEEDED")])
    swept = await nib.sweep_retention(RetentionPolicy(), now=now)
    assert swept["devices_marked_inactive"] == 1
    assert swept["devices_purged"] == 1
    assert await nib.get_device(ancient.device_id) is None
    old_now = await nib.get_device(old.device_id)
    assert old_now is not None and old_now.status is DeviceStatus.INACTIVE
    still = await nib.get_device(quarantined.device_id)
    assert still is not None and still.status is DeviceStatus.QUARANTINED
    assert (await nib.stats())["tables"]["events"] == 1


async def test_concurrent_writers_exactly_one_wins_per_version(
    nib: SqlNIBStore, nib_target: NibTarget
) -> None:
    """Writers on separate connections race for the same version: one wins, the rest see a conflict."""
    base = (await nib.put_device(make_device(20))).unwrap()
    writers = [await nib_target.open(pool_size=1) for _ in range(8)]
    try:
        results = await asyncio.gather(
            *(w.put_device(base.next_version(hostname=f"writer-{i}")) for i, w in enumerate(writers))
        )
    finally:
        for w in writers:
            await w.close()
    winners = [r.unwrap() for r in results if r.success]
    assert len(winners) == 1
    assert sum(r.conflict for r in results) == len(writers) - 1
    stored = await nib.get_device(base.device_id)
    assert stored is not None and stored.version == 2 and stored.hostname == winners[0].hostname


async def test_no_update_is_lost_under_contention(nib: SqlNIBStore, nib_target: NibTarget) -> None:
    """Read-modify-write with the retry helper: every writer's change survives, versions stay contiguous."""
    base = (await nib.put_device(make_device(21))).unwrap()
    writers = [await nib_target.open(pool_size=1) for _ in range(6)]
    landed_versions: list[int] = []

    async def add_tag(store: SqlNIBStore, name: str) -> None:
        async def attempt():  # type: ignore[no-untyped-def]
            current = await store.get_device(base.device_id)
            assert current is not None
            return await store.put_device(
                current.next_version(custom_tags={**current.custom_tags, name: True})
            )

        result = await retry_on_conflict(attempt, max_retries=50, base_delay_s=0.002)
        landed_versions.append(result.unwrap().version)

    try:
        await asyncio.gather(*(add_tag(w, f"w{i}") for i, w in enumerate(writers) for _ in range(1)))
    finally:
        for w in writers:
            await w.close()
    final = await nib.get_device(base.device_id)
    assert final is not None
    assert set(final.custom_tags) == {f"w{i}" for i in range(len(writers))}
    assert final.version == 1 + len(writers)
    assert sorted(landed_versions) == list(range(2, 2 + len(writers)))


async def test_retry_helper_gives_up_and_reports_the_conflict(nib: SqlNIBStore) -> None:
    base = (await nib.put_device(make_device(22))).unwrap()
    (await nib.put_device(base.next_version(hostname="moved-on"))).unwrap()
    calls = 0

    async def always_stale():  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        return await nib.put_device(base.next_version(hostname="never"))

    result = await retry_on_conflict(always_stale, max_retries=3, base_delay_s=0.001)
    assert result.conflict and calls == 4


async def test_stats_count_what_is_there(nib: SqlNIBStore) -> None:
    await nib.write_devices([make_device(n) for n in range(5)], events=[event("X")])
    stats = await nib.stats()
    assert stats["backend"] == nib.backend
    assert stats["tables"]["devices"] == 5
    assert stats["devices_by_status"] == {"active": 5}
    assert stats["audit_head"]["seq"] == 1


async def test_message_keys_overlap_during_rotation(nib: SqlNIBStore) -> None:
    now = utcnow()
    old = MessageKey(key_id="k1", owner_id="lc-1", kind=KeyKind.HMAC, material="c2VjcmV0", not_before=now)
    stored = (await nib.put_message_key(old)).unwrap()
    new = MessageKey(key_id="k2", owner_id="lc-1", kind=KeyKind.HMAC, material="bmV3", not_before=now)
    (await nib.put_message_key(new)).unwrap()
    (await nib.put_message_key(stored.next_version(not_after=now + timedelta(hours=1)))).unwrap()
    keys = await nib.list_message_keys(owner_id="lc-1")
    assert [k.key_id for k in keys] == ["k1", "k2"]
    assert keys[0].not_after is not None and keys[1].not_after is None


async def test_operators_are_found_by_token_hash_only(nib: SqlNIBStore) -> None:
    alice = Operator(operator_id="op-1", name="alice", role=OperatorRole.APPROVER, token_hash="h" * 64)
    (await nib.put_operator(alice)).unwrap()
    assert (
        await nib.put_operator(alice.model_copy(update={"operator_id": "op-2"}))
    ).error == ReasonCode.ALREADY_EXISTS
    found = await nib.get_operator_by_token_hash("h" * 64)
    assert (
        found is not None
        and found.role is OperatorRole.APPROVER
        and found.role.rank > OperatorRole.VIEWER.rank
    )
    assert await nib.get_operator_by_token_hash("x" * 64) is None
    assert [o.name for o in await nib.list_operators()] == ["alice"]


async def test_events_are_filtered_and_paged_in_the_database(nib: SqlNIBStore) -> None:
    before = utcnow()
    sealed = await nib.append_events(
        [event("A", "dev-1"), event("B", "dev-2"), event("A", "dev-2"), event("A")]
    )
    after = utcnow()
    assert [e.seq for e in await nib.read_events(event_type="A")] == [1, 3, 4]
    assert [e.seq for e in await nib.read_events(event_type="A", subject="dev-2")] == [3]
    assert [e.seq for e in await nib.read_events(event_type="A", after_seq=1, limit=1)] == [3]
    assert [e.seq for e in await nib.read_events(actor=sealed[0].actor, since=before, until=after)] == [
        1,
        2,
        3,
        4,
    ]
    assert await nib.read_events(since=after + timedelta(seconds=1)) == []
    assert await nib.read_events(actor="nobody") == []


async def test_proposals_are_paged_and_counted_in_the_database(nib: SqlNIBStore) -> None:
    device = (await nib.put_device(make_device(7))).unwrap()
    for n in range(5):
        proposal = ConfigProposal(proposal_id=f"prop-{n}", config_payload={"n": n}, category=Sensitivity.LOW,
                                  origin="global_cntl_1", proposed_by="olga", target_devices=[device.device_id])  # fmt: skip
        (await nib.create_proposal(proposal)).unwrap()
    pages = [[p.proposal_id for p in await nib.list_proposals(limit=2, offset=o)] for o in (0, 2, 4)]
    assert pages == [["prop-0", "prop-1"], ["prop-2", "prop-3"], ["prop-4"]]
    assert len(await nib.list_proposals()) == 5
    newest = await nib.list_proposals(limit=2, newest_first=True)  # the dashboard's first page
    assert [p.proposal_id for p in newest] == ["prop-4", "prop-3"]
    assert await nib.count_proposals() == 5
    assert await nib.count_proposals(status=newest[0].status) == 5
    assert await nib.count_proposals(status=ConfigStatus.EXECUTED) == 0
