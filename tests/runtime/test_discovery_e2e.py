"""Discovery end to end on the default lab: a GC, two RCs, three LCs and Mosquitto run as real
processes inside the lab's controller hosts (TLS everywhere); the LCs scan real namespaces that answer
ARP, ICMP and SNMP. The GC's inventory must equal the lab's ground truth, and follow it as devices
stop, return, appear and get renamed.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from pdsno.lab import Lab
from pdsno.messaging.envelope import Envelope, MessageType
from pdsno.messaging.keys import SigningKey
from pdsno.messaging.messages import DiscoveryRequest
from pdsno.messaging.sign import seal
from pdsno.nib.connect import open_nib
from pdsno.nib.models import Device, DeviceStatus
from pdsno.security.pki import create_ca, issue_certificate
from pdsno.transport.broker import BrokerAccount
from tests.runtime.mosquitto_server import MosquittoServer, read_with_mosquitto_sub

PDSNO = Path(sys.executable).with_name("pdsno")
PREFIX = "pdse-"
PORT = 8443
GC = "global_cntl_1"
# Lab host name -> (controller id, role, zone)
TREE = {
    "gc-1": (GC, "global", None),
    "rc-zone-a": ("regional_cntl_zone-a_1", "regional", "zone-a"),
    "rc-zone-b": ("regional_cntl_zone-b_1", "regional", "zone-b"),
    "lc-a1": ("local_cntl_zone-a_1", "local", "zone-a"),
    "lc-a2": ("local_cntl_zone-a_2", "local", "zone-a"),
    "lc-b1": ("local_cntl_zone-b_1", "local", "zone-b"),
}
PARENT = {
    "rc-zone-a": "gc-1",
    "rc-zone-b": "gc-1",
    "lc-a1": "rc-zone-a",
    "lc-a2": "rc-zone-a",
    "lc-b1": "rc-zone-b",
}


@dataclass
class Process:
    host: str
    controller_id: str
    config: Path
    data_dir: Path
    log: Path
    popen: subprocess.Popen[bytes] | None = None

    def started(self) -> bool:
        return self.log.exists() and '"controller started"' in self.log.read_text(errors="replace")


@dataclass
class World:
    lab: Lab
    root: Path
    broker: MosquittoServer
    procs: dict[str, Process] = field(default_factory=dict)

    def ns(self, host: str) -> str:
        return self.lab.netns(host)

    def url(self, host: str) -> str:
        return f"https://{self.lab.host(host).mgmt_ip}:{PORT}"

    def start(self, host: str, timeout: float = 60) -> None:
        proc = self.procs[host]
        handle = proc.log.open("ab")
        proc.popen = subprocess.Popen(
            ["ip", "netns", "exec", self.ns(host), str(PDSNO), "controller", "run", "--config", str(proc.config)],
            stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not proc.started():
            if proc.popen.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{host} did not start:\n{proc.log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.popen is not None and proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            if proc.popen is not None:
                try:
                    proc.popen.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.popen.kill()
                    proc.popen.wait(timeout=5)

    def token(self, host: str) -> None:
        parent = self.procs[PARENT[host]]
        _, role, zone = TREE[host]
        done = subprocess.run(
            [str(PDSNO), "token", "issue", "--config", str(parent.config), "--type", role, "--region", str(zone),
             "--output", str(self.root / f"{host}.bootstrap.json")],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr


def nib_of(proc: Process) -> Any:
    return open_nib("sqlite", path=proc.data_dir / "nib.sqlite3")


async def _devices(proc: Process) -> list[Device]:
    store = await nib_of(proc)
    try:
        return await store.list_devices()
    finally:
        await store.close()


def devices(world: World, host: str) -> dict[str, Device]:
    return {d.mac_address: d for d in asyncio.run(_devices(world.procs[host]))}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("e2e")
    lab = Lab.up("default", root / "lab", prefix=PREFIX)
    broker: MosquittoServer | None = None
    world: World | None = None
    try:
        pki = root / "pki"
        ca = create_ca(pki)
        broker_host = lab.hosts("broker")[0]
        accounts = [BrokerAccount(username=cid, password=secrets.token_urlsafe(16), role=role, region=zone)
                    for cid, role, zone in TREE.values()]  # fmt: skip
        broker_cert = issue_certificate(ca, pki, "broker", [broker_host.mgmt_ip])
        broker = MosquittoServer(root / "broker", ca=ca.cert, cert=broker_cert.cert, key=broker_cert.key,
                                 accounts=accounts, host=broker_host.mgmt_ip, port=8883,
                                 netns=lab.netns(broker_host.name))  # fmt: skip
        broker.start()
        world = World(lab, root, broker)
        secrets_dir = root / "secrets"
        secrets_dir.mkdir(mode=0o700)
        (secrets_dir / "communities").write_text("public\nfacilities\n")
        (secrets_dir / "v3").write_text("pdsno-ro:lab-auth-b1:lab-priv-b1\n")
        for host, (cid, role, zone) in TREE.items():
            data_dir = root / host
            cert = issue_certificate(ca, pki, host, [lab.host(host).mgmt_ip])
            password = data_dir / "mqtt.password"
            data_dir.mkdir()
            password.write_text(broker.account(cid).password)
            controller: dict[str, Any] = {"id": cid, "role": role, "data_dir": str(data_dir)}
            if zone:
                controller.update(
                    region=zone, parent={"id": TREE[PARENT[host]][0], "url": world.url(PARENT[host])}
                )
            config: dict[str, Any] = {
                "controller": controller,
                "rest": {"host": lab.host(host).mgmt_ip, "port": PORT,
                         "tls": {"cert": str(cert.cert), "key": str(cert.key), "ca": str(ca.cert)}},
                "mqtt": {"host": broker_host.mgmt_ip, "port": 8883, "username": cid, "password_file": str(password),
                         "tls": {"ca": str(ca.cert)}, "heartbeat_interval_s": 5},
                "admission": {"bootstrap_file": str(root / f"{host}.bootstrap.json")} if zone else {},
                "discovery": {"interval_s": 3600, "snmp_communities_file": str(secrets_dir / "communities"),
                              "snmp_v3_file": str(secrets_dir / "v3"),
                              "subnets": [s.cidr for s in lab.host(host).subnets] if role == "local" else []},
            }  # fmt: skip
            path = root / f"{host}.yml"
            path.write_text(yaml.safe_dump(config))
            world.procs[host] = Process(host, cid, path, data_dir, root / f"{host}.log")
        world.start("gc-1")
        for host in ("rc-zone-a", "rc-zone-b", "lc-a1", "lc-a2", "lc-b1"):
            world.token(host)
            world.start(host)
        yield world
    finally:
        if world is not None:
            world.stop_all()
        if broker is not None:
            broker.stop()
        Lab.down(root / "lab", prefix=PREFIX)


def wait_for(check: Any, timeout: float = 60, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.5)


async def _rc_key(world: World, rc_host: str, lc_id: str) -> SigningKey:
    store = await nib_of(world.procs[rc_host])
    try:
        rc_id = world.procs[rc_host].controller_id
        key = next(k for k in await store.list_message_keys(owner_id=rc_id) if k.peer_id == lc_id)
    finally:
        await store.close()
    return SigningKey.from_message_key(key)


def run_cycle(world: World, lc_host: str) -> None:
    """What an RC sends when an operator asks for discovery now: a signed DISCOVERY_REQUEST."""
    rc_host = PARENT[lc_host]
    lc_id, rc_id = world.procs[lc_host].controller_id, world.procs[rc_host].controller_id
    key = asyncio.run(_rc_key(world, rc_host, lc_id))
    request = DiscoveryRequest(request_id=secrets.token_hex(8), trigger="ON_DEMAND")
    body = seal(
        MessageType.DISCOVERY_REQUEST, request, sender_id=rc_id, recipient_id=lc_id, key=key
    ).to_bytes()
    tls = ssl.create_default_context(cafile=str(world.root / "pki" / "ca.crt"))
    with world.lab.inside(world.ns(rc_host)):
        response = httpx.post(world.url(lc_host) + "/ew/v1/messages", content=body, verify=tls, timeout=60)
    assert response.status_code == 202, response.text


def truth(world: World) -> dict[str, dict[str, Any]]:
    return {d["mac"]: d for d in world.lab.ground_truth()["devices"] if d["up"]}


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
