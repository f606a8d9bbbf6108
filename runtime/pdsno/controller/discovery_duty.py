"""What each tier does for discovery: an LC scans and reports, an RC merges and summarises, the GC
keeps the global inventory (reference-design §3)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pdsno.canonical import utcnow
from pdsno.config import ControllerConfig
from pdsno.controller.policy_duty import PolicyHolder
from pdsno.controller.uplink import Peers
from pdsno.controller.upward import Receipts, Upward, Via, ack_key
from pdsno.discovery import SnmpCredentials, SnmpV3Credential, scan
from pdsno.discovery.scanner import ScanResult
from pdsno.errors import PdsnoError, ReasonCode
from pdsno.inventory.cycle import CycleOutcome, run_cycle
from pdsno.inventory.intake import GlobalIntake, RegionalIntake
from pdsno.messaging.envelope import Envelope, MessageRejected, MessageType
from pdsno.messaging.messages import DiscoveryReport, DiscoveryReportAck, DiscoveryRequest, DiscoverySummary
from pdsno.messaging.verify import Verifier
from pdsno.metrics import runtime_counts
from pdsno.nib.models import ControllerRole, ControllerStatus, Decision, Event, EventDraft
from pdsno.nib.store import NIBStore
from pdsno.snmp import read_secret_lines
from pdsno.transport import topics
from pdsno.transport.mqtt import MqttLink
from pdsno.transport.upward import PendingMessage

log = logging.getLogger(__name__)


def snmp_credentials(config: ControllerConfig) -> SnmpCredentials:
    discovery = config.discovery
    communities_file, v3_file = discovery.snmp_communities_file, discovery.snmp_v3_file
    communities = (
        read_secret_lines(communities_file, "discovery.snmp_communities_file") if communities_file else []
    )
    v3 = (
        [SnmpV3Credential.parse(line) for line in read_secret_lines(v3_file, "discovery.snmp_v3_file")]
        if v3_file
        else []
    )
    return SnmpCredentials(communities=tuple(communities or ([] if v3 else ["public"])), v3=tuple(v3))


class LocalDiscovery:
    """An LC's cycle: scan its subnets, write the delta, hand the report to its upward outbox (which sends
    it over MQTT, or REST while MQTT is down, until the RC acknowledges it)."""

    def __init__(
        self,
        config: ControllerConfig,
        store: NIBStore,
        *,
        me: str,
        region: str,
        upward: Upward,
        mqtt: MqttLink | None,
        policy: PolicyHolder | None = None,
    ) -> None:
        self._config = config
        # The distributed policy when there is one (UC-7: a new interval applies from the next cycle).
        self._policy = policy or PolicyHolder(store, config.policy)
        self._store = store
        self._me = me
        self._region = region
        self._upward = upward
        self._mqtt = mqtt
        self._lock = asyncio.Lock()

    async def _scan(self, subnets: Sequence[str]) -> ScanResult:
        return await scan(
            subnets,
            snmp_credentials=snmp_credentials(self._config),
            protocols=self._config.discovery.protocols,
        )

    async def once(self, trigger: str = "SCHEDULED", request_id: str | None = None) -> CycleOutcome:
        async with self._lock:  # one cycle at a time, whoever triggers it
            started = time.monotonic()
            outcome = await run_cycle(
                self._store, self._scan, lc_id=self._me, region=self._region,
                subnets=[str(s) for s in self._config.discovery.subnets],
                missed_cycles_before_inactive=self._policy.content.missed_cycles_before_inactive,
                request_id=request_id,
            )  # fmt: skip
            if not outcome.skipped:
                runtime_counts(self._me).discovery_seconds.observe(time.monotonic() - started)
            for report in outcome.reports:
                key = ack_key(report.report_id, report.chunk_index)
                await self._upward.send(MessageType.DISCOVERY_REPORT, report, key)
            return outcome

    async def on_delivered(self, message: PendingMessage, ack: DiscoveryReportAck, via: Via) -> None:
        """The RC stored (or refused) a report chunk: the LC's record that it went up."""
        report = DiscoveryReport.model_validate_json(message.payload)
        await self._store.append_events(
            [EventDraft(event_type="DISCOVERY_REPORT_SENT", actor=self._me, subject=report.report_id,
                        decision=Decision.FLAGGED if ack.status == "REJECTED" else Decision.NOT_APPLICABLE,
                        payload={"via": via, "status": ack.status, "attempts": message.attempts,
                                 "chunk": report.chunk_index, "new": len(report.new_devices),
                                 "updated": len(report.updated_devices), "inactive": len(report.inactive_devices)})]
        )  # fmt: skip

    async def on_request(self, envelope: Envelope) -> Envelope | None:
        """DISCOVERY_REQUEST from the parent (ON_DEMAND, RC_REQUESTED_OVERDUE): run a cycle now."""
        request = envelope.payload_as(DiscoveryRequest)
        await self.once(trigger=request.trigger, request_id=request.request_id)
        return None

    async def run_forever(self) -> None:
        interval = self._config.discovery.interval_s or self._policy.content.discovery_interval_s
        if self._mqtt is not None:
            # Reports travel on MQTT; REST is the fallback, not the way to start.
            await self._mqtt.wait_connected(10)
        while True:
            try:
                await self.once()
            except PdsnoError as exc:
                log.error("discovery cycle failed", extra={"code": str(exc.code), "error": exc.message})
            await asyncio.sleep(interval)


class RegionalDiscovery:
    """An RC: take LC reports (MQTT or REST), merge each once, acknowledge it, and hand the GC's summary
    with the deltas to its upward outbox; pass the GC's discovery requests on to its LCs."""

    def __init__(
        self, store: NIBStore, *, me: str, region: str, spike_threshold: int, peers: Peers, upward: Upward,
        receipts: Receipts, verifier: Verifier, mqtt: MqttLink | None = None, request_timeout_s: float = 120.0,
    ) -> None:  # fmt: skip
        self._intake = RegionalIntake(store, rc_id=me, region=region, spike_threshold=spike_threshold)
        self._store = store
        self._me = me
        self._region = region
        self._peers = peers
        self._upward = upward
        self._receipts = receipts
        self._verifier = verifier
        self._mqtt = mqtt
        self._timeout = request_timeout_s
        self._awaited: dict[tuple[str, str], asyncio.Event] = {}
        self._last_report: dict[str, datetime] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def on_mqtt(self, topic: str, payload: bytes) -> None:
        try:
            envelope = await self._verifier.verify(payload, transport="mqtt", source=topic)
        except MessageRejected:
            return  # audited by the verifier
        if envelope.message_type is MessageType.DISCOVERY_REPORT and self._mqtt is not None:
            with self._verifier.handling(envelope):
                ack = await self.on_report(envelope)
            await self._mqtt.publish(topics.discovery_ack(self._region, envelope.sender_id), ack.to_bytes())

    async def on_report(self, envelope: Envelope) -> Envelope:
        """Merge a report chunk once and queue its summary for the GC; the signed ack for the LC.

        A failure to store raises, so the LC is not acknowledged and sends the chunk again."""
        report = envelope.payload_as(DiscoveryReport)

        async def keep() -> bool:
            summary = await self._intake.accept(envelope)
            if summary is None:
                return False
            await self._upward.send(MessageType.DISCOVERY_SUMMARY, summary, ack_key(summary.summary_id))
            return True

        ack = await self._receipts.take(envelope, report.report_id, report.chunk_index, keep)
        self._last_report[report.lc_id] = utcnow()
        if report.request_id and report.chunk_index == report.chunk_count - 1:
            waiter = self._awaited.get((report.request_id, report.lc_id))
            if waiter is not None:
                waiter.set()
        return ack

    async def on_request(self, envelope: Envelope) -> Envelope | None:
        """A DISCOVERY_REQUEST from the GC: run it on this region's LCs, answer once their reports are
        merged and summarised upward, so the GC can tell when its request has ended."""
        request = envelope.payload_as(DiscoveryRequest)
        lcs = [
            c for c in await self._store.list_controllers(role=ControllerRole.LOCAL, region=self._region)
            if c.status is ControllerStatus.ACTIVE and c.rest_url and (not request.lc_ids or c.controller_id in request.lc_ids)
        ]  # fmt: skip
        await asyncio.gather(*(self._run_on(lc.controller_id, str(lc.rest_url), request) for lc in lcs))
        return None

    async def watch_overdue(self, report_timeout_s: int) -> None:
        """Flag LCs silent for longer than ``lc_report_timeout`` and ask them to scan (reference-design §1)."""
        started = utcnow()
        while True:
            await asyncio.sleep(max(1.0, report_timeout_s / 4))
            await self.check_overdue(report_timeout_s, since=started)

    async def check_overdue(self, report_timeout_s: int, *, since: datetime) -> list[str]:
        now = utcnow()
        overdue = [
            lc for lc in await self._store.list_controllers(role=ControllerRole.LOCAL, region=self._region)
            if lc.status is ControllerStatus.ACTIVE and lc.rest_url
            and (now - self._last_report.get(lc.controller_id, since)).total_seconds() > report_timeout_s
        ]  # fmt: skip
        for lc in overdue:
            self._last_report[lc.controller_id] = now  # once per timeout, not on every tick
            await self._store.append_events(
                [EventDraft(event_type="LC_DISCOVERY_OVERDUE", actor=self._me, subject=lc.controller_id,
                            decision=Decision.FLAGGED, payload={"report_timeout_s": report_timeout_s})]
            )  # fmt: skip
            request = DiscoveryRequest(request_id=str(uuid.uuid4()), trigger="RC_REQUESTED_OVERDUE")
            task = asyncio.create_task(self._run_on(lc.controller_id, str(lc.rest_url), request))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return [lc.controller_id for lc in overdue]

    async def _run_on(self, lc_id: str, url: str, request: DiscoveryRequest) -> None:
        waiter = self._awaited.setdefault((request.request_id, lc_id), asyncio.Event())
        try:
            await self._peers.post(
                lc_id, url, MessageType.DISCOVERY_REQUEST, request.model_copy(update={"lc_ids": []})
            )
            await asyncio.wait_for(waiter.wait(), self._timeout)
        except (PdsnoError, TimeoutError) as exc:
            await self._store.append_events(
                [EventDraft(event_type="DISCOVERY_REQUEST_FAILED", actor=self._me, subject=lc_id, decision=Decision.FLAGGED,
                            payload={"request_id": request.request_id, "error": str(exc) or "timed out"})]
            )  # fmt: skip
        finally:
            self._awaited.pop((request.request_id, lc_id), None)


KEPT_RUNS = 200
DEVICE_EVENTS = frozenset({"DEVICE_DISCOVERED", "DEVICE_UPDATED", "DEVICE_INACTIVE", "DEVICE_LC_REASSIGNED"})


@dataclass(slots=True)
class DiscoveryRun:
    """One operator request, followed to its end: every targeted RC has answered."""

    request_id: str
    requested_by: str
    scope: dict[str, Any]
    started_at: datetime
    after_seq: int
    targets: dict[str, str]
    finished_at: datetime | None = None

    @property
    def status(self) -> str:
        if self.finished_at is None:
            return "running"
        return "done" if all(v == "done" for v in self.targets.values()) else "partial"


class GlobalDiscovery:
    """The GC: merge RC summaries into the global inventory; start and follow operator requests."""

    def __init__(self, store: NIBStore, *, me: str, peers: Peers, receipts: Receipts) -> None:
        self._intake = GlobalIntake(store, gc_id=me)
        self._receipts = receipts
        self._store = store
        self._me = me
        self._peers = peers
        self.runs: dict[str, DiscoveryRun] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def on_summary(self, envelope: Envelope) -> Envelope:
        """Merge a summary once; the signed ack in the REST answer (the RC keeps it until then)."""
        summary = envelope.payload_as(DiscoverySummary)

        async def keep() -> bool:
            return await self._intake.accept(envelope) is not None

        return await self._receipts.take(envelope, summary.summary_id, 0, keep)

    async def start(
        self,
        *,
        requested_by: str,
        region: str | None = None,
        lc_ids: Sequence[str] = (),
        subnets: Sequence[str] = (),
    ) -> DiscoveryRun:
        rcs = [
            c for c in await self._store.list_controllers(role=ControllerRole.REGIONAL, region=region)
            if c.status is ControllerStatus.ACTIVE and c.rest_url
        ]  # fmt: skip
        if not rcs:
            raise PdsnoError(
                f"no active regional controller serves {region or 'any region'}", code=ReasonCode.NOT_FOUND
            )
        request = DiscoveryRequest(
            request_id=str(uuid.uuid4()), trigger="ON_DEMAND", subnets=list(subnets), lc_ids=list(lc_ids)
        )
        scope = {"region": region, "lc_ids": list(lc_ids), "subnets": list(subnets)}
        await self._store.append_events(
            [EventDraft(event_type="DISCOVERY_REQUESTED", actor=self._me, subject=request.request_id,
                        payload={**scope, "requested_by": requested_by, "regional_controllers": [c.controller_id for c in rcs]})]
        )  # fmt: skip
        run = DiscoveryRun(
            request.request_id, requested_by, scope, utcnow(), (await self._store.audit_head()).seq,
            dict.fromkeys((c.controller_id for c in rcs), "pending"),
        )  # fmt: skip
        self.runs[run.request_id] = run
        while len(self.runs) > KEPT_RUNS:  # a long-lived GC keeps the recent ones; events keep the rest
            del self.runs[next(iter(self.runs))]
        task = asyncio.create_task(
            self._follow(run, request, {c.controller_id: str(c.rest_url) for c in rcs})
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return run

    async def _follow(self, run: DiscoveryRun, request: DiscoveryRequest, urls: dict[str, str]) -> None:
        async def ask(rc_id: str) -> None:
            try:
                await self._peers.post(rc_id, urls[rc_id], MessageType.DISCOVERY_REQUEST, request)
                run.targets[rc_id] = "done"
            except PdsnoError as exc:
                run.targets[rc_id] = f"failed: {exc.code}"

        await asyncio.gather(*(ask(rc_id) for rc_id in urls))
        run.finished_at = utcnow()

    async def deltas(self, run: DiscoveryRun) -> list[Event]:
        """The inventory changes recorded since the request started."""
        found: list[Event] = []
        after = run.after_seq
        while page := await self._store.read_events(after_seq=after, limit=1000):
            found += [e for e in page if e.event_type in DEVICE_EVENTS]
            after = page[-1].seq
        return found
