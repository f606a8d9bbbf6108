"""ARP probe: who answers on the local link, and with which MAC address.

For each interface that owns (part of) a target subnet, frames are sent on a raw ``AF_PACKET`` socket
(who-has target tell us) from one or two sender threads, paced by a token bucket; replies are read on a
second packet socket bound to ``ETH_P_ARP`` only, from the event loop (``add_reader``), so a reply is
streamed out while the sweep still sends. Outgoing copies are ignored (``PACKET_IGNORE_OUTGOING``).

After the sweep, silent targets are asked again ``retries`` times; the probe ends an adaptive wait after
its last send: a few smoothed RTTs of the replies seen (at least ``min_wait``), or ``timeout`` when nobody
answered at all. An ARP request from a target (it resolving us) counts as an answer too. The kernel's
neighbour table is not touched: these raw frames bypass it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from pdsno.discovery.netinfo import LocalAddress, local_addresses
from pdsno.discovery.probes.base import (
    Observation,
    ObservationSink,
    ProbeStats,
    RateLimiter,
    RttEstimator,
    TargetStream,
)
from pdsno.errors import PdsnoError

ETH_P_ARP = 0x0806
_SOL_PACKET = 263
_PACKET_IGNORE_OUTGOING = 23
_BROADCAST = b"\xff" * 6
_ARP_HEADER = struct.pack("!HHBB", 1, 0x0800, 6, 4)  # Ethernet, IPv4, hlen 6, plen 4
_TWO_THREADS_FROM = 2048
"""Sweeps of at least this many targets on one interface send from two threads (kernel-bound otherwise)."""


def arp_request(src_mac: bytes, src_ip: bytes, target_ip: bytes) -> bytes:
    """An Ethernet broadcast frame: who has ``target_ip``? tell ``src_ip`` (``src_mac``)."""
    return (
        _BROADCAST
        + src_mac
        + struct.pack("!H", ETH_P_ARP)
        + _ARP_HEADER
        + struct.pack("!H", 1)
        + src_mac
        + src_ip
        + b"\x00" * 6
        + target_ip
    )


def parse_arp(frame: bytes) -> tuple[int, bytes, bytes, bytes] | None:
    """(opcode, sender MAC, sender IP, target IP) of an Ethernet/IPv4 ARP frame, else None."""
    if len(frame) < 42 or frame[12:14] != b"\x08\x06" or frame[14:20] != _ARP_HEADER:
        return None
    op = int.from_bytes(frame[20:22], "big")
    return op, frame[22:28], frame[28:32], frame[38:42]


def _mac_bytes(mac: str) -> bytes:
    return bytes(int(part, 16) for part in mac.split(":"))


def _valid_unicast(mac: bytes) -> bool:
    return any(mac) and not mac[0] & 0x01


@dataclass
class _Link:
    local: LocalAddress
    mac: bytes
    ip: bytes
    rx: socket.socket
    targets: dict[bytes, IPv4Address] = field(default_factory=dict)


class ArpProbe:
    name = "arp"

    def __init__(
        self,
        local: Sequence[LocalAddress] | None = None,
        *,
        timeout: float = 2.0,
        min_wait: float = 0.25,
        retries: int = 1,
        rate_pps: float = 50_000,
        threads: int | None = None,
    ) -> None:
        self._local = list(local) if local is not None else None
        self.timeout = timeout
        self.min_wait = min_wait
        self.retries = max(0, retries)
        self.rate_pps = rate_pps
        self.threads = threads

    async def run(self, targets: TargetStream, sink: ObservationSink) -> ProbeStats:
        stats = ProbeStats(self.name, started=time.monotonic())
        local = self._local if self._local is not None else await asyncio.to_thread(local_addresses)
        capable = [a for a in local if a.arp_capable and a.mac]
        loop = asyncio.get_running_loop()
        estimator = RttEstimator(self.min_wait, self.timeout)
        links: dict[str, _Link] = {}
        sent_at: dict[bytes, float] = {}
        answered: dict[bytes, bytes] = {}
        conflicts: set[str] = set()
        all_done = asyncio.Event()

        def on_readable(link: _Link) -> None:
            for _ in range(1024):
                try:
                    frame = link.rx.recv(128)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:
                    return
                now = time.monotonic()
                parsed = parse_arp(frame)
                if parsed is None:
                    continue
                _op, sha, spa, _tpa = parsed
                ip = link.targets.get(spa)
                if ip is None or not _valid_unicast(sha):
                    continue
                previous = answered.get(spa)
                if previous is not None:
                    if previous != sha:
                        conflicts.add(str(ip))
                    continue
                answered[spa] = sha
                first = sent_at.get(spa)
                rtt = None if first is None else max(0.0, now - first)
                if rtt is not None:
                    estimator.sample(rtt)
                stats.responded(now)
                mac = ":".join(f"{b:02x}" for b in sha)
                sink.emit(
                    Observation(str(ip), self.name, mac=mac, rtt=rtt, fields={"interface": link.local.ifname})
                )
                if len(answered) == stats.targets and targets.closed:
                    all_done.set()

        def link_for(owner: LocalAddress) -> _Link:
            link = links.get(owner.ifname)
            if link is None:
                rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
                try:
                    rx.setblocking(False)
                    with contextlib.suppress(OSError):
                        rx.setsockopt(_SOL_PACKET, _PACKET_IGNORE_OUTGOING, 1)
                    with contextlib.suppress(OSError):
                        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
                    rx.bind((owner.ifname, ETH_P_ARP))
                except BaseException:
                    rx.close()
                    raise
                assert owner.mac is not None
                link = _Link(owner, _mac_bytes(owner.mac), owner.interface.ip.packed, rx)
                links[owner.ifname] = link
                loop.add_reader(rx.fileno(), on_readable, link)
            return link

        last_send = time.monotonic()
        try:
            async for batch in targets.batches():
                by_link: dict[str, list[bytes]] = {}
                for ip in batch:
                    owner = next((a for a in capable if ip in a.network and ip != a.interface.ip), None)
                    if owner is None:
                        stats.count_error("not-on-link")
                        continue
                    link = link_for(owner)
                    packed = ip.packed
                    link.targets[packed] = ip
                    by_link.setdefault(owner.ifname, []).append(packed)
                    stats.targets += 1
                for ifname, packed_ips in by_link.items():
                    stats.sent += await self._send(links[ifname], packed_ips, sent_at)
                last_send = time.monotonic()
            if len(answered) == stats.targets:  # everyone answered, or nothing to ask
                all_done.set()
            for _ in range(self.retries):
                await self._wait(all_done, last_send, estimator)
                silent = [(link, p) for link in links.values() for p in link.targets if p not in answered]
                if not silent:
                    break
                stats.retries += len(silent)
                for link in links.values():
                    missing = [p for p in link.targets if p not in answered]
                    if missing:
                        stats.sent += await self._send(link, missing, None)
                last_send = time.monotonic()
            await self._wait(all_done, last_send, estimator)
        finally:
            for link in links.values():
                loop.remove_reader(link.rx.fileno())
                link.rx.close()
            stats.finished = time.monotonic()
        stats.details["interfaces"] = sorted(links)
        stats.details["adaptive_wait_s"] = round(estimator.timeout(), 4)
        if conflicts:
            stats.details["ip_conflicts"] = sorted(conflicts, key=IPv4Address)
        return stats

    @staticmethod
    async def _wait(event: asyncio.Event, since: float, estimator: RttEstimator) -> None:
        """Wait an adaptive timeout after ``since`` (re-read as replies come in) or until all answered."""
        while not event.is_set():
            remaining = since + estimator.timeout() - time.monotonic()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), min(remaining, 0.02))

    async def _send(self, link: _Link, packed_ips: list[bytes], sent_at: dict[bytes, float] | None) -> int:
        """Send one request per address from sender threads (each with its own socket); frames sent."""
        frames = [(p, arp_request(link.mac, link.ip, p)) for p in packed_ips]
        threads = self.threads or (2 if len(frames) >= _TWO_THREADS_FROM else 1)
        threads = max(1, min(threads, len(frames)))
        chunks = [frames[i::threads] for i in range(threads)]
        rate = self.rate_pps / threads if self.rate_pps > 0 else 0.0
        stop = threading.Event()
        try:
            counts = await asyncio.gather(
                *(
                    asyncio.to_thread(_send_frames, link.local.ifname, chunk, rate, sent_at, stop)
                    for chunk in chunks
                )
            )
        finally:
            stop.set()
        return sum(counts)


def _send_frames(
    ifname: str,
    frames: list[tuple[bytes, bytes]],
    rate: float,
    sent_at: dict[bytes, float] | None,
    stop: threading.Event,
) -> int:
    """Thread body: blocking raw socket, paced; records the first send time of each target."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    limiter = RateLimiter(rate, burst=256)
    sent = 0
    try:
        sock.bind((ifname, 0))
        for key, frame in frames:
            if stop.is_set():
                break
            pause = limiter.delay()
            if pause > 0:
                time.sleep(pause)
            if sent_at is not None:
                sent_at.setdefault(key, time.monotonic())
            for _attempt in range(50):  # the device queue may be full for a moment: bounded back-off
                try:
                    sock.send(frame)
                    sent += 1
                    break
                except OSError as exc:
                    if exc.errno not in (errno.ENOBUFS, errno.EAGAIN):
                        raise PdsnoError(
                            f"ARP send on {ifname} failed: {os.strerror(exc.errno or 0)}"
                        ) from exc
                    time.sleep(0.001)
    finally:
        sock.close()
    return sent
