"""Discovery: pure functions (walk, vendors, types, merging, planning), the SNMP probe against a
pysnmp-built agent on 127.0.0.1 (:mod:`tests.runtime.snmp_agents`), and the real probes against a tiny
namespace lab (:mod:`tests.runtime.probe_lab`, prefix ``pdsnot-``, 198.19.250.0/24). The SNMP package
itself (transport, v3 client, credentials) is tested in ``test_snmp_*.py``.

Every scan of the lab runs inside the lab's scanner namespace (``ip netns exec pdsnot-scan ...``); the lab
tests skip when not root or when ``ip``/``snmpd`` are missing.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Any

import pytest

from pdsno.discovery import scanner as scanner_mod
from pdsno.discovery.consolidate import collect_seen as _collect_seen
from pdsno.discovery.consolidate import consolidate, group_addresses, is_virtual_mac
from pdsno.discovery.netinfo import LocalAddress, parse_ip_addr, plan_targets
from pdsno.discovery.probes.arp import arp_request, parse_arp
from pdsno.discovery.probes.base import Observation, ObservationSink, ProbeStats, RttEstimator, TargetStream
from pdsno.discovery.probes.icmp import checksum, echo_request, parse_echo_reply
from pdsno.discovery.probes.snmp import SnmpProbe, collect
from pdsno.discovery.scanner import ScanTimeouts, parse_subnets, scan
from pdsno.discovery.vendors import (
    device_type_for,
    enterprise_number,
    firmware_for,
    type_from_services,
    vendor_for,
)
from pdsno.errors import PdsnoError
from pdsno.nib.models import DeviceType, device_id_for_mac
from pdsno.snmp import SnmpCredentials, SnmpPduError, Value
from tests.runtime import probe_lab
from tests.runtime.probe_lab import SECOND_COMMUNITY, V2C_COMMUNITY, V3_USER, ProbeLab
from tests.runtime.snmp_agents import COMMUNITY, FakeAgent, device_mib, loopback_agent

# ----------------------------------------------------------------------------------------- SNMP walk


async def test_collect_small_device_in_one_request() -> None:
    agent = FakeAgent(device_mib(2))
    facts = await collect(agent, first_max_repetitions=4)
    assert agent.requests == 1
    assert facts["sys_name"] == "core-1"
    assert facts["sys_object_id"] == "1.3.6.1.4.1.9.1.1208"
    assert facts["sys_uptime"] == 123_456
    assert facts["sys_services"] == 78
    assert facts["if_number"] == 2
    assert facts["ip_addresses"] == ["10.0.0.1", "10.0.1.1", "127.0.0.1"]
    assert facts["ip_if_index"] == {"10.0.0.1": 1, "10.0.1.1": 2, "127.0.0.1": 99}
    first, second = facts["interfaces"]
    assert first == {
        "if_index": 1,
        "name": "Gi0/1",
        "description": "GigabitEthernet0/1",
        "mac_address": "00:1b:54:00:00:01",
        "admin_up": True,
        "oper_up": True,
        "speed_bps": 10_000_000_000,  # ifHighSpeed wins over a saturated ifSpeed
    }
    assert second["oper_up"] is False
    assert second["speed_bps"] == 1_000_000_000


@pytest.mark.parametrize("truncate", [1000, 50, 7])
async def test_collect_walks_big_tables_and_truncated_answers(truncate: int) -> None:
    agent = FakeAgent(device_mib(60), max_varbinds=truncate)
    facts = await collect(agent, first_max_repetitions=4, max_requests=400)
    assert [i["if_index"] for i in facts["interfaces"]] == list(range(1, 61))
    assert facts["interfaces"][59]["name"] == "Gi0/60"
    assert facts["ip_addresses"] == ["10.0.0.1", "10.0.1.1", "127.0.0.1"]
    assert agent.requests > 1


async def test_collect_falls_back_to_ip_address_table() -> None:
    facts = await collect(FakeAgent(device_mib(2, ip_mib="new")))
    assert facts["ip_addresses"] == ["10.0.0.1", "10.0.1.1", "127.0.0.1"]
    assert facts["ip_if_index"]["10.0.1.1"] == 2


async def test_collect_tolerates_missing_objects_and_errors() -> None:
    mib = {(1, 3, 6, 1, 2, 1, 1, 5, 0): b"bare", (1, 3, 6, 1, 2, 1, 1, 9, 1): 5}
    facts = await collect(FakeAgent(mib))
    assert facts["sys_name"] == "bare"
    assert "sys_descr" not in facts  # getnext of sysDescr landed elsewhere: not taken as sysDescr
    assert facts["interfaces"] == []
    assert facts["ip_addresses"] == []

    class Failing(FakeAgent):
        async def bulk(self, *args: Any, **kwargs: Any) -> list[tuple[tuple[int, ...], Value]]:
            raise SnmpPduError(5)

    with pytest.raises(SnmpPduError):
        await collect(Failing({}))


async def test_collect_system_only_is_one_get() -> None:
    agent = FakeAgent(device_mib(60))
    facts = await collect(agent, tables=False)
    assert agent.requests == 1
    assert facts == {
        "sys_descr": "Cisco IOS Software, Version 15.2(4)M7",
        "sys_object_id": "1.3.6.1.4.1.9.1.1208",
        "sys_uptime": 123_456,
        "sys_name": "core-1",
        "sys_services": 78,
        "requests": 1,
    }  # no tables: neither interfaces nor addresses, not even empty ones
    assert await collect(FakeAgent({(1, 3, 6, 1, 2, 1, 1, 5, 0): b"bare"}), tables=False) == {
        "sys_name": "bare",
        "requests": 1,
    }  # noSuchObject for the others


# --------------------------------------------------------------------------- the SNMP probe on loopback


class _Sink:
    def __init__(self) -> None:
        self.seen: list[Observation] = []

    def emit(self, observation: Observation) -> None:
        self.seen.append(observation)


@pytest.mark.parametrize("tables", [True, False])
async def test_snmp_probe_end_to_end_on_loopback(tables: bool) -> None:
    endpoint, _agent, port = await loopback_agent(device_mib(2))
    try:
        probe = SnmpProbe(
            SnmpCredentials(("nope", COMMUNITY.decode())), port=port, timeout=0.3, tables=tables
        )
        sink = _Sink()
        stats = await probe.run(TargetStream([IPv4Address("127.0.0.1")], closed=True), sink)
        (obs,) = sink.seen
        assert obs.fields["reachable"] is True
        assert obs.fields["sys_name"] == "core-1"
        assert obs.fields["credential"] == "community #2"
        assert ("interfaces" in obs.fields) is tables
        assert stats.responders == 1
        assert stats.details["tables"] is tables
        assert stats.details["versions"] == {"v2c": 1}
    finally:
        endpoint.close()


# ----------------------------------------------------------------------------- vendors, type, firmware


@pytest.mark.parametrize(
    ("oid", "number", "vendor"),
    [
        ("1.3.6.1.4.1.9.1.1208", 9, "Cisco"),
        (".1.3.6.1.4.1.2636.1.1.1.2.31", 2636, "Juniper"),
        ("1.3.6.1.4.1.30065.1.3011", 30065, "Arista"),
        ("1.3.6.1.4.1.14988.1", 14988, "MikroTik"),
        ("1.3.6.1.4.1.8072.3.2.10", 8072, "Linux"),  # net-snmp names the OS; the agent is kept apart
        ("1.3.6.1.4.1.2011.2.23", 2011, "Huawei"),
        ("1.3.6.1.4.1.12356.101.1", 12356, "Fortinet"),
        ("1.3.6.1.4.1.25461.2.3", 25461, "Palo Alto Networks"),
        ("1.3.6.1.4.1.6527.1.3", 6527, "Nokia"),
        ("1.3.6.1.4.1.41112.1.4", 41112, "Ubiquiti"),
        ("1.3.6.1.4.1.311.1.1.3.1.2", 311, "Microsoft"),
        ("1.3.6.1.4.1.4526.100", 4526, "Netgear"),
        ("1.3.6.1.4.1.674.10895", 674, "Dell"),
        ("1.3.6.1.4.1.11.2.3.7.11", 11, "HP"),
        ("1.3.6.1.4.1.99999999.1", 99999999, None),
        ("1.3.6.1.2.1.1", None, None),
        ("garbage", None, None),
        (None, None, None),
    ],
)
def test_vendor_from_enterprise_number(oid: str | None, number: int | None, vendor: str | None) -> None:
    assert enterprise_number(oid) == number
    assert vendor_for(oid) == vendor


def test_vendor_falls_back_to_sysdescr() -> None:
    assert vendor_for("1.3.6.1.4.1.99999999.1", "Juniper Networks, Inc. mx480") == "Juniper"
    assert vendor_for(None, "some box") is None


@pytest.mark.parametrize(
    ("services", "descr", "kind"),
    [
        (2, None, DeviceType.SWITCH),
        (3, None, DeviceType.SWITCH),
        (6, None, DeviceType.ROUTER),
        (4, None, DeviceType.ROUTER),
        (78, None, DeviceType.ROUTER),
        (72, None, DeviceType.SERVER),
        (64, None, DeviceType.SERVER),
        (8, None, DeviceType.SERVER),
        (1, None, DeviceType.UNKNOWN),
        (None, None, DeviceType.UNKNOWN),
        (6, "Cisco IOS Software, Catalyst 4500 L3 Switch Software", DeviceType.SWITCH),
        (
            6,
            "Arista Networks EOS version 4.28.3M running on an Arista Networks DCS-7048T-A",
            DeviceType.SWITCH,
        ),
        (72, "HP LaserJet 4250", DeviceType.ENDPOINT),
        (72, "FortiGate-60E v6.4.9", DeviceType.FIREWALL),
        (None, "Juniper Networks, Inc. ex2200-24t-4g Ethernet Switch", DeviceType.SWITCH),
        (72, "Linux web-1 6.1.0 #1 SMP x86_64", DeviceType.SERVER),
    ],
)
def test_device_type(services: int | None, descr: str | None, kind: DeviceType) -> None:
    assert device_type_for(services, descr) == kind
    if descr is None:
        assert type_from_services(services) == kind


@pytest.mark.parametrize(
    ("descr", "version"),
    [
        ("Cisco IOS Software, C2900 Software (C2900-UNIVERSALK9-M), Version 15.2(4)M7, RELEASE", "15.2(4)M7"),
        (
            "Juniper Networks, Inc. ex2200-24t-4g Ethernet Switch, kernel JUNOS 12.3R6.6, Build date",
            "12.3R6.6",
        ),
        ("Arista Networks EOS version 4.28.3M running on an Arista Networks DCS-7048T-A", "4.28.3M"),
        ("Linux lab-multi 6.1.0-13-amd64 #1 SMP x86_64", "6.1.0-13-amd64"),
        ("RouterOS RB4011iGS+", None),
        ("FortiGate-60E v6.4.9,build1966", "6.4.9"),
        (None, None),
    ],
)
def test_firmware(descr: str | None, version: str | None) -> None:
    assert firmware_for(descr) == version


# -------------------------------------------------------------------------------------- consolidation


def _arp(ip: str, mac: str) -> Observation:
    return Observation(ip, "arp", mac=mac, rtt=0.001)


def _icmp(ip: str) -> Observation:
    return Observation(ip, "icmp", rtt=0.002, fields={"ttl": 64})


def _snmp(ip: str, name: str, ips: list[str], macs: list[str], **extra: Any) -> Observation:
    interfaces = [
        {
            "if_index": n + 1,
            "name": f"eth{n}",
            "mac_address": mac,
            "admin_up": True,
            "oper_up": True,
            "speed_bps": 10**9,
        }
        for n, mac in enumerate(macs)
    ]
    fields = {
        "reachable": True,
        "version": "v2c",
        "sys_name": name,
        "sys_descr": f"Linux {name} 6.1.0 #1 SMP",
        "sys_object_id": "1.3.6.1.4.1.8072.3.2.10",
        "sys_services": 72,
        "sys_uptime": 12_345,
        "ip_addresses": ips,
        "ip_if_index": dict.fromkeys(ips, 1),
        "interfaces": interfaces,
        **extra,
    }
    return Observation(ip, "snmp", fields=fields)


def test_merge_by_arp_mac_and_by_snmp_addresses() -> None:
    a, b = "02:00:00:00:00:0a", "02:00:00:00:00:0b"
    obs = [
        _arp("10.0.0.5", a),
        _arp("10.0.0.6", a),  # second address on the same NIC
        _arp("10.0.0.7", b),  # second NIC of the same box: SNMP says so
        _icmp("10.0.0.5"),
        _snmp("10.0.0.7", "box", ["10.0.0.5", "10.0.0.6", "10.0.0.7", "127.0.0.1", "172.16.0.1"], [a, b]),
        _snmp("10.0.0.5", "box", ["10.0.0.5", "10.0.0.6", "10.0.0.7"], [a, b]),
        _arp("10.0.0.9", "02:00:00:00:00:0c"),
        Observation("10.0.0.9", "snmp", fields={"reachable": False, "error": "no agent (port unreachable)"}),
        _icmp("10.9.9.9"),  # off-link, ICMP only
    ]
    result = consolidate(obs)
    assert [d.addresses for d in result.devices] == [
        ["10.0.0.5", "10.0.0.6", "10.0.0.7", "172.16.0.1"],
        ["10.0.0.9"],
        ["10.9.9.9"],
    ]
    box, bare, far = result.devices
    assert box.mac_address == a  # the MAC behind the primary address
    assert box.device_id == device_id_for_mac(a)
    assert box.ip_address == "10.0.0.5"
    assert box.hostname == "box"
    assert box.vendor == "Linux"
    assert box.snmp_info["agent"] == "net-snmp"
    assert box.device_type == DeviceType.SERVER
    assert box.uptime_seconds == 123
    assert box.discovery_method == "arp,icmp,snmp"
    assert box.protocol_caps == ["arp", "icmp", "snmpv2c"]
    assert box.snmp_info["snmp_reachable"] is True
    assert box.snmp_info["answered_on"] == ["10.0.0.5", "10.0.0.7"]
    assert [i.name for i in box.interfaces] == ["eth0", "eth1"]
    assert bare.snmp_info == {"snmp_reachable": False, "error": "no agent (port unreachable)"}
    assert bare.protocol_caps == ["arp"]
    assert far.mac_address == "unknown-10.9.9.9"
    assert far.device_type == DeviceType.UNKNOWN
    assert result.measurements[box.device_id]["icmp_rtt_ms"] == 2.0


def test_no_merge_on_disagreement_or_virtual_macs() -> None:
    vrrp = "00:00:5e:00:01:07"
    assert is_virtual_mac(vrrp)
    assert not is_virtual_mac("02:00:00:00:00:01")
    obs = [
        _arp("10.0.0.1", vrrp),  # VRRP virtual address, answered by the master
        _arp("10.0.0.2", "02:00:00:00:00:02"),
        _arp("10.0.0.3", "02:00:00:00:00:03"),
        # r2 claims 10.0.0.1 (the VIP) and 10.0.0.3, but 10.0.0.3 answers SNMP as another box
        _snmp("10.0.0.2", "r2", ["10.0.0.1", "10.0.0.2", "10.0.0.3"], ["02:00:00:00:00:02", vrrp]),
        _snmp("10.0.0.3", "r3", ["10.0.0.3"], ["02:00:00:00:00:03"]),
    ]
    groups = group_addresses(_collect_seen(obs))
    assert groups == [["10.0.0.1"], ["10.0.0.2"], ["10.0.0.3"]]
    names = [d.hostname for d in consolidate(obs).devices]
    assert names == [None, "r2", "r3"]


def test_off_link_snmp_device_keyed_by_its_interface_mac() -> None:
    mac = "00:1b:54:00:00:02"
    obs = [_icmp("10.8.0.2"), _snmp("10.8.0.2", "far", ["10.8.0.2"], ["00:1b:54:00:00:01", mac])]
    obs[1].fields["ip_if_index"]["10.8.0.2"] = 2
    (device,) = consolidate(obs).devices
    assert device.mac_address == mac


def test_two_groups_behind_one_mac_become_one_device() -> None:
    mac = "02:00:00:00:00:42"
    obs = [_icmp("10.8.0.2"), _snmp("10.8.0.2", "x", ["10.8.0.2"], [mac]), _arp("10.0.0.2", mac)]
    obs[1].fields["ip_if_index"].clear()
    (device,) = consolidate(obs).devices
    assert device.addresses == ["10.0.0.2", "10.8.0.2"]


# --------------------------------------------------------------------------------- planning, streams


def test_parse_ip_addr_and_plan_targets() -> None:
    data = [
        {"ifindex": 1, "ifname": "lo", "flags": ["LOOPBACK", "UP"], "link_type": "loopback",
         "address": "00:00:00:00:00:00", "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8}]},
        {"ifindex": 2, "ifname": "eth0", "flags": ["BROADCAST", "UP", "LOWER_UP"], "link_type": "ether",
         "address": "02:19:fa:00:00:0a", "addr_info": [
             {"family": "inet", "local": "198.19.250.10", "prefixlen": 28},
             {"family": "inet6", "local": "fe80::1", "prefixlen": 64}]},
        {"ifindex": 3, "ifname": "tun0", "flags": ["POINTOPOINT", "NOARP", "UP"], "link_type": "none",
         "addr_info": [{"family": "inet", "local": "10.9.0.1", "prefixlen": 24}]},
    ]  # fmt: skip
    local = parse_ip_addr(data)
    assert [(a.ifname, str(a.interface), a.arp_capable) for a in local] == [
        ("lo", "127.0.0.1/8", False),
        ("eth0", "198.19.250.10/28", True),
        ("tun0", "10.9.0.1/24", False),
    ]
    plan = plan_targets([IPv4Network("198.19.250.0/27"), IPv4Network("198.19.250.4/30")], local)
    (owner,) = plan.on_link
    assert owner.ifname == "eth0"
    on_link = [str(ip) for ip in plan.on_link[owner]]
    assert on_link == [f"198.19.250.{n}" for n in range(1, 15) if n != 10]  # not .0/.15 of the /28, not us
    assert plan.own == [IPv4Address("198.19.250.10")]
    assert [str(ip) for ip in plan.off_link] == [f"198.19.250.{n}" for n in range(16, 31)]
    assert plan.total == 13 + 15


def test_parse_subnets_limits() -> None:
    assert parse_subnets(["10.0.0.7/24"]) == [IPv4Network("10.0.0.0/24")]
    for bad in ([], ["nonsense"], ["2001:db8::/64"], ["10.0.0.0/15"], ["10.0.0.0/16", "10.1.0.0/24"]):
        with pytest.raises(PdsnoError):
            parse_subnets(bad)


async def test_target_stream_dedups_and_ends() -> None:
    stream = TargetStream([IPv4Address("10.0.0.1")])
    assert stream.put(IPv4Address("10.0.0.2"))
    assert not stream.put(IPv4Address("10.0.0.1"))
    seen: list[list[str]] = []

    async def consume() -> None:
        async for batch in stream.batches():
            seen.append([str(ip) for ip in batch])

    task = asyncio.create_task(consume())
    await asyncio.sleep(0)
    stream.put(IPv4Address("10.0.0.3"))
    stream.close()
    assert not stream.put(IPv4Address("10.0.0.4"))
    await asyncio.wait_for(task, 1)
    assert [ip for batch in seen for ip in batch] == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert stream.total == 3


def test_rtt_estimator_adapts_within_bounds() -> None:
    est = RttEstimator(0.25, 2.0)
    assert est.timeout() == 2.0
    for _ in range(20):
        est.sample(0.001)
    assert est.timeout() == 0.25
    est.sample(1.5)
    assert est.timeout() == 2.0


def test_packet_builders() -> None:
    frame = arp_request(b"\x02" * 6, bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    assert len(frame) == 42
    assert frame[:6] == b"\xff" * 6
    reply = b"\x02" * 6 + b"\x04" * 6 + b"\x08\x06" + frame[14:20] + b"\x00\x02" + b"\x04" * 6 + bytes([10, 0, 0, 2]) + b"\x02" * 6 + bytes([10, 0, 0, 1])  # fmt: skip
    assert parse_arp(reply) == (2, b"\x04" * 6, bytes([10, 0, 0, 2]), bytes([10, 0, 0, 1]))
    assert parse_arp(reply[:30]) is None
    echo = echo_request(0x1234, 7)
    assert checksum(echo) == 0
    answer = bytes([0]) + echo[1:]
    assert parse_echo_reply(answer, with_ip_header=False) == (0x1234, 7, None)
    assert parse_echo_reply(echo, with_ip_header=False) is None


# -------------------------------------------------------------- scanner orchestration (no packets sent)


class _FakeProbe:
    """Replaces a real probe: answers for ``alive`` addresses from its stream, or raises ``fail``."""

    def __init__(
        self, name: str, alive: dict[str, str | None], fail: Exception | None, log: list[str]
    ) -> None:
        self.name = name
        self.alive = alive
        self.fail = fail
        self.log = log

    async def run(self, targets: TargetStream, sink: ObservationSink) -> ProbeStats:
        stats = ProbeStats(self.name, started=time.monotonic())
        if self.fail is not None:
            raise self.fail
        async for batch in targets.batches():
            for ip in batch:
                stats.targets += 1
                self.log.append(f"{self.name}:{ip}")
                if str(ip) in self.alive:
                    if self.name == "snmp":
                        sink.emit(_snmp(str(ip), f"dev-{ip}", [str(ip)], []))
                    else:
                        sink.emit(Observation(str(ip), self.name, mac=self.alive[str(ip)], rtt=0.001))
                    stats.responders += 1
                await asyncio.sleep(0)
        stats.finished = time.monotonic()
        return stats


def _patch_probes(monkeypatch: pytest.MonkeyPatch, fails: dict[str, Exception], log: list[str]) -> None:
    answers = {
        "arp": {"10.1.0.2": "02:00:00:00:01:02", "10.1.0.3": "02:00:00:00:01:03"},
        "icmp": {"10.1.0.2": None, "10.2.0.9": None},
        "snmp": {"10.1.0.2": None, "10.2.0.9": None},
    }

    def factory(name: str) -> Any:
        return lambda *args, **kwargs: _FakeProbe(name, answers[name], fails.get(name), log)

    monkeypatch.setattr(scanner_mod, "ArpProbe", factory("arp"))
    monkeypatch.setattr(scanner_mod, "IcmpProbe", factory("icmp"))
    monkeypatch.setattr(scanner_mod, "SnmpProbe", factory("snmp"))


_LOCAL = [LocalAddress("eth0", 2, "02:00:00:00:01:01", IPv4Interface("10.1.0.1/29"), True)]


async def test_scan_streams_responders_downstream(monkeypatch: pytest.MonkeyPatch) -> None:
    log: list[str] = []
    _patch_probes(monkeypatch, {}, log)
    result = await scan(
        ["10.1.0.0/29", "10.2.0.8/30"], snmp_credentials=SnmpCredentials(("c",)), local=_LOCAL
    )
    assert not result.failures
    assert not result.cycle_failed
    # ICMP got what ARP resolved plus the off-link hosts, never the unresolved on-link ones
    icmp = {entry.split(":")[1] for entry in log if entry.startswith("icmp:")}
    assert icmp == {"10.1.0.2", "10.1.0.3", "10.2.0.9", "10.2.0.10"}
    snmp = {entry.split(":")[1] for entry in log if entry.startswith("snmp:")}
    assert snmp == {"10.1.0.2", "10.1.0.3", "10.2.0.9"}  # responders only
    assert [d.addresses for d in result.devices] == [["10.1.0.2"], ["10.1.0.3"], ["10.2.0.9"]]
    assert result.devices[2].mac_address == "unknown-10.2.0.9"
    assert result.targets == {"on_link": 5, "off_link": 2, "own_addresses_skipped": 1}


async def test_a_failing_protocol_does_not_fail_the_cycle(monkeypatch: pytest.MonkeyPatch) -> None:
    log: list[str] = []
    _patch_probes(monkeypatch, {"arp": PermissionError(1, "Operation not permitted")}, log)
    result = await scan(["10.1.0.0/29"], snmp_credentials=SnmpCredentials(("c",)), local=_LOCAL)
    (failure,) = result.failures
    assert (failure.protocol, failure.code) == ("arp", "SCAN_PROTOCOL_FAILED")
    assert "CAP_NET_RAW" in failure.reason
    assert not result.cycle_failed
    # the on-link hosts were pinged directly instead (small subnet), and SNMP still ran
    assert {e for e in log if e.startswith("icmp:")} == {f"icmp:10.1.0.{n}" for n in (2, 3, 4, 5, 6)}
    assert [d.hostname for d in result.devices] == ["dev-10.1.0.2"]

    log.clear()
    _patch_probes(monkeypatch, {p: RuntimeError(f"{p} broke") for p in ("arp", "icmp", "snmp")}, log)
    result = await scan(["10.1.0.0/29"], snmp_credentials=SnmpCredentials(("c",)), local=_LOCAL)
    assert sorted(f.protocol for f in result.failures) == ["arp", "icmp", "snmp"]
    assert result.cycle_failed
    assert result.devices == []


async def test_scan_hands_system_only_to_snmp(monkeypatch: pytest.MonkeyPatch) -> None:
    _patch_probes(monkeypatch, {}, [])
    made: list[dict[str, Any]] = []

    def snmp_probe(*args: Any, **kwargs: Any) -> _FakeProbe:
        made.append(kwargs)
        return _FakeProbe("snmp", {}, None, [])

    monkeypatch.setattr(scanner_mod, "SnmpProbe", snmp_probe)
    await scan(["10.1.0.0/29"], snmp_credentials=SnmpCredentials(("c",)), local=_LOCAL)
    await scan(["10.1.0.0/29"], snmp_credentials=SnmpCredentials(("c",)), local=_LOCAL, snmp_tables=False)
    assert [m["tables"] for m in made] == [True, False]


async def test_scan_rejects_bad_requests() -> None:
    with pytest.raises(PdsnoError, match="protocols"):
        await scan(["10.0.0.0/30"], protocols=["arp", "telnet"], local=_LOCAL)
    with pytest.raises(PdsnoError, match="SNMP"):
        await scan(["10.0.0.0/30"], protocols=["snmp"], local=_LOCAL)


# ------------------------------------------------------------------------------------- the real lab

RUNNER = textwrap.dedent(
    """
    import sys
    from pdsno.cli.main import cli, main
    from pdsno.cli.discover import discover
    if "discover" not in cli.commands:
        cli.add_command(discover)
    sys.argv[0] = "pdsno"
    main()
    """
)


@pytest.fixture(scope="module")
def lab() -> Iterator[ProbeLab]:
    reason = probe_lab.unavailable()
    if reason:
        pytest.skip(reason)
    lab = ProbeLab(probe_lab.default_devices())
    try:
        lab.up()
        yield lab
    finally:
        lab.down()
        assert probe_lab.lab_namespaces() == [], "lab namespaces left behind"
        routes = subprocess.run(["ip", "route", "show", "exact", lab.subnet], capture_output=True, text=True)
        assert routes.stdout.strip() == "", "black-hole route left behind"


def discover(lab: ProbeLab, *args: str, timeout: float = 60.0) -> tuple[int, dict[str, Any], str, float]:
    """``pdsno discover ARGS --json`` inside the scanner namespace: (exit code, JSON, stderr, seconds)."""
    started = time.monotonic()
    proc = lab.exec_in_scanner(
        sys.executable, "-c", RUNNER, "discover", "--subnet", lab.subnet, *args, "--json", timeout=timeout
    )
    elapsed = time.monotonic() - started
    data = json.loads(proc.stdout) if proc.stdout.strip() else {}
    return proc.returncode, data, proc.stderr, elapsed


def by_ip(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["ip_address"]: d for d in data["devices"]}


ALL_CREDENTIALS = (
    "--community", V2C_COMMUNITY,
    "--community", SECOND_COMMUNITY,
    "--snmpv3", f"{V3_USER.user}:{V3_USER.auth_key}:{V3_USER.priv_key}",
)  # fmt: skip


def test_lab_full_discovery(lab: ProbeLab) -> None:
    code, data, stderr, elapsed = discover(lab, *ALL_CREDENTIALS)
    assert code == 0, stderr
    assert data["failures"] == []
    assert stderr == ""  # no progress noise with --json
    devices = by_ip(data)
    assert set(devices) == {"198.19.250.21", "198.19.250.22", "198.19.250.23", "198.19.250.24",
                            "198.19.250.25", "198.19.250.26"}  # fmt: skip
    expected = {
        "198.19.250.21": ("lab-r1", "Cisco", "router", "v2c", "community #1", "15.2(4)M7"),
        "198.19.250.22": ("lab-sw2", "Juniper", "switch", "v2c", "community #2", "12.3R6.6"),
        "198.19.250.23": ("lab-v3", "Arista", "switch", "v3", f"user {V3_USER.user}", "4.28.3M"),
        "198.19.250.26": ("lab-multi", "Linux", "server", "v2c", "community #1", "6.1.0-pdsno"),
    }
    by_name = {d.name: d for d in probe_lab.default_devices()}
    for ip, (name, vendor, kind, version, credential, firmware) in expected.items():
        device = devices[ip]
        assert device["hostname"] == name
        assert device["vendor"] == vendor
        assert device["device_type"] == kind
        assert device["firmware_version"] == firmware
        assert device["status"] == "active"
        assert device["snmp_info"]["snmp_reachable"] is True
        assert device["snmp_info"]["version"] == version
        assert device["snmp_info"]["credential"] == credential
        assert device["uptime_seconds"] is not None
        assert f"snmp{version}" in device["protocol_caps"]
        assert {i["name"] for i in device["interfaces"]} >= {"lo", "eth0"}
    for lab_device in by_name.values():
        device = devices[lab_device.addresses[0]]
        assert device["mac_address"] == lab_device.macs[0]
        assert device["addresses"] == lab_device.addresses
    multi = devices["198.19.250.26"]
    assert multi["addresses"] == ["198.19.250.26", "198.19.250.27", "198.19.250.28"]
    assert {i["mac_address"] for i in multi["interfaces"]} >= set(by_name["multi"].macs)
    assert multi["snmp_info"]["answered_on"] == ["198.19.250.26", "198.19.250.27", "198.19.250.28"]
    assert devices["198.19.250.24"]["protocol_caps"] == ["arp", "icmp"]
    assert devices["198.19.250.24"]["snmp_info"]["snmp_reachable"] is False
    assert devices["198.19.250.25"]["protocol_caps"] == ["arp"]  # ignores echo requests
    assert devices["198.19.250.25"]["discovery_method"] == "arp"
    probes = data["probes"]
    assert probes["arp"]["responders"] == 8
    assert probes["icmp"]["responders"] == 7
    assert probes["snmp"]["versions"] == {"v2c": 5, "v3": 1}
    print(f"\nlab scan: pdsno discover {elapsed:.2f}s wall (scan {data['duration_s']:.2f}s)")
    assert data["duration_s"] < 5


def test_lab_system_only(lab: ProbeLab) -> None:
    code, data, stderr, elapsed = discover(lab, *ALL_CREDENTIALS, "--system-only")
    assert code == 0, stderr
    assert data["failures"] == []
    devices = by_ip(data)
    # without the address and interface tables only ARP merges: the multi-NIC device is two (one per MAC)
    assert len(devices) == 7
    assert devices["198.19.250.28"]["hostname"] == "lab-multi"
    expected = {
        "198.19.250.21": ("lab-r1", "Cisco", "router", "v2c", "15.2(4)M7"),
        "198.19.250.22": ("lab-sw2", "Juniper", "switch", "v2c", "12.3R6.6"),
        "198.19.250.23": ("lab-v3", "Arista", "switch", "v3", "4.28.3M"),
        "198.19.250.26": ("lab-multi", "Linux", "server", "v2c", "6.1.0-pdsno"),
    }
    for ip, (name, vendor, kind, version, firmware) in expected.items():
        device = devices[ip]
        assert (device["hostname"], device["vendor"], device["device_type"]) == (name, vendor, kind)
        assert device["firmware_version"] == firmware
        assert device["snmp_info"]["version"] == version
        assert device["uptime_seconds"] is not None
        assert device["interfaces"] == []
        assert device["snmp_info"]["if_number"] is None  # a system-group GET, no GETBULK
    assert devices["198.19.250.26"]["addresses"] == ["198.19.250.26", "198.19.250.27"]  # one MAC
    probes = data["probes"]
    assert probes["snmp"]["tables"] is False
    assert probes["snmp"]["versions"] == {"v2c": 5, "v3": 1}
    print(f"\nlab scan, system only: pdsno discover {elapsed:.2f}s wall (scan {data['duration_s']:.2f}s)")


def test_lab_snmpv3_needs_the_right_credentials(lab: ProbeLab) -> None:
    code, data, stderr, _ = discover(lab, "--snmpv3", f"{V3_USER.user}:wrong-auth-pass:{V3_USER.priv_key}")
    assert code == 1 and "SNMP_NO_ANSWER 198.19.250.23: no SNMP answer with v3 user" in stderr, stderr
    v3 = by_ip(data)["198.19.250.23"]
    assert v3["hostname"] is None
    assert v3["snmp_info"]["snmp_reachable"] is False
    assert "auth-failed" in v3["snmp_info"]["error"]
    code, data, stderr, _ = discover(lab, "--snmpv3", f"nobody:{V3_USER.auth_key}:{V3_USER.priv_key}")
    assert code == 1 and "pdsno: SNMP_NO_ANSWER" in stderr, stderr
    assert by_ip(data)["198.19.250.23"]["snmp_info"]["snmp_reachable"] is False
    code, data, stderr, _ = discover(lab, "--snmpv3", f"{V3_USER.user}:{V3_USER.auth_key}:{V3_USER.priv_key}")
    assert by_ip(data)["198.19.250.23"]["hostname"] == "lab-v3"


def test_lab_wrong_community_only_names_each_silent_agent_and_fails(lab: ProbeLab) -> None:
    code, data, stderr, _ = discover(lab, "--community", "not-the-community")
    assert code == 1, stderr
    assert "not-the-community" not in stderr, "a credential is never printed"
    warned = [
        line.split()[3].rstrip(":")
        for line in stderr.splitlines()
        if line.startswith("pdsno: warning: SNMP_NO_ANSWER")
    ]
    assert warned == list(data["snmp_unanswered"]) and "198.19.250.21" in warned, stderr
    assert "198.19.250.24" not in warned, (
        "no agent there (port unreachable): nothing to blame the community for"
    )
    assert "no SNMP answer with community #1 (timeout)" in stderr
    assert (
        stderr.strip()
        .splitlines()[-1]
        .startswith("pdsno: SNMP_NO_ANSWER: no SNMP agent answered with community #1")
    )
    devices = by_ip(data)
    assert len(devices) == 7  # without SNMP the multi-NIC device is two (one per MAC)
    assert all(d["hostname"] is None for d in devices.values())
    assert devices["198.19.250.21"]["snmp_info"] == {"snmp_reachable": False, "error": "timeout"}
    assert devices["198.19.250.24"]["snmp_info"]["error"] == "no agent (port unreachable)"


def test_lab_no_snmp_still_finds_everyone(lab: ProbeLab) -> None:
    code, data, stderr, _ = discover(lab, "--no-snmp")
    assert code == 0, stderr
    assert "snmp" not in data["probes"]
    addresses = sorted(ip for d in data["devices"] for ip in d["addresses"])
    assert addresses == sorted(ip for d in probe_lab.default_devices() for ip in d.addresses)
    for device in data["devices"]:
        assert device["snmp_info"] == {}
        assert "snmp" not in device["discovery_method"]
        assert device["mac_address"] != "unknown"


def test_lab_table_output_and_user_errors(lab: ProbeLab) -> None:
    proc = lab.exec_in_scanner(
        sys.executable, "-c", RUNNER, "discover", "--subnet", lab.subnet, "--community", V2C_COMMUNITY
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["IP(S)", "MAC", "SYSNAME", "VENDOR", "TYPE", "FOUND", "BY"]
    assert any("lab-r1" in line and "Cisco" in line and "router" in line for line in lines)
    assert "6 devices" in proc.stderr
    proc = lab.exec_in_scanner(sys.executable, "-c", RUNNER, "discover", "--subnet", "not-a-subnet")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == ["pdsno: INVALID_REQUEST: not a subnet: 'not-a-subnet'"]


def test_lab_protocol_failures(lab: ProbeLab) -> None:
    # ARP broken (injected): reported, the others go on; ICMP falls back to the on-link hosts directly
    script = textwrap.dedent(
        f"""
        import asyncio, json
        from pdsno.discovery import scan, SnmpCredentials
        from pdsno.discovery.probes.arp import ArpProbe
        async def broken(self, targets, sink):
            raise OSError("injected ARP failure")
        ArpProbe.run = broken
        result = asyncio.run(scan(["{lab.subnet}"], snmp_credentials=SnmpCredentials(("{V2C_COMMUNITY}",))))
        print(json.dumps(result.as_dict()))
        """
    )
    proc = lab.exec_in_scanner(sys.executable, "-c", script)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["failures"] == [
        {"protocol": "arp", "code": "SCAN_PROTOCOL_FAILED", "reason": "injected ARP failure"}
    ]
    devices = by_ip(data)
    assert devices["198.19.250.21"]["hostname"] == "lab-r1"
    assert "198.19.250.25" not in devices  # ARP-only device: invisible without ARP
    assert devices["198.19.250.24"]["mac_address"] == "unknown-198.19.250.24"  # only ICMP answered
    # no CAP_NET_RAW: ARP and ICMP fail; with nothing seen SNMP has nobody to ask: the cycle failed
    proc = lab.exec_in_scanner(
        "setpriv", "--inh-caps=-all", "--bounding-set=-net_raw", sys.executable, "-c", RUNNER, "discover",
        "--subnet", lab.subnet, "--no-snmp",
    )  # fmt: skip
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("pdsno: ") and "every discovery protocol failed" in last
    assert "SCAN_PROTOCOL_FAILED arp" in proc.stderr


def test_lab_timeouts_are_bounded(lab: ProbeLab) -> None:
    """Nothing answers in an empty part of the subnet: the scan still ends within its timeouts."""
    proc = lab.exec_in_scanner(
        sys.executable,
        "-c",
        RUNNER,
        "discover",
        "--subnet",
        "198.19.250.192/26",
        "--timeout",
        "0.5",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["devices"] == []
    assert data["duration_s"] < 0.5 * 2 + 1.0  # ARP wait + one resend + wait, no responders


def test_timeouts_uniform() -> None:
    t = ScanTimeouts.uniform(0.5)
    assert (t.arp, t.icmp, t.snmp) == (0.5, 0.5, 0.5)
