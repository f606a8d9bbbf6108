"""The ARP probe's parts that need no raw socket: neighbour-table entries it makes (rtnetlink) and reads
(``ip -json neigh``), reply times taken from the kernel's receive stamps, and the sweep's retry timing."""

from __future__ import annotations

import socket
import struct
import time
from ipaddress import IPv4Address, IPv4Interface

from pdsno.discovery.netinfo import LocalAddress, parse_ip_neigh
from pdsno.discovery.probes.arp import _Link, _Sweep, neighbour_message
from pdsno.discovery.probes.base import SO_TIMESTAMPNS, ProbeStats, RateLimiter, RttEstimator, kernel_arrival


def test_neighbour_message_is_a_create_only_stale_entry() -> None:
    msg = neighbour_message(7, bytes([198, 18, 0, 9]), bytes.fromhex("020000000109"), 3)
    length, kind, flags, seq, pid = struct.unpack_from("=IHHII", msg)
    assert (length, kind, seq, pid) == (len(msg), 28, 3, 0)  # RTM_NEWNEIGH
    assert flags == 0x1 | 0x200 | 0x400  # REQUEST, EXCL (an existing entry is left alone), CREATE
    family, ifindex, state, _flags, _type = struct.unpack_from("=BxxxiHBB", msg, 16)
    assert (family, ifindex, state) == (socket.AF_INET, 7, 0x04)  # NUD_STALE
    assert msg[28:36] == struct.pack("=HH", 8, 1) + bytes([198, 18, 0, 9])  # NDA_DST
    assert msg[36:48] == struct.pack("=HH", 10, 2) + bytes.fromhex("020000000109") + b"\0\0"  # NDA_LLADDR
    assert len(msg) % 4 == 0


def test_parse_ip_neigh_keeps_resolved_ipv4_neighbours() -> None:
    data = [
        {"dst": "198.18.0.9", "lladdr": "02:00:00:00:01:09", "state": ["STALE"]},
        {"dst": "198.18.0.10", "lladdr": "02:00:00:00:01:0a", "state": ["REACHABLE"]},
        {"dst": "198.18.0.11", "state": ["FAILED"]},
        {"dst": "198.18.0.12", "lladdr": "02:00:00:00:01:0c", "state": ["FAILED"]},
        {"dst": "198.18.0.13", "state": ["INCOMPLETE"]},
        {"dst": "fe80::1", "lladdr": "02:00:00:00:01:0d", "state": ["STALE"]},
    ]
    assert parse_ip_neigh(data) == {IPv4Address("198.18.0.9"), IPv4Address("198.18.0.10")}


def test_kernel_arrival_converts_the_stamp_to_the_monotonic_clock() -> None:
    before = time.monotonic()
    stamp = time.time() - 0.3
    ancillary = [(socket.SOL_SOCKET, SO_TIMESTAMPNS, struct.pack("=qq", int(stamp), int(stamp % 1 * 1e9)))]
    arrived = kernel_arrival(ancillary)
    assert before - 0.31 < arrived < before - 0.29
    assert before <= kernel_arrival([]) <= time.monotonic()
    future = time.time() + 5  # a clock step: never later than now
    assert kernel_arrival([(socket.SOL_SOCKET, SO_TIMESTAMPNS, struct.pack("=qq", int(future), 0))]) <= (
        time.monotonic()
    )


class _Wire:
    """Stands for the link's packet socket: records when each request left and for whom."""

    def __init__(self) -> None:
        self.sent: list[tuple[float, bytes]] = []

    def send(self, frame: bytes) -> int:
        self.sent.append((time.monotonic(), frame[38:42]))
        return len(frame)


async def test_sweep_asks_each_silent_target_again_once_its_own_timeout_passed() -> None:
    wire = _Wire()
    local = LocalAddress("eth0", 2, "02:00:00:00:01:01", IPv4Interface("10.1.0.1/24"), True)
    link = _Link(local, bytes.fromhex("020000000101"), bytes([10, 1, 0, 1]), wire)
    stats = ProbeStats("arp")
    answered: dict[bytes, bytes] = {}
    sweep = _Sweep(RateLimiter(50_000, burst=256), {}, answered, stats)
    targets = [bytes([10, 1, 0, n]) for n in range(2, 7)]
    for n, target in enumerate(targets):
        sweep.first.append((link, target, 1 if n < 4 else 0))  # the last one: no retry (a big sweep's)
    estimator = RttEstimator(0.05, 0.05)
    await sweep.pump(estimator, retries_too=False)
    assert [target for _, target in wire.sent] == targets
    answered[targets[0]] = bytes.fromhex("020000000102")  # answers before its retry is due
    await sweep.pump(estimator, retries_too=True)
    first = {target: at for at, target in wire.sent[:5]}
    again = wire.sent[5:]
    assert [target for _, target in again] == targets[1:4]
    assert all(at - first[target] >= 0.05 for at, target in again)
    assert (stats.sent, stats.retries) == (8, 3)
    assert sweep.last_send >= again[-1][0]
