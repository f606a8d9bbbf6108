"""One discovery cycle: ARP, ICMP and SNMP run concurrently with streaming hand-off, then consolidation.

* ARP sweeps the on-link hosts of every subnet (the interface owning each is found from this host's
  addresses); each host that answers is handed to ICMP and to SNMP at once.
* ICMP pings what ARP resolved plus every off-link host (those behind a router cannot be ARPed); on-link
  hosts that ARP did not resolve are not pinged (the kernel neighbour table holds ~1024 entries machine-
  wide), except as a fallback when ARP itself failed or was not asked for, for at most
  :data:`MAX_UNRESOLVED_ON_LINK` addresses.
* SNMP queries every address ARP or ICMP saw, as soon as it is seen: the system group, interfaces and the
  device's own addresses, or the system group alone with ``snmp_tables=False`` (one GET per host; without
  the address table a device answering on several addresses is merged only through ARP).
* ARP's first pass goes out before ICMP and SNMP start (everything else waits for the hosts it finds);
  consolidation's imports are prepared in a worker thread once ARP has sent its last request, and the
  GIL switch interval is lowered for the scan (:func:`~pdsno.discovery.probes.base.fine_switching`).

A probe that fails as a whole is recorded as ``SCAN_PROTOCOL_FAILED`` with its reason and the cycle goes
on with the others; :attr:`ScanResult.cycle_failed` is true only when every probe that ran failed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv4Network, ip_network
from typing import TYPE_CHECKING, Any

from pdsno.discovery.netinfo import LocalAddress, TargetPlan, local_addresses, plan_targets
from pdsno.discovery.probes.arp import ArpProbe
from pdsno.discovery.probes.base import (
    SCAN_PROTOCOL_FAILED,
    Observation,
    Probe,
    ProbeStats,
    TargetStream,
    fine_switching,
)
from pdsno.discovery.probes.icmp import IcmpProbe
from pdsno.discovery.probes.snmp import SnmpProbe
from pdsno.errors import PdsnoError, ReasonCode
from pdsno.ipsort import ip_key
from pdsno.snmp import SnmpCredentials

if TYPE_CHECKING:
    from pdsno.nib.models import Device

PROTOCOLS = ("arp", "icmp", "snmp")
MAX_ADDRESSES = 65_536
"""Largest scan (addresses over all subnets): a /16."""
MAX_UNRESOLVED_ON_LINK = 1_024
"""On-link hosts pinged without ARP resolution (ARP failed or off), bounded by the neighbour table."""


@dataclass(frozen=True)
class ScanTimeouts:
    """Seconds. Reply timeouts are adaptive: RTT-based, between the floor and these ceilings."""

    arp: float = 2.0
    """Longest wait after the last ARP request (taken in full only when nobody answers)."""
    icmp: float = 2.0
    """Echo reply timeout."""
    snmp: float = 1.0
    """One SNMP request (each retried ``snmp_retries`` times)."""
    snmp_retries: int = 1
    arp_min: float = 0.25
    icmp_min: float = 0.25
    snmp_min: float = 0.2
    total: float = 300.0
    """Hard limit for the whole cycle (reference design: a /24 finishes well inside 300 s)."""

    @classmethod
    def uniform(cls, seconds: float) -> ScanTimeouts:
        """Every reply timeout set to ``seconds`` (the CLI's ``--timeout``)."""
        return cls(arp=seconds, icmp=seconds, snmp=seconds)


@dataclass(frozen=True)
class ProbeFailure:
    protocol: str
    reason: str
    code: str = SCAN_PROTOCOL_FAILED

    def as_dict(self) -> dict[str, str]:
        return {"protocol": self.protocol, "code": self.code, "reason": self.reason}


@dataclass
class ScanProgress:
    """Handed to the progress callback after every observation."""

    targets: int
    responders: int = 0
    by_protocol: dict[str, int] = field(default_factory=dict)
    snmp_answered: int = 0
    snmp_failed: int = 0
    elapsed: float = 0.0


@dataclass(repr=False)
class ScanResult:
    subnets: list[str]
    devices: list[Device]
    stats: dict[str, ProbeStats]
    failures: list[ProbeFailure]
    started_at: datetime
    finished_at: datetime
    duration: float
    targets: dict[str, int]
    timings: dict[str, float | None]
    measurements: dict[str, dict[str, Any]]
    protocols: list[str]
    snmp_unanswered: dict[str, str] = field(default_factory=dict)
    """Responders that may run an SNMP agent but answered none of the credentials given (silence, a refusal):
    IP -> the last error. A host that closes the SNMP port (ICMP port unreachable) has none: not listed."""
    _origin: float = 0.0

    def __repr__(self) -> str:
        # Short: asyncio.run formats the repr of its main task (and with it this result) as it restores
        # the SIGINT handler, twice; every device's repr took 0.05-0.15 s of a command's wall time.
        return (
            f"ScanResult(subnets={self.subnets}, devices={len(self.devices)}, "
            f"failures={len(self.failures)}, duration={self.duration:.3f})"
        )

    @property
    def cycle_failed(self) -> bool:
        """Every probe that ran failed (``DISCOVERY_CYCLE_FAILED``)."""
        ran = set(self.stats) | {f.protocol for f in self.failures}
        return bool(ran) and ran <= {f.protocol for f in self.failures}

    def as_dict(self) -> dict[str, Any]:
        return {
            "subnets": self.subnets,
            "protocols": self.protocols,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "duration_s": round(self.duration, 4),
            "targets": self.targets,
            "timings": self.timings,
            "device_count": len(self.devices),
            "devices": [d.model_dump(mode="json") for d in self.devices],
            "measurements": self.measurements,
            "probes": {name: s.as_dict(self._origin) for name, s in self.stats.items()},
            "failures": [f.as_dict() for f in self.failures],
            "snmp_unanswered": self.snmp_unanswered,
        }


def _prepare_consolidation() -> None:
    """What consolidation needs first: pydantic and the NIB models imported (~0.15 s), the vendor registry
    read (62,000 enterprise numbers, ~0.08 s)."""
    import pdsno.discovery.consolidate  # noqa: F401
    from pdsno.discovery.vendors import enterprises

    enterprises()


def parse_subnets(subnets: Sequence[str | IPv4Network]) -> list[IPv4Network]:
    if not subnets:
        raise PdsnoError("no subnet to scan", code=ReasonCode.INVALID_REQUEST)
    nets: list[IPv4Network] = []
    for subnet in subnets:
        try:
            net = ip_network(subnet, strict=False) if isinstance(subnet, str) else subnet
        except ValueError as exc:
            raise PdsnoError(f"not a subnet: {subnet!r}", code=ReasonCode.INVALID_REQUEST) from exc
        if not isinstance(net, IPv4Network):
            raise PdsnoError(f"{subnet}: only IPv4 subnets can be scanned", code=ReasonCode.INVALID_REQUEST)
        nets.append(net)
    total = sum(n.num_addresses for n in nets)
    if total > MAX_ADDRESSES:
        raise PdsnoError(
            f"{total} addresses to scan; the limit is {MAX_ADDRESSES} (a /16)",
            code=ReasonCode.INVALID_REQUEST,
        )
    return nets


class _Cycle:
    """The shared state of one scan: collects observations and routes responders downstream."""

    def __init__(
        self,
        *,
        icmp: TargetStream | None,
        snmp: TargetStream | None,
        targets: int,
        progress: Callable[[ScanProgress], None] | None,
    ) -> None:
        self.observations: list[Observation] = []
        self.icmp = icmp
        self.snmp = snmp
        self.arp_alive: set[str] = set()
        self.responders: set[str] = set()
        self.started = time.monotonic()
        self.first_response: float | None = None
        self.progress_cb = progress
        self.progress = ScanProgress(targets=targets)

    def emit(self, observation: Observation) -> None:
        self.observations.append(observation)
        p = self.progress
        p.by_protocol[observation.protocol] = p.by_protocol.get(observation.protocol, 0) + 1
        if observation.protocol in ("arp", "icmp"):
            if self.first_response is None:
                self.first_response = observation.at
            ip = IPv4Address(observation.ip)
            if observation.protocol == "arp":
                self.arp_alive.add(observation.ip)
                if self.icmp is not None:
                    self.icmp.put(ip)
            self.responders.add(observation.ip)
            p.responders = len(self.responders)
            if self.snmp is not None:
                self.snmp.put(ip)
        elif observation.protocol == "snmp":
            if observation.fields.get("reachable"):
                p.snmp_answered += 1
            else:
                p.snmp_failed += 1
        if self.progress_cb is not None:
            p.elapsed = time.monotonic() - self.started
            self.progress_cb(p)


async def scan(
    subnets: Sequence[str | IPv4Network],
    *,
    snmp_credentials: SnmpCredentials | None = None,
    protocols: Collection[str] = PROTOCOLS,
    timeouts: ScanTimeouts | None = None,
    local: Sequence[LocalAddress] | None = None,
    progress: Callable[[ScanProgress], None] | None = None,
    snmp_port: int = 161,
    snmp_concurrency: int = 256,
    snmp_tables: bool = True,
    arp_rate_pps: float = 50_000,
    icmp_rate_pps: float = 5_000,
) -> ScanResult:
    """Discover the devices of ``subnets`` from where this process runs (its network namespace).

    ``snmp_tables=False``: SNMP reads the system group only (no interfaces, no own addresses).
    ``snmp_concurrency``: hosts queried at once; a host that does not answer holds its place for a timeout
    and its retries, so with 100 the last hosts of a /24 (the v3-only agent of the lab's among them)
    waited 0.4-1.2 s for the first hundred.
    """
    nets = parse_subnets(subnets)
    wanted = [p for p in PROTOCOLS if p in set(protocols)]
    unknown = set(protocols) - set(PROTOCOLS)
    if unknown or not wanted:
        raise PdsnoError(
            f"protocols must be among {', '.join(PROTOCOLS)} (got {', '.join(sorted(protocols)) or 'none'})",
            code=ReasonCode.INVALID_REQUEST,
        )
    credentials = snmp_credentials or SnmpCredentials()
    if "snmp" in wanted and credentials.empty:
        raise PdsnoError(
            "SNMP asked for without any community or SNMPv3 credential", code=ReasonCode.INVALID_REQUEST
        )
    t = timeouts or ScanTimeouts()
    started_at = datetime.now(UTC)
    origin = time.monotonic()
    if local is None:
        try:
            local = await asyncio.to_thread(local_addresses)
        except (OSError, ValueError, PdsnoError) as exc:
            raise PdsnoError(
                f"cannot read this host's addresses: {exc}", code=ReasonCode.INTERNAL_ERROR
            ) from exc
    plan = plan_targets(nets, local)
    on_link = [ip for ips in plan.on_link.values() for ip in ips]

    use_arp = "arp" in wanted and bool(on_link)
    icmp_stream = TargetStream() if "icmp" in wanted else None
    snmp_stream = TargetStream() if "snmp" in wanted else None
    cycle = _Cycle(icmp=icmp_stream, snmp=snmp_stream, targets=plan.total, progress=progress)
    failures: list[ProbeFailure] = []
    stats: dict[str, ProbeStats] = {}

    # Off-link hosts cannot be ARPed: ICMP sweeps them, or SNMP directly when ICMP is off.
    for ip in plan.off_link:
        if icmp_stream is not None:
            icmp_stream.put(ip)
        elif snmp_stream is not None:
            snmp_stream.put(ip)

    def unresolved_fallback(reason: str) -> None:
        """ARP did not run (or failed): ping on-link hosts directly, within the neighbour-table bound."""
        stream = icmp_stream if icmp_stream is not None else snmp_stream
        if stream is None or not on_link:
            return
        if len(on_link) > MAX_UNRESOLVED_ON_LINK:
            failures.append(
                ProbeFailure(
                    "icmp" if stream is icmp_stream else "snmp",
                    f"{len(on_link)} on-link addresses not probed without ARP ({reason}); "
                    f"the limit is {MAX_UNRESOLVED_ON_LINK}",
                )
            )
            return
        for ip in on_link:
            stream.put(ip)

    if not use_arp and on_link:
        unresolved_fallback("ARP not requested")

    arp_done = asyncio.Event()
    icmp_done = asyncio.Event()
    if not use_arp:
        arp_done.set()
    if icmp_stream is None:
        icmp_done.set()

    async def run_probe(probe: Probe, stream: TargetStream, done: asyncio.Event | None) -> bool:
        try:
            stats[probe.name] = await probe.run(stream, cycle)
            return True
        except asyncio.CancelledError:
            failures.append(ProbeFailure(probe.name, f"scan time limit ({t.total:g} s) reached"))
            raise
        except Exception as exc:
            failures.append(ProbeFailure(probe.name, _reason(exc)))
            return False
        finally:
            if done is not None:
                done.set()

    async def close_when(stream: TargetStream, *events: asyncio.Event) -> None:
        for event in events:
            await event.wait()
        stream.close()

    tasks: list[asyncio.Task[Any]] = []
    # Consolidation's imports are prepared in a worker thread once ARP has sent its last request, when
    # the event loop mostly waits (not at start-up: the first frame would wait for them; not earlier in
    # the scan: pysnmp's engine is being built then, and the two would share the GIL).
    arp_sent = asyncio.Event()
    preparing: asyncio.Task[None] | None = None
    if use_arp:
        arp = ArpProbe(local, timeout=t.arp, min_wait=t.arp_min, rate_pps=arp_rate_pps, all_sent=arp_sent)

        async def prepare_when_sent() -> None:
            await arp_sent.wait()
            await asyncio.to_thread(_prepare_consolidation)

        preparing = asyncio.create_task(prepare_when_sent())

        async def arp_then_fallback() -> None:
            ok = await run_probe(arp, TargetStream(on_link, closed=True), None)
            if not ok:
                unresolved_fallback("ARP failed")
            arp_done.set()

        tasks.append(asyncio.create_task(arp_then_fallback()))
    if icmp_stream is not None:
        icmp = IcmpProbe(
            timeout=t.icmp, min_timeout=t.icmp_min, rate_pps=icmp_rate_pps, known_alive=cycle.arp_alive
        )
        tasks.append(asyncio.create_task(close_when(icmp_stream, arp_done)))
        tasks.append(asyncio.create_task(run_probe(icmp, icmp_stream, icmp_done)))
    if snmp_stream is not None:
        snmp = SnmpProbe(
            credentials,
            timeout=t.snmp,
            min_timeout=t.snmp_min,
            retries=t.snmp_retries,
            concurrency=snmp_concurrency,
            port=snmp_port,
            tables=snmp_tables,
        )
        tasks.append(asyncio.create_task(close_when(snmp_stream, arp_done, icmp_done)))
        tasks.append(asyncio.create_task(run_probe(snmp, snmp_stream, None)))

    with fine_switching():
        try:
            async with asyncio.timeout(t.total):
                await asyncio.gather(*tasks)
        except TimeoutError:
            pass
        finally:
            finished = time.monotonic()
            for task in tasks:
                task.cancel()
            if preparing is not None and not arp_sent.is_set():
                preparing.cancel()  # still waiting for ARP: the import below does it
            # a preparation that failed is met again, and raised, by the import below
            await asyncio.gather(*tasks, *filter(None, [preparing]), return_exceptions=True)
    from pdsno.discovery.consolidate import consolidate

    result = consolidate(cycle.observations, now=started_at, snmp_probed="snmp" in stats)
    last_response = max((o.at for o in cycle.observations), default=None)
    return ScanResult(
        subnets=[str(n) for n in nets],
        devices=result.devices,
        stats=stats,
        failures=failures,
        started_at=started_at,
        finished_at=datetime.now(UTC),
        duration=finished - origin,
        targets=_target_counts(plan),
        timings={
            "first_response_s": None
            if cycle.first_response is None
            else round(cycle.first_response - origin, 4),
            "last_observation_s": None if last_response is None else round(last_response - origin, 4),
            "total_s": round(finished - origin, 4),
        },
        measurements=result.measurements,
        protocols=wanted,
        snmp_unanswered={
            o.ip: str(o.fields.get("error") or "no answer")
            for o in sorted(cycle.observations, key=lambda o: ip_key(o.ip))
            if o.protocol == "snmp"
            and not o.fields.get("reachable")
            and not str(o.fields.get("error", "")).startswith("no agent")
        },
        _origin=origin,
    )


def _target_counts(plan: TargetPlan) -> dict[str, int]:
    return {
        "on_link": sum(len(v) for v in plan.on_link.values()),
        "off_link": len(plan.off_link),
        "own_addresses_skipped": len(plan.own),
    }


def _reason(exc: BaseException) -> str:
    if isinstance(exc, PermissionError):
        return f"permission denied ({exc.strerror or exc}): raw sockets need root or CAP_NET_RAW"
    if isinstance(exc, PdsnoError):
        return exc.message
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if not isinstance(exc, OSError) else text
