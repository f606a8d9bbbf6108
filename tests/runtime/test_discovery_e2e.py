"""Discovery end to end on the default lab: a GC, two RCs, three LCs and Mosquitto run as real
processes inside the lab's controller hosts (TLS everywhere); the LCs scan real namespaces that answer
ARP, ICMP and SNMP. The GC's inventory must equal the lab's ground truth, and follow it as devices
stop, return, appear and get renamed.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from pdsno.messaging.envelope import Envelope, MessageType
from pdsno.nib.models import DeviceStatus
from tests.runtime.hierarchy import (
    GC,
    PDSNO,
    TREE,
    World,
    devices,
    nib_of,
    run_cycle,
    running_world,
    truth,
    wait_for,
)
from tests.runtime.mosquitto_server import read_with_mosquitto_sub

PREFIX = "pdse-"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with running_world(tmp_path_factory.mktemp("e2e"), PREFIX) as world:
        yield world


def test_one_cycle_finds_exactly_the_ground_truth(world: World) -> None:
    expected = truth(world)
    found = wait_for(
        lambda: (d := devices(world, "gc-1")) and len(d) >= len(expected) and d, 90, "the GC inventory"
    )
    assert set(found) == set(expected), {
        "missing": set(expected) - set(found),
        "extra": set(found) - set(expected),
    }
    for mac, device in found.items():
        want = expected[mac]
        assert sorted(device.addresses) == sorted(a["ip"] for a in want["addresses"]), want["name"]
        assert device.hostname == want["sysName"], want["name"]
        assert device.vendor == want["vendor"], want["name"]
        assert device.region == want["zone"] and device.status is DeviceStatus.ACTIVE
    multi = [d for d in expected.values() if len(d["addresses"]) > 1]
    assert multi and all(
        found[d["mac"]].addresses and len(found[d["mac"]].addresses) == len(d["addresses"]) for d in multi
    )
    # The RC of zone-a holds exactly zone-a's devices, each owned by the LC that serves its subnet.
    zone_a = devices(world, "rc-zone-a")
    assert set(zone_a) == {m for m, d in expected.items() if d["zone"] == "zone-a"}
    assert all(zone_a[m].local_controller == TREE[expected[m]["lc"]][0] for m in zone_a)


def test_a_report_is_a_signed_message_on_the_broker(world: World) -> None:
    got: list[bytes] = []

    def listen() -> None:
        got.extend(read_with_mosquitto_sub(world.broker, "pdsno/discovery/#", count=1, timeout=30,
                                           username=GC, password=world.broker.account(GC).password))  # fmt: skip

    import threading

    listener = threading.Thread(target=listen)
    listener.start()
    time.sleep(1.5)  # let mosquitto_sub subscribe
    run_cycle(world, "lc-a2")
    listener.join(timeout=40)
    assert got, "no report seen on pdsno/discovery/#"
    envelope = Envelope.parse(got[0])
    assert envelope.message_type is MessageType.DISCOVERY_REPORT and envelope.signature and envelope.key_id
    assert envelope.sender_id == "local_cntl_zone-a_2"


def test_devices_that_stop_return_appear_and_get_renamed(world: World) -> None:
    lab, lc = world.lab, "lc-a1"
    victim = next(d for d in lab.devices() if d.lc == lc and d.kind == "snmp" and len(d.addresses) == 1)
    lab.stop_device(victim.name)
    threshold = 3
    for _ in range(threshold):
        run_cycle(world, lc)
    for tier in ("lc-a1", "rc-zone-a", "gc-1"):
        wait_for(
            lambda t=tier: devices(world, t)[victim.mac].status is DeviceStatus.INACTIVE,
            30,
            f"inactive at {tier}",
        )

    lab.start_device(victim.name)
    run_cycle(world, lc)
    for tier in ("lc-a1", "rc-zone-a", "gc-1"):
        wait_for(
            lambda t=tier: devices(world, t)[victim.mac].status is DeviceStatus.ACTIVE,
            30,
            f"active at {tier}",
        )

    added = lab.add_device({"name": "new-sw-a1", "ip": "198.18.1.77", "profile": "cisco-catalyst"})
    run_cycle(world, lc)
    new = wait_for(lambda: devices(world, "gc-1").get(added.mac), 30, "the new device at the GC")
    assert new.hostname == "new-sw-a1" and new.addresses == ["198.18.1.77"]

    lab.set_sysname(victim.name, "renamed-by-operator")
    run_cycle(world, lc)
    renamed = wait_for(lambda: (d := devices(world, "gc-1")[victim.mac]).hostname == "renamed-by-operator" and d,
                       30, "the rename at the GC")  # fmt: skip

    async def history() -> list[str]:
        store = await nib_of(world.procs["gc-1"])
        try:
            return [e.event_type for e in await store.events_about(renamed.device_id)]
        finally:
            await store.close()

    assert asyncio.run(history()) == [
        "DEVICE_DISCOVERED",
        "DEVICE_INACTIVE",
        "DEVICE_UPDATED",
        "DEVICE_UPDATED",
    ]


def test_an_operator_discovers_a_region_on_demand_and_follows_it_to_the_end(world: World) -> None:
    gc = world.procs["gc-1"]
    added = subprocess.run([str(PDSNO), "operator", "add", "--config", str(gc.config), "--name", "noc", "--role", "operator"],
                           capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert added.returncode == 0, added.stderr
    auth = {"Authorization": f"Bearer {added.stdout.strip().splitlines()[-1]}"}
    target = next(d for d in world.lab.devices() if d.zone == "zone-b" and d.kind == "snmp")
    world.lab.set_sysname(target.name, "renamed-on-demand")
    tls = ssl.create_default_context(cafile=str(world.root / "pki" / "ca.crt"))
    with (
        world.lab.inside(world.ns("gc-1")),
        httpx.Client(base_url=world.url("gc-1"), verify=tls, headers=auth, timeout=30) as api,
    ):
        started = api.post("/api/v1/discovery", json={"region": "zone-b"})
        assert started.status_code == 202, started.text
        request_id = started.json()["request_id"]
        assert started.json()["targets"] == {"regional_cntl_zone-b_1": "pending"}
        deadline = time.monotonic() + 90
        while (view := api.get(f"/api/v1/discovery/{request_id}").json())["status"] == "running":
            assert time.monotonic() < deadline, view
            time.sleep(0.5)
    assert view["status"] == "done", view
    updates = [d for d in view["deltas"] if d["event_type"] == "DEVICE_UPDATED"]
    assert [u["payload"]["hostname"] for u in updates] == ["renamed-on-demand"]
    assert devices(world, "gc-1")[target.mac].hostname == "renamed-on-demand"


def test_reports_fall_back_to_rest_while_the_broker_is_down(world: World) -> None:
    target = next(d for d in world.lab.devices() if d.lc == "lc-a2" and d.kind == "snmp")
    world.broker.stop()
    try:
        world.lab.set_sysname(target.name, "seen-over-rest")
        run_cycle(world, "lc-a2")
        wait_for(
            lambda: devices(world, "gc-1")[target.mac].hostname == "seen-over-rest",
            30,
            "the rename at the GC",
        )
    finally:
        world.broker.start()

    async def last_route() -> str:
        store = await nib_of(world.procs["lc-a2"])
        try:
            sent = [
                e for e in await store.read_events(limit=100_000) if e.event_type == "DISCOVERY_REPORT_SENT"
            ]
        finally:
            await store.close()
        return str(sent[-1].payload["via"])

    assert asyncio.run(last_route()) == "rest"
