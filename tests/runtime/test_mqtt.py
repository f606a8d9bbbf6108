"""MQTT transport against a real Mosquitto (TLS, password file, ACL, persistence): no mocks.

Also the deployment CA (pdsno.security.pki), the topic names and the rendered broker files.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store

from pdsno.cli.pki import pki_group
from pdsno.errors import ConfigError, PdsnoError
from pdsno.security.pki import PkiError, create_ca, issue_certificate, load_ca
from pdsno.transport import topics
from pdsno.transport.broker import (
    BrokerAccount,
    Listener,
    acl_rules,
    hash_password,
    render_acl,
    write_broker_files,
)
from pdsno.transport.mqtt import OFFLINE, MqttError, MqttLink
from pdsno.transport.outbox import Outbox
from tests.runtime.mosquitto_server import MosquittoBroker, read_with_mosquitto_sub

RC_A = "regional_cntl_zone-a_1"
LC_A1 = "local_cntl_zone-a_1"
LC_A2 = "local_cntl_zone-a_2"
LC_B1 = "local_cntl_zone-b_1"
RC_B = "regional_cntl_zone-b_1"
GC = "global_cntl_1"
WAIT = 15.0  # upper bound of every wait; the happy paths take well under a second


# --------------------------------------------------------------------------------------------------
# helpers


class Received:
    """An async message handler that records (topic, payload) and lets a test wait for a condition."""

    def __init__(self) -> None:
        self.items: list[tuple[str, bytes]] = []
        self._changed = asyncio.Event()

    async def __call__(self, topic: str, payload: bytes) -> None:
        self.items.append((topic, payload))
        self._changed.set()

    @property
    def payloads(self) -> list[bytes]:
        return [payload for _, payload in self.items]

    async def wait_for(self, condition: Callable[[], bool], timeout: float = WAIT) -> None:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            while not condition():
                self._changed.clear()
                await self._changed.wait()

    async def wait_count(self, count: int, timeout: float = WAIT) -> None:  # noqa: ASYNC109
        await self.wait_for(lambda: len(set(self.payloads)) >= count, timeout)


class Links:
    """Makes MqttLinks for broker accounts; stops every one at teardown."""

    def __init__(self, broker: MosquittoBroker, directory: Path) -> None:
        self.broker = broker
        self.directory = directory
        self.made: list[MqttLink] = []

    def make(self, account_name: str, /, *, outbox: Path | None = None, **overrides: Any) -> MqttLink:
        username = account_name
        account = self.broker.account(username)
        params: dict[str, Any] = {
            "client_id": username,
            "host": self.broker.host,
            "port": self.broker.port,
            "username": username,
            "password": account.password,
            "ca_file": self.broker.ca,
            "outbox_path": outbox or self.directory / f"{username}-{len(self.made)}.outbox",
            "status_topic": topics.status(username),
            "reconnect_min_delay": 1,
            "reconnect_max_delay": 2,
        }
        params.update(overrides)
        link = MqttLink(**params)
        self.made.append(link)
        return link

    async def started(self, account_name: str, /, **overrides: Any) -> MqttLink:
        link = self.make(account_name, **overrides)
        await link.start()
        assert await link.wait_connected(WAIT), f"{account_name} did not connect: {link.last_refusal}"
        return link

    async def close(self) -> None:
        for link in self.made:
            await link.stop(timeout=2)


@pytest.fixture
async def links(mosquitto_broker: MosquittoBroker, tmp_path: Path) -> AsyncIterator[Links]:
    made = Links(mosquitto_broker, tmp_path)
    try:
        yield made
    finally:
        await made.close()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def until(condition: Callable[[], bool], timeout: float = WAIT) -> None:  # noqa: ASYNC109
    """Poll ``condition`` (state that has no event of its own, e.g. ``not link.connected``)."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


def _uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")


# --------------------------------------------------------------------------------------------------
# PKI


def test_ca_is_created_once_with_a_private_key(tmp_path: Path) -> None:
    ca = create_ca(tmp_path / "pki")
    assert ca.created
    assert _mode(ca.key) == 0o600
    assert _mode(ca.cert) == 0o644
    cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    before = (ca.cert.read_bytes(), ca.key.read_bytes())

    again = create_ca(tmp_path / "pki")
    assert not again.created
    assert (again.cert.read_bytes(), again.key.read_bytes()) == before
    assert load_ca(tmp_path / "pki").cert == ca.cert


def test_ca_refuses_a_half_present_ca(tmp_path: Path) -> None:
    ca = create_ca(tmp_path / "pki")
    ca.cert.unlink()
    with pytest.raises(PkiError, match=r"ca\.key exists but .*ca\.crt does not"):
        create_ca(tmp_path / "pki")


def test_issued_certificate_has_sans_eku_and_chains_to_the_ca(tmp_path: Path) -> None:
    ca = create_ca(tmp_path / "pki")
    issued = issue_certificate(ca, tmp_path / "certs", "broker", ["127.0.0.1", "Broker.Example.NET", "::1"])
    assert issued.created
    assert _mode(issued.key) == 0o600
    assert issued.ca == ca.cert
    cert = x509.load_pem_x509_certificate(issued.cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["broker.example.net"]
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert cert.not_valid_after_utc - cert.not_valid_before_utc <= dt.timedelta(days=397, minutes=5)

    # the chain verifies for every name, the way a TLS client checks it
    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    store = Store([ca_cert])
    for name in (x509.DNSName("broker.example.net"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))):
        verifier = PolicyBuilder().store(store).build_server_verifier(name)
        chain = verifier.verify(cert, [])
        assert chain[-1] == ca_cert
    # ... and not against another CA
    other = create_ca(tmp_path / "other")
    other_store = Store([x509.load_pem_x509_certificate(other.cert.read_bytes())])
    with pytest.raises(x509.verification.VerificationError):
        PolicyBuilder().store(other_store).build_server_verifier(x509.DNSName("broker.example.net")).verify(
            cert, []
        )


def test_issue_is_idempotent_and_reissues_when_hosts_change(tmp_path: Path) -> None:
    ca = create_ca(tmp_path / "pki")
    first = issue_certificate(ca, tmp_path, "gc", ["gc.example.net", "10.0.0.1"])
    content = (first.cert.read_bytes(), first.key.read_bytes())

    same = issue_certificate(ca, tmp_path, "gc", ["10.0.0.1", "GC.example.net", "gc.example.net"])
    assert not same.created
    assert (same.cert.read_bytes(), same.key.read_bytes()) == content

    changed = issue_certificate(ca, tmp_path, "gc", ["gc.example.net"])
    assert changed.created
    assert changed.cert.read_bytes() != content[0]

    # a certificate from another CA is replaced too
    other = create_ca(tmp_path / "other")
    foreign = issue_certificate(other, tmp_path, "gc", ["gc.example.net"])
    assert foreign.created
    assert issue_certificate(ca, tmp_path, "gc", ["gc.example.net"]).created


@pytest.mark.parametrize(
    ("name", "hosts", "message"),
    [
        ("../x", ["a.example"], "certificate name"),
        ("ca", ["a.example"], "certificate name"),
        ("ok", [], "at least one host"),
        ("ok", ["bad host"], "neither an IP address nor a valid DNS name"),
        ("ok", ["-bad.example"], "neither an IP address"),
    ],
)
def test_issue_refuses_bad_input(tmp_path: Path, name: str, hosts: list[str], message: str) -> None:
    ca = create_ca(tmp_path)
    with pytest.raises(PkiError, match=message):
        issue_certificate(ca, tmp_path, name, hosts)


def test_pki_cli(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(pki_group, ["init-ca", "--dir", str(tmp_path / "pki")])
    assert result.exit_code == 0, result.output
    assert "created" in result.output
    result = runner.invoke(pki_group, ["init-ca", "--dir", str(tmp_path / "pki")])
    assert "kept" in result.output
    result = runner.invoke(
        pki_group,
        [
            "issue",
            "--dir",
            str(tmp_path / "pki"),
            "--name",
            "broker",
            "--host",
            "127.0.0.1",
            "--host",
            "mq.lab",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "pki" / "broker.crt").is_file()
    assert _mode(tmp_path / "pki" / "broker.key") == 0o600
    for args in (["--help"], ["init-ca", "--help"], ["issue", "--help"]):
        assert runner.invoke(pki_group, args).exit_code == 0
    # a user mistake is a PdsnoError (one line from the CLI's main), not a traceback
    result = runner.invoke(
        pki_group, ["issue", "--dir", str(tmp_path / "none"), "--name", "x", "--host", "h"]
    )
    assert isinstance(result.exception, PdsnoError)
    assert "does not exist" in str(result.exception)


# --------------------------------------------------------------------------------------------------
# topics, broker files


def test_topics() -> None:
    assert topics.discovery("zone-a", LC_A1) == "pdsno/discovery/zone-a/local_cntl_zone-a_1"
    assert topics.policy_global() == "pdsno/policy/global"
    assert topics.policy("zone-a") == "pdsno/policy/zone-a"
    assert topics.events_system() == "pdsno/events/system"
    assert topics.events("zone-a") == "pdsno/events/zone-a"
    assert topics.status(GC) == "pdsno/status/global_cntl_1"
    for bad in ("a/b", "a+", "#", "", "x\0"):
        with pytest.raises(ValueError, match="must"):
            topics.status(bad)
        with pytest.raises(ValueError, match="must"):
            topics.discovery(bad, LC_A1)
    for reserved in ("global", "System"):
        with pytest.raises(ValueError, match="reserved"):
            topics.policy(reserved)


def test_acl_rules_let_a_controller_publish_only_on_its_own_topics() -> None:
    accounts = [
        BrokerAccount(GC, "password-1", "global"),
        BrokerAccount(RC_A, "password-2", "regional", "zone-a"),
        BrokerAccount(LC_A1, "password-3", "local", "zone-a"),
        BrokerAccount(LC_A2, "password-4", "local", "zone-a"),
        BrokerAccount(LC_B1, "password-5", "local", "zone-b"),
    ]
    writes = {a.username: {t for access, t in acl_rules(a, accounts) if access == "write"} for a in accounts}
    reads = {a.username: {t for access, t in acl_rules(a, accounts) if access == "read"} for a in accounts}
    assert writes[LC_A1] == {"pdsno/status/local_cntl_zone-a_1", "pdsno/discovery/zone-a/local_cntl_zone-a_1"}
    assert reads[LC_A1] == {
        "pdsno/discovery/zone-a/local_cntl_zone-a_1/ack",  # its own reports acknowledged, no one else's
        "pdsno/policy/global",
        "pdsno/policy/zone-a",
        "pdsno/status/regional_cntl_zone-a_1",  # its parent's heartbeat
    }
    assert writes[RC_A] == {
        "pdsno/status/regional_cntl_zone-a_1",
        "pdsno/policy/zone-a",
        "pdsno/events/zone-a",
        "pdsno/discovery/zone-a/+/ack",
    }
    assert "pdsno/discovery/zone-a/+" in reads[RC_A]
    assert "pdsno/status/local_cntl_zone-a_2" in reads[RC_A]
    assert "pdsno/status/local_cntl_zone-b_1" not in reads[RC_A]
    assert "pdsno/status/global_cntl_1" in reads[RC_A]
    assert writes[GC] == {
        "pdsno/status/global_cntl_1",
        "pdsno/policy/global",
        "pdsno/events/system",
        "pdsno/events/#",
    }
    assert reads[GC] == {"pdsno/#"}
    text = render_acl(accounts)
    assert text.startswith("# PDSNO Mosquitto ACL")
    assert "user local_cntl_zone-a_1\ntopic write pdsno/status/local_cntl_zone-a_1\n" in text


@pytest.mark.parametrize(
    ("account", "message"),
    [
        (BrokerAccount("local_cntl_zone-a_1", "password-1", "local", None), "needs a region"),
        (BrokerAccount("local_cntl_zone-b_1", "password-1", "local", "zone-a"), "controller id"),
        (BrokerAccount("global_cntl_1", "short", "global"), "at least 8"),
        (BrokerAccount("global_cntl_1", "password-1", "global", "zone-a"), "has no region"),
        (BrokerAccount("bad name", "password-1", "monitor"), "must be 1 to 128"),
        (BrokerAccount("x", "password-1", "admin"), "role must be"),  # type: ignore[arg-type]
        (BrokerAccount("regional_cntl_global_1", "password-1", "regional", "global"), "reserved"),
    ],
)
def test_broker_accounts_are_validated(account: BrokerAccount, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        render_acl([account])


def test_password_hash_matches_mosquitto_passwd(tmp_path: Path) -> None:
    """Our PBKDF2 lines are what mosquitto_passwd writes (same salt, same hash)."""
    mosquitto_passwd = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    pwfile = tmp_path / "pw"
    pwfile.write_text("alice:s3cret-passw0rd\n")
    subprocess.run([mosquitto_passwd, "-U", str(pwfile)], check=True, capture_output=True, timeout=30)
    theirs = pwfile.read_text().strip().split(":", 1)[1]
    _, _, iterations, salt_b64, _ = theirs.split("$")
    import base64

    ours = hash_password("s3cret-passw0rd", iterations=int(iterations), salt=base64.b64decode(salt_b64))
    assert ours == theirs


def test_plain_listener_needs_the_insecure_flag(tmp_path: Path) -> None:
    account = [BrokerAccount(GC, "password-1", "global")]
    with pytest.raises(ConfigError, match="insecure=True"):
        write_broker_files(tmp_path, listeners=[Listener.plain(insecure=False)], accounts=account)
    files = write_broker_files(
        tmp_path, listeners=[Listener.plain(insecure=True, port=1884)], accounts=account
    )
    conf = files.config.read_text()
    assert "listener 1884\n" in conf
    assert "# INSECURE" in conf
    assert "allow_anonymous false" in conf
    for path in (files.password_file, files.acl_file):
        assert _mode(path) == 0o600


def test_rendered_config(mosquitto_broker: MosquittoBroker) -> None:
    conf = mosquitto_broker.files.config.read_text()
    for line in (
        "per_listener_settings false",
        "allow_anonymous false",
        "persistence true",
        "require_certificate false",
        "tls_version tlsv1.2",
        f"listener {mosquitto_broker.port} 127.0.0.1",
        f"password_file {mosquitto_broker.files.password_file}",
        f"acl_file {mosquitto_broker.files.acl_file}",
    ):
        assert f"\n{line}\n" in conf
    assert all(
        _mode(p) == 0o600
        for p in (
            mosquitto_broker.files.password_file,
            mosquitto_broker.files.acl_file,
            *mosquitto_broker.files.tls_dir.glob("*.key"),
        )
    )
    assert "s3cret" not in mosquitto_broker.files.password_file.read_text()


# --------------------------------------------------------------------------------------------------
# outbox


def test_outbox_is_a_durable_fifo(tmp_path: Path) -> None:
    path = tmp_path / "box" / "outbox.sqlite3"
    with Outbox(path) as box:
        ids = [box.add("t/a", b"1"), box.add("t/b", b"2", retain=True), box.add("t/c", b"3", qos=0)]
        assert len(box) == 3
        assert box.remove(ids[0])
        assert not box.remove(ids[0])
    assert _mode(path) == 0o600
    with Outbox(path) as box:  # another process, later
        pending = box.pending(10)
        assert [(e.id, e.topic, e.payload, e.qos, e.retain) for e in pending] == [
            (ids[1], "t/b", b"2", 1, True),
            (ids[2], "t/c", b"3", 0, False),
        ]
        assert [e.id for e in box.pending(10, after_id=ids[1])] == [ids[2]]
        new = box.add("t/d", b"4")
        assert new > ids[2]  # ids never go back, even after deletions


# --------------------------------------------------------------------------------------------------
# connection


async def test_tls_login_works_and_a_wrong_password_is_refused(links: Links) -> None:
    good = await links.started(LC_A1)
    assert good.connected

    bad = links.make(LC_A2, password="not-the-password")
    await bad.start()
    assert not await bad.wait_connected(WAIT)
    assert bad.last_refusal is not None
    assert bad.last_refusal in ("Not authorized", "Bad user name or password")

    unknown = links.make(LC_A2, username="nobody", password="whatever-it-is")
    await unknown.start()
    assert not await unknown.wait_connected(WAIT)


async def test_an_account_added_later_works_after_a_reload(
    links: Links, mosquitto_broker: MosquittoBroker
) -> None:
    """Admitting a controller: re-render password file and ACL, SIGHUP the broker (no restart)."""
    pid = mosquitto_broker.pid
    mosquitto_broker.add_account("local_cntl_zone-a_3", "local", "zone-a")
    lc = await links.started("local_cntl_zone-a_3")  # retried with backoff until the reload is done
    refused: list[str] = []

    async def on_refused(topic: str, reason: str) -> None:
        refused.append(topic)

    lc2 = await links.started(LC_A1, on_refused=on_refused)
    await lc2.publish(topics.discovery("zone-a", "local_cntl_zone-a_3"), b"forged")
    assert await lc2.wait_until_flushed(WAIT)
    assert refused == ["pdsno/discovery/zone-a/local_cntl_zone-a_3"]
    await lc.publish(topics.discovery("zone-a", "local_cntl_zone-a_3"), b"own")
    assert await lc.wait_until_flushed(WAIT)
    assert mosquitto_broker.pid == pid


async def test_plain_mqtt_to_the_tls_port_fails(links: Links) -> None:
    plain = links.make(LC_A1, ca_file=None, insecure=True)
    await plain.start()
    assert not await plain.wait_connected(1.5)


async def test_broker_certificate_must_chain_to_the_deployment_ca(links: Links, tmp_path: Path) -> None:
    other = create_ca(tmp_path / "other-ca")
    link = links.make(LC_A1, ca_file=other.cert)
    await link.start()
    assert not await link.wait_connected(1.5)
    # the certificate names 127.0.0.1 and localhost: both verify
    assert (await links.started(LC_A2, host="localhost")).connected


async def test_configuration_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="deployment CA"):
        MqttLink(
            client_id="x",
            host="127.0.0.1",
            port=1,
            username=None,
            password=None,
            outbox_path=tmp_path / "o",
            status_topic=None,
        )
    with pytest.raises(ConfigError, match="TLS file missing"):
        MqttLink(
            client_id="x",
            host="127.0.0.1",
            port=1,
            username=None,
            password=None,
            outbox_path=tmp_path / "o",
            status_topic=None,
            ca_file=tmp_path / "missing.crt",
        )


# --------------------------------------------------------------------------------------------------
# publish / subscribe


async def test_publish_subscribe_round_trip(links: Links) -> None:
    rc = await links.started(RC_A)
    received = Received()
    rc.subscribe(topics.discovery_filter("zone-a"), received)
    lc = await links.started(LC_A1)
    await asyncio.sleep(0.2)  # let the SUBACK land before publishing (the subscriber is not persistent yet)

    payloads = [f"report-{i}".encode() for i in range(5)]
    for payload in payloads:
        await lc.publish(topics.discovery("zone-a", LC_A1), payload)
    await received.wait_count(5)
    assert received.payloads == payloads
    assert {t for t, _ in received.items} == {"pdsno/discovery/zone-a/local_cntl_zone-a_1"}
    assert await lc.wait_until_flushed(WAIT)
    assert lc.pending() == 0


async def test_a_failed_handler_means_redelivery_not_loss(links: Links) -> None:
    """A handler that raises (a full disk) leaves its message unacknowledged; the link reconnects and
    Mosquitto redelivers it (it never does on the same connection). Later messages are not held up."""
    rc = await links.started(RC_A)
    seen: list[bytes] = []

    async def flaky(topic: str, payload: bytes) -> None:
        seen.append(payload)
        if seen == [b"boom"]:
            raise RuntimeError("disk full")

    rc.subscribe(topics.discovery_filter("zone-a"), flaky)
    lc = await links.started(LC_A1)
    await asyncio.sleep(0.2)
    await lc.publish(topics.discovery("zone-a", LC_A1), b"boom")
    await lc.publish(topics.discovery("zone-a", LC_A1), b"after")
    await until(lambda: seen.count(b"boom") == 2)
    assert seen == [b"boom", b"after", b"boom"], "1 failed + 1 ok sent, both handled once successfully"
    await until(lambda: rc.connected)


async def test_only_the_rc_acknowledges_and_only_to_the_lc_concerned(links: Links) -> None:
    lc_a1, lc_a2 = Received(), Received()
    for name, seen in ((LC_A1, lc_a1), (LC_A2, lc_a2)):
        link = links.make(name)
        link.subscribe(topics.discovery_ack_filter("zone-a"), seen)  # the ACL narrows what arrives
        await link.start()
        assert await link.wait_connected(WAIT)
    rc = await links.started(RC_A)
    await asyncio.sleep(0.2)
    await links.made[1].publish(topics.discovery_ack("zone-a", LC_A1), b"forged by lc-a2")
    await rc.publish(topics.discovery_ack("zone-a", LC_A1), b"ack")
    await lc_a1.wait_count(1)
    await asyncio.sleep(0.3)
    assert lc_a1.payloads == [b"ack"]
    assert lc_a2.payloads == []


async def test_retained_policy_reaches_a_late_subscriber_and_acl_limits_reads(links: Links) -> None:
    gc = await links.started(GC)
    rc_b = await links.started(RC_B)
    await gc.publish(topics.policy_global(), b"policy-v7", retain=True)
    await rc_b.publish(topics.policy("zone-b"), b"zone-b-policy-v1", retain=True)
    assert await gc.wait_until_flushed(WAIT)
    assert await rc_b.wait_until_flushed(WAIT)

    lc = await links.started(LC_A1)
    received = Received()
    lc.subscribe("pdsno/policy/+", received)  # allowed as a filter, but the ACL filters what arrives
    await received.wait_count(1)
    await asyncio.sleep(0.3)
    assert received.items == [("pdsno/policy/global", b"policy-v7")]


async def test_status_reads_follow_the_hierarchy(links: Links) -> None:
    """An LC sees its parent RC's heartbeat only; an RC its region's controllers and the GC."""
    for name in (GC, RC_A, RC_B, LC_A2, LC_B1):
        link = await links.started(name)
        await link.publish(topics.status(name), name.encode(), retain=True)
        assert await link.wait_until_flushed(WAIT)

    lc = links.make(LC_A1)
    lc_seen = Received()
    lc.subscribe(topics.status_filter(), lc_seen)
    rc = links.make(RC_A, client_id=f"{RC_A}-watcher")
    rc_seen = Received()
    rc.subscribe(topics.status_filter(), rc_seen)
    for link in (lc, rc):
        await link.start()
        assert await link.wait_connected(WAIT)
    await rc_seen.wait_count(3)
    await asyncio.sleep(0.3)
    assert set(lc_seen.payloads) == {RC_A.encode()}
    assert set(rc_seen.payloads) == {GC.encode(), RC_A.encode(), LC_A2.encode()}


# --------------------------------------------------------------------------------------------------
# broker restart, outbox


async def test_broker_restart_loses_nothing(
    links: Links, mosquitto_broker: MosquittoBroker, record_property: Callable[[str, object], None]
) -> None:
    n = 50
    rc = await links.started(RC_A)
    received = Received()
    rc.subscribe(topics.discovery_filter("zone-a"), received)
    lc = await links.started(LC_A1)
    await asyncio.sleep(0.2)
    await lc.publish(topics.discovery("zone-a", LC_A1), b"before")
    await received.wait_count(1)

    mosquitto_broker.stop()
    await until(lambda: not lc.connected and not rc.connected)
    started = time.perf_counter()
    payloads = [f"while-down-{i:03d}".encode() for i in range(n)]
    for payload in payloads:
        await lc.publish(topics.discovery("zone-a", LC_A1), payload)
    publish_s = time.perf_counter() - started
    assert lc.pending() == n

    restart = time.perf_counter()
    mosquitto_broker.start()
    await received.wait_count(n + 1)
    delivered_s = time.perf_counter() - restart
    assert await lc.wait_until_flushed(WAIT)

    got = [p for p in received.payloads if p != b"before"]
    first_seen = list(dict.fromkeys(got))
    assert first_seen == payloads  # all of them, in order
    assert len(set(got)) == n
    record_property("outbox_publish_50_s", round(publish_s, 3))
    record_property("restart_to_all_delivered_s", round(delivered_s, 3))
    print(f"\n50 QoS1 into outbox: {publish_s:.3f}s; broker start -> all 50 delivered: {delivered_s:.3f}s")


async def test_persistent_session_queues_for_an_absent_subscriber(
    links: Links, mosquitto_broker: MosquittoBroker
) -> None:
    """The RC is away while the LC reports and the broker restarts twice: the reports wait in its session."""
    rc = links.make(RC_A)
    rc.subscribe(topics.discovery_filter("zone-a"), Received())
    await rc.start()
    assert await rc.wait_connected(WAIT)
    await asyncio.sleep(0.2)  # SUBACK
    await rc.stop()  # a clean goodbye; the session (subscription) stays for session_expiry_s

    mosquitto_broker.restart()
    lc = await links.started(LC_A1)
    payloads = [f"report-{i:02d}".encode() for i in range(20)]
    for payload in payloads:
        await lc.publish(topics.discovery("zone-a", LC_A1), payload)
    assert await lc.wait_until_flushed(WAIT)  # the broker has them all, queued for the absent RC
    mosquitto_broker.restart()

    received = Received()
    back = links.make(RC_A)
    back.subscribe(topics.discovery_filter("zone-a"), received)  # before start: queued messages come at once
    await back.start()
    await received.wait_count(len(payloads))
    assert list(dict.fromkeys(received.payloads)) == payloads


async def test_outbox_survives_a_publisher_restart(links: Links, mosquitto_broker: MosquittoBroker) -> None:
    rc = await links.started(RC_A)
    received = Received()
    rc.subscribe(topics.discovery_filter("zone-a"), received)
    await asyncio.sleep(0.2)
    outbox = links.directory / "lc-outbox.sqlite3"
    lc = await links.started(LC_A1, outbox=outbox)

    mosquitto_broker.stop()
    await until(lambda: not lc.connected)
    payloads = [f"queued-{i}".encode() for i in range(10)]
    for payload in payloads:
        await lc.publish(topics.discovery("zone-a", LC_A1), payload)
    await lc.stop(timeout=1)  # the broker is down: nothing can be flushed
    with pytest.raises(MqttError, match="stopped"):
        await lc.publish(topics.discovery("zone-a", LC_A1), b"too late")

    again = links.make(LC_A1, outbox=outbox)
    assert again.pending() == 10
    mosquitto_broker.start()
    await again.start()
    assert await again.wait_connected(WAIT)
    await received.wait_count(10)
    assert list(dict.fromkeys(received.payloads)) == payloads
    assert await again.wait_until_flushed(WAIT)


# --------------------------------------------------------------------------------------------------
# ACL


async def test_acl_refuses_another_controllers_topic(links: Links) -> None:
    rc = await links.started(RC_A)
    received = Received()
    rc.subscribe(topics.discovery_filter("zone-a"), received)
    refused: list[tuple[str, str]] = []

    async def on_refused(topic: str, reason: str) -> None:
        refused.append((topic, reason))

    lc = await links.started(LC_A1, on_refused=on_refused)
    await asyncio.sleep(0.2)
    await lc.publish(topics.discovery("zone-a", LC_A2), b"forged")  # another LC's topic
    await lc.publish(topics.policy("zone-a"), b"forged policy")  # the RC's topic
    await lc.publish(topics.discovery("zone-a", LC_A1), b"genuine")  # its own
    await received.wait_count(1)
    assert await lc.wait_until_flushed(WAIT)
    await asyncio.sleep(0.2)

    assert received.items == [("pdsno/discovery/zone-a/local_cntl_zone-a_1", b"genuine")]
    assert refused == [
        ("pdsno/discovery/zone-a/local_cntl_zone-a_2", "Not authorized"),
        ("pdsno/policy/zone-a", "Not authorized"),
    ]
    assert lc.pending() == 0  # refused messages are dropped, never retried
    assert lc.connected


# --------------------------------------------------------------------------------------------------
# status: heartbeats, goodbye, last will, read with the real mosquitto_sub


def test_mosquitto_grants_a_subscription_the_acl_does_not_let_it_read(
    mosquitto_broker: MosquittoBroker,
) -> None:
    """What Mosquitto 2.0.11 really answers (broker.py's ACL header says so): SUBACK "Granted QoS 1", no
    0x87, also for a filter the user may not read; the ACL acts on delivery, which the tests above check."""
    account = mosquitto_broker.account(LC_A1)
    granted: dict[str, list[int]] = {}
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="suback-probe", protocol=paho.MQTTv5)
    client.username_pw_set(account.username, account.password)
    client.tls_set(ca_certs=str(mosquitto_broker.ca))
    filters = [topics.policy("zone-a"), topics.policy("zone-b"), "pdsno/#"]  # readable, not, both
    mids: dict[int, str] = {}

    def on_connect(*_: Any) -> None:
        mids.update({client.subscribe(f, qos=1)[1]: f for f in filters})

    def on_subscribe(_client: Any, _userdata: Any, mid: int, reasons: list[Any], _props: Any) -> None:
        granted[mids[mid]] = [reason.value for reason in reasons]

    client.on_connect, client.on_subscribe = on_connect, on_subscribe
    client.connect(mosquitto_broker.host, mosquitto_broker.port)
    client.loop_start()
    try:
        deadline = time.monotonic() + WAIT
        while len(granted) < len(filters) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        client.disconnect()
        client.loop_stop()
    assert granted == {f: [1] for f in filters}


async def test_mosquitto_sub_reads_retained_status(links: Links, mosquitto_broker: MosquittoBroker) -> None:
    lc = await links.started(LC_A1)
    await lc.publish(topics.status(LC_A1), b'{"heartbeat": 1}', qos=1, retain=True)
    assert await lc.wait_until_flushed(WAIT)
    got = await asyncio.to_thread(read_with_mosquitto_sub, mosquitto_broker, "pdsno/status/#", 1, 10)
    assert got == [b'{"heartbeat": 1}']

    # QoS 0 heartbeats (retained) land too
    await lc.publish(topics.status(LC_A1), b'{"heartbeat": 2}', qos=0, retain=True)
    async with asyncio.timeout(WAIT):
        while True:
            got = await asyncio.to_thread(
                read_with_mosquitto_sub, mosquitto_broker, topics.status(LC_A1), 1, 2
            )
            if got == [b'{"heartbeat": 2}']:
                break

    # a clean stop says goodbye
    await lc.stop()
    got = await asyncio.to_thread(read_with_mosquitto_sub, mosquitto_broker, topics.status(LC_A1), 1, 10)
    assert got == [OFFLINE]


async def test_on_connected_reannounces_after_a_broker_restart(
    links: Links, mosquitto_broker: MosquittoBroker
) -> None:
    """A broker restart publishes the wills of connected clients; on_connected puts the heartbeat back."""
    connects: list[bool] = []

    async def heartbeat(session_present: bool) -> None:
        connects.append(session_present)
        await lc.publish(topics.status(LC_A1), b"alive", qos=1, retain=True)

    lc = links.make(LC_A1, on_connected=heartbeat)
    await lc.start()
    assert await lc.wait_connected(WAIT)
    monitor = await links.started("monitor", status_topic=None)
    statuses = Received()
    monitor.subscribe(topics.status(LC_A1), statuses)
    await statuses.wait_for(lambda: statuses.payloads[-1:] == [b"alive"])

    mosquitto_broker.restart()
    seen = len(statuses.items)
    await statuses.wait_for(lambda: len(connects) == 2 and statuses.payloads[seen:][-1:] == [b"alive"])
    assert connects == [False, True]  # the second time the broker still had the session
    got = await asyncio.to_thread(read_with_mosquitto_sub, mosquitto_broker, topics.status(LC_A1), 1, 10)
    assert got == [b"alive"]


def test_mosquitto_sub_helper_reports_a_refused_login(mosquitto_broker: MosquittoBroker) -> None:
    from tests.runtime.mosquitto_server import MosquittoError

    with pytest.raises(MosquittoError, match="exit code"):
        read_with_mosquitto_sub(
            mosquitto_broker, "pdsno/#", 1, 2, username="monitor", password="wrong-password"
        )
    # an unanswered wait returns what arrived: nothing
    assert read_with_mosquitto_sub(mosquitto_broker, "pdsno/status/nobody", 1, 1) == []


async def test_last_will_marks_a_killed_controller_offline(
    mosquitto_broker: MosquittoBroker, tmp_path: Path
) -> None:
    """A controller process that dies without a goodbye: the broker publishes its will, retained."""
    account = mosquitto_broker.account(LC_B1)
    script = tmp_path / "controller.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import asyncio, sys
            from pathlib import Path
            from pdsno.transport.mqtt import MqttLink

            async def main():
                link = MqttLink(client_id={LC_B1!r}, host="127.0.0.1", port={mosquitto_broker.port},
                                username={LC_B1!r}, password={account.password!r},
                                ca_file=Path({str(mosquitto_broker.ca)!r}),
                                outbox_path=Path({str(tmp_path / "child.outbox")!r}),
                                status_topic="pdsno/status/{LC_B1}")
                await link.start()
                assert await link.wait_connected(10)
                await link.publish("pdsno/status/{LC_B1}", b"alive", qos=1, retain=True)
                assert await link.wait_until_flushed(10)
                print("ready", flush=True)
                await asyncio.sleep(60)

            asyncio.run(main())
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = await asyncio.create_subprocess_exec(
        sys.executable, str(script), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 20)
        if line.strip() != b"ready":
            assert child.stderr is not None
            pytest.fail(f"child controller failed: {(await child.stderr.read()).decode()}")
        got = await asyncio.to_thread(read_with_mosquitto_sub, mosquitto_broker, topics.status(LC_B1), 1, 5)
        assert got == [b"alive"]
    finally:
        if child.returncode is None:
            child.kill()  # SIGKILL: no goodbye, the socket just closes
        await asyncio.wait_for(child.wait(), 10)
    got = await asyncio.to_thread(read_with_mosquitto_sub, mosquitto_broker, topics.status(LC_B1), 1, 10)
    assert got == [OFFLINE]


# --------------------------------------------------------------------------------------------------
# broker as the unprivileged mosquitto user (how deployments run it)


@pytest.fixture
def world_traversable_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pdsno-mosq-", dir="/tmp"))
    path.chmod(0o711)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand the files to the mosquitto user")
async def test_broker_runs_as_the_mosquitto_user(
    mosquitto_factory: Callable[..., MosquittoBroker], world_traversable_dir: Path, tmp_path: Path
) -> None:
    try:
        mosquitto_user = pwd.getpwnam("mosquitto")
    except KeyError:
        pytest.skip("no mosquitto user")
    broker = mosquitto_factory(basedir=world_traversable_dir, run_as="mosquitto")
    assert broker.pid is not None
    assert _uid_of(broker.pid) == mosquitto_user.pw_uid
    assert broker.files.password_file.stat().st_uid == mosquitto_user.pw_uid

    made = Links(broker, tmp_path)
    try:
        lc = await made.started(LC_A1)
        await lc.publish(topics.discovery("zone-a", LC_A1), b"report", retain=True)
        assert await lc.wait_until_flushed(WAIT)
        broker.restart()  # the database is written and read back as the mosquitto user
        gc, gc_password = broker.credentials(GC)
        got = await asyncio.to_thread(
            read_with_mosquitto_sub, broker, topics.discovery("zone-a", LC_A1), 1, 10, gc, gc_password
        )
        assert got == [b"report"]
        assert (broker.files.persistence_dir / "mosquitto.db").stat().st_uid == mosquitto_user.pw_uid
        # a SIGHUP reload re-reads password file and ACL as the mosquitto user
        broker.add_account("local_cntl_zone-a_3", "local", "zone-a")
        assert (await made.started("local_cntl_zone-a_3")).connected
    finally:
        await made.close()
