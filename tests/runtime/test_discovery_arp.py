"""The ARP probe's pure parts: neighbour-table entries it makes (rtnetlink) and reads (``ip -json neigh``),
and reply times taken from the kernel's receive stamps."""

from __future__ import annotations

import socket
import struct
import time
from ipaddress import IPv4Address

from pdsno.discovery.netinfo import parse_ip_neigh
from pdsno.discovery.probes.arp import neighbour_message
from pdsno.discovery.probes.base import SO_TIMESTAMPNS, kernel_arrival


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
