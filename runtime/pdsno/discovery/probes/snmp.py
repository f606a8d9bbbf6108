"""SNMP probe: system group, interfaces and own addresses of every responder, v2c first, then SNMPv3.

SNMPv2c runs on **one** UDP socket for the whole scan: requests to all hosts are pipelined and matched
back by request-id. Messages are built and read with pysnmp's own message API (``pysnmp.proto.api``, the
v2c protocol module) and pyasn1's BER codec, without pysnmp's per-target engine: see :class:`V2cCodec`.
``IP_RECVERR`` on that socket turns an ICMP port-unreachable into an immediate "no agent" answer instead
of a timeout. Timeouts adapt to the RTTs seen (never below ``min_timeout``, never above ``timeout``),
each request is retried ``retries`` times, and communities are tried in the order given.

SNMPv3 (authPriv or authNoPriv USM users, tried in order) goes through pysnmp's v3arch engine and only for
hosts where no community worked: its per-target set-up is expensive but v3-only agents are few.

What is collected, by one GETBULK (non-repeaters: sysDescr, sysObjectID, sysUpTime, sysName,
sysServices, ifNumber; repeaters: ipAdEntAddr and the ifTable/ifXTable columns), continued only for the
columns a device has more rows of; when ipAdEntAddr is empty, ipAddressTable (ipAddressIfIndex) is
walked instead. With ``tables=False`` ("system only") one GET of the five system objects per host is all:
decoding costs ~0.1 ms per varbind with pyasn1, so the tables are what a /24 spends its SNMP CPU on.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import importlib
import logging
import os
import socket
import struct
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from ipaddress import IPv4Address
from typing import Any, Protocol

from pdsno.discovery.probes.base import (
    Observation,
    ObservationSink,
    ProbeStats,
    RttEstimator,
    TargetStream,
)
from pdsno.errors import PdsnoError, ReasonCode

log = logging.getLogger(__name__)

Oid = tuple[int, ...]


class Special(Enum):
    """The SNMPv2 exception values a varbind can carry instead of a value (RFC 3416)."""

    NO_SUCH_OBJECT = "noSuchObject"
    NO_SUCH_INSTANCE = "noSuchInstance"
    END_OF_MIB_VIEW = "endOfMibView"


Value = int | bytes | Oid | Special | None
"""INTEGER and the unsigned types → int; OCTET STRING, IpAddress, Opaque, BITS → bytes; OID → tuple;
NULL → None."""

# ------------------------------------------------------------------------------------------- the MIB bits

SYSTEM = (1, 3, 6, 1, 2, 1, 1)
SCALARS: tuple[tuple[str, Oid], ...] = (
    ("sys_descr", (*SYSTEM, 1)),
    ("sys_object_id", (*SYSTEM, 2)),
    ("sys_uptime", (*SYSTEM, 3)),
    ("sys_name", (*SYSTEM, 5)),
    ("sys_services", (*SYSTEM, 7)),
    ("if_number", (1, 3, 6, 1, 2, 1, 2, 1)),
)
SYSTEM_ONLY: tuple[tuple[str, Oid], ...] = SCALARS[:5]
"""What a system-only query GETs (the ``.0`` instance of each)."""
_IF_ENTRY = (1, 3, 6, 1, 2, 1, 2, 2, 1)
_IFX_ENTRY = (1, 3, 6, 1, 2, 1, 31, 1, 1, 1)
COLUMNS: tuple[tuple[str, Oid], ...] = (
    ("ip_ad_ent_addr", (1, 3, 6, 1, 2, 1, 4, 20, 1, 1)),
    ("ip_ad_ent_if_index", (1, 3, 6, 1, 2, 1, 4, 20, 1, 2)),
    ("if_descr", (*_IF_ENTRY, 2)),
    ("if_speed", (*_IF_ENTRY, 5)),
    ("if_phys_address", (*_IF_ENTRY, 6)),
    ("if_admin_status", (*_IF_ENTRY, 7)),
    ("if_oper_status", (*_IF_ENTRY, 8)),
    ("if_name", (*_IFX_ENTRY, 1)),
    ("if_high_speed", (*_IFX_ENTRY, 15)),
)
IP_ADDRESS_IF_INDEX: Oid = (1, 3, 6, 1, 2, 1, 4, 34, 1, 3)
"""ipAddressTable (RFC 4293), walked when the deprecated ipAddrTable is empty."""

MAX_ROWS = 20_000
"""Stop walking a device after this many table cells (bounds memory and time on a huge chassis)."""

# ------------------------------------------------------------------------------------------ credentials

AUTH_PROTOCOLS = ("md5", "sha", "sha224", "sha256", "sha384", "sha512")
PRIV_PROTOCOLS = ("des", "3des", "aes", "aes192", "aes256", "aes192c", "aes256c", "none")


@dataclass(frozen=True)
class SnmpV3Credential:
    """One USM user; keys are pass phrases (at least 8 characters, as RFC 3414 and net-snmp require)."""

    user: str
    auth_key: str = field(repr=False)
    priv_key: str | None = field(default=None, repr=False)
    auth_protocol: str = "sha"
    priv_protocol: str = "aes"

    def __post_init__(self) -> None:
        if not self.user:
            raise PdsnoError("SNMPv3 credential without a user name", code=ReasonCode.INVALID_REQUEST)
        if self.auth_protocol not in AUTH_PROTOCOLS:
            raise PdsnoError(
                f"SNMPv3 auth protocol {self.auth_protocol!r} is not one of {', '.join(AUTH_PROTOCOLS)}",
                code=ReasonCode.INVALID_REQUEST,
            )
        if self.priv_protocol not in PRIV_PROTOCOLS:
            raise PdsnoError(
                f"SNMPv3 privacy protocol {self.priv_protocol!r} is not one of {', '.join(PRIV_PROTOCOLS)}",
                code=ReasonCode.INVALID_REQUEST,
            )
        keys = [self.auth_key] + ([self.priv_key] if self.priv_protocol != "none" else [])
        if any(key is None or len(key) < 8 for key in keys):
            raise PdsnoError(
                f"SNMPv3 user {self.user!r}: pass phrases must have at least 8 characters",
                code=ReasonCode.INVALID_REQUEST,
            )

    @classmethod
    def parse(cls, text: str) -> SnmpV3Credential:
        """``USER:AUTHPASS:PRIVPASS`` (SHA + AES-128), optionally ``...:AUTHPROTO:PRIVPROTO``.

        A trailing pair is taken as protocols only when both are known protocol names; PRIVPROTO ``none``
        (with an empty PRIVPASS) is an authNoPriv user.
        """
        parts = text.split(":")
        auth_p, priv_p = "sha", "aes"
        if len(parts) >= 5 and parts[-2].lower() in AUTH_PROTOCOLS and parts[-1].lower() in PRIV_PROTOCOLS:
            auth_p, priv_p = parts[-2].lower(), parts[-1].lower()
            parts = parts[:-2]
        if len(parts) < 3:
            raise PdsnoError(
                "SNMPv3 credentials are USER:AUTHPASS:PRIVPASS[:AUTHPROTO:PRIVPROTO]",
                code=ReasonCode.INVALID_REQUEST,
            )
        user, auth, priv = parts[0], parts[1], ":".join(parts[2:])
        return cls(user, auth, priv or None, auth_p, priv_p)


@dataclass(frozen=True)
class SnmpCredentials:
    communities: tuple[str, ...] = ()
    v3: tuple[SnmpV3Credential, ...] = ()

    def __repr__(self) -> str:  # never print secrets
        return f"SnmpCredentials(communities=<{len(self.communities)}>, v3={[c.user for c in self.v3]})"

    @property
    def empty(self) -> bool:
        return not self.communities and not self.v3


# ------------------------------------------------------------------------------------------- exceptions


class SnmpFailure(Exception):
    """One host's SNMP exchange failed; ``kind`` is the short reason the observation records."""

    kind = "error"


class SnmpTimeout(SnmpFailure):
    kind = "timeout"


class SnmpNoAgent(SnmpFailure):
    """ICMP said nobody listens (port unreachable) or the host is unreachable."""

    kind = "no-agent"


class SnmpAuthFailure(SnmpFailure):
    kind = "auth-failed"


class SnmpPduError(SnmpFailure):
    """The agent answered with a non-zero error-status."""

    kind = "pdu-error"

    def __init__(self, status: int, index: int = 0) -> None:
        super().__init__(f"error-status {status} at index {index}")
        self.status = status


# ------------------------------------------------------------------------- v2c: pysnmp's message API


class RequestKind(Enum):
    GET = "get"
    GET_BULK = "getbulk"


@dataclass(frozen=True, slots=True)
class Reply:
    """A community Response (or Report) PDU, its values made plain."""

    community: bytes
    report: bool
    """A Report PDU: the agent refused the message rather than answering it."""
    request_id: int
    error_status: int
    error_index: int
    varbinds: list[tuple[Oid, Value]]


class V2cCodec:
    """Community messages through pysnmp's protocol API and pyasn1's BER codec (no pysnmp engine).

    ``pysnmp.proto.api.PROTOCOL_MODULES[SNMP_VERSION_2C]`` builds the request PDUs (``GetRequestPDU``,
    ``GetBulkRequestPDU``, ``apiPDU``/``apiBulkPDU``, ``apiMessage``) and is the ``asn1Spec`` answers are
    decoded against. A request message is built once per distinct (community, PDU, OIDs) and re-encoded
    with a new request-id each time it is sent (building costs ~0.2 ms, encoding ~0.1 ms). Importing
    pysnmp costs ~50 ms: use :func:`v2c_codec`, which loads it once (in a worker thread during a scan).
    """

    TEMPLATES = 256
    """Request messages kept for re-use (the system GET and the first GETBULK are the same for every host
    of a community; table continuations are not)."""

    def __init__(self) -> None:
        api = importlib.import_module("pysnmp.proto.api")
        rfc1905 = importlib.import_module("pysnmp.proto.rfc1905")
        univ = importlib.import_module("pyasn1.type.univ")
        self.api: Any = api.PROTOCOL_MODULES[api.SNMP_VERSION_2C]
        self._encode: Any = importlib.import_module("pyasn1.codec.ber.encoder").encode
        self._decode: Any = importlib.import_module("pyasn1.codec.ber.decoder").decode
        self._spec: Any = self.api.Message()
        self._null: Any = univ.Null
        self._octets: Any = univ.OctetString
        self._integer: Any = univ.Integer
        self._oid: Any = univ.ObjectIdentifier
        self._specials: dict[type, Special] = {
            rfc1905.NoSuchObject: Special.NO_SUCH_OBJECT,
            rfc1905.NoSuchInstance: Special.NO_SUCH_INSTANCE,
            rfc1905.EndOfMibView: Special.END_OF_MIB_VIEW,
        }
        self._templates: dict[tuple[Any, ...], Any] = {}

    def encode_request(
        self,
        *,
        community: bytes,
        request_id: int,
        oids: Sequence[Oid],
        kind: RequestKind = RequestKind.GET,
        non_repeaters: int = 0,
        max_repetitions: int = 0,
    ) -> bytes:
        """A v2c GetRequest or GetBulkRequest message asking for ``oids`` (values NULL)."""
        if kind is RequestKind.GET:
            non_repeaters = max_repetitions = 0
        key = (community, kind, tuple(oids), non_repeaters, max_repetitions)
        message = self._templates.get(key)
        if message is None:
            message = self._build(community, oids, kind, non_repeaters, max_repetitions)
            if len(self._templates) >= self.TEMPLATES:
                del self._templates[next(iter(self._templates))]
            self._templates[key] = message
        self.api.apiPDU.set_request_id(self.api.apiMessage.get_pdu(message), request_id)
        return bytes(self._encode(message))

    def _build(
        self, community: bytes, oids: Sequence[Oid], kind: RequestKind, non_repeaters: int, max_rep: int
    ) -> Any:
        api = self.api
        if kind is RequestKind.GET_BULK:
            pdu = api.GetBulkRequestPDU()
            api.apiBulkPDU.set_defaults(pdu)
            api.apiBulkPDU.set_non_repeaters(pdu, non_repeaters)
            api.apiBulkPDU.set_max_repetitions(pdu, max_rep)
        else:
            pdu = api.GetRequestPDU()
            api.apiPDU.set_defaults(pdu)
        api.apiPDU.set_varbinds(pdu, [(oid, api.null) for oid in oids])
        message = api.Message()
        api.apiMessage.set_defaults(message)
        api.apiMessage.set_community(message, community)
        api.apiMessage.set_pdu(message, pdu)
        return message

    def decode_reply(self, data: bytes) -> Reply | None:
        """The Response or Report PDU of a v1/v2c message; None for anything else or malformed BER."""
        api = self.api
        try:
            message, _rest = self._decode(data, asn1Spec=self._spec)
            if int(api.apiMessage.get_version(message)) not in (0, 1):
                return None
            pdu = api.apiMessage.get_pdu(message)
            report = isinstance(pdu, api.ReportPDU)
            if not report and not isinstance(pdu, api.ResponsePDU):
                return None
            return Reply(
                community=bytes(api.apiMessage.get_community(message).asOctets()),
                report=report,
                request_id=int(api.apiPDU.get_request_id(pdu)),
                error_status=int(api.apiPDU.get_error_status(pdu)),
                error_index=int(api.apiPDU.get_error_index(pdu, muteErrors=True)),
                varbinds=[(tuple(oid), self.value(value)) for oid, value in api.apiPDU.get_varbinds(pdu)],
            )
        except Exception:  # pyasn1 and pysnmp errors on whatever a datagram holds: not an answer of ours
            log.debug("undecodable SNMP datagram (%d bytes)", len(data), exc_info=True)
            return None

    def value(self, value: Any) -> Value:
        """A pysnmp (pyasn1) value → its plain form (see :data:`Value`)."""
        if isinstance(value, self._null):  # before OctetString: pyasn1's Null is one
            return self._specials.get(type(value))  # noSuchObject and the others; NULL itself is None
        if isinstance(value, self._octets):  # OctetString, IpAddress, Opaque, Bits
            return bytes(value.asOctets())
        if isinstance(value, self._integer):  # Integer32, Counter32/64, Gauge32, TimeTicks, Unsigned32
            return int(value)
        if isinstance(value, self._oid):
            return tuple(value.asTuple())
        return None


@functools.cache
def v2c_codec() -> V2cCodec:
    """The process's codec (pysnmp is imported on the first call)."""
    return V2cCodec()


# ------------------------------------------------------------------------------- v2c: the shared socket


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


class V2cTransport:
    """One non-blocking UDP socket carrying every community request of a scan.

    Datagrams are read as soon as the socket is readable and timestamped then (their RTT); they are
    decoded from an inbox in slices of :data:`DECODE_SLICE`, with a turn of the event loop between slices.
    The reaper never expires a request while a datagram from its host waits undecoded in the inbox.
    """

    def __init__(
        self,
        estimator: RttEstimator,
        *,
        port: int = 161,
        tick: float = 0.01,
        codec: V2cCodec | None = None,
    ) -> None:
        self.estimator = estimator
        self.port = port
        self.tick = tick
        self.codec = codec or v2c_codec()
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


# ------------------------------------------------------------------------------- sessions and the walk


class BulkSession(Protocol):
    """One credential towards one agent, able to do a GET and a GETBULK."""

    version: str
    requests: int

    async def get(self, oids: Sequence[Oid]) -> list[tuple[Oid, Value]]: ...

    async def bulk(
        self, non_repeaters: Sequence[Oid], repeaters: Sequence[Oid], max_repetitions: int
    ) -> list[tuple[Oid, Value]]: ...


class V2cSession:
    version = "v2c"

    def __init__(self, transport: V2cTransport, ip: str, community: str, retries: int) -> None:
        self.transport = transport
        self.ip = ip
        self.community = community.encode()
        self.retries = retries
        self.requests = 0

    async def _ask(self, oids: Sequence[Oid], kind: RequestKind, non_rep: int, max_rep: int) -> Reply:
        for attempt in range(self.retries + 1):
            self.requests += 1
            try:
                reply = await self.transport.request(
                    self.ip,
                    self.community,
                    oids,
                    kind=kind,
                    non_repeaters=non_rep,
                    max_repetitions=max_rep,
                )
            except SnmpTimeout:
                if attempt == self.retries:
                    raise
                continue
            if reply.report:
                raise SnmpAuthFailure("report PDU")
            if reply.error_status:
                raise SnmpPduError(reply.error_status, reply.error_index)
            return reply
        raise SnmpTimeout("timeout")  # pragma: no cover - the loop returns or raises

    async def get(self, oids: Sequence[Oid]) -> list[tuple[Oid, Value]]:
        return (await self._ask(oids, RequestKind.GET, 0, 0)).varbinds

    async def bulk(
        self, non_repeaters: Sequence[Oid], repeaters: Sequence[Oid], max_repetitions: int
    ) -> list[tuple[Oid, Value]]:
        oids = [*non_repeaters, *repeaters]
        reply = await self._ask(oids, RequestKind.GET_BULK, len(non_repeaters), max_repetitions)
        return reply.varbinds


@dataclass
class _Column:
    name: str
    prefix: Oid
    last: Oid
    rows: dict[Oid, Value] = field(default_factory=dict)
    done: bool = False

    def feed(self, oid: Oid, value: Value) -> None:
        if self.done:
            return
        if isinstance(value, Special) or oid[: len(self.prefix)] != self.prefix or oid <= self.last:
            self.done = True
            return
        self.rows[oid[len(self.prefix) :]] = value
        self.last = oid


def _text(value: Value) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace").rstrip("\x00").strip()
    return None


def _mac(value: Value) -> str | None:
    if isinstance(value, bytes) and len(value) == 6 and any(value) and value != b"\xff" * 6:
        return ":".join(f"{b:02x}" for b in value)
    return None


def _oid_text(value: Value) -> str | None:
    if isinstance(value, tuple):
        return ".".join(str(arc) for arc in value)
    return None


def _int(value: Value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _system_facts(facts: dict[str, Any], varbinds: Sequence[tuple[Oid, Value]]) -> None:
    """The scalars answered in the order of :data:`SCALARS` (GET or GETNEXT: only ``.0`` instances)."""
    for (name, prefix), (oid, value) in zip(SCALARS, varbinds, strict=False):
        if oid != (*prefix, 0) or isinstance(value, Special):
            continue
        if name in ("sys_descr", "sys_name"):
            facts[name] = _text(value)
        elif name == "sys_object_id":
            facts[name] = _oid_text(value)
        else:
            facts[name] = _int(value)


async def collect(
    session: BulkSession,
    *,
    tables: bool = True,
    first_max_repetitions: int = 4,
    varbinds_per_request: int = 48,
    max_requests: int = 64,
) -> dict[str, Any]:
    """Walk the system group, interfaces and own addresses of one agent; JSON-able facts.

    ``tables=False``: the system group only, one GET (no ``if_number``, ``interfaces``, ``ip_addresses``,
    ``ip_if_index``: not asked for, which is not the same as empty).
    """
    facts: dict[str, Any] = {}
    if not tables:
        _system_facts(facts, await session.get([(*prefix, 0) for _, prefix in SYSTEM_ONLY]))
        facts["requests"] = session.requests
        return facts
    columns = [_Column(name, prefix, prefix) for name, prefix in COLUMNS]
    non_rep = [prefix for _, prefix in SCALARS]
    max_rep = max(1, first_max_repetitions)
    try:
        varbinds = await session.bulk(non_rep, [c.prefix for c in columns], max_rep)
    except SnmpPduError as exc:
        if exc.status != 1:  # not tooBig: settle for the system group
            raise
        varbinds = await session.bulk(non_rep, [], 0)
        for column in columns:
            column.done = True
    _system_facts(facts, varbinds[: len(SCALARS)])
    _feed(columns, varbinds[len(SCALARS) :])

    tried_ip_mib = False
    requests = 1
    while requests < max_requests and sum(len(c.rows) for c in columns) < MAX_ROWS:
        ip_col = columns[0]
        if ip_col.name == "ip_ad_ent_addr" and ip_col.done and not ip_col.rows and not tried_ip_mib:
            tried_ip_mib = True
            columns.append(_Column("ip_address_if_index", IP_ADDRESS_IF_INDEX, IP_ADDRESS_IF_INDEX))
        active = [c for c in columns if not c.done]
        if not active:
            break
        max_rep = max(1, varbinds_per_request // len(active))
        try:
            varbinds = await session.bulk([], [c.last for c in active], max_rep)
        except SnmpPduError:
            break  # keep what we have
        requests += 1
        if not varbinds:
            break
        _feed(active, varbinds)
    addresses = _addresses(columns)
    facts["ip_addresses"] = list(addresses)
    facts["ip_if_index"] = {ip: i for ip, i in addresses.items() if i is not None}
    facts["interfaces"] = _interfaces(columns)
    facts["requests"] = session.requests
    return facts


def _feed(columns: Sequence[_Column], varbinds: Sequence[tuple[Oid, Value]]) -> None:
    """Distribute a GETBULK answer row by row; an agent may truncate it anywhere (RFC 3416 4.2.3)."""
    width = len(columns)
    if not width:
        return
    if not varbinds:  # nothing at all for these columns: asking again would not progress
        for column in columns:
            column.done = True
        return
    for i, (oid, value) in enumerate(varbinds):
        columns[i % width].feed(oid, value)


def _addresses(columns: Sequence[_Column]) -> dict[str, int | None]:
    """The agent's own IPv4 addresses → ifIndex of the interface holding each (None when unknown)."""
    rows = {c.name: c.rows for c in columns}
    found: dict[str, int | None] = {}
    if_index_of = rows.get("ip_ad_ent_if_index", {})
    for index in rows.get("ip_ad_ent_addr", {}):
        if len(index) == 4:
            found[".".join(map(str, index))] = _int(if_index_of.get(index))
    for index, value in rows.get("ip_address_if_index", {}).items():
        if index[:2] == (1, 4) and len(index) == 6:  # addressType ipv4(1), length 4, octets
            found.setdefault(".".join(map(str, index[2:])), _int(value))
    valid: dict[str, int | None] = {}
    for text, if_index in found.items():
        try:
            valid[str(IPv4Address(text))] = if_index
        except ValueError:
            continue
    return dict(sorted(valid.items(), key=lambda item: IPv4Address(item[0])))


def _interfaces(columns: Sequence[_Column]) -> list[dict[str, Any]]:
    by_name = {c.name: c.rows for c in columns}
    indexes: set[int] = set()
    for name in ("if_descr", "if_speed", "if_phys_address", "if_admin_status", "if_oper_status", "if_name"):
        indexes |= {index[0] for index in by_name.get(name, {}) if len(index) == 1 and index[0] >= 0}
    result = []
    for if_index in sorted(indexes):
        key = (if_index,)
        name = _text(by_name.get("if_name", {}).get(key)) or _text(by_name.get("if_descr", {}).get(key)) or ""
        speed = _int(by_name.get("if_speed", {}).get(key))
        high = _int(by_name.get("if_high_speed", {}).get(key))
        if high is not None and (speed is None or high * 1_000_000 > speed):
            speed = high * 1_000_000
        admin = _int(by_name.get("if_admin_status", {}).get(key))
        oper = _int(by_name.get("if_oper_status", {}).get(key))
        result.append(
            {
                "if_index": if_index,
                "name": name,
                "description": _text(by_name.get("if_descr", {}).get(key)) or "",
                "mac_address": _mac(by_name.get("if_phys_address", {}).get(key)),
                "admin_up": None if admin is None else admin == 1,
                "oper_up": None if oper is None else oper == 1,
                "speed_bps": speed if speed is None or speed >= 0 else None,
            }
        )
    return result


# ------------------------------------------------------------------------------------------ v3: pysnmp


class V3Client:
    """pysnmp's v3arch engine, created lazily (importing pysnmp and building the engine costs ~0.25 s)."""

    def __init__(self, *, port: int, timeout: float, retries: int) -> None:
        self.port = port
        self.timeout = timeout
        self.retries = retries
        self._engine: Any = None
        self._ready: asyncio.Task[Any] | None = None

    def warm_up(self) -> None:
        if self._ready is None:
            self._ready = asyncio.get_running_loop().create_task(asyncio.to_thread(_new_engine))

    async def engine(self) -> Any:
        self.warm_up()
        assert self._ready is not None
        if self._engine is None:
            self._engine = await self._ready
        return self._engine

    async def close(self) -> None:
        if self._ready is not None and not self._ready.done():
            self._ready.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._ready
        if self._engine is not None:
            with contextlib.suppress(Exception):
                self._engine.close_dispatcher()
            self._engine = None

    async def session(self, ip: str, credential: SnmpV3Credential) -> V3Session:
        engine = await self.engine()
        target = await _hlapi().UdpTransportTarget.create(
            (ip, self.port), timeout=self.timeout, retries=self.retries
        )
        return V3Session(engine, target, credential)


def _hlapi() -> Any:
    """pysnmp's v3arch asyncio API, imported on first use (pysnmp ships no type information)."""
    return importlib.import_module("pysnmp.hlapi.v3arch.asyncio")


def _new_engine() -> Any:
    return _hlapi().SnmpEngine()


def _usm(credential: SnmpV3Credential) -> Any:
    auth = _hlapi()

    auth_map = {
        "md5": auth.usmHMACMD5AuthProtocol,
        "sha": auth.usmHMACSHAAuthProtocol,
        "sha224": auth.usmHMAC128SHA224AuthProtocol,
        "sha256": auth.usmHMAC192SHA256AuthProtocol,
        "sha384": auth.usmHMAC256SHA384AuthProtocol,
        "sha512": auth.usmHMAC384SHA512AuthProtocol,
    }
    priv_map = {
        "des": auth.usmDESPrivProtocol,
        "3des": auth.usm3DESEDEPrivProtocol,
        "aes": auth.usmAesCfb128Protocol,
        "aes192": auth.usmAesBlumenthalCfb192Protocol,
        "aes256": auth.usmAesBlumenthalCfb256Protocol,
        "aes192c": auth.usmAesCfb192Protocol,
        "aes256c": auth.usmAesCfb256Protocol,
        "none": auth.usmNoPrivProtocol,
    }
    priv = credential.priv_protocol
    return auth.UsmUserData(
        credential.user,
        authKey=credential.auth_key,
        privKey=None if priv == "none" else credential.priv_key,
        authProtocol=auth_map[credential.auth_protocol],
        privProtocol=priv_map[priv],
    )


class V3Session:
    version = "v3"

    def __init__(self, engine: Any, target: Any, credential: SnmpV3Credential) -> None:
        self.engine = engine
        self.target = target
        self.credential = credential
        self.user = _usm(credential)
        self.requests = 0

    def _check(self, error_indication: Any, error_status: Any, error_index: Any) -> None:
        errind = importlib.import_module("pysnmp.proto.errind")

        if error_indication:
            if isinstance(error_indication, errind.RequestTimedOut):
                raise SnmpTimeout("timeout")
            raise SnmpAuthFailure(str(error_indication))
        if error_status and int(error_status):
            raise SnmpPduError(int(error_status), int(error_index or 0))

    async def get(self, oids: Sequence[Oid]) -> list[tuple[Oid, Value]]:
        hl = _hlapi()

        self.requests += 1
        objects = [hl.ObjectType(hl.ObjectIdentity(oid)) for oid in oids]
        result = await hl.get_cmd(
            self.engine, self.user, self.target, hl.ContextData(), *objects, lookupMib=False
        )
        return self._varbinds(result)

    async def bulk(
        self, non_repeaters: Sequence[Oid], repeaters: Sequence[Oid], max_repetitions: int
    ) -> list[tuple[Oid, Value]]:
        hl = _hlapi()

        self.requests += 1
        objects = [hl.ObjectType(hl.ObjectIdentity(oid)) for oid in (*non_repeaters, *repeaters)]
        result = await hl.bulk_cmd(
            self.engine,
            self.user,
            self.target,
            hl.ContextData(),
            len(non_repeaters),
            max_repetitions,
            *objects,
            lookupMib=False,
        )
        return self._varbinds(result)

    def _varbinds(self, result: Any) -> list[tuple[Oid, Value]]:
        self._check(*result[:3])
        plain = v2c_codec().value
        return [(tuple(int(arc) for arc in vb[0]), plain(vb[1])) for vb in result[3]]


# ------------------------------------------------------------------------------------------- the probe


class SnmpProbe:
    """Queries every address it is given (the responders of ARP and ICMP) as soon as it arrives.

    ``tables=False`` asks for the system group only (one GET per host): no interfaces, no own addresses.
    """

    name = "snmp"

    def __init__(
        self,
        credentials: SnmpCredentials,
        *,
        timeout: float = 1.0,
        min_timeout: float = 0.2,
        retries: int = 1,
        concurrency: int = 100,
        port: int = 161,
        first_max_repetitions: int = 4,
        tables: bool = True,
    ) -> None:
        self.credentials = credentials
        self.timeout = timeout
        self.min_timeout = min_timeout
        self.retries = max(0, retries)
        self.concurrency = max(1, concurrency)
        self.port = port
        self.first_max_repetitions = first_max_repetitions
        self.tables = tables

    async def run(self, targets: TargetStream, sink: ObservationSink) -> ProbeStats:
        stats = ProbeStats(self.name, started=time.monotonic())
        if self.credentials.empty:
            raise PdsnoError(
                "no SNMP community and no SNMPv3 credential given", code=ReasonCode.INVALID_REQUEST
            )
        estimator = RttEstimator(self.min_timeout, self.timeout)
        v3 = (
            V3Client(port=self.port, timeout=self.timeout, retries=self.retries)
            if self.credentials.v3
            else None
        )
        semaphore = asyncio.Semaphore(self.concurrency)
        tasks: set[asyncio.Task[None]] = set()
        versions: dict[str, int] = {}
        transport: V2cTransport | None = None
        try:
            if v3 is not None:
                v3.warm_up()
            if self.credentials.communities:
                # pysnmp's import (~50 ms) off the loop, while ARP and ICMP find the first targets
                codec = await asyncio.to_thread(v2c_codec)
                transport = V2cTransport(estimator, port=self.port, codec=codec)
                transport.open()
            async for batch in targets.batches():
                for ip in batch:
                    stats.targets += 1
                    task = asyncio.create_task(
                        self._host(str(ip), transport, v3, semaphore, sink, stats, versions)
                    )
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
            while tasks:
                await asyncio.gather(*list(tasks))
        finally:
            for task in tasks:
                task.cancel()
            if transport is not None:
                await transport.close()
                stats.sent += transport.sent
                stats.details["stray_datagrams"] = transport.stray
                stats.details["decode_cpu_s"] = round(transport.decode_seconds, 4)
            if v3 is not None:
                await v3.close()
            stats.finished = time.monotonic()
        stats.details["versions"] = versions
        stats.details["tables"] = self.tables
        stats.details["adaptive_timeout_s"] = round(estimator.timeout(), 4)
        return stats

    async def _host(
        self,
        ip: str,
        transport: V2cTransport | None,
        v3: V3Client | None,
        semaphore: asyncio.Semaphore,
        sink: ObservationSink,
        stats: ProbeStats,
        versions: dict[str, int],
    ) -> None:
        async with semaphore:
            started = time.monotonic()
            facts: dict[str, Any] | None = None
            error = "no credential tried"
            no_agent = False
            if transport is not None:
                for n, community in enumerate(self.credentials.communities):
                    session = V2cSession(transport, ip, community, self.retries)
                    try:
                        facts = await collect(
                            session, tables=self.tables, first_max_repetitions=self.first_max_repetitions
                        )
                    except SnmpNoAgent as exc:
                        error, no_agent = f"no agent ({exc})", True
                        break
                    except SnmpFailure as exc:
                        error = "timeout" if isinstance(exc, SnmpTimeout) else f"{exc.kind}: {exc}"
                        stats.retries += max(0, session.requests - 1)
                        continue
                    facts["credential"] = f"community #{n + 1}"
                    break
            if facts is None and not no_agent and v3 is not None:
                for credential in self.credentials.v3:
                    try:
                        v3_session = await v3.session(ip, credential)
                        stats.sent += 1
                        facts = await collect(
                            v3_session, tables=self.tables, first_max_repetitions=self.first_max_repetitions
                        )
                    except SnmpTimeout:
                        error = "timeout"
                        break  # no v3 agent answered: other users will not fare better
                    except SnmpFailure as exc:
                        error = f"{exc.kind}: {exc}"
                        continue
                    except Exception as exc:  # pysnmp raising on odd input: this host only
                        log.debug("SNMPv3 towards %s failed", ip, exc_info=True)
                        error = f"error: {exc}"
                        break
                    facts["credential"] = f"user {credential.user}"
                    stats.sent += v3_session.requests - 1
                    break
            now = time.monotonic()
            if facts is None:
                stats.count_error(error.split(":")[0].split(" (")[0])
                sink.emit(Observation(ip, self.name, fields={"reachable": False, "error": error}))
                return
            version = "v3" if facts.get("credential", "").startswith("user") else "v2c"
            versions[version] = versions.get(version, 0) + 1
            stats.responded(now)
            facts.update(reachable=True, version=version, elapsed_ms=round((now - started) * 1000, 3))
            sink.emit(Observation(ip, self.name, fields=facts))
