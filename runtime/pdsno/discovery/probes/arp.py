"""ARP probe: who answers on the local link, and with which MAC address.

For each interface that owns (part of) a target subnet, requests (who-has target tell us) are sent from
the event loop on a raw ``AF_PACKET`` socket bound to ``ETH_P_ARP``, in chunks paced by a token bucket
(see :class:`_Sweep`); replies are read on the same socket from the event loop (``add_reader``), so a
reply is streamed out while the sweep still sends. Outgoing copies are ignored
(``PACKET_IGNORE_OUTGOING``).

A target that stays silent is asked again, ``retries`` times, each time its own adaptive timeout has
passed since it was last asked; the probe ends an adaptive wait after its last send: a few smoothed RTTs
of the replies seen (at least ``min_wait``), or ``timeout`` when nobody answered at all. An ARP request
from a target (it resolving us) counts as an answer too. A sweep of more than :data:`RETRY_ALL_UP_TO`
targets retries only the silent ones the kernel's neighbour table knows on that interface (hosts this one
talked to lately, and those the previous scan found): on a sparse /16 a second request to each of 65,000
empty addresses doubled the scan (1.3 s at 50,000 frames a second) to find no one; a device whose
reply is lost there is found by the next discovery cycle (a device is marked inactive only after
several missed cycles).

These raw frames bypass the kernel's neighbour table, so each host that answers is entered there (as
``STALE``, create-only: an entry the kernel already has is left alone), at most :data:`MAX_SEEDED` per
sweep. That is what the kernel itself does for a host that ARPs it: ICMP and SNMP then reach the host at
once instead of the kernel first resolving it again (on the lab's 200-port bridge a ping to an unresolved
host costs the sender 0.5 ms instead of 0.025 ms, and waits for that ARP round trip); the kernel confirms
the entry by unicast when it next uses it. Without ``CAP_NET_ADMIN`` this is skipped silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import struct
import subprocess
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from pdsno.discovery.netinfo import LocalAddress, local_addresses, neighbours
from pdsno.discovery.probes.base import (
    SO_TIMESTAMPNS,
    STAMP_SPACE,
    Observation,
    ObservationSink,
    ProbeStats,
    RateLimiter,
    RttEstimator,
    TargetStream,
    kernel_arrival,
)
from pdsno.errors import PdsnoError

ETH_P_ARP = 0x0806
_SOL_PACKET = 263
_PACKET_IGNORE_OUTGOING = 23
_BROADCAST = b"\xff" * 6
_ARP_HEADER = struct.pack("!HHBB", 1, 0x0800, 6, 4)  # Ethernet, IPv4, hlen 6, plen 4
_SLICE = 0.002
"""Seconds the event loop sends retries for before it gives the other probes a turn."""
_FIRST_SLICE = 0.25
"""The same for the first pass: it goes first, as everything else waits for the hosts it finds."""
_BURST = 256
"""Frames the rate limiter lets out at once (the loop sleeps at least a millisecond between slices)."""
RETRY_ALL_UP_TO = 4096
"""Sweeps of at most this many targets retry every silent one (see the module's docstring)."""
MAX_SEEDED = 512
"""Neighbour entries made per sweep, at most: half the kernel's default table limit (``gc_thresh3``)."""
_RTM_NEWNEIGH = 28
_NLM_F_REQUEST_CREATE_EXCL = 0x1 | 0x400 | 0x200
_NUD_STALE = 0x04
_NDA_DST, _NDA_LLADDR = 1, 2


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


def neighbour_message(ifindex: int, ip: bytes, mac: bytes, seq: int) -> bytes:
    """An rtnetlink RTM_NEWNEIGH request: ``ip`` is at ``mac`` on ``ifindex`` (STALE, create-only)."""
    ndmsg = struct.pack("=BxxxiHBB", socket.AF_INET, ifindex, _NUD_STALE, 0, 0)
    attrs = struct.pack("=HH4s", 8, _NDA_DST, ip) + struct.pack("=HH6sxx", 10, _NDA_LLADDR, mac)
    body = ndmsg + attrs
    return struct.pack("=IHHII", 16 + len(body), _RTM_NEWNEIGH, _NLM_F_REQUEST_CREATE_EXCL, seq, 0) + body


class _Neighbours:
    """Best effort: enters answering hosts in the kernel's neighbour table; see the module's docstring.
    The kernel's answers (EEXIST for hosts it knows, EPERM without the capability) are not read."""

    def __init__(self) -> None:
        self.seeded = 0
        self._sock: socket.socket | None = None
        try:
            self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
            self._sock.setblocking(False)
        except OSError:
            self.close()

    def add(self, ifindex: int, ip: bytes, mac: bytes) -> None:
        if self._sock is None or self.seeded >= MAX_SEEDED or ifindex <= 0:
            return
        try:
            self._sock.send(neighbour_message(ifindex, ip, mac, self.seeded + 1))
            self.seeded += 1
        except OSError:
            self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _known_neighbours(ifname: str) -> set[IPv4Address]:
    try:
        return neighbours(ifname)
    except (OSError, ValueError, subprocess.SubprocessError, PdsnoError):
        return set()  # nothing known: nothing retried


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
    head: bytes = b""
    """A request to this link's targets without the target address (:func:`arp_request`'s first 38 bytes)."""

    def __post_init__(self) -> None:
        self.head = arp_request(self.mac, self.ip, b"")


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
        all_sent: asyncio.Event | None = None,
    ) -> None:
        """``all_sent`` is set once the last request is out (only the wait for late replies is left)."""
        self._local = list(local) if local is not None else None
        self.all_sent = all_sent or asyncio.Event()
        self.timeout = timeout
        self.min_wait = min_wait
        self.retries = max(0, retries)
        self.rate_pps = rate_pps

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
        neighbours = _Neighbours()
        sweep = _Sweep(RateLimiter(self.rate_pps, burst=_BURST), sent_at, answered, stats)

        def on_readable(link: _Link) -> None:
            for _ in range(1024):
                try:
                    frame, ancillary, _flags, _addr = link.rx.recvmsg(128, STAMP_SPACE)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:
                    return
                now = kernel_arrival(ancillary)
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
                neighbours.add(link.local.ifindex, spa, sha)
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
                        rx.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
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

        try:
            # integer bounds: a /16's 65,534 membership tests with IPv4Network took a tenth of a second
            ranges = [(int(a.network.network_address), int(a.network.broadcast_address), int(a.interface.ip), a)
                      for a in capable]  # fmt: skip
            async for batch in targets.batches():
                known: set[IPv4Address] | None = None
                if stats.targets + len(batch) > RETRY_ALL_UP_TO:
                    known = set()
                    for name in sorted({a.ifname for a in capable}):
                        known |= await asyncio.to_thread(_known_neighbours, name)
                    stats.details["retried"] = "known neighbours"
                for ip in batch:
                    n = int(ip)
                    for low, high, own, candidate in ranges:
                        if low <= n <= high and n != own:
                            link = link_for(candidate)
                            break
                    else:
                        stats.count_error("not-on-link")
                        continue
                    packed = ip.packed
                    link.targets[packed] = ip
                    stats.targets += 1
                    sweep.first.append((link, packed, self.retries if known is None or ip in known else 0))
                await sweep.pump(estimator, retries_too=False)
            sweep.first_pass_s = time.monotonic() - stats.started
            if len(answered) == stats.targets:  # everyone answered, or nothing to ask
                all_done.set()
            if not all_done.is_set():
                await sweep.pump(estimator, retries_too=True)
            self.all_sent.set()
            await self._wait(all_done, sweep.last_send, estimator)
        finally:
            self.all_sent.set()
            for link in links.values():
                loop.remove_reader(link.rx.fileno())
                link.rx.close()
            neighbours.close()
            stats.finished = time.monotonic()
        stats.details["interfaces"] = sorted(links)
        stats.details["adaptive_wait_s"] = round(estimator.timeout(), 4)
        stats.details["first_pass_sent_s"] = round(sweep.first_pass_s, 4)
        stats.details["last_sent_s"] = round(sweep.last_send - stats.started, 4)
        stats.details["neighbours_entered"] = neighbours.seeded
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


class _Sweep:
    """The requests of one probe, sent from the event loop: the first one to each target in order, and
    each silent target asked again once its own adaptive timeout has passed since it was last asked.

    Frames go out on the non-blocking socket in slices of at most :data:`_FIRST_SLICE` seconds (first
    pass) or :data:`_SLICE` (retries), paced by a token bucket, with a turn of the event loop between
    slices so that replies are read and ICMP and SNMP go on (ARP and ICMP replies are timed by the
    kernel, so a long slice does not lengthen their RTTs). A send is not cheap on a busy link (the kernel
    delivers a broadcast to every port of a bridge in the sender's context: ~0.4 ms on the lab's 200-port
    one), and from worker threads each frame also waited for the GIL (up to the interpreter's 5 ms switch
    interval) while the loop decoded SNMP answers: over a second for a /24.
    """

    def __init__(
        self,
        limiter: RateLimiter,
        sent_at: dict[bytes, float],
        answered: dict[bytes, bytes],
        stats: ProbeStats,
    ) -> None:
        self.limiter = limiter
        self.sent_at = sent_at
        self.answered = answered
        self.stats = stats
        self.first: deque[tuple[_Link, bytes, int]] = deque()
        """(link, target, retries), in sweep order."""
        self.again: deque[tuple[float, _Link, bytes, int]] = deque()
        """(last asked, link, target, retries left after this one), oldest first."""
        self.last_send = time.monotonic()
        self.first_pass_s = 0.0

    def _due(self, now: float, wait: float) -> list[tuple[_Link, bytes, int]]:
        """The next requests due, at most :data:`_BURST`: retries whose timeout has passed, then first
        ones; each with the retries left after it."""
        chunk: list[tuple[_Link, bytes, int]] = []
        while self.again and len(chunk) < _BURST:
            asked, link, packed, left = self.again[0]
            if packed in self.answered:
                self.again.popleft()
                continue
            if asked + wait > now:
                break
            self.again.popleft()
            self.stats.retries += 1
            chunk.append((link, packed, left - 1))
        while self.first and len(chunk) < _BURST:
            chunk.append(self.first.popleft())
        return chunk

    async def pump(self, estimator: RttEstimator, *, retries_too: bool) -> None:
        """Send until the first pass is out, and with ``retries_too`` until no retry is left."""
        while self.first or (retries_too and self.again):
            began = now = time.monotonic()
            wait = estimator.timeout()
            budget = _FIRST_SLICE if self.first else _SLICE
            while now - began < budget and (chunk := self._due(now, wait)):
                pause = self.limiter.delay(len(chunk))
                if pause > 0:
                    await asyncio.sleep(pause)
                for link, packed, left in chunk:
                    if not self._send_now(link, packed):
                        await self._send(link, packed)
                    now = time.monotonic()
                    self.sent_at.setdefault(packed, now)
                    if left > 0:
                        self.again.append((now, link, packed, left))
                self.last_send = now
                if pause > 0:
                    break
            if now - began < budget and self.again and not self.first:
                # nothing due yet: sleep until the oldest retry is (its due time moves with the RTTs)
                await asyncio.sleep(min(0.02, max(0.001, self.again[0][0] + wait - now)))
            else:
                await asyncio.sleep(0)

    def _send_now(self, link: _Link, packed: bytes) -> bool:
        """One request, at once; False when the device queue is full for the moment (see _send)."""
        try:
            link.rx.send(link.head + packed)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:
                return False
            raise PdsnoError(
                f"ARP send on {link.local.ifname} failed: {os.strerror(exc.errno or 0)}"
            ) from exc
        self.stats.sent += 1
        return True

    async def _send(self, link: _Link, packed: bytes) -> None:
        frame = link.head + packed
        for _attempt in range(50):  # the device queue may be full for a moment: bounded back-off
            try:
                link.rx.send(frame)
                self.stats.sent += 1
                return
            except OSError as exc:
                if exc.errno not in (errno.ENOBUFS, errno.EAGAIN):
                    raise PdsnoError(
                        f"ARP send on {link.local.ifname} failed: {os.strerror(exc.errno or 0)}"
                    ) from exc
                await asyncio.sleep(0.001)
        self.stats.count_error("send-busy")
