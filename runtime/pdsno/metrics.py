"""Prometheus metrics of one controller, served at ``/metrics`` by its REST app.

Each controller owns a :class:`ControllerMetrics` with its own ``CollectorRegistry``: several controllers in
one process (the tests) never share a series. Nothing in the runtime pushes numbers here; a scrape reads
them from the two places that already hold the truth, so no code path can forget to count:

* the NIB's state (devices by status, proposals by tier and status, each child's last heartbeat) and the
  node's MQTT link (connected, outbox depth);
* the NIB's audit log, the choke point every refusal, delta and change outcome passes through: each scrape
  reads the events appended since the previous one (bounded per scrape) and counts them. Counters therefore
  count this NIB's history, not the process's, and survive restarts.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING, Final, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from pdsno.nib.models import ConfigStatus, DeviceStatus, Event

if TYPE_CHECKING:
    from pdsno.nib.sql import SqlNIBStore

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

# A scrape reads at most this many new audit events; the rest wait for the next scrape.
_EVENTS_PER_PAGE: Final = 1000
_PAGES_PER_SCRAPE: Final = 10

_DELTAS: Final = {"DEVICE_DISCOVERED": "new", "DEVICE_UPDATED": "changed", "DEVICE_INACTIVE": "inactive"}
_OUTCOMES: Final = frozenset(
    {ConfigStatus.EXECUTED, ConfigStatus.FAILED, ConfigStatus.DENIED, ConfigStatus.EXPIRED}
)


class MetricsSource(Protocol):
    """What a scrape reads of a running controller."""

    @property
    def controller_id(self) -> str: ...

    @property
    def store(self) -> SqlNIBStore: ...

    @property
    def mqtt_connected(self) -> bool: ...

    @property
    def mqtt_outbox_depth(self) -> int: ...


class ControllerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.devices = Gauge(
            "pdsno_devices", "Devices in this controller's NIB by status", ["status"], registry=r
        )
        self.deltas = Counter(
            "pdsno_device_deltas", "Inventory deltas written to the NIB by kind", ["kind"], registry=r
        )
        self.discovery_reports = Counter(
            "pdsno_discovery_reports",
            "Discovery reports sent (LC) or received (RC)",
            ["direction"],
            registry=r,
        )
        self.refused = Counter(
            "pdsno_messages_refused",
            "Messages refused by the verifier by reason code",
            ["reason"],
            registry=r,
        )
        self.mqtt_connected = Gauge(
            "pdsno_mqtt_connected", "1 while the broker holds our session", registry=r
        )
        self.mqtt_outbox = Gauge(
            "pdsno_mqtt_outbox_depth", "QoS 1 messages not yet acknowledged by the broker", registry=r
        )
        self.proposals = Gauge(
            "pdsno_proposals", "Configuration proposals by tier and status", ["tier", "status"], registry=r
        )
        self.outcomes = Counter(
            "pdsno_change_outcomes", "Proposals that reached an end state by outcome", ["outcome"], registry=r
        )
        self.change_latency = Histogram(
            "pdsno_change_latency_seconds",
            "From a proposal's arrival at this controller to its end state",
            registry=r,
            buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600),
        )
        self.heartbeat_age = Gauge(
            "pdsno_heartbeat_age_seconds", "Seconds since each child controller was last heard", ["child"],
            registry=r,
        )  # fmt: skip
        self.scrape_seconds = Gauge(
            "pdsno_metrics_collect_seconds", "Time the last scrape spent reading the NIB", registry=r
        )
        self._after_seq = 0
        self._arrived: dict[str, datetime] = {}

    async def render(self, node: MetricsSource) -> bytes:
        """The exposition text after reading the node's current state and new audit events."""
        started = time.monotonic()
        store = node.store
        self.mqtt_connected.set(1 if node.mqtt_connected else 0)
        self.mqtt_outbox.set(node.mqtt_outbox_depth)
        for status in DeviceStatus:
            self.devices.labels(status.value).set(await store.count_devices(status=status))
        self.proposals.clear()
        for proposal in await store.list_proposals():
            self.proposals.labels(proposal.category.value, proposal.status.value).inc()
        now = datetime.now().astimezone()
        for child in await store.list_controllers():
            if child.parent_id == node.controller_id and child.last_seen is not None:
                self.heartbeat_age.labels(child.controller_id).set((now - child.last_seen).total_seconds())
        for _ in range(_PAGES_PER_SCRAPE):
            events = await store.read_events(after_seq=self._after_seq, limit=_EVENTS_PER_PAGE)
            for event in events:
                self._count(event)
            if len(events) < _EVENTS_PER_PAGE:
                break
        self.scrape_seconds.set(time.monotonic() - started)
        return generate_latest(self.registry)

    def _count(self, event: Event) -> None:
        self._after_seq = event.seq
        kind = event.event_type
        if kind == "MESSAGE_REJECTED":
            self.refused.labels(str(event.payload.get("reason", "UNKNOWN"))).inc()
        elif kind in _DELTAS:
            self.deltas.labels(_DELTAS[kind]).inc()
        elif kind == "DISCOVERY_REPORT_SENT":
            self.discovery_reports.labels("sent").inc()
        elif kind == "DISCOVERY_REPORT_RECEIVED":
            self.discovery_reports.labels("received").inc()
        elif kind in ("CONFIG_PROPOSED", "CONFIG_RECEIVED") and event.subject:
            self._arrived.setdefault(event.subject, event.timestamp)
        elif kind.startswith("CONFIG_") and kind[len("CONFIG_") :] in _OUTCOMES:
            self.outcomes.labels(kind[len("CONFIG_") :]).inc()
            arrived = self._arrived.pop(event.subject or "", None)
            if arrived is not None:
                self.change_latency.observe((event.timestamp - arrived).total_seconds())
