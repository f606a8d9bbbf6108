"""Each tier's part in a controller's life, looked up by role (:data:`TIERS`).

The node (:mod:`pdsno.controller.node`) brings up what every controller has (identity, NIB, keys,
REST, the MQTT link, heartbeats) and hands its parts to its tier before the MQTT link connects. The tier
takes up, in this order, discovery (reference-design §3), the policy (§6) and changes (§5): a change is
decided under the policy the tier already holds. REST is already serving, so a handler answers as soon
as it is registered; every subscription is in place before the first connection.

A tier lays down nothing itself: on stop the node ends REST, cancels every task a tier spawned together
with its own, then closes MQTT and the NIB.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from pdsno.changes.executors import Executor, build_executor
from pdsno.config import ControllerConfig
from pdsno.controller.app import Handler
from pdsno.controller.changes_global import GlobalChanges
from pdsno.controller.changes_local import LocalChanges
from pdsno.controller.changes_regional import RegionalChanges
from pdsno.controller.discovery_duty import GlobalDiscovery, LocalDiscovery, RegionalDiscovery
from pdsno.controller.policy_duty import GlobalPolicy, PolicyFollower, PolicyHolder, PolicyPublisher, Publish
from pdsno.controller.uplink import Peers, Uplink
from pdsno.controller.upward import Receipts, Upward
from pdsno.messaging.envelope import MessageType
from pdsno.messaging.verify import Verifier
from pdsno.nib.models import ControllerRole
from pdsno.nib.store import NIBStore
from pdsno.security.keys import Ed25519Signer
from pdsno.snmp import V3Client
from pdsno.transport import topics
from pdsno.transport.mqtt import MqttLink
from pdsno.transport.upward import UpwardStore


@dataclass(frozen=True)
class NodeParts:
    """What a tier builds on: the running controller's parts, its MQTT link not yet connected."""

    config: ControllerConfig
    store: NIBStore
    signer: Ed25519Signer
    verifier: Verifier
    peers: Peers
    uplink: Uplink | None  # the parent; the GC has none
    policy: PolicyHolder  # loaded
    mqtt: MqttLink
    upward: UpwardStore  # messages owed to the parent, and those stored from the children
    handlers: dict[MessageType, Handler]  # the node's own, read by REST on every message
    spawn: Callable[[Coroutine[Any, Any, None], str], None]  # a named task the node cancels on stop
    publish_retained: Publish
    snmp_client: V3Client  # the snmp executor's engine, kept for the process (closed by the node)

    @property
    def me(self) -> str:
        return self.signer.signer_id

    def executor(self, name: str) -> Executor:
        return build_executor(name, self.config.changes, snmp_client=self.snmp_client)


class Tier(Protocol):
    async def take_up(self, parts: NodeParts) -> None:
        """Register the tier's handlers and subscriptions and spawn its tasks."""


class GlobalTier:
    """The GC: holds the whole inventory and the policy, and the changes operators make through the NBI."""

    def __init__(self) -> None:
        # What the northbound API works on, once taken up.
        self.discovery: GlobalDiscovery | None = None
        self.policy: GlobalPolicy | None = None
        self.changes: GlobalChanges | None = None

    async def take_up(self, parts: NodeParts) -> None:
        receipts = Receipts(parts.upward, parts.peers)
        self.discovery = GlobalDiscovery(parts.store, me=parts.me, peers=parts.peers, receipts=receipts)
        parts.handlers[MessageType.DISCOVERY_SUMMARY] = self.discovery.on_summary

        publisher = PolicyPublisher(
            parts.policy, me=parts.signer, topic=topics.policy_global(), publish=parts.publish_retained
        )
        self.policy = GlobalPolicy(parts.policy, publisher, me=parts.me)
        await self.policy.start()

        self.changes = GlobalChanges(
            parts.store,
            signer=parts.signer,
            peers=parts.peers,
            receipts=receipts,
            policy=parts.policy,
            executors=parts.executor,
        )
        parts.handlers[MessageType.APPROVAL_RESPONSE] = self.changes.on_approval
        parts.handlers[MessageType.EXECUTION_RESULT] = self.changes.on_result
        parts.spawn(self.changes.sweep_overdue(), "overdue-changes")


def _under_parent(parts: NodeParts) -> tuple[Uplink, str] | None:
    """The parent and region an RC or LC works under; without both it takes up nothing."""
    region = parts.config.controller.region
    if parts.uplink is None or region is None:
        return None
    return parts.uplink, region


class RegionalTier:
    """An RC: merges its zone's discovery, relays the policy to its LCs, decides changes in its zone."""

    async def take_up(self, parts: NodeParts) -> None:
        found = _under_parent(parts)
        if found is None:
            return
        uplink, region = found
        config = parts.config

        upward = Upward(parts.upward, uplink, verifier=parts.verifier)
        parts.spawn(upward.run_forever(), "upward")
        receipts = Receipts(parts.upward, parts.peers)
        discovery = RegionalDiscovery(
            parts.store, me=parts.me, region=region, peers=parts.peers, upward=upward,
            receipts=receipts, verifier=parts.verifier, mqtt=parts.mqtt,
            spike_threshold=config.discovery.anomaly_new_device_threshold,
        )  # fmt: skip
        parts.handlers[MessageType.DISCOVERY_REPORT] = discovery.on_report
        parts.handlers[MessageType.DISCOVERY_REQUEST] = discovery.on_request
        parts.spawn(discovery.watch_overdue(config.policy.lc_report_timeout_s), "overdue")
        parts.mqtt.subscribe(topics.discovery_filter(region), discovery.on_mqtt, qos=1)

        relay = PolicyPublisher(
            parts.policy, me=parts.signer, topic=topics.policy(region), publish=parts.publish_retained
        )
        follower = PolicyFollower(
            parts.policy, me=parts.me, parent_id=uplink.parent_id, verifier=parts.verifier, relay=relay
        )
        await follower.start()
        parts.mqtt.subscribe(topics.policy_global(), follower.on_mqtt, qos=1)

        changes = RegionalChanges(
            parts.store,
            signer=parts.signer,
            peers=parts.peers,
            uplink=uplink,
            upward=upward,
            receipts=receipts,
            policy=parts.policy,
        )
        await changes.resume()
        parts.handlers.update({
            MessageType.CONFIG_PROPOSAL: changes.on_proposal,
            MessageType.APPROVAL_RESPONSE: changes.on_approval,
            MessageType.EXECUTION_RESULT: changes.on_result,
            MessageType.DEVICE_CLEAR: changes.on_clear,
        })  # fmt: skip


class LocalTier:
    """An LC: scans its subnets, follows its RC's policy, executes the changes approved for it."""

    async def take_up(self, parts: NodeParts) -> None:
        found = _under_parent(parts)
        if found is None:
            return
        uplink, region = found

        upward = Upward(
            parts.upward, uplink, verifier=parts.verifier, mqtt=parts.mqtt,
            mqtt_topics={MessageType.DISCOVERY_REPORT: topics.discovery(region, parts.me)},
            on_delivered={MessageType.DISCOVERY_REPORT: lambda *a: discovery.on_delivered(*a)},
        )  # fmt: skip
        discovery = LocalDiscovery(
            parts.config, parts.store, me=parts.me, region=region, upward=upward, mqtt=parts.mqtt,
            policy=parts.policy,
        )  # fmt: skip
        parts.handlers[MessageType.DISCOVERY_REQUEST] = discovery.on_request
        parts.mqtt.subscribe(topics.discovery_ack(region, parts.me), upward.on_mqtt, qos=1)
        parts.spawn(upward.run_forever(), "upward")

        follower = PolicyFollower(
            parts.policy, me=parts.me, parent_id=uplink.parent_id, verifier=parts.verifier
        )
        await follower.start()
        parts.mqtt.subscribe(topics.policy(region), follower.on_mqtt, qos=1)

        changes = LocalChanges(
            parts.store,
            me=parts.me,
            uplink=uplink,
            upward=upward,
            policy=parts.policy,
            executors=parts.executor,
        )
        await changes.start()
        parts.handlers.update({
            MessageType.EXECUTION_INSTRUCTION: changes.on_instruction,
            MessageType.APPROVAL_RESPONSE: changes.on_approval,
            MessageType.DEVICE_CLEAR: changes.on_clear,
        })  # fmt: skip

        # Last, once the LC answers its parent; the first cycle waits for MQTT, its reports travel on it.
        parts.spawn(discovery.run_forever(), "discovery")


TIERS: dict[ControllerRole, Callable[[], Tier]] = {
    ControllerRole.GLOBAL: GlobalTier,
    ControllerRole.REGIONAL: RegionalTier,
    ControllerRole.LOCAL: LocalTier,
}
