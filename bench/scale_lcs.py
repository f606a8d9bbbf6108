"""A load process of ``bench/scale.py``: many local controllers in one process, on one synthetic network.

Two cores cannot run a hundred ``pdsno controller run`` processes beside a GC, ten RCs, Mosquitto and
PostgreSQL, so a load process runs fifty real :class:`~pdsno.controller.node.ControllerNode` objects
of role ``local`` on one asyncio loop (two such processes hold the hundred LCs: an LC keeps about 14 file
descriptors open, and paho-mqtt's network loop uses ``select()``, which cannot watch a descriptor above
1023). Each is what ``pdsno controller run`` would start from its own
configuration: its own identity key, bootstrap file, admission by its RC (token, challenge, certificate),
SQLite NIB, REST server, MQTT account and outbox, heartbeats, policy follower and discovery duty. Only
the scanner is replaced (:func:`install`): :class:`SyntheticNetwork` answers for each LC's subnet with the
devices of the current generation, so every cycle runs the runtime's own delta, NIB write, report
chunking, signing and MQTT delivery until the RC acknowledges each chunk.

The first scan of every LC waits for the bench's ``go``: all LCs then start their cycle together.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network
from multiprocessing.connection import Connection
from typing import Any

from pdsno.canonical import utcnow
from pdsno.config.loader import parse_config
from pdsno.controller import discovery_duty
from pdsno.controller.node import ControllerNode
from pdsno.discovery.scanner import ScanResult
from pdsno.log import configure_logging
from pdsno.nib.models import Device, DeviceType, Interface

VENDORS = ("Cisco", "Juniper", "Arista", "HPE", "MikroTik", "Ubiquiti", "Fortinet", "Dell")
TYPES = (DeviceType.SWITCH, DeviceType.ROUTER, DeviceType.ACCESS_POINT, DeviceType.FIREWALL,
         DeviceType.SERVER, DeviceType.ENDPOINT)  # fmt: skip
HOSTS_PER_OCTET = 254


def lc_subnet(lc_index: int) -> IPv4Network:
    """LC ``lc_index``'s on-link subnet: a /20, room for 16 * 254 devices."""
    return IPv4Network(f"10.{lc_index // 16}.{(lc_index % 16) * 16}.0/20")


@dataclass(frozen=True)
class Generation:
    """What the network looks like: ``per_lc`` devices behind each LC; in a later generation
    ``changed`` of them have a new firmware (an UPDATED delta) and ``added`` more have appeared (NEW)."""

    number: int
    per_lc: int
    changed: int = 0
    added: int = 0


class SyntheticNetwork:
    """The devices each LC's subnet holds, made the way a scan reports them (SNMP-identified, with
    interfaces), deterministically from the device's global index, so that a later generation reports
    the same MAC with the same attributes unless it changed."""

    def __init__(self, lc_indexes: Iterable[int]) -> None:
        self._index = {str(lc_subnet(i)): i for i in lc_indexes}
        self._generation = Generation(0, 0)
        self._go = asyncio.Event()

    def power_on(self, generation: Generation) -> None:
        self._generation = generation
        self._go.set()

    def device(self, lc_index: int, j: int, firmware: str) -> Device:
        net = lc_subnet(lc_index)
        g = lc_index * 10_000 + j
        ip = str(net.network_address + 1 + (j // HOSTS_PER_OCTET) * 256 + j % HOSTS_PER_OCTET)
        mac = f"02:5c:{(g >> 24) & 0xFF:02x}:{(g >> 16) & 0xFF:02x}:{(g >> 8) & 0xFF:02x}:{g & 0xFF:02x}"
        vendor, kind = VENDORS[g % len(VENDORS)], TYPES[g % len(TYPES)]
        return Device(
            mac_address=mac,
            ip_address=ip,
            addresses=[ip],
            hostname=f"{kind.value.replace('_', '-')}-{g:07d}",
            vendor=vendor,
            device_type=kind,
            firmware_version=firmware,
            discovery_method="snmp",
            protocol_caps=["arp", "icmp", "snmp"],
            uptime_seconds=86_400 + g,
            snmp_info={"sysDescr": f"{vendor} {kind.value} firmware {firmware}",
                       "sysObjectID": f"1.3.6.1.4.1.{9 + g % len(VENDORS)}.1.{g % 97}",
                       "sysLocation": f"rack {g % 40}", "sysContact": "noc@example.net"},
            interfaces=[Interface(if_index=i, name=f"eth{i}", admin_up=True, oper_up=i == 1, speed_bps=10**9)
                        for i in (1, 2)],
        )  # fmt: skip

    def devices(self, lc_index: int) -> list[Device]:
        gen = self._generation
        found = []
        for j in range(gen.per_lc + gen.added):
            # The first ``changed`` devices of every LC run a new firmware from this generation on.
            firmware = f"{gen.number}.0" if j < gen.changed else "1.0"
            found.append(self.device(lc_index, j, firmware))
        return found

    async def scan(self, subnets: Sequence[str], **_: Any) -> ScanResult:
        """What :func:`pdsno.discovery.scan` returns, for the synthetic subnets."""
        await self._go.wait()
        started = utcnow()
        t0 = time.monotonic()
        devices = [d for s in subnets for d in self.devices(self._index[str(IPv4Network(s))])]
        return ScanResult(
            subnets=list(subnets), devices=devices, stats={}, failures=[], started_at=started,
            finished_at=utcnow(), duration=time.monotonic() - t0, targets={}, timings={}, measurements={},
            protocols=["arp", "icmp", "snmp"],
        )  # fmt: skip


def install(network: SyntheticNetwork) -> None:
    """Every LC duty in this process scans the synthetic network instead of the wire."""
    discovery_duty.scan = network.scan  # type: ignore[attr-defined,assignment]


async def _serve(conn: Connection, spec: dict[str, Any]) -> None:
    configs: list[dict[str, Any]] = spec["configs"]
    first = spec["first_index"]
    network = SyntheticNetwork(range(first, first + len(configs)))
    install(network)
    nodes: list[ControllerNode] = []
    # An RC admits one controller at a time (another is refused "in progress; retry"): one LC per region.
    turns = {c["controller"]["region"]: asyncio.Lock() for c in configs}
    t0 = time.monotonic()

    async def start(raw: dict[str, Any]) -> ControllerNode:
        async with turns[raw["controller"]["region"]]:
            node = ControllerNode(parse_config(raw, environ={}))
            await node.start()
        return node

    try:
        for task in asyncio.as_completed([start(c) for c in configs]):
            nodes.append(await task)
        conn.send(("ready", {"lcs": len(nodes), "start_s": time.monotonic() - t0}))
        while True:
            if not await asyncio.to_thread(conn.poll, 0.5):
                continue
            command, *args = conn.recv()
            if command == "go":
                network.power_on(Generation(*args))
                conn.send(("ok", None))
            elif command == "stop":
                break
    finally:
        stopping = [asyncio.wait_for(n.stop(), 20) for n in nodes]
        await asyncio.gather(*stopping, return_exceptions=True)
        conn.send(("stopped", None))


def main(conn: Connection, spec: dict[str, Any]) -> None:
    """Entry point of the load process (``multiprocessing`` spawn): its log goes to ``spec['log']``."""
    with open(spec["log"], "ab") as log:
        os.dup2(log.fileno(), 2)
    configure_logging("WARNING", "json", "lc-emulator")
    logging.getLogger("pdsno").setLevel(logging.WARNING)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(conn, spec))
