"""SNMP probe: system group, interfaces and own addresses of every responder, v2c first, then SNMPv3.

SNMPv2c runs on one :class:`~pdsno.snmp.V2cTransport` socket for the whole scan (messages in plain BER,
:class:`~pdsno.snmp.V2cCodec`). Timeouts adapt to the RTTs
seen (never below ``min_timeout``, never above ``timeout``), each request is retried ``retries`` times, and
every community is tried at once. SNMPv3 (authPriv or authNoPriv USM users, tried in order) goes through
pysnmp's engine (:class:`~pdsno.snmp.V3Client`, built in a worker thread from the start) and only for hosts that did not answer
the first request of any community, beside that request's retries; a community's answer wins.

What is collected, by one GETBULK (non-repeaters: sysDescr, sysObjectID, sysUpTime, sysName,
sysServices, ifNumber; repeaters: ipAdEntAddr and the ifTable/ifXTable columns), continued only for the
columns a device has more rows of; when ipAdEntAddr is empty, ipAddressTable (ipAddressIfIndex) is
walked instead. With ``tables=False`` ("system only") one GET of the five system objects per host is all.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any

from pdsno.discovery.probes.base import (
    Observation,
    ObservationSink,
    ProbeStats,
    RttEstimator,
    TargetStream,
)
from pdsno.errors import PdsnoError, ReasonCode
from pdsno.snmp import (
    BulkSession,
    Oid,
    SnmpCredentials,
    SnmpFailure,
    SnmpNoAgent,
    SnmpPduError,
    SnmpTimeout,
    Special,
    V2cSession,
    V2cTransport,
    V3Client,
    V3Session,
    Value,
)

log = logging.getLogger(__name__)

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

# --------------------------------------------------------------------------------------------- the walk


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
        concurrency: int = 256,
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
                transport = V2cTransport(estimator, port=self.port)
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

    async def _any_community(
        self, ip: str, transport: V2cTransport, stats: ProbeStats, silent: asyncio.Event | None = None
    ) -> tuple[dict[str, Any] | None, str, bool]:
        """(facts, last error, no agent) of a walk with every community at once: an agent ignores a
        wrong one, so trying them in turn would cost a timeout each. The first walk that succeeds wins
        (the lowest-numbered among those done together) and the others are dropped. ``silent`` is set
        once the first request of every community has gone unanswered (their retries still to come)."""
        communities = self.credentials.communities
        unanswered = 0

        def on_silence() -> None:
            nonlocal unanswered
            unanswered += 1
            if silent is not None and unanswered == len(communities):
                silent.set()

        sessions: list[BulkSession] = [
            V2cSession(transport, ip, c, self.retries)
            if silent is None
            else _Watched(transport, ip, c, self.retries, on_silence)
            for c in communities
        ]
        walks = {
            asyncio.create_task(
                collect(session, tables=self.tables, first_max_repetitions=self.first_max_repetitions)
            ): (n, session)
            for n, session in enumerate(sessions)
        }
        error, no_agent = "no credential tried", False
        try:
            while walks:
                done, _ = await asyncio.wait(walks, return_when=asyncio.FIRST_COMPLETED)
                for walk in sorted(done, key=lambda w: walks[w][0]):
                    n, session = walks.pop(walk)
                    failure = walk.exception()
                    if failure is None:
                        facts = walk.result()
                        facts["credential"] = f"community #{n + 1}"
                        return facts, error, False
                    if not isinstance(failure, SnmpFailure):
                        raise failure
                    # The other walks meet the same ICMP answer at once: let them end on their own.
                    if isinstance(failure, SnmpNoAgent):
                        error, no_agent = f"no agent ({failure})", True
                    elif not no_agent:
                        error = (
                            "timeout" if isinstance(failure, SnmpTimeout) else f"{failure.kind}: {failure}"
                        )
                    stats.retries += max(0, session.requests - 1)
        finally:
            for walk in walks:
                walk.cancel()
            await asyncio.gather(*walks, return_exceptions=True)
        return None, error, no_agent

    async def _v3(self, ip: str, v3: V3Client, stats: ProbeStats) -> tuple[dict[str, Any] | None, str]:
        """(facts, last error) of a walk with the SNMPv3 users, in turn."""
        error = "no credential tried"
        for credential in self.credentials.v3:
            try:
                v3_session = await V3Session.open(v3, ip, credential)
                stats.sent += 1
                facts = await collect(
                    v3_session, tables=self.tables, first_max_repetitions=self.first_max_repetitions
                )
            except SnmpTimeout:
                return None, "timeout"  # no v3 agent answered: other users will not fare better
            except SnmpFailure as exc:
                error = f"{exc.kind}: {exc}"
                continue
            except Exception as exc:  # pysnmp raising on odd input: this host only
                log.debug("SNMPv3 towards %s failed", ip, exc_info=True)
                return None, f"error: {exc}"
            facts["credential"] = f"user {credential.user}"
            stats.sent += v3_session.requests - 1
            return facts, error
        return None, error

    async def _v2c_or_v3(
        self, ip: str, transport: V2cTransport, v3: V3Client, stats: ProbeStats
    ) -> tuple[dict[str, Any] | None, str, bool]:
        """The communities, and the v3 users as soon as the first request of every community has gone
        unanswered, beside the v2c retries: a v3-only agent ignores v2c, and waiting for those retries to
        time out as well cost the /24 its slowest device. The communities' answer wins when both come."""
        silent = asyncio.Event()
        v2c = asyncio.create_task(self._any_community(ip, transport, stats, silent))
        silence = asyncio.create_task(silent.wait())
        v3_walk: asyncio.Task[tuple[dict[str, Any] | None, str]] | None = None
        try:
            await asyncio.wait({v2c, silence}, return_when=asyncio.FIRST_COMPLETED)
            if not v2c.done():
                v3_walk = asyncio.create_task(self._v3(ip, v3, stats))
                await asyncio.wait({v2c, v3_walk}, return_when=asyncio.FIRST_COMPLETED)
                if not v2c.done() and v3_walk.result()[0] is not None:
                    facts, error = v3_walk.result()
                    return facts, error, False
            facts, error, no_agent = await v2c
            if facts is not None or no_agent:
                return facts, error, no_agent
            facts, error = await (v3_walk or self._v3(ip, v3, stats))
            return facts, error, False
        finally:
            for task in (silence, v2c, v3_walk):
                if task is not None and not task.done():
                    task.cancel()
            await asyncio.gather(
                *(t for t in (silence, v2c, v3_walk) if t is not None), return_exceptions=True
            )

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
            if transport is not None and self.credentials.communities:
                if v3 is not None:
                    facts, error, _no_agent = await self._v2c_or_v3(ip, transport, v3, stats)
                else:
                    facts, error, _no_agent = await self._any_community(ip, transport, stats)
            elif v3 is not None:
                facts, error = await self._v3(ip, v3, stats)
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


class _Watched:
    """A v2c session whose first request goes out once before its retries: when that one times out,
    ``on_silence`` is called (the agent may not speak v2c at all), then it is retried as usual."""

    version = "v2c"

    def __init__(
        self, transport: V2cTransport, ip: str, community: str, retries: int, on_silence: Callable[[], None]
    ) -> None:
        self._once = V2cSession(transport, ip, community, 0)
        self._again = V2cSession(transport, ip, community, retries - 1) if retries > 0 else None
        self._rest = V2cSession(transport, ip, community, retries)
        self._on_silence = on_silence
        self._asked = False
        self.requests = 0

    async def get(self, oids: Sequence[Oid]) -> list[tuple[Oid, Value]]:
        return await self._ask(lambda session: session.get(oids))

    async def bulk(
        self, non_repeaters: Sequence[Oid], repeaters: Sequence[Oid], max_repetitions: int
    ) -> list[tuple[Oid, Value]]:
        return await self._ask(lambda session: session.bulk(non_repeaters, repeaters, max_repetitions))

    async def _ask(
        self, call: Callable[[V2cSession], Awaitable[list[tuple[Oid, Value]]]]
    ) -> list[tuple[Oid, Value]]:
        try:
            if self._asked:
                return await call(self._rest)
            self._asked = True
            try:
                return await call(self._once)
            except SnmpTimeout:
                self._on_silence()
                if self._again is None:
                    raise
                return await call(self._again)
        finally:
            self.requests = sum(s.requests for s in (self._once, self._again, self._rest) if s is not None)
