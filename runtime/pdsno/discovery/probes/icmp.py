"""ICMP echo probe: which addresses answer a ping, and their round-trip time.

One raw ``IPPROTO_ICMP`` socket (kernel-filtered to echo replies) for the whole sweep, driven from the
event loop: requests go out paced by a token bucket as addresses arrive on the target stream, replies are
matched by (source, identifier, sequence). Without ``CAP_NET_RAW`` the unprivileged ICMP datagram socket
is used when ``net.ipv4.ping_group_range`` allows it.

A request is given up after an adaptive timeout: a few smoothed RTTs of the replies seen (at least
``min_timeout``), or the full ``timeout`` (2 s) before any reply. Addresses in ``known_alive`` (already
resolved by ARP) get no retry; the others get ``retries``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import struct
import time
from collections.abc import Container
from dataclasses import dataclass

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

ECHO_REPLY = 0
ECHO_REQUEST = 8
_SOL_RAW = 255
_ICMP_FILTER = 1
_PAYLOAD = b"pdsno-discovery!"


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def echo_request(identifier: int, sequence: int, payload: bytes = _PAYLOAD) -> bytes:
    header = struct.pack("!BBHHH", ECHO_REQUEST, 0, 0, identifier, sequence)
    csum = checksum(header + payload)
    return struct.pack("!BBHHH", ECHO_REQUEST, 0, csum, identifier, sequence) + payload


def parse_echo_reply(data: bytes, *, with_ip_header: bool) -> tuple[int, int, int | None] | None:
    """(identifier, sequence, ttl) of an echo reply, else None."""
    ttl = None
    if with_ip_header:
        if len(data) < 20:
            return None
        ihl = (data[0] & 0x0F) * 4
        ttl = data[8]
        data = data[ihl:]
    if len(data) < 8 or data[0] != ECHO_REPLY:
        return None
    _type, _code, _csum, identifier, sequence = struct.unpack_from("!BBHHH", data)
    return identifier, sequence, ttl


@dataclass(slots=True)
class _Echo:
    ip: str
    sent_at: float
    first_sent: float
    tries_left: int


class IcmpProbe:
    name = "icmp"

    def __init__(
        self,
        *,
        timeout: float = 2.0,
        min_timeout: float = 0.25,
        retries: int = 1,
        rate_pps: float = 5_000,
        known_alive: Container[str] = (),
        tick: float = 0.01,
    ) -> None:
        self.timeout = timeout
        self.min_timeout = min_timeout
        self.retries = max(0, retries)
        self.rate_pps = rate_pps
        self.known_alive = known_alive
        self.tick = tick

    @staticmethod
    def _open() -> tuple[socket.socket, bool]:
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
            raw = True
        except PermissionError:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
            raw = False
        sock.setblocking(False)
        if raw:
            with contextlib.suppress(OSError):
                sock.setsockopt(_SOL_RAW, _ICMP_FILTER, struct.pack("I", ~(1 << ECHO_REPLY) & 0xFFFFFFFF))
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        return sock, raw

    async def run(self, targets: TargetStream, sink: ObservationSink) -> ProbeStats:
        stats = ProbeStats(self.name, started=time.monotonic())
        loop = asyncio.get_running_loop()
        sock, raw = self._open()
        identifier = int.from_bytes(os.urandom(2), "big")
        estimator = RttEstimator(self.min_timeout, self.timeout)
        limiter = RateLimiter(self.rate_pps, burst=64)
        pending: dict[tuple[str, int], _Echo] = {}
        sequence = 0

        def on_readable() -> None:
            for _ in range(1024):
                try:
                    data, ancillary, _flags, addr = sock.recvmsg(2048, STAMP_SPACE)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:
                    continue
                now = kernel_arrival(ancillary)
                parsed = parse_echo_reply(data, with_ip_header=raw)
                if parsed is None:
                    continue
                ident, seq, ttl = parsed
                if raw and ident != identifier:
                    continue
                echo = pending.pop((addr[0], seq), None)
                if echo is None:
                    continue
                rtt = now - echo.sent_at
                estimator.sample(rtt)
                stats.responded(now)
                fields = {} if ttl is None else {"ttl": ttl}
                sink.emit(Observation(echo.ip, self.name, rtt=rtt, fields=fields))

        async def send(echo: _Echo) -> None:
            nonlocal sequence
            await limiter.wait()
            sequence = (sequence + 1) & 0xFFFF
            packet = echo_request(identifier, sequence)
            echo.sent_at = time.monotonic()
            pending[(echo.ip, sequence)] = echo
            stats.sent += 1
            try:
                try:
                    sock.sendto(packet, (echo.ip, 0))
                except BlockingIOError:
                    await loop.sock_sendto(sock, packet, (echo.ip, 0))
            except OSError as exc:
                pending.pop((echo.ip, sequence), None)
                stats.count_error("send-" + (errno.errorcode.get(exc.errno or 0, "error").lower()))

        async def reap() -> None:
            while True:
                await asyncio.sleep(self.tick)
                if not pending:
                    continue
                on_readable()
                limit = time.monotonic() - estimator.timeout()
                for key, echo in list(pending.items()):
                    if echo.sent_at >= limit:
                        continue
                    del pending[key]
                    if echo.tries_left > 0:
                        echo.tries_left -= 1
                        stats.retries += 1
                        await send(echo)

        loop.add_reader(sock.fileno(), on_readable)
        reaper = loop.create_task(reap())
        try:
            async for batch in targets.batches():
                for ip in batch:
                    stats.targets += 1
                    text = str(ip)
                    retries = 0 if text in self.known_alive else self.retries
                    now = time.monotonic()
                    await send(_Echo(text, now, now, retries))
            while pending:
                if reaper.done():
                    reaper.result()  # surfaces an exception of the reaper
                await asyncio.sleep(self.tick)
        finally:
            reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reaper
            loop.remove_reader(sock.fileno())
            sock.close()
            stats.finished = time.monotonic()
        stats.details["socket"] = "raw" if raw else "datagram"
        stats.details["adaptive_timeout_s"] = round(estimator.timeout(), 4)
        return stats
