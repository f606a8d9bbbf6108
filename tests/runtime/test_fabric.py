"""The secure controller fabric end to end: Mosquitto, a GC, an RC and an LC as real processes, TLS on
REST and MQTT. The RC is admitted by the GC, the LC by the RC; heartbeats are read with mosquitto_sub;
then the RC's East/West endpoint is attacked and must refuse, audit and change nothing, and the GC
shows a peer whose clock is ten minutes off.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pdsno.admission.credentials import identity_key_id
from pdsno.canonical import utcnow
from pdsno.controller.node import audit_publish_refusals
from pdsno.errors import ReasonCode
from pdsno.messaging.envelope import Envelope, MessageType
from pdsno.messaging.keys import SigningKey, new_hmac_key
from pdsno.messaging.messages import Heartbeat
from pdsno.messaging.sign import seal, sign_envelope
from pdsno.nib.connect import open_nib
from pdsno.nib.models import Controller, ControllerRole, Event
from pdsno.security.keys import Ed25519Signer, load_or_create_private_key
from pdsno.security.pki import create_ca, issue_certificate
from pdsno.transport import topics
from pdsno.transport.broker import BrokerAccount
from pdsno.transport.mqtt import MqttLink
from tests.runtime.mosquitto_server import MosquittoServer, read_with_mosquitto_sub
from tests.runtime.ports import free_port

PDSNO = Path(sys.executable).with_name("pdsno")
GC, RC, LC = "global_cntl_1", "regional_cntl_zone-a_1", "local_cntl_zone-a_1"


@dataclass
class Node:
    name: str
    config: Path
    data_dir: Path
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.starts += 1
        handle = self.log.open("ab")
        self.process = subprocess.Popen(
            [str(PDSNO), "controller", "run", "--config", str(self.config)],
            stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def stop(self) -> int:
        """SIGTERM, as an init system would; the node says goodbye on MQTT and exits 0."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait(timeout=5)
        self.process = None
        return code

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


@dataclass
class Deployment:
    root: Path
    ca: Path
    broker: MosquittoServer
    nodes: dict[str, Node] = field(default_factory=dict)

    @property
    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def tls_as(self, name: str) -> ssl.SSLContext:
        """TLS with the client certificate the deployment issued to ``name``, as East/West wants."""
        context = self.tls
        context.load_cert_chain(self.root / "pki" / f"{name}.crt", self.root / "pki" / f"{name}.key")
        return context

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([str(PDSNO), *args], capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        return done

    def wait_healthy(self, node: Node, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert node.process is not None
            if node.process.poll() is not None:
                pytest.fail(f"{node.name} exited with {node.process.returncode}:\n{node.tail()}")
            try:
                if httpx.get(node.url + "/healthz", verify=self.tls, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        pytest.fail(f"{node.name} did not become healthy:\n{node.tail()}")


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("fabric")
    pki = root / "pki"
    ca = create_ca(pki)
    accounts = {
        name: BrokerAccount(username=name, password=secrets.token_urlsafe(16), role=role, region=region)
        for name, role, region in [
            (GC, "global", None), (RC, "regional", "zone-a"), (LC, "local", "zone-a"),
            ("local_cntl_zone-a_2", "local", "zone-a"),
        ]
    }  # fmt: skip
    broker_cert = issue_certificate(ca, pki, "broker", ["127.0.0.1", "localhost"])
    broker = MosquittoServer(
        root / "broker",
        ca=ca.cert,
        cert=broker_cert.cert,
        key=broker_cert.key,
        accounts=list(accounts.values()),
    )
    broker.start()
    deployment = Deployment(root, ca.cert, broker)
    parents = {GC: None, RC: GC, LC: RC}
    try:
        for name, role in ((GC, "global"), (RC, "regional"), (LC, "local")):
            data_dir = root / name
            data_dir.mkdir()
            cert = issue_certificate(ca, pki, name, ["127.0.0.1", "localhost"])
            password_file = data_dir / "mqtt.password"
            password_file.write_text(accounts[name].password)
            password_file.chmod(0o600)
            port = free_port()
            controller: dict[str, Any] = {"id": name, "role": role, "data_dir": str(data_dir)}
            if role != "global":
                controller["region"] = "zone-a"
                parent = deployment.nodes[parents[name]]  # type: ignore[index]
                controller["parent"] = {"id": parent.name, "url": parent.url}
            config = {
                "controller": controller,
                "rest": {"host": "127.0.0.1", "port": port, "tls": {"cert": str(cert.cert), "key": str(cert.key), "ca": str(ca.cert)}},
                "mqtt": {
                    "host": "127.0.0.1", "port": broker.port, "username": name, "password_file": str(password_file),
                    "tls": {"ca": str(ca.cert)}, "heartbeat_interval_s": 1,
                },
                "admission": {"valid_regions": ["zone-a"], "bootstrap_file": str(root / f"{name}.bootstrap.json")},
                "logging": {"level": "INFO"},
            }  # fmt: skip
            if role == "global":
                del config["admission"]["bootstrap_file"]
            deployment.nodes[name] = Node(
                name, write_config(root / f"{name}.yml", config), data_dir, port, root / f"{name}.log"
            )
        yield deployment
    finally:
        for node in deployment.nodes.values():
            if node.process is not None:
                node.stop()
        broker.stop()


async def read_nib(node: Node) -> tuple[list[Controller], list[Event]]:
    """What a controller's NIB holds, read beside the running process (SQLite WAL allows it)."""
    store = await open_nib("sqlite", path=node.data_dir / "nib.sqlite3")
    try:
        return await store.list_controllers(), await store.read_events(limit=100_000)
    finally:
        await store.close()


def nib(node: Node) -> tuple[list[Controller], list[Event]]:
    return asyncio.run(read_nib(node))


@pytest.fixture(scope="module")
def running(deployment: Deployment) -> Deployment:
    """GC up; RC admitted by the GC; LC admitted by the RC; all three publishing heartbeats."""
    gc, rc, lc = (deployment.nodes[n] for n in (GC, RC, LC))
    gc.start()
    deployment.wait_healthy(gc)
    deployment.cli("token", "issue", "--config", str(gc.config), "--type", "regional", "--region", "zone-a",
                   "--output", str(deployment.root / f"{RC}.bootstrap.json"))  # fmt: skip
    rc.start()
    deployment.wait_healthy(rc)
    deployment.cli("token", "issue", "--config", str(rc.config), "--type", "local", "--region", "zone-a",
                   "--output", str(deployment.root / f"{LC}.bootstrap.json"))  # fmt: skip
    lc.start()
    deployment.wait_healthy(lc)
    return deployment


def test_the_tree_admits_itself_over_tls(running: Deployment) -> None:
    gc, rc, lc = (running.nodes[n] for n in (GC, RC, LC))
    gc_controllers, gc_events = nib(gc)
    assert {c.controller_id for c in gc_controllers} == {GC, RC}
    assert [e.subject for e in gc_events if e.event_type == "CONTROLLER_VALIDATED"] == [RC]
    rc_controllers, rc_events = nib(rc)
    assert {c.controller_id: c.role for c in rc_controllers} == {
        GC: ControllerRole.GLOBAL,
        LC: ControllerRole.LOCAL,
    }
    assert [e.subject for e in rc_events if e.event_type == "CONTROLLER_VALIDATED"] == [LC]
    identity = json.loads((lc.data_dir / "identity.json").read_text())
    assert identity["controller_id"] == LC and identity["parent_id"] == RC
    assert (lc.data_dir / "identity.json").stat().st_mode & 0o777 == 0o600
    info = httpx.get(rc.url + "/info", verify=running.tls).json()
    assert info["controller_id"] == RC and info["admits"] == "local"
    for node in (gc, rc, lc):
        assert running.cli("audit", "verify", "--config", str(node.config)).returncode == 0


def test_heartbeats_can_be_read_with_mosquitto_sub(running: Deployment) -> None:
    account = running.broker.account(GC)
    messages = read_with_mosquitto_sub(
        running.broker,
        "pdsno/status/#",
        count=3,
        timeout=15,
        username=account.username,
        password=account.password,
    )
    beats = {Envelope.parse(m).sender_id: Envelope.parse(m) for m in messages}
    assert set(beats) == {GC, RC, LC}
    for sender, envelope in beats.items():
        assert envelope.message_type is MessageType.HEARTBEAT and envelope.signature
        assert envelope.payload_as(Heartbeat).controller_id == sender
    # Parents record their children's verified heartbeats.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        seen = {c.controller_id: c.last_seen for c in nib(running.nodes[RC])[0]}
        if seen.get(LC) is not None:
            break
        time.sleep(0.5)
    assert seen.get(LC) is not None


def test_the_northbound_api_lists_controllers_for_operators_only(running: Deployment) -> None:
    gc = running.nodes[GC]
    out = running.cli(
        "operator", "add", "--config", str(gc.config), "--name", "alice", "--role", "viewer"
    ).stdout
    token = out.strip().splitlines()[-1]
    ca = running.tls
    assert httpx.get(gc.url + "/api/v1/controllers", verify=ca).json()["code"] == "UNAUTHENTICATED"
    bad = httpx.get(gc.url + "/api/v1/controllers", verify=ca, headers={"Authorization": "Bearer pdsno_nope"})
    assert bad.status_code == 401 and bad.json()["code"] == "UNAUTHENTICATED"
    listed = httpx.get(
        gc.url + "/api/v1/controllers", verify=ca, headers={"Authorization": f"Bearer {token}"}
    )
    assert listed.status_code == 200
    assert {c["controller_id"] for c in listed.json()} == {GC, RC}
    health = httpx.get(
        gc.url + "/api/v1/health", verify=ca, headers={"Authorization": f"Bearer {token}"}
    ).json()
    assert health["status"] == "ok" and health["controller_id"] == GC
    assert httpx.get(gc.url + "/openapi.json", verify=ca).status_code == 200


def test_a_restarted_controller_keeps_its_identity(running: Deployment) -> None:
    lc, rc = running.nodes[LC], running.nodes[RC]
    assert lc.stop() == 0
    account = running.broker.account(RC)
    last_will = read_with_mosquitto_sub(
        running.broker,
        f"pdsno/status/{LC}",
        count=1,
        timeout=10,
        username=account.username,
        password=account.password,
    )
    assert last_will == [b"offline"]
    lc.start()
    running.wait_healthy(lc)
    assert [e.subject for e in nib(rc)[1] if e.event_type == "CONTROLLER_VALIDATED"] == [LC], (
        "admitted only once"
    )
    assert json.loads((lc.data_dir / "identity.json").read_text())["controller_id"] == LC
    assert lc.stop() == 0  # the attack tests below want no genuine LC traffic


def test_a_controller_publishing_on_anothers_topic_is_refused_and_audited(
    running: Deployment, tmp_path: Path
) -> None:
    """LC 2 (its own broker account) tries LC 1's discovery topic: the broker refuses, the node audits."""
    intruder = "local_cntl_zone-a_2"
    account = running.broker.account(intruder)

    async def attempt() -> list[Event]:
        store = await open_nib("sqlite", path=tmp_path / "nib.sqlite3", create=True,
                               signer=Ed25519Signer(intruder, Ed25519PrivateKey.generate()))  # fmt: skip
        link = MqttLink(
            client_id=intruder, host="127.0.0.1", port=running.broker.port, username=intruder,
            password=account.password, outbox_path=tmp_path / "outbox.sqlite3", status_topic=None,
            ca_file=running.ca, on_refused=audit_publish_refusals(store, intruder),
        )  # fmt: skip
        await link.start()
        try:
            assert await link.wait_connected(10)
            await link.publish(topics.discovery("zone-a", LC), b"forged report", qos=1)
            assert await link.wait_until_flushed(10)
            await link.publish(topics.discovery("zone-a", intruder), b"own report", qos=1)
            assert await link.wait_until_flushed(10)
        finally:
            await link.stop()
        try:
            return await store.read_events()
        finally:
            await store.close()

    events = asyncio.run(attempt())
    refused = [e for e in events if e.event_type == "MQTT_PUBLISH_REFUSED"]
    assert [e.subject for e in refused] == [f"pdsno/discovery/zone-a/{LC}"], (
        "only the forged topic was refused"
    )
    assert refused[0].decision.value == "DENIED"


# --- the RC's East/West endpoint under attack ------------------------------------------------


async def lc_key_for_rc(lc: Node) -> SigningKey:
    store = await open_nib("sqlite", path=lc.data_dir / "nib.sqlite3")
    try:
        mine = [k for k in await store.list_message_keys(owner_id=LC) if k.peer_id == RC]
    finally:
        await store.close()
    return SigningKey.from_hmac_secret(mine[0].key_id, LC, mine[0].material)


@pytest.fixture(scope="module")
def lc_key(running: Deployment) -> SigningKey:
    return asyncio.run(lc_key_for_rc(running.nodes[LC]))


def heartbeat(key: SigningKey, **envelope_changes: Any) -> Envelope:
    payload = Heartbeat(controller_id=LC, role=ControllerRole.LOCAL, region="zone-a", status="online",
                        uptime_s=1.0, nib_backend="sqlite", version="test")  # fmt: skip
    sealed = seal(MessageType.HEARTBEAT, payload, sender_id=LC, recipient_id=RC, key=key)
    return sign_envelope(sealed.model_copy(update=envelope_changes), key) if envelope_changes else sealed


def post(
    deployment: Deployment, body: bytes, tls: ssl.SSLContext | None = None, path: str = "/ew/v1/messages"
) -> httpx.Response:
    """POST to the RC as the LC would (its client certificate), or with ``tls``."""
    rc = deployment.nodes[RC]
    return httpx.post(rc.url + path, content=body, verify=tls or deployment.tls_as(LC), timeout=10,
                      headers={"content-type": "application/json"})  # fmt: skip


def rc_state(deployment: Deployment) -> tuple[Any, list[str]]:
    """What the attacks aim at: the RC's record of the LC (the GC's genuine heartbeats keep arriving)."""
    controllers, events = nib(deployment.nodes[RC])
    last_seen = {c.controller_id: (c.last_seen, c.version) for c in controllers if c.controller_id == LC}
    rejected = [e.payload["reason"] for e in events if e.event_type == "MESSAGE_REJECTED"]
    return last_seen, rejected


def assert_refused(
    deployment: Deployment, body: bytes, code: ReasonCode, status: int, **post_options: Any
) -> httpx.Response:
    before_state, before_rejected = rc_state(deployment)
    response = post(deployment, body, **post_options)
    assert (response.status_code, response.json()["code"]) == (status, code.value), response.text
    after_state, after_rejected = rc_state(deployment)
    assert after_rejected == [*before_rejected, code.value], "exactly one audit event for the refusal"
    assert after_state == before_state, "a refused message changes nothing"
    return response


def test_a_genuine_signed_message_is_accepted(running: Deployment, lc_key: SigningKey) -> None:
    before, _ = rc_state(running)
    response = post(running, heartbeat(lc_key).to_bytes())
    assert response.status_code == 202, response.text
    after, _ = rc_state(running)
    assert after[LC] != before[LC], "the heartbeat updated last_seen"


def test_a_tampered_payload_is_refused(running: Deployment, lc_key: SigningKey) -> None:
    genuine = json.loads(heartbeat(lc_key).to_bytes())
    genuine["payload"]["uptime_s"] = 99999.0
    assert_refused(running, json.dumps(genuine).encode(), ReasonCode.INVALID_SIGNATURE, 401)


def test_a_message_signed_with_the_wrong_key_is_refused(running: Deployment, lc_key: SigningKey) -> None:
    stranger, _ = new_hmac_key(LC)
    assert_refused(running, heartbeat(stranger).to_bytes(), ReasonCode.UNKNOWN_KEY, 401)
    forged = heartbeat(lc_key).model_copy(update={"sender_id": GC})  # an LC's key claiming to be the GC
    assert_refused(running, forged.to_bytes(), ReasonCode.KEY_NOT_OWNED_BY_SENDER, 401)


@pytest.mark.parametrize(
    ("shift", "code"),
    [
        (timedelta(seconds=-301), ReasonCode.STALE_TIMESTAMP),
        (timedelta(seconds=301), ReasonCode.FUTURE_TIMESTAMP),
    ],
    ids=["stale", "future"],
)
def test_messages_outside_the_clock_window_are_refused(
    running: Deployment, lc_key: SigningKey, shift: timedelta, code: ReasonCode
) -> None:
    response = assert_refused(running, heartbeat(lc_key, timestamp=utcnow() + shift).to_bytes(), code, 400)
    assert f"clock skew {shift.total_seconds():+.0f} s" in response.json()["message"]


def test_unsigned_and_misaddressed_messages_are_refused(running: Deployment, lc_key: SigningKey) -> None:
    unsigned = heartbeat(lc_key).model_copy(update={"signature": None})
    assert_refused(running, unsigned.to_bytes(), ReasonCode.UNSIGNED_MESSAGE, 401)
    assert_refused(
        running, heartbeat(lc_key, recipient_id=GC).to_bytes(), ReasonCode.MISADDRESSED_MESSAGE, 421
    )


def test_an_oversized_message_is_refused_with_413(running: Deployment) -> None:
    assert_refused(running, b"{" + b" " * (2 * 1024 * 1024) + b"}", ReasonCode.MESSAGE_TOO_LARGE, 413)


def test_a_replay_is_refused_also_after_the_receiver_restarts(
    running: Deployment, lc_key: SigningKey
) -> None:
    message = heartbeat(lc_key).to_bytes()
    assert post(running, message).status_code == 202
    assert_refused(running, message, ReasonCode.REPLAYED_MESSAGE, 409)
    rc = running.nodes[RC]
    assert rc.stop() == 0
    rc.start()
    running.wait_healthy(rc)
    assert_refused(running, message, ReasonCode.REPLAYED_MESSAGE, 409)


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_the_rest_listener_speaks_tls_1_2_and_1_3_only(running: Deployment) -> None:
    def handshake(version: ssl.TLSVersion) -> str | None:
        context = running.tls
        context.set_ciphers("DEFAULT:@SECLEVEL=0")  # this client would offer TLS 1.0 and 1.1
        context.minimum_version = context.maximum_version = version
        with socket.create_connection(("127.0.0.1", running.nodes[RC].port), timeout=5) as raw:
            try:
                with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                    return tls.version()
            except ssl.SSLError:
                return None

    versions = (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)
    assert [handshake(v) for v in versions] == [None, None, "TLSv1.2", "TLSv1.3"]


def test_east_west_and_admission_take_only_a_client_certificate_from_the_deployment_ca(
    running: Deployment, lc_key: SigningKey, tmp_path: Path
) -> None:
    for path in ("/ew/v1/messages", "/ew/v1/admission/request", "/ew/v1/admission/response"):
        assert_refused(running, heartbeat(lc_key).to_bytes(), ReasonCode.CLIENT_CERTIFICATE_REQUIRED, 401,
                       tls=running.tls, path=path)  # fmt: skip
    # OpenSSL refuses another CA's certificate in the handshake: no HTTP request, so no audit event.
    other = create_ca(tmp_path / "other")
    stranger = issue_certificate(other, tmp_path / "other", LC, ["127.0.0.1"])
    foreign = running.tls
    foreign.load_cert_chain(stranger.cert, stranger.key)
    before = rc_state(running)
    with pytest.raises(httpx.TransportError):
        post(running, heartbeat(lc_key).to_bytes(), tls=foreign)
    assert rc_state(running) == before


def test_a_verified_message_of_a_type_the_receiver_does_not_handle_is_refused_and_audited(
    running: Deployment, lc_key: SigningKey
) -> None:
    unhandled = seal(MessageType.SYNC_REQUEST, {}, sender_id=LC, recipient_id=RC, key=lc_key)
    assert_refused(running, unhandled.to_bytes(), ReasonCode.UNSUPPORTED_MESSAGE_TYPE, 422)


def test_the_gc_shows_a_peer_whose_clock_is_ten_minutes_off(running: Deployment) -> None:
    """The RC's clock jumps ten minutes ahead: its heartbeats are refused, naming the skew, and the GC's
    northbound API shows it (the real RC is stopped first, so its own heartbeats do not interleave)."""
    gc, rc = running.nodes[GC], running.nodes[RC]
    token = running.cli("operator", "add", "--config", str(gc.config), "--name", "carol", "--role", "viewer")
    api = httpx.Client(base_url=gc.url, verify=running.tls,
                       headers={"Authorization": f"Bearer {token.stdout.strip().splitlines()[-1]}"})  # fmt: skip

    def rc_clock() -> Any:
        return next(c["clock"] for c in api.get("/api/v1/controllers").json() if c["controller_id"] == RC)

    assert abs(rc_clock()["skew_s"]) < 5, "a synchronised peer"
    assert rc.stop() == 0
    key, _ = load_or_create_private_key(rc.data_dir / "identity.key")
    payload = Heartbeat(controller_id=RC, role=ControllerRole.REGIONAL, region="zone-a", status="online",
                        uptime_s=1.0, nib_backend="sqlite", version="test")  # fmt: skip
    ahead = seal(MessageType.HEARTBEAT, payload, sender_id=RC, recipient_id="*", now=utcnow() + timedelta(minutes=10),
                 key=SigningKey.from_ed25519(identity_key_id(RC), RC, key))  # fmt: skip
    account = running.broker.account(RC)
    subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(running.broker.port), "--cafile", str(running.ca),
                    "-u", account.username, "-P", account.password, "-V", "mqttv5", "-t", topics.status(RC),
                    "-s"], input=ahead.to_bytes(), check=True, timeout=10)  # fmt: skip
    deadline = time.monotonic() + 10
    while abs(rc_clock()["skew_s"]) < 590 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert rc_clock()["skew_s"] == pytest.approx(600, abs=10)
    health = api.get("/api/v1/health").json()
    assert health["peer_clocks"][RC]["skew_s"] == pytest.approx(600, abs=10)
    assert health["clock_skew_limit_s"] == 300
    refusal = [e for e in nib(gc)[1] if e.event_type == "MESSAGE_REJECTED" and e.subject == RC][-1]
    assert refusal.payload["reason"] == ReasonCode.FUTURE_TIMESTAMP.value
    assert refusal.payload["clock_skew_s"] == pytest.approx(600, abs=10)
    api.close()
    rc.start()
    running.wait_healthy(rc)


def test_processes_exit_cleanly(running: Deployment) -> None:
    for name in (RC, GC):
        assert running.nodes[name].stop() == 0, running.nodes[name].tail()
    logs = "".join(running.nodes[n].tail() for n in (GC, RC, LC))
    assert "Traceback" not in logs, logs
