"""Where the scanner stands: this host's IPv4 addresses and which targets are on-link (ARP-able) from it.

Read from ``ip -json addr show`` (iproute2), in whatever network namespace the scanner runs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from pdsno.errors import PdsnoError


@dataclass(frozen=True)
class LocalAddress:
    ifname: str
    ifindex: int
    mac: str | None
    interface: IPv4Interface
    arp_capable: bool
    """An Ethernet-like interface that is up and does ARP (not loopback, not NOARP, not point-to-point)."""

    @property
    def network(self) -> IPv4Network:
        return self.interface.network


def _ip_json(*args: str) -> list[dict[str, object]]:
    ip = shutil.which("ip") or shutil.which("ip", path="/usr/sbin:/sbin:/usr/bin:/bin")
    if ip is None:
        raise PdsnoError("iproute2 'ip' not found: cannot read this host's addresses")
    out = subprocess.run([ip, "-json", *args], capture_output=True, text=True, timeout=10, check=True)
    data = json.loads(out.stdout or "[]")
    if not isinstance(data, list):
        raise PdsnoError(f"unexpected output of 'ip -json {' '.join(args)}'")
    return data


def parse_ip_neigh(data: Iterable[dict[str, object]]) -> set[IPv4Address]:
    """``ip -json neigh show`` output → the IPv4 neighbours with a link-layer address (not FAILED)."""
    found: set[IPv4Address] = set()
    for entry in data:
        state = entry.get("state") or []
        if not entry.get("lladdr") or (isinstance(state, list) and "FAILED" in state):
            continue
        try:
            found.add(IPv4Address(str(entry.get("dst"))))
        except ValueError:
            continue
    return found


def neighbours(ifname: str) -> set[IPv4Address]:
    """The hosts the kernel's neighbour table knows on ``ifname``: ones this host talked to lately."""
    return parse_ip_neigh(_ip_json("-4", "neigh", "show", "dev", ifname))


def parse_ip_addr(data: Iterable[dict[str, object]]) -> list[LocalAddress]:
    """``ip -json addr show`` output → every IPv4 address with its interface facts."""
    result = []
    for link in data:
        flags = link.get("flags") or []
        assert isinstance(flags, list)
        up = "UP" in flags
        arp = (
            up
            and link.get("link_type") == "ether"
            and not {"NOARP", "LOOPBACK", "POINTOPOINT"} & set(flags)
            and isinstance(link.get("address"), str)
        )
        mac = link.get("address") if isinstance(link.get("address"), str) else None
        addr_info = link.get("addr_info") or []
        assert isinstance(addr_info, list)
        for info in addr_info:
            if not isinstance(info, dict) or info.get("family") != "inet":
                continue
            result.append(
                LocalAddress(
                    ifname=str(link.get("ifname")),
                    ifindex=int(str(link.get("ifindex", 0))),
                    mac=str(mac) if mac else None,
                    interface=IPv4Interface(f"{info['local']}/{info['prefixlen']}"),
                    arp_capable=bool(arp),
                )
            )
    return result


def local_addresses() -> list[LocalAddress]:
    return parse_ip_addr(_ip_json("addr", "show"))


@dataclass
class TargetPlan:
    """The host addresses of the requested subnets, split by how they can be reached."""

    on_link: dict[LocalAddress, list[IPv4Address]] = field(default_factory=dict)
    """ARP-able targets per local address (interface + source address) whose connected subnet holds them."""
    off_link: list[IPv4Address] = field(default_factory=list)
    own: list[IPv4Address] = field(default_factory=list)
    """This host's own addresses inside the requested subnets (not scanned)."""

    @property
    def total(self) -> int:
        return sum(len(v) for v in self.on_link.values()) + len(self.off_link)


def host_addresses(net: IPv4Network) -> Iterable[IPv4Address]:
    """Usable host addresses: all of a /31 or /32, otherwise without network and broadcast address."""
    if net.prefixlen >= 31:
        return iter(net)
    return net.hosts()


def plan_targets(subnets: Sequence[IPv4Network], local: Sequence[LocalAddress]) -> TargetPlan:
    """Split the hosts of ``subnets`` into on-link (per ARP-capable interface) and off-link addresses.

    An address is on-link when an ARP-capable interface has an address whose connected network holds it
    (the first such interface wins, as the kernel's connected route would); the network and broadcast
    addresses of that connected network are never targets, nor are this host's own addresses.
    """
    own = {a.interface.ip for a in local}
    arp_nets = [a for a in local if a.arp_capable and a.network.prefixlen < 32]
    plan = TargetPlan()
    seen: set[IPv4Address] = set()
    for subnet in subnets:
        for ip in host_addresses(subnet):
            if ip in seen:
                continue
            seen.add(ip)
            if ip in own:
                plan.own.append(ip)
                continue
            owner = next((a for a in arp_nets if ip in a.network), None)
            if owner is None:
                plan.off_link.append(ip)
            elif owner.network.prefixlen < 31 and ip in (
                owner.network.network_address,
                owner.network.broadcast_address,
            ):
                continue
            else:
                plan.on_link.setdefault(owner, []).append(ip)
    return plan
