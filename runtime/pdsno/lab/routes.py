"""The lab's black-hole route in the root namespace: installed before anything of the lab exists and
removed last, so nothing addressed to the lab block can leave through the machine's interfaces. Its
metric is derived from the prefix, so labs with other prefixes keep their own route."""

from __future__ import annotations

import json
import zlib
from ipaddress import IPv4Address, IPv4Network

from pdsno.lab import services
from pdsno.lab.errors import LabError
from pdsno.lab.system import run


def route_metric(prefix: str) -> int:
    """The metric of this prefix's black-hole route: it tells our route from another lab's."""
    return 0x7D000000 + (zlib.crc32(prefix.encode()) & 0xFFFFF)


def route_present(metric: int) -> bool:
    return bool(_our_routes(metric))


def _our_routes(metric: int) -> list[str]:
    done = run([services.tool("ip"), "-j", "-4", "route", "show", "type", "blackhole"], check=False)
    try:
        routes = json.loads(done.stdout or "[]")
    except json.JSONDecodeError:
        return []
    return [r["dst"] for r in routes if r.get("metric") == metric]


def install_route(block: IPv4Network, metric: int) -> None:
    """Refuse if the root namespace already holds an address or a real route inside the block; then
    black-hole the block."""
    ip = services.tool("ip")
    addrs = json.loads(run([ip, "-j", "-4", "addr", "show"]).stdout or "[]")
    for link in addrs:
        for info in link.get("addr_info", []):
            if IPv4Address(info["local"]) in block:
                raise LabError(
                    f"the root namespace holds {info['local']} ({link['ifname']}), inside the lab block {block}; "
                    "choose another prefix in the topology"
                )
    routes = json.loads(run([ip, "-j", "-4", "route", "show", "table", "all"]).stdout or "[]")
    for route in routes:
        dst = route.get("dst", "default")
        if dst == "default" or route.get("type") in ("blackhole", "unreachable", "prohibit"):
            continue
        if IPv4Network(dst, strict=False).overlaps(block):
            raise LabError(
                f"the root namespace routes {dst} (inside the lab block {block}); choose another prefix"
            )
    if str(block) not in _our_routes(metric):
        run([ip, "route", "add", "blackhole", str(block), "metric", str(metric)])


def remove_routes(metric: int) -> list[str]:
    """Delete every black-hole route with this metric; returns their destinations."""
    routes = _our_routes(metric)
    for dst in routes:
        run([services.tool("ip"), "route", "del", "blackhole", dst, "metric", str(metric)])
    return routes
