"""What every discovery probe shares: the :class:`Probe` protocol, observations, target streams, stats.

A probe is a small object with a ``name`` and one coroutine, ``run(targets, sink)``. It reads addresses
from a :class:`TargetStream` (which may still be growing while it runs: ARP and ICMP feed SNMP as soon as
they see a host) and hands every result to ``sink`` the moment it arrives, as an :class:`Observation`.
It returns :class:`ProbeStats` when its stream is closed and drained and its last reply is in (or timed
out). A probe that cannot work at all (no permission for a raw socket, no such interface) raises; the
scanner reports that as ``SCAN_PROTOCOL_FAILED`` and the other probes go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any, Protocol, runtime_checkable

from pdsno.errors import ReasonCode

SCAN_PROTOCOL_FAILED = ReasonCode.SCAN_PROTOCOL_FAILED
"""Reason code of a protocol that failed as a whole."""
SO_TIMESTAMPNS = 35
"""Linux's value (SCM_TIMESTAMPNS too), which the socket module does not name."""
_TIMESPEC = struct.Struct("=qq")
STAMP_SPACE = socket.CMSG_SPACE(_TIMESPEC.size)
"""Ancillary buffer size for ``recvmsg`` on a socket with ``SO_TIMESTAMPNS``."""


def kernel_arrival(ancillary: list[tuple[int, int, bytes]]) -> float:
    """When the kernel received a packet (its ``SO_TIMESTAMPNS`` stamp) on the monotonic clock, else now:
    a reply's RTT must not include the time the event loop spent on other work (a sweep slice, SNMP)
    before reading it, or the adaptive timeouts grow with the machine's load."""
    now = time.monotonic()
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            sec, nsec = _TIMESPEC.unpack_from(data)
            received: float = sec + nsec / 1e9
            return min(now, now - (time.time() - received))
    return now


FINE_SWITCH_INTERVAL = 0.0002
"""Seconds: the interpreter's GIL switch interval while :func:`fine_switching` is held."""


class _Switching:
    lock = threading.Lock()
    holders = 0
    saved = 0.0


@contextlib.contextmanager
def fine_switching() -> Iterator[None]:
    """Lower the GIL switch interval (process-wide) for a scan, during which worker threads do CPU-bound
    work (pysnmp's engine, consolidation's imports) beside an event loop that makes a socket call for
    every packet. Each call releases the GIL; with the default 5 ms interval the loop then waits up to
    5 ms to get it back from a busy worker, call after call (a /24 sweep took a second instead of 0.2 s).
    Counted, so that concurrent scans leave the interval as they found it."""
    with _Switching.lock:
        if _Switching.holders == 0:
            _Switching.saved = sys.getswitchinterval()
            sys.setswitchinterval(min(_Switching.saved, FINE_SWITCH_INTERVAL))
        _Switching.holders += 1
    try:
        yield
    finally:
        with _Switching.lock:
            _Switching.holders -= 1
            if _Switching.holders == 0:
                sys.setswitchinterval(_Switching.saved)


@dataclass(frozen=True, slots=True)
class Observation:
    """One thing one protocol learnt about one address.

    ``protocol`` is ``arp``, ``icmp`` or ``snmp``. ``fields`` holds protocol-specific, JSON-able data: for
    SNMP the system group, interfaces and the device's own addresses, or ``reachable: False`` and an
    ``error`` when the agent did not answer.
    """

    ip: str
    protocol: str
    mac: str | None = None
    rtt: float | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.monotonic)


class ObservationSink(Protocol):
    """Where a probe streams its observations; called from the event loop, must not block."""

    def emit(self, observation: Observation) -> None: ...


@dataclass
class ProbeStats:
    """What one probe did: counts and timings (seconds, monotonic clock)."""

    name: str
    targets: int = 0
    sent: int = 0
    responders: int = 0
    retries: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    started: float = 0.0
    finished: float = 0.0
    first_response: float | None = None
    last_response: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def count_error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def responded(self, now: float) -> None:
        self.responders += 1
        if self.first_response is None:
            self.first_response = now
        self.last_response = now

    @property
    def duration(self) -> float:
        return max(0.0, self.finished - self.started)

    def as_dict(self, origin: float) -> dict[str, Any]:
        def rel(t: float | None) -> float | None:
            return None if t is None else round(t - origin, 4)

        return {
            "name": self.name,
            "targets": self.targets,
            "sent": self.sent,
            "responders": self.responders,
            "retries": self.retries,
            "errors": dict(self.errors),
            "started_s": rel(self.started),
            "finished_s": rel(self.finished),
            "duration_s": round(self.duration, 4),
            "first_response_s": rel(self.first_response),
            "last_response_s": rel(self.last_response),
            **self.details,
        }


@runtime_checkable
class Probe(Protocol):
    """A discovery protocol plugin."""

    name: str

    async def run(self, targets: TargetStream, sink: ObservationSink) -> ProbeStats: ...


class TargetStream:
    """A de-duplicating, single-consumer stream of addresses that may grow until :meth:`close`.

    Producers :meth:`put` addresses (an address is handed out once, however often it is put); the consumer
    iterates with ``async for batch in stream.batches()``: each batch is everything queued since the last
    one, and iteration ends when the stream is closed and drained.
    """

    def __init__(self, initial: Iterable[IPv4Address] = (), *, closed: bool = False) -> None:
        self._queue: deque[IPv4Address] = deque()
        self._seen: set[IPv4Address] = set()
        self._event = asyncio.Event()
        self._closed = False
        for ip in initial:
            self.put(ip)
        if closed:
            self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def total(self) -> int:
        """How many distinct addresses were put so far."""
        return len(self._seen)

    def __contains__(self, ip: object) -> bool:
        return ip in self._seen

    def put(self, ip: IPv4Address) -> bool:
        if self._closed or ip in self._seen:
            return False
        self._seen.add(ip)
        self._queue.append(ip)
        self._event.set()
        return True

    def close(self) -> None:
        self._closed = True
        self._event.set()

    def drain(self) -> list[IPv4Address]:
        """Everything queued now, without waiting."""
        batch = list(self._queue)
        self._queue.clear()
        if not self._closed:
            self._event.clear()
        return batch

    async def batches(self) -> AsyncIterator[list[IPv4Address]]:
        while True:
            await self._event.wait()
            batch = self.drain()
            if batch:
                yield batch
            elif self._closed:
                return


class RttEstimator:
    """Jacobson/Karels smoothed RTT giving an adaptive timeout, clamped to ``[floor, ceiling]``.

    Before any sample the timeout is the ceiling (nothing is known about the path yet).
    """

    def __init__(self, floor: float, ceiling: float, *, factor: float = 4.0) -> None:
        self.floor = min(floor, ceiling)
        self.ceiling = ceiling
        self.factor = factor
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.samples = 0
        self.max_rtt = 0.0

    def sample(self, rtt: float) -> None:
        rtt = max(0.0, rtt)
        self.samples += 1
        self.max_rtt = max(self.max_rtt, rtt)
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt

    def timeout(self) -> float:
        if self.srtt is None:
            return self.ceiling
        rto = max(self.srtt + self.factor * self.rttvar, 2 * self.max_rtt)
        return min(self.ceiling, max(self.floor, rto))


class RateLimiter:
    """Token bucket for packet sends (``rate`` per second, bursts of ``burst``); ``rate <= 0`` is unlimited."""

    def __init__(self, rate: float, burst: int = 64) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._tokens = float(self.burst)
        self._last = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
        self._last = now

    def delay(self, n: int = 1) -> float:
        """Take ``n`` tokens; returns how long to sleep first (0 when allowed now)."""
        if self.rate <= 0:
            return 0.0
        self._refill()
        self._tokens -= n
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    async def wait(self, n: int = 1) -> None:
        pause = self.delay(n)
        if pause > 0:
            await asyncio.sleep(pause)
