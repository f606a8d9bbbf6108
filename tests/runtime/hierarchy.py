"""A running hierarchy on a lab for end-to-end tests: Mosquitto, a GC, two RCs and three LCs as real
processes inside the lab's controller hosts, TLS everywhere (the deployment CA made here). A test
module builds one with :func:`running_world` in a module-scoped fixture.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from pdsno.lab import Lab
from pdsno.messaging.envelope import MessageType
from pdsno.messaging.keys import SigningKey
from pdsno.messaging.messages import DiscoveryRequest
from pdsno.messaging.sign import seal
from pdsno.nib.connect import open_nib
from pdsno.nib.models import Device
from pdsno.security.pki import create_ca, issue_certificate
from pdsno.transport.broker import BrokerAccount
from tests.runtime.mosquitto_server import MosquittoServer

PDSNO = Path(sys.executable).with_name("pdsno")
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

    def started(self, since: int = 0) -> bool:
        """Started, by what the log says after byte ``since`` (a restart appends to the same log)."""
        return self.log.exists() and '"controller started"' in self.log.read_text(errors="replace")[since:]


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

    def start(self, host: str, timeout: float = 60, env: Mapping[str, str] | None = None) -> None:
        """Start the host's controller (``env``: variables added to this one's environment)."""
        proc = self.procs[host]
        since = len(proc.log.read_text(errors="replace")) if proc.log.exists() else 0
        handle = proc.log.open("ab")
        proc.popen = subprocess.Popen(
            ["ip", "netns", "exec", self.ns(host), str(PDSNO), "controller", "run", "--config", str(proc.config)],
            stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})},
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not proc.started(since):
            if proc.popen.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{host} did not start:\n{proc.log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)

    def stop(self, host: str) -> None:
        popen = self.procs[host].popen
        if popen is not None and popen.poll() is None:
            popen.send_signal(signal.SIGTERM)
            popen.wait(timeout=20)

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


ExtraConfig = Callable[[str, str, Path], dict[str, Any]]
"""(lab host, role, secrets dir) -> sections merged into that controller's configuration."""


def writable_lcs(_host: str, role: str, secrets_dir: Path) -> dict[str, Any]:
    """An :data:`ExtraConfig`: the local controllers hold the lab's write community, so they can execute
    changes on its SNMP devices."""
    if role != "local":
        return {}
    communities = secrets_dir / "write-communities"
    communities.write_text("private\n")
    communities.chmod(0o600)
    return {"changes": {"snmp_write_communities_file": str(communities)}}


@contextlib.contextmanager
def running_world(root: Path, prefix: str, extra: ExtraConfig | None = None) -> Iterator[World]:
    lab = Lab.up("default", root / "lab", prefix=prefix)
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
            for section, values in (extra(host, role, secrets_dir) if extra else {}).items():
                config.setdefault(section, {}).update(values)
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
        Lab.down(root / "lab", prefix=prefix)


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


def seal_from_parent(world: World, lc_host: str, message_type: MessageType, payload: Any) -> bytes:
    """A message from the LC's RC to the LC, signed with the RC's own key from its NIB."""
    rc_host = PARENT[lc_host]
    lc_id, rc_id = world.procs[lc_host].controller_id, world.procs[rc_host].controller_id
    key = asyncio.run(_rc_key(world, rc_host, lc_id))
    return seal(message_type, payload, sender_id=rc_id, recipient_id=lc_id, key=key).to_bytes()


def post_from_parent(world: World, lc_host: str, body: bytes, timeout: float = 60) -> httpx.Response:
    """POST a signed message to the LC from inside its RC's host, as the RC would (its client certificate)."""
    pki, rc_host = world.root / "pki", PARENT[lc_host]
    tls = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    tls.load_cert_chain(pki / f"{rc_host}.crt", pki / f"{rc_host}.key")
    with world.lab.inside(world.ns(rc_host)):
        return httpx.post(world.url(lc_host) + "/ew/v1/messages", content=body, verify=tls, timeout=timeout)


def run_cycle(world: World, lc_host: str) -> None:
    """What an RC sends when an operator asks for discovery now: a signed DISCOVERY_REQUEST."""
    request = DiscoveryRequest(request_id=secrets.token_hex(8), trigger="ON_DEMAND")
    response = post_from_parent(
        world, lc_host, seal_from_parent(world, lc_host, MessageType.DISCOVERY_REQUEST, request)
    )
    assert response.status_code == 202, response.text


def truth(world: World) -> dict[str, dict[str, Any]]:
    return {d["mac"]: d for d in world.lab.ground_truth()["devices"] if d["up"]}


def operator_token(world: World, name: str, role: str) -> str:
    """A bearer token for a new operator of the GC's northbound API."""
    gc = world.procs["gc-1"]
    added = subprocess.run([str(PDSNO), "operator", "add", "--config", str(gc.config), "--name", name, "--role", role],
                           capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert added.returncode == 0, added.stderr
    return added.stdout.strip().splitlines()[-1]


@contextlib.contextmanager
def gc_api(world: World, token: str) -> Iterator[httpx.Client]:
    """A client of the GC's northbound API, from inside the GC host (use it from one thread)."""
    tls = ssl.create_default_context(cafile=str(world.root / "pki" / "ca.crt"))
    with (
        world.lab.inside(world.ns("gc-1")),
        httpx.Client(base_url=world.url("gc-1"), verify=tls, headers={"Authorization": f"Bearer {token}"},
                     timeout=30) as client,
    ):  # fmt: skip
        yield client
