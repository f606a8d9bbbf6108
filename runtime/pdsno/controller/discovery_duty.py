"""What each tier does for discovery: an LC scans and reports, an RC merges and summarises, the GC
keeps the global inventory (reference-design §3)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

from pdsno.config import ControllerConfig
from pdsno.controller.uplink import Uplink
from pdsno.discovery import SnmpCredentials, SnmpV3Credential, scan
from pdsno.discovery.scanner import ScanResult
from pdsno.errors import ConfigError, PdsnoError
from pdsno.inventory.cycle import CycleOutcome, run_cycle
from pdsno.inventory.intake import GlobalIntake, RegionalIntake
from pdsno.messaging.envelope import Envelope, MessageRejected, MessageType
from pdsno.messaging.messages import DiscoveryReport, DiscoveryRequest
from pdsno.messaging.verify import Verifier
from pdsno.nib.models import Decision, EventDraft
from pdsno.nib.store import NIBStore
from pdsno.transport import topics
from pdsno.transport.mqtt import MqttLink

log = logging.getLogger(__name__)


def _lines(path: Path | None) -> list[str]:
    if path is None:
        return []
    try:
        return [
            line.strip()
            for line in path.read_text().splitlines()
            if line.strip() and not line.startswith("#")
        ]
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from None


def snmp_credentials(config: ControllerConfig) -> SnmpCredentials:
    discovery = config.discovery
    communities = _lines(discovery.snmp_communities_file)
    v3 = [SnmpV3Credential.parse(line) for line in _lines(discovery.snmp_v3_file)]
    return SnmpCredentials(communities=tuple(communities or ([] if v3 else ["public"])), v3=tuple(v3))


class LocalDiscovery:
    """An LC's cycle: scan its subnets, write the delta, send the report up (MQTT; REST if it is down)."""

    def __init__(
        self,
        config: ControllerConfig,
        store: NIBStore,
        *,
        me: str,
        region: str,
        uplink: Uplink,
        mqtt: MqttLink | None,
    ) -> None:
        self._config = config
        self._store = store
        self._me = me
        self._region = region
        self._uplink = uplink
        self._mqtt = mqtt
        self._lock = asyncio.Lock()

    async def _scan(self, subnets: Sequence[str]) -> ScanResult:
        return await scan(
            subnets,
            snmp_credentials=snmp_credentials(self._config),
            protocols=self._config.discovery.protocols,
        )

    async def once(self, trigger: str = "SCHEDULED") -> CycleOutcome:
        async with self._lock:  # one cycle at a time, whoever triggers it
            outcome = await run_cycle(
                self._store, self._scan, lc_id=self._me, region=self._region,
                subnets=[str(s) for s in self._config.discovery.subnets],
                missed_cycles_before_inactive=self._config.policy.missed_cycles_before_inactive,
            )  # fmt: skip
            for report in outcome.reports:
                await self._send(report, trigger)
            return outcome

    async def _send(self, report: DiscoveryReport, trigger: str) -> None:
        if self._mqtt is not None and self._mqtt.connected:
            body = await self._uplink.seal(MessageType.DISCOVERY_REPORT, report)
            await self._mqtt.publish(topics.discovery(self._region, self._me), body, qos=1)
            via = "mqtt"
        else:
            await self._uplink.post(MessageType.DISCOVERY_REPORT, report)
            via = "rest"
        await self._store.append_events(
            [EventDraft(event_type="DISCOVERY_REPORT_SENT", actor=self._me, subject=report.report_id,
                        payload={"via": via, "trigger": trigger, "chunk": report.chunk_index,
                                 "new": len(report.new_devices), "updated": len(report.updated_devices),
                                 "inactive": len(report.inactive_devices)})]
        )  # fmt: skip

    async def on_request(self, envelope: Envelope) -> Envelope | None:
        """DISCOVERY_REQUEST from the parent (ON_DEMAND, RC_REQUESTED_OVERDUE): run a cycle now."""
        request = envelope.payload_as(DiscoveryRequest)
        await self.once(trigger=request.trigger)
        return None

    async def run_forever(self) -> None:
        interval = self._config.discovery.interval_s or self._config.policy.discovery_interval_s
        while True:
            try:
                await self.once()
            except PdsnoError as exc:
                log.error("discovery cycle failed", extra={"code": str(exc.code), "error": exc.message})
            await asyncio.sleep(interval)


class RegionalDiscovery:
    """An RC: take LC reports (MQTT or REST), merge them, send the GC a summary with the deltas."""

    def __init__(
        self,
        store: NIBStore,
        *,
        me: str,
        region: str,
        spike_threshold: int,
        uplink: Uplink,
        verifier: Verifier,
    ) -> None:
        self._intake = RegionalIntake(store, rc_id=me, region=region, spike_threshold=spike_threshold)
        self._store = store
        self._me = me
        self._uplink = uplink
        self._verifier = verifier

    async def on_mqtt(self, topic: str, payload: bytes) -> None:
        try:
            envelope = await self._verifier.verify(payload, transport="mqtt", source=topic)
        except MessageRejected:
            return  # audited by the verifier
        if envelope.message_type is MessageType.DISCOVERY_REPORT:
            await self.on_report(envelope)

    async def on_report(self, envelope: Envelope) -> Envelope | None:
        summary = await self._intake.accept(envelope)
        if summary is not None:
            try:
                await self._uplink.post(MessageType.DISCOVERY_SUMMARY, summary)
            except PdsnoError as exc:
                await self._store.append_events(
                    [EventDraft(event_type="DISCOVERY_SUMMARY_NOT_SENT", actor=self._me, subject=summary.summary_id,
                                decision=Decision.FLAGGED, payload={"code": str(exc.code), "error": exc.message})]
                )  # fmt: skip
        return None


class GlobalDiscovery:
    def __init__(self, store: NIBStore, *, me: str) -> None:
        self._intake = GlobalIntake(store, gc_id=me)

    async def on_summary(self, envelope: Envelope) -> Envelope | None:
        await self._intake.accept(envelope)
        return None
