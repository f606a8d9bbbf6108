"""Observations → one :class:`~pdsno.nib.models.Device` per device, keyed by MAC address.

Grouping works on the addresses that answered (ARP, ICMP or SNMP):

* addresses that ARP resolved to the same MAC are one device;
* an SNMP agent that lists another answering address among its own (``ipAdEntAddr``/``ipAddressTable``),
  or lists the MAC that address answered ARP with among its ``ifPhysAddress`` values, is the same device
  as that address, unless that address's own SNMP answer disagrees (lists neither);
* first-hop redundancy MACs (VRRP, HSRP, GLBP) never merge anything: they move between routers.

Each device's primary address is its lowest answering address that SNMP answered on (else its lowest
answering address); its key MAC is the MAC behind that primary address (from ARP, else from the agent's
own interface table), else its lowest MAC, else ``unknown-<primary ip>`` (only ICMP answered, off-link).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from ipaddress import IPv4Address
from typing import Any

from pdsno.discovery.probes.base import Observation
from pdsno.discovery.vendors import (
    agent_for,
    device_type_for,
    enterprise_number,
    firmware_for,
    oui_vendor,
    vendor_for,
)
from pdsno.nib.models import Device, DeviceStatus, DeviceType, Interface, normalise_mac

PROTOCOL_ORDER = ("arp", "icmp", "snmp")

_VIRTUAL_MAC = re.compile(
    r"^(00:00:5e:00:0[12]:"  # VRRP (IPv4, IPv6)
    r"|00:00:0c:07:ac:"  # HSRPv1
    r"|00:00:0c:9f:f"  # HSRPv2
    r"|00:07:b4:0)"  # GLBP
)


def is_virtual_mac(mac: str) -> bool:
    return bool(_VIRTUAL_MAC.match(mac))


def _usable_mac(mac: str | None) -> bool:
    if not mac or mac.startswith("unknown-"):
        return False
    first = int(mac[:2], 16)
    return not first & 0x01 and mac != "00:00:00:00:00:00"


@dataclass
class _Seen:
    """Everything observed for one answering address."""

    ip: str
    arp_mac: str | None = None
    arp_rtt: float | None = None
    icmp_rtt: float | None = None
    ttl: int | None = None
    snmp: Mapping[str, Any] | None = None
    protocols: set[str] = field(default_factory=set)

    @property
    def snmp_ok(self) -> bool:
        return bool(self.snmp and self.snmp.get("reachable"))

    @property
    def answered(self) -> bool:
        return bool(self.protocols - {"snmp"}) or self.snmp_ok

    def claimed_ips(self) -> set[str]:
        return set(self.snmp.get("ip_addresses", [])) if self.snmp_ok and self.snmp else set()

    def claimed_macs(self) -> set[str]:
        if not self.snmp_ok or not self.snmp:
            return set()
        return {
            i["mac_address"] for i in self.snmp.get("interfaces", []) if _usable_mac(i.get("mac_address"))
        }


class _UnionFind:
    def __init__(self, items: Iterable[str]) -> None:
        self.parent = {item: item for item in items}

    def find(self, item: str) -> str:
        root = item
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[item] != root:
            self.parent[item], item = root, self.parent[item]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb, key=IPv4Address)] = min(ra, rb, key=IPv4Address)


def collect_seen(observations: Iterable[Observation]) -> dict[str, _Seen]:
    seen: dict[str, _Seen] = {}
    for obs in observations:
        entry = seen.setdefault(obs.ip, _Seen(obs.ip))
        if obs.protocol == "arp":
            if entry.arp_mac is None and obs.mac:
                entry.arp_mac = normalise_mac(obs.mac)
                entry.arp_rtt = obs.rtt
            entry.protocols.add("arp")
        elif obs.protocol == "icmp":
            if entry.icmp_rtt is None:
                entry.icmp_rtt = obs.rtt
                ttl = obs.fields.get("ttl")
                entry.ttl = ttl if isinstance(ttl, int) else None
            entry.protocols.add("icmp")
        elif obs.protocol == "snmp":
            if entry.snmp is None or (obs.fields.get("reachable") and not entry.snmp_ok):
                entry.snmp = obs.fields
            entry.protocols.add("snmp")
        else:
            entry.protocols.add(obs.protocol)
    return seen


def group_addresses(seen: Mapping[str, _Seen]) -> list[list[str]]:
    """Answering addresses grouped into devices (each group sorted, groups by their first address)."""
    answering = sorted((ip for ip, s in seen.items() if s.answered), key=IPv4Address)
    uf = _UnionFind(answering)
    by_mac: dict[str, list[str]] = {}
    for ip in answering:
        mac = seen[ip].arp_mac
        if mac and _usable_mac(mac) and not is_virtual_mac(mac):
            by_mac.setdefault(mac, []).append(ip)
    for same_mac in by_mac.values():
        for other in same_mac[1:]:
            uf.union(same_mac[0], other)

    def agrees(x: _Seen, y: _Seen) -> bool:
        """y's own SNMP answer (if any) does not contradict belonging with x."""
        if not y.snmp_ok:
            return True
        return x.ip in y.claimed_ips() or bool(x.arp_mac and x.arp_mac in y.claimed_macs())

    for ip in answering:
        x = seen[ip]
        if not x.snmp_ok:
            continue
        ips, macs = x.claimed_ips(), x.claimed_macs()
        candidates = {y for y in ips if y in uf.parent}
        candidates |= {mac_ip for mac in macs for mac_ip in by_mac.get(mac, [])}
        for other in candidates - {ip}:
            y = seen[other]
            if y.arp_mac and is_virtual_mac(y.arp_mac):
                continue
            if agrees(x, y):
                uf.union(ip, other)
    groups: dict[str, list[str]] = {}
    for ip in answering:
        groups.setdefault(uf.find(ip), []).append(ip)
    return sorted(groups.values(), key=lambda g: IPv4Address(g[0]))


def _interfaces(raw: Sequence[Mapping[str, Any]]) -> list[Interface]:
    result = []
    for entry in raw:
        mac = entry.get("mac_address")
        speed = entry.get("speed_bps")
        result.append(
            Interface(
                if_index=int(entry["if_index"]),
                name=str(entry.get("name") or ""),
                mac_address=normalise_mac(str(mac)) if _usable_mac(mac) else None,
                admin_up=entry.get("admin_up"),
                oper_up=entry.get("oper_up"),
                speed_bps=speed if isinstance(speed, int) and speed >= 0 else None,
            )
        )
    return result


def _key_mac(primary: _Seen, members: Sequence[_Seen], snmp: Mapping[str, Any] | None) -> str:
    if primary.arp_mac and _usable_mac(primary.arp_mac):
        return primary.arp_mac
    interfaces = list(snmp.get("interfaces", [])) if snmp else []
    if snmp:
        if_index = snmp.get("ip_if_index", {}).get(primary.ip)
        for entry in interfaces:
            if entry.get("if_index") == if_index and _usable_mac(entry.get("mac_address")):
                return normalise_mac(str(entry["mac_address"]))
    arp_macs = sorted(m.arp_mac for m in members if m.arp_mac and _usable_mac(m.arp_mac))
    if arp_macs:
        return arp_macs[0]
    if_macs = sorted(
        normalise_mac(str(e["mac_address"]))
        for e in interfaces
        if _usable_mac(e.get("mac_address")) and not is_virtual_mac(str(e["mac_address"]))
    )
    if if_macs:
        return if_macs[0]
    return f"unknown-{primary.ip}"


def _primary(members: Sequence[_Seen]) -> _Seen:
    """The lowest answering address SNMP answered on, else the lowest answering address."""
    with_snmp = [m for m in members if m.snmp_ok]
    return with_snmp[0] if with_snmp else members[0]


def _own_address(ip: str) -> bool:
    address = IPv4Address(ip)
    return not (
        address.is_loopback or address.is_unspecified or address.is_link_local or address.is_multicast
    )


@dataclass
class Consolidated:
    devices: list[Device]
    measurements: dict[str, dict[str, Any]]
    """Per device id: RTTs and TTL (what ICMP/ARP measured), and which addresses answered what."""


def consolidate(
    observations: Iterable[Observation],
    *,
    now: datetime | None = None,
    snmp_probed: bool = True,
) -> Consolidated:
    """One Device per device; ``snmp_probed`` says whether SNMP ran at all (else ``snmp_info`` stays empty)."""
    seen = collect_seen(observations)
    stamp = now or datetime.now(UTC)
    devices: list[Device] = []
    measurements: dict[str, dict[str, Any]] = {}
    keyed: dict[str, list[str]] = {}
    for group in group_addresses(seen):
        members = [seen[ip] for ip in group]
        primary = _primary(members)
        key = _key_mac(primary, members, primary.snmp if primary.snmp_ok else None)
        keyed.setdefault(key, []).extend(group)  # two groups behind one MAC are one device after all
    for mac, group in sorted(keyed.items(), key=lambda item: min(IPv4Address(ip) for ip in item[1])):
        members = [seen[ip] for ip in sorted(group, key=IPv4Address)]
        with_snmp = [m for m in members if m.snmp_ok]
        primary = _primary(members)
        snmp = primary.snmp if primary.snmp_ok else None
        protocols = set().union(*(m.protocols for m in members))
        if not with_snmp:
            protocols.discard("snmp")
        addresses = set(group)
        for member in with_snmp:
            addresses |= {ip for ip in member.claimed_ips() if _own_address(ip)}
        ordered = sorted(addresses, key=IPv4Address)
        caps = [p for p in PROTOCOL_ORDER if p in protocols and p != "snmp"]
        caps += sorted(p for p in protocols if p not in PROTOCOL_ORDER)
        snmp_info: dict[str, Any] = {}
        device_type, vendor, firmware, hostname, uptime = DeviceType.UNKNOWN, None, None, None, None
        interfaces: list[Interface] = []
        if snmp:
            version = str(snmp.get("version", "v2c"))
            caps.append(f"snmp{version}")
            descr, oid, services = snmp.get("sys_descr"), snmp.get("sys_object_id"), snmp.get("sys_services")
            ticks = snmp.get("sys_uptime")
            snmp_info = {
                "snmp_reachable": True,
                "version": version,
                "credential": snmp.get("credential"),
                "sys_descr": descr,
                "sys_object_id": oid,
                "sys_uptime_ticks": ticks,
                "sys_name": snmp.get("sys_name"),
                "sys_services": services,
                "if_number": snmp.get("if_number"),
                "enterprise": enterprise_number(oid),
                "agent": agent_for(oid),
                "answered_on": [m.ip for m in with_snmp],
            }
            vendor = vendor_for(oid, descr)
            device_type = device_type_for(services, descr, oid)
            firmware = firmware_for(descr)
            hostname = snmp.get("sys_name") or None
            uptime = ticks // 100 if isinstance(ticks, int) and ticks >= 0 else None
            interfaces = _interfaces(snmp.get("interfaces", []))
        else:
            # no SNMP: the maker of its network card, when the IEEE registry is installed
            vendor = oui_vendor(mac)
            if snmp_probed:
                failed = next((m.snmp for m in members if m.snmp is not None), None)
                snmp_info = {"snmp_reachable": False}
                if failed is not None and failed.get("error"):
                    snmp_info["error"] = failed["error"]
        device = Device(
            mac_address=mac,
            ip_address=primary.ip,
            addresses=ordered,
            hostname=hostname,
            vendor=vendor,
            device_type=device_type,
            firmware_version=firmware,
            status=DeviceStatus.ACTIVE,
            discovery_method=",".join(p for p in PROTOCOL_ORDER if p in protocols),
            first_seen=stamp,
            last_seen=stamp,
            uptime_seconds=uptime,
            snmp_info=snmp_info,
            protocol_caps=caps,
            interfaces=interfaces,
        )
        devices.append(device)
        measurements[device.device_id] = {
            "answered": {
                m.ip: sorted(m.protocols & {"arp", "icmp"} | ({"snmp"} if m.snmp_ok else set()))
                for m in members
            },
            "arp_rtt_ms": _ms(min((m.arp_rtt for m in members if m.arp_rtt is not None), default=None)),
            "icmp_rtt_ms": _ms(min((m.icmp_rtt for m in members if m.icmp_rtt is not None), default=None)),
            "ttl": primary.ttl,
        }
    return Consolidated(devices, measurements)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)
