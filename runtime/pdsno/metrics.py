"""Prometheus metrics of one controller, served at ``/metrics`` by its REST app.

Each controller owns a :class:`ControllerMetrics` with its own ``CollectorRegistry``: several controllers in
one process (the tests) never share a series. Nothing in the runtime pushes numbers here; a scrape reads
them from the two places that already hold the truth, so no code path can forget to count:

* the NIB's state (devices by status, proposals by tier and status, each child's last heartbeat) and the
  node's MQTT link (connected, outbox depth);
* the NIB's audit log, the choke point every refusal, delta and change outcome passes through: each scrape
  reads the events appended since the previous one (bounded per scrape) and counts them. Counters therefore
  count this NIB's history, not the process's, and survive restarts.

A few numbers pass through no NIB: envelopes signed and verified, MQTT redeliveries, how long a discovery
cycle and a NIB write took. Each is counted at its one choke point (:func:`pdsno.messaging.sign.sign_envelope`,
:meth:`pdsno.messaging.verify.Verifier.check`, :class:`pdsno.transport.mqtt.MqttLink`, the LC's discovery
duty, the store's write transactions) into :func:`runtime_counts` of the controller id (or the store's
:attr:`~pdsno.nib.sql.SqlNIBStore.write_seconds`); a controller's registry takes them in at its first
scrape. These count the process's life, from zero at each start.
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

_LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
_DISCOVERY_BUCKETS: Final = (1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)

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


class RuntimeCounts:
    """One controller's numbers that only the runtime sees as they happen (see the module documentation).
    Not registered anywhere: the registry of each :class:`ControllerMetrics` scraping that controller is."""

    def __init__(self) -> None:
        self.signed = Counter(
            "pdsno_messages_signed",
            "Envelopes this controller signed by message type",
            ["type"],
            registry=None,
        )
        self.verified = Counter(
            "pdsno_messages_verified",
            "Envelopes that passed every check of the verifier by transport",
            ["transport"],
            registry=None,
        )
        self.mqtt_redeliveries = Counter(
            "pdsno_mqtt_redeliveries",
            "QoS 1 messages resent after a reconnect (sent) or received again with the DUP flag (received)",
            ["direction"],
            registry=None,
        )
        self.discovery_seconds = Histogram(
            "pdsno_discovery_duration_seconds",
            "One discovery cycle of this LC: scan, delta written to the NIB, reports queued",
            registry=None,
            buckets=_DISCOVERY_BUCKETS,
        )

    @property
    def collectors(self) -> tuple[Counter | Histogram, ...]:
        return (self.signed, self.verified, self.mqtt_redeliveries, self.discovery_seconds)


_RUNTIME: dict[str, RuntimeCounts] = {}


def runtime_counts(controller_id: str) -> RuntimeCounts:
    """This process's :class:`RuntimeCounts` of ``controller_id`` (made on first use)."""
    counts = _RUNTIME.get(controller_id)
    if counts is None:
        counts = _RUNTIME[controller_id] = RuntimeCounts()
    return counts


def nib_write_histogram() -> Histogram:
    """The (unregistered) latency histogram a store observes each write transaction into."""
    return Histogram(
        "pdsno_nib_write_seconds",
        "A NIB write transaction, from the call to its commit (waiting for a connection included)",
        registry=None,
        buckets=_LATENCY_BUCKETS,
    )


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
        self.refused_unaudited = Counter(
            "pdsno_messages_refused_unaudited",
            "Refusals beyond the verifier's audit budget (one MESSAGE_REJECTED_SUPPRESSED event each batch)",
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
            "pdsno_change_outcomes",
            "Proposals that reached an end state by tier and outcome",
            ["tier", "outcome"],
            registry=r,
        )
        self.change_latency = Histogram(
            "pdsno_change_latency_seconds",
            "From a proposal's arrival at this controller to its end state, by tier",
            ["tier"],
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
        self._tiers: dict[str, str] = {}
        self._joined = False

    def _join(self, node: MetricsSource) -> None:
        """Take in the runtime's own counts of this controller and its store's write latency."""
        self._joined = True
        for collector in runtime_counts(node.controller_id).collectors:
            self.registry.register(collector)
        self.registry.register(node.store.write_seconds)

    async def render(self, node: MetricsSource) -> bytes:
        """The exposition text after reading the node's current state and new audit events."""
        started = time.monotonic()
        if not self._joined:
            self._join(node)
        store = node.store
        self.mqtt_connected.set(1 if node.mqtt_connected else 0)
        self.mqtt_outbox.set(node.mqtt_outbox_depth)
        for status in DeviceStatus:
            self.devices.labels(status.value).set(await store.count_devices(status=status))
        self.proposals.clear()
        self._tiers = {}
        for proposal in await store.list_proposals():
            self.proposals.labels(proposal.category.value, proposal.status.value).inc()
            self._tiers[proposal.proposal_id] = proposal.category.value
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
        elif kind == "MESSAGE_REJECTED_SUPPRESSED":
            count = event.payload.get("count")
            self.refused_unaudited.inc(count if isinstance(count, int) and count > 0 else 1)
        elif kind in _DELTAS:
            self.deltas.labels(_DELTAS[kind]).inc()
        elif kind == "DISCOVERY_REPORT_SENT":
            self.discovery_reports.labels("sent").inc()
        elif kind == "DISCOVERY_REPORT_RECEIVED":
            self.discovery_reports.labels("received").inc()
        elif kind in ("CONFIG_PROPOSED", "CONFIG_RECEIVED") and event.subject:
            self._arrived.setdefault(event.subject, event.timestamp)
            category = event.payload.get("category")  # a proposal made after this scrape listed them
            if isinstance(category, str):
                self._tiers.setdefault(event.subject, category)
        elif kind.startswith("CONFIG_") and kind[len("CONFIG_") :] in _OUTCOMES:
            tier = self._tiers.get(event.subject or "", "UNKNOWN")
            self.outcomes.labels(tier, kind[len("CONFIG_") :]).inc()
            arrived = self._arrived.pop(event.subject or "", None)
            if arrived is not None:
                self.change_latency.labels(tier).observe((event.timestamp - arrived).total_seconds())
