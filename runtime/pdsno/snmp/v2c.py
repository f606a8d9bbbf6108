"""SNMPv2c on **one** UDP socket: requests to every host pipelined and matched back by request-id.

Messages are built and read by :class:`~pdsno.snmp.ber.V2cCodec` (plain BER, no pysnmp). ``IP_RECVERR`` on the
socket turns an ICMP port-unreachable into an immediate "no agent" answer instead of a timeout. Requests
expire after the timeout their :class:`TimeoutEstimator` gives, adapted to the RTTs seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import struct
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pdsno.snmp.ber import Reply, RequestKind, V2cCodec
from pdsno.snmp.errors import SnmpNoAgent, SnmpTimeout
from pdsno.snmp.values import Oid

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------ the shared socket


@dataclass(slots=True)
class _Pending:
    ip: str
    community: bytes
    future: asyncio.Future[Reply]
    sent_at: float


_SOCK_EXTENDED_ERR = struct.Struct("=IBBBBII")
_IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
_MSG_ERRQUEUE = getattr(socket, "MSG_ERRQUEUE", 0x2000)
_READ_BATCH = 512
"""Datagrams read per wake-up, at most (bounded, so one busy socket cannot starve the loop)."""
_INBOX_MAX = 8192
"""Datagrams read but not decoded yet, at most: beyond, new ones are dropped (a flood, not answers)."""
DECODE_SLICE = 0.005
"""Seconds of decoding (at least one datagram) before the event loop gets a turn: pyasn1 takes ~0.5 ms for
a system-group answer and ~4 ms for a 42-varbind GETBULK one, and ARP and ICMP, which time their replies
when the loop reads them, must not see the SNMP answers' decoding as network delay."""
DECODE_PAUSE = 0.001
"""Seconds the loop may sleep between two slices when it has nothing else to do: it then holds no GIL, so
threads (ARP's senders) can run. Without it, a thread that releases the GIL for every frame it sends waits
up to the interpreter's switch interval (5 ms) to get it back while decoding keeps it busy."""


class TimeoutEstimator(Protocol):
    """How long to wait for an answer, learnt from the RTTs sampled (discovery's ``RttEstimator``)."""

    def sample(self, rtt: float) -> None: ...

    def timeout(self) -> float: ...


class V2cTransport:
    """One non-blocking UDP socket carrying every community request of a scan.

    Datagrams are read as soon as the socket is readable and timestamped then (their RTT); they are
    decoded from an inbox in slices of :data:`DECODE_SLICE`, with a turn of the event loop between slices.
    The reaper never expires a request while a datagram from its host waits undecoded in the inbox.
    """

    def __init__(
        self,
        estimator: TimeoutEstimator,
        *,
        port: int = 161,
        tick: float = 0.01,
        codec: V2cCodec | None = None,
    ) -> None:
        self.estimator = estimator
        self.port = port
        self.tick = tick
        self.codec = codec or V2cCodec()
        self.sent = 0
        self.received = 0
        self.stray = 0
        self.decode_seconds = 0.0
        """CPU time spent decoding datagrams (pyasn1), for the probe's statistics."""
        self._pending: dict[int, _Pending] = {}
        self._dead: dict[str, str] = {}
        self._inbox: deque[tuple[bytes, str, float]] = deque()
        self._inbox_from: Counter[str] = Counter()
        self._draining: asyncio.Handle | None = None
        self._next_id = int.from_bytes(os.urandom(4), "big") & 0x3FFFFFFF
        self._sock: socket.socket | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def open(self) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_IP, _IP_RECVERR, 1)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
            sock.bind(("0.0.0.0", 0))  # noqa: S104 - an ephemeral client port
            loop.add_reader(sock.fileno(), self._on_readable)
        except BaseException:
            sock.close()
            raise
        self._sock, self._loop = sock, loop
        self._reaper = loop.create_task(self._reap())

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        if self._sock is not None and self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        if self._draining is not None:
            self._draining.cancel()
            self._draining = None
        self._inbox.clear()
        self._inbox_from.clear()
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(SnmpTimeout("transport closed"))
        self._pending.clear()

    def _request_id(self) -> int:
        self._next_id = (self._next_id + 1) & 0x7FFFFFFF or 1
        return self._next_id

    async def request(
        self,
        ip: str,
        community: bytes,
        oids: Sequence[Oid],
        *,
        kind: RequestKind = RequestKind.GET_BULK,
        non_repeaters: int = 0,
        max_repetitions: int = 0,
    ) -> Reply:
        """Send one request and wait for its answer; raises :class:`SnmpTimeout` or :class:`SnmpNoAgent`."""
        if ip in self._dead:
            raise SnmpNoAgent(self._dead[ip])
        assert self._sock is not None, "transport not open"
        assert self._loop is not None
        request_id = self._request_id()
        data = self.codec.encode_request(
            community=community,
            request_id=request_id,
            oids=oids,
            kind=kind,
            non_repeaters=non_repeaters,
            max_repetitions=max_repetitions,
        )
        future: asyncio.Future[Reply] = self._loop.create_future()
        self._pending[request_id] = _Pending(ip, community, future, time.monotonic())
        try:
            await self._send(data, ip)
            self.sent += 1
            return await future
        finally:
            self._pending.pop(request_id, None)
            if future.done() and not future.cancelled():
                # An ICMP error about this host may have settled it while our own send failed or we were
                # cancelled: what it says is what the caller already learns (or no longer needs).
                future.exception()

    async def _send(self, data: bytes, ip: str) -> None:
        """sendto, where an error may be a stale one: an ICMP error about *another* host sets the socket's
        pending error, which the next call on it (this one) returns. Read the error queue (which names the
        host) and try again; only an error that repeats is about this send."""
        assert self._sock is not None
        assert self._loop is not None
        for attempt in range(3):
            try:
                self._sock.sendto(data, (ip, self.port))
                return
            except BlockingIOError:
                await self._loop.sock_sendto(self._sock, data, (ip, self.port))
                return
            except OSError as exc:
                if exc.errno not in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ECONNREFUSED):
                    raise
                self._on_readable()
                if ip in self._dead:
                    raise SnmpNoAgent(self._dead[ip]) from exc
                if attempt == 2:
                    raise SnmpNoAgent(os.strerror(exc.errno or 0).lower()) from exc

    def _on_readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        for _ in range(_READ_BATCH):
            try:
                data, ancdata, _flags, addr = sock.recvmsg(256, 1024, _MSG_ERRQUEUE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            self._on_icmp_error(ancdata, addr)
        received_at = time.monotonic()
        for _ in range(_READ_BATCH):
            try:
                data, addr = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # a queued ICMP error reported once on the normal path: read it above next time
                continue
            if len(self._inbox) >= _INBOX_MAX:
                self.received += 1
                self.stray += 1
                continue
            self._inbox.append((data, addr[0], received_at))
            self._inbox_from[addr[0]] += 1
        if self._inbox and self._draining is None and self._loop is not None:
            self._draining = self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        """Decode inbox datagrams for up to :data:`DECODE_SLICE`; the rest after :data:`DECODE_PAUSE`."""
        self._draining = None
        started, cpu = time.monotonic(), time.thread_time()
        while self._inbox:
            data, source, received_at = self._inbox.popleft()
            left = self._inbox_from[source] - 1
            if left:
                self._inbox_from[source] = left
            else:
                del self._inbox_from[source]
            self._on_datagram(data, source, received_at)
            if time.monotonic() - started >= DECODE_SLICE:
                break
        self.decode_seconds += time.thread_time() - cpu
        if self._inbox and self._loop is not None and self._sock is not None:
            self._draining = self._loop.call_later(DECODE_PAUSE, self._drain)

    def _on_icmp_error(self, ancdata: list[tuple[int, int, bytes]], addr: Any) -> None:
        target = addr[0] if isinstance(addr, tuple) and addr else None
        for level, kind, payload in ancdata:
            if level != socket.SOL_IP or kind != _IP_RECVERR or len(payload) < _SOCK_EXTENDED_ERR.size:
                continue
            ee_errno = _SOCK_EXTENDED_ERR.unpack_from(payload)[0]
            if target is None or ee_errno not in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                continue
            reason = "port unreachable" if ee_errno == errno.ECONNREFUSED else os.strerror(ee_errno).lower()
            self._dead[target] = reason
            for pending in list(self._pending.values()):
                if pending.ip == target and not pending.future.done():
                    pending.future.set_exception(SnmpNoAgent(reason))

    def _on_datagram(self, data: bytes, source: str, received_at: float) -> None:
        self.received += 1
        reply = self.codec.decode_reply(data)
        if reply is None:
            self.stray += 1
            return
        pending = self._pending.get(reply.request_id)
        if (
            pending is None
            or pending.future.done()
            or pending.ip != source
            or pending.community != reply.community
        ):
            self.stray += 1
            return
        self.estimator.sample(received_at - pending.sent_at)
        pending.future.set_result(reply)

    async def _reap(self) -> None:
        """Expire requests older than the current adaptive timeout (after reading what already arrived),
        unless an answer from their host may be among what is read but not decoded yet."""
        while True:
            await asyncio.sleep(self.tick)
            if not self._pending:
                continue
            self._on_readable()
            limit = time.monotonic() - self.estimator.timeout()
            for pending in list(self._pending.values()):
                if (
                    pending.sent_at < limit
                    and not pending.future.done()
                    and pending.ip not in self._inbox_from
                ):
                    pending.future.set_exception(SnmpTimeout("timeout"))
