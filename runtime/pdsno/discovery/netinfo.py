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


def plan_targets(subnets: Sequence[IPv4Network], local: Sequence[LocalAddress]) -> TargetPlan:
    """Split the hosts of ``subnets`` into on-link (per ARP-capable interface) and off-link addresses.

    An address is on-link when an ARP-capable interface has an address whose connected network holds it
    (the first such interface wins, as the kernel's connected route would); the network and broadcast
    addresses of that connected network are never targets, nor are this host's own addresses.
    """
    own = {int(a.interface.ip) for a in local}
    # integers, not IPv4Address comparisons: planning a /16 took 0.4 s, all before the first frame
    arp_nets = [
        (int(a.network.network_address), int(a.network.broadcast_address), a.network.prefixlen < 31, a)
        for a in local
        if a.arp_capable and a.network.prefixlen < 32
    ]
    plan = TargetPlan()
    on_link: dict[int, list[IPv4Address]] = {}
    seen: set[int] = set()
    for subnet in subnets:
        first, last = int(subnet.network_address), int(subnet.broadcast_address)
        if subnet.prefixlen < 31:
            first, last = first + 1, last - 1
        for n in range(first, last + 1):
            if n in seen:
                continue
            seen.add(n)
            if n in own:
                plan.own.append(IPv4Address(n))
                continue
            for index, (low, high, edges, _owner) in enumerate(arp_nets):
                if low <= n <= high:
                    if not (edges and n in (low, high)):
                        on_link.setdefault(index, []).append(IPv4Address(n))
                    break
            else:
                plan.off_link.append(IPv4Address(n))
    plan.on_link = {arp_nets[index][3]: ips for index, ips in on_link.items()}
    return plan
