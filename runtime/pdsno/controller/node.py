"""One running controller: ``pdsno controller run --config FILE``.

Start-up: open (and if needed initialise) the NIB, take the identity (the GC is its own root; a
regional or local controller is admitted by its parent once, then reuses the identity), load the
message keys, serve REST, hand the parts to the controller's tier (:mod:`pdsno.controller.tiers`),
connect MQTT and publish signed heartbeats until told to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import uvicorn
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from pdsno import __version__
from pdsno.admission.credentials import identity_key_id
from pdsno.admission.identity import Identity, load_identity, save_identity
from pdsno.admission.joiner import adopt, join, read_bootstrap_file
from pdsno.admission.provisioning import ProvisioningStore
from pdsno.admission.validator import Validator
from pdsno.audit.watch import AuditWatch
from pdsno.canonical import utcnow
from pdsno.changes.executors import snmp_client_for
from pdsno.config import ControllerConfig
from pdsno.controller.app import Handler, build_app
from pdsno.controller.changes_global import GlobalChanges
from pdsno.controller.discovery_duty import GlobalDiscovery
from pdsno.controller.nib_setup import open_configured_nib, record_first_start
from pdsno.controller.policy_duty import GlobalPolicy, PolicyHolder
from pdsno.controller.tiers import TIERS, GlobalTier, NodeParts
from pdsno.controller.uplink import Peers, Uplink
from pdsno.errors import ConfigError, PdsnoError, ReasonCode
from pdsno.messaging.envelope import BROADCAST, Envelope, MessageRejected, MessageType
from pdsno.messaging.keys import KeyRing, SigningKey
from pdsno.messaging.messages import AuditStatus, ChildStatus, Heartbeat
from pdsno.messaging.replay import ReplayLog
from pdsno.messaging.sign import seal
from pdsno.messaging.verify import Verifier
from pdsno.nib.models import Controller, ControllerRole, Decision, EventDraft, KeyKind, MessageKey
from pdsno.nib.retry import retry_on_conflict
from pdsno.nib.sql import SqlNIBStore
from pdsno.nib.store import NIBResult, NIBStore
from pdsno.security.keys import Ed25519Signer, load_or_create_private_key, public_key_b64
from pdsno.transport import topics
from pdsno.transport.mqtt import MqttLink
from pdsno.transport.outbox import OUTBOX_FILE_NAME
from pdsno.transport.rest_client import PeerClient, PeerError
from pdsno.transport.rest_tls import MIN_TLS_VERSION, PeerCertificateProtocol
from pdsno.transport.upward import UPWARD_FILE_NAME, UpwardStore

log = logging.getLogger(__name__)

PROVISIONING_FILE = "provisioning.sqlite3"
AUDIT_CHECK_S = 60.0
"""How often a controller checks the events appended to its own audit chain (the first check walks it all)."""


def audit_publish_refusals(store: NIBStore, controller_id: str) -> Callable[[str, str], Awaitable[None]]:
    """What a controller does when the broker refuses one of its publishes: record it, never retry."""

    async def record(topic: str, reason: str) -> None:
        await store.append_events(
            [
                EventDraft(
                    event_type=ReasonCode.MQTT_PUBLISH_REFUSED.value,
                    actor=controller_id,
                    subject=topic,
                    decision=Decision.DENIED,
                    payload={"reason": reason},
                )
            ]
        )

    return record


@dataclass(frozen=True, slots=True)
class ClockReading:
    """A peer's clock against ours, from its last heartbeat whose signature verified (the transit time,
    normally milliseconds, counts as skew)."""

    skew_s: float  # the peer's clock minus ours: positive when the peer is ahead
    measured_at: datetime


class _EmbeddedServer(uvicorn.Server):
    """uvicorn that leaves signals to the node, which must say goodbye on MQTT before exiting."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


class ControllerNode:
    def __init__(self, config: ControllerConfig) -> None:
        self.config = config
        key, _ = load_or_create_private_key(config.security.identity_key)
        self._key = key
        self._identity: Identity | None = None
        self._store: SqlNIBStore | None = None
        self._verifier: Verifier | None = None
        self._replay: ReplayLog | None = None
        self._validator: Validator | None = None
        self._mqtt: MqttLink | None = None
        self._upward: UpwardStore | None = None
        self._server: _EmbeddedServer | None = None
        self._peers: PeerClient | None = None
        self._snmp_client = snmp_client_for(config.changes)
        self.tier = TIERS[self.role]()
        self._tasks: list[asyncio.Task[Any]] = []
        self._stopping = asyncio.Event()
        self._started = time.monotonic()
        self.handlers: dict[MessageType, Handler] = {MessageType.HEARTBEAT: self._on_heartbeat_message}
        self.peer_clocks: dict[str, ClockReading] = {}
        # Each peer's last verified heartbeat and when it was sent (its audit status, its children).
        self.peer_heartbeats: dict[str, tuple[Heartbeat, datetime]] = {}
        self._audit: AuditWatch | None = None

    # --- what the REST app reads ------------------------------------------------------------

    @property
    def identity(self) -> Identity:
        if self._identity is None:
            raise PdsnoError("the controller has no identity yet")
        return self._identity

    @property
    def controller_id(self) -> str:
        return self.identity.controller_id

    @property
    def role(self) -> ControllerRole:
        return ControllerRole(self.config.controller.role.value)

    @property
    def region(self) -> str | None:
        return self.config.controller.region

    @property
    def public_key(self) -> str:
        return public_key_b64(self._key)

    @property
    def store(self) -> SqlNIBStore:
        assert self._store is not None
        return self._store

    @property
    def verifier(self) -> Verifier:
        assert self._verifier is not None
        return self._verifier

    @property
    def validator(self) -> Validator | None:
        return self._validator

    @property
    def mqtt_connected(self) -> bool:
        return self._mqtt is not None and self._mqtt.connected

    @property
    def mqtt_outbox_depth(self) -> int:
        return self._mqtt.pending() if self._mqtt is not None else 0

    @property
    def audit_status(self) -> AuditStatus | None:
        """This controller's last check of its own audit chain."""
        return self._audit.status if self._audit is not None else None

    def own_public_keys(self) -> dict[str, Ed25519PublicKey]:
        """The keys this controller signs its audit events with, from its key file (not its NIB)."""
        return dict.fromkeys({self.config.controller.id, self.controller_id}, self._key.public_key())

    # --- what the northbound API (served by the GC only) works on ---------------------------

    @property
    def global_discovery(self) -> GlobalDiscovery | None:
        return self.tier.discovery if isinstance(self.tier, GlobalTier) else None

    @property
    def policy(self) -> GlobalPolicy | None:
        return self.tier.policy if isinstance(self.tier, GlobalTier) else None

    @property
    def changes(self) -> GlobalChanges | None:
        return self.tier.changes if isinstance(self.tier, GlobalTier) else None

    # --- life cycle -------------------------------------------------------------------------

    async def run(self) -> None:
        """Start, serve until SIGTERM/SIGINT, stop cleanly."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        try:
            await self.start()
            await self._stopping.wait()
        finally:
            await self.stop()

    async def start(self) -> None:
        config = self.config
        for warning in config.warnings():
            log.warning(warning)
        local = Ed25519Signer(config.controller.id, self._key)
        self._store = await open_configured_nib(config, signer=local, create=True)
        if self._store.durability_gaps:
            log.warning(
                "the NIB may lose acknowledged writes in a crash", extra=dict(self._store.durability_gaps)
            )
        await record_first_start(self._store, config, local)
        self._audit = AuditWatch(self._store, self.own_public_keys)
        self._identity = await self._take_identity()
        self._store.use_signer(Ed25519Signer(self.controller_id, self._key))
        keyring = await KeyRing.load_from(self._store)
        self._replay = await ReplayLog.open(config.controller.data_dir / "replay")
        self._verifier = Verifier(
            self.controller_id,
            keyring,
            self._store,
            self._replay,
            clock_skew_s=config.security.clock_skew_s,
            max_bytes=config.security.max_message_bytes,
        )
        self._validator = self._make_validator()
        self._peers = self._peer_client()
        await self._serve_rest()
        await self._connect_mqtt()
        log.info("controller started", extra={"controller_id": self.controller_id, "role": self.role.value})

    async def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            # Let uvicorn finish what is in flight and close its sockets before anything else goes.
            self._server.should_exit = True
            serving = [t for t in self._tasks if t.get_name() == "rest"]
            await asyncio.wait(serving, timeout=5)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._mqtt is not None:
            await self._mqtt.stop()
            self._mqtt = None
        if self._upward is not None:
            self._upward.close()
            self._upward = None
        await self._snmp_client.close()
        if self._peers is not None:
            await self._peers.aclose()
            self._peers = None
        if self._replay is not None:
            self._replay.close()
            self._replay = None
        if self._store is not None:
            await self._store.close()
            self._store = None

    # --- identity ---------------------------------------------------------------------------

    async def _take_identity(self) -> Identity:
        config = self.config
        data_dir = config.controller.data_dir
        found = load_identity(data_dir)
        if found is not None:
            return found
        if self.role is ControllerRole.GLOBAL:
            return await self._become_root(data_dir)
        return await self._admit()

    async def _become_root(self, data_dir: Path) -> Identity:
        """The GC is the root of trust: it records itself, with its key, in its own NIB."""
        me = self.config.controller.id
        result = await self.store.register_controller(
            Controller(
                controller_id=me, role=ControllerRole.GLOBAL, public_key=self.public_key, admitted_at=utcnow()
            ),
            keys=[self._identity_message_key(me)],
            events=[
                EventDraft(
                    event_type="ROOT_IDENTITY_CREATED", actor=me, subject=me, decision=Decision.APPROVED
                )
            ],
        )
        if not result.success and result.error is not ReasonCode.ALREADY_EXISTS:
            raise PdsnoError(result.message, code=result.error or ReasonCode.INTERNAL_ERROR)
        identity = Identity(
            controller_id=me,
            role=ControllerRole.GLOBAL,
            region=None,
            parent_id=None,
            parent_url=None,
            admitted_at=utcnow(),
        )
        save_identity(data_dir, identity)
        return identity

    def _identity_message_key(self, owner: str, public_key: str | None = None) -> MessageKey:
        return MessageKey(
            key_id=identity_key_id(owner),
            owner_id=owner,
            kind=KeyKind.ED25519,
            material=public_key or self.public_key,
            not_before=utcnow() - timedelta(seconds=self.config.security.clock_skew_s),
        )

    async def _admit(self) -> Identity:
        config = self.config
        parent = config.controller.parent
        if parent is None or config.admission.bootstrap_file is None:
            raise ConfigError(
                "this controller has no identity yet: set controller.parent and admission.bootstrap_file "
                "(the file 'pdsno token issue' wrote on the parent)"
            )
        ticket = read_bootstrap_file(config.admission.bootstrap_file)
        client = self._peer_client()
        requested = None if config.controller.is_temporary else config.controller.id
        own_url = f"{config.rest.scheme}://{config.rest.host}:{config.rest.port}"
        try:
            while True:
                try:
                    result = await join(
                        client=client,
                        parent_url=parent.url,
                        parent_id=parent.id,
                        ticket=ticket,
                        identity_key=Ed25519Signer(ticket.temp_id, self._key),
                        requested_id=requested,
                        rest_url=own_url,
                    )
                    break
                except PeerError as exc:
                    if exc.code not in (ReasonCode.PARENT_UNREACHABLE, ReasonCode.PEER_NO_ANSWER):
                        raise
                    log.warning(
                        "parent unreachable; will retry", extra={"parent": parent.url, "error": exc.message}
                    )
                    await asyncio.sleep(config.admission.retry_interval_s)
        finally:
            await client.aclose()
        identity = await adopt(
            result,
            store=self.store,
            data_dir=config.controller.data_dir,
            identity_key=Ed25519Signer(ticket.temp_id, self._key),
            parent_url=parent.url,
        )
        assert result.issuer_public_key is not None
        await self.store.put_message_key(
            self._identity_message_key(identity.parent_id or "", result.issuer_public_key)
        )
        log.info("admitted", extra={"assigned_id": identity.controller_id, "parent": identity.parent_id})
        return identity

    def _make_validator(self) -> Validator | None:
        if self.role is ControllerRole.LOCAL:
            return None
        config = self.config
        return Validator(
            signer=Ed25519Signer(self.controller_id, self._key),
            role=self.role,
            region=self.region,
            store=self.store,
            provisioning=ProvisioningStore(config.controller.data_dir / PROVISIONING_FILE),
            own_certificate=self.identity.certificate,
            own_delegation=self.identity.delegation,
            valid_regions=config.admission.valid_regions,
            max_per_region=config.policy.max_controllers_per_region,
            challenge_timeout=timedelta(seconds=config.admission.challenge_timeout_s),
            clock_skew=timedelta(seconds=config.security.clock_skew_s),
            keyring=self.verifier.keyring,
        )

    # --- REST -------------------------------------------------------------------------------

    def _peer_client(self) -> PeerClient:
        """Calls to the parent and the children: the REST certificate (serverAuth and clientAuth) is this
        controller's client certificate too, so no deployment has a second one to hand out."""
        tls = self.config.rest.tls
        if tls.insecure or tls.cert is None or tls.key is None:
            return PeerClient(ca_file=None)
        return PeerClient(ca_file=tls.ca, client_cert=(tls.cert, tls.key))

    async def _serve_rest(self) -> None:
        rest = self.config.rest
        tls: dict[str, Any] = {}
        if not rest.tls.insecure:
            tls = {"ssl_certfile": str(rest.tls.cert), "ssl_keyfile": str(rest.tls.key)}
            if rest.tls.ca is not None:
                tls.update(ssl_ca_certs=str(rest.tls.ca), ssl_cert_reqs=ssl.CERT_OPTIONAL)
        server_config = uvicorn.Config(
            build_app(self, require_client_certificate=not rest.tls.insecure),
            host=rest.host,
            port=rest.port,
            http=PeerCertificateProtocol,
            log_config=None,
            access_log=False,
            lifespan="off",
            **tls,
        )
        server_config.load()
        if server_config.ssl is not None:
            server_config.ssl.minimum_version = MIN_TLS_VERSION
        self._server = _EmbeddedServer(server_config)
        self._tasks.append(asyncio.create_task(self._server.serve(), name="rest"))
        deadline = time.monotonic() + 15
        while not self._server.started:
            if self._tasks[-1].done() or time.monotonic() > deadline:
                raise PdsnoError(
                    f"the REST server could not listen on {rest.host}:{rest.port}",
                    code=ReasonCode.INTERNAL_ERROR,
                )
            await asyncio.sleep(0.02)

    # --- MQTT and heartbeats ----------------------------------------------------------------

    async def _connect_mqtt(self) -> None:
        mqtt = self.config.mqtt
        password = mqtt.password_file.read_text().strip() if mqtt.password_file else None
        self._mqtt = MqttLink(
            client_id=self.controller_id,
            host=mqtt.host,
            port=mqtt.port,
            username=mqtt.username or (self.controller_id if password else None),
            password=password,
            outbox_path=mqtt.outbox_dir / OUTBOX_FILE_NAME,
            status_topic=topics.status(self.controller_id),
            ca_file=mqtt.tls.ca,
            cert_file=mqtt.tls.cert,
            key_file=mqtt.tls.key,
            insecure=mqtt.tls.insecure,
            keepalive=mqtt.keepalive_s,
            on_refused=audit_publish_refusals(self.store, self.controller_id),
            on_connected=lambda _session_present: self._publish_heartbeat(),
            max_payload_bytes=self.config.security.max_message_bytes,
        )
        # A local controller listens to its parent only; the others to every controller they know.
        parent = self.identity.parent_id
        watched = (
            topics.status(parent) if self.role is ControllerRole.LOCAL and parent else topics.status_filter()
        )
        # Live heartbeats only: a retained one seen before a restart would be refused as a replay.
        self._mqtt.subscribe(watched, self._on_status, qos=0, no_local=True, skip_retained=True)
        policy = PolicyHolder(self.store, self.config.policy)
        await policy.load()
        await self.tier.take_up(self._tier_parts(self._mqtt, policy))
        await self._mqtt.start()
        self._spawn(self._heartbeats(), "heartbeats")
        self._spawn(self._watch_audit(), "audit-watch")

    def _tier_parts(self, mqtt: MqttLink, policy: PolicyHolder) -> NodeParts:
        identity = self.identity
        assert self._peers is not None
        peers = Peers(self.store, me=self.controller_id, client=self._peers, verifier=self.verifier)
        uplink = None
        if identity.parent_id and identity.parent_url:
            uplink = Uplink(peers, parent_id=identity.parent_id, parent_url=identity.parent_url)
        self._upward = UpwardStore(self.config.mqtt.outbox_dir / UPWARD_FILE_NAME)
        return NodeParts(
            config=self.config,
            store=self.store,
            signer=Ed25519Signer(self.controller_id, self._key),
            verifier=self.verifier,
            peers=peers,
            uplink=uplink,
            policy=policy,
            mqtt=mqtt,
            upward=self._upward,
            handlers=self.handlers,
            spawn=self._spawn,
            publish_retained=self._publish_retained,
            snmp_client=self._snmp_client,
        )

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        self._tasks.append(asyncio.create_task(work, name=name))

    async def _publish_retained(self, topic: str, payload: bytes) -> None:
        assert self._mqtt is not None
        await self._mqtt.publish(topic, payload, qos=1, retain=True)

    def _heartbeat(self, status: Literal["online", "offline"]) -> Envelope:
        payload = Heartbeat(
            controller_id=self.controller_id,
            role=self.role,
            region=self.region,
            status=status,
            uptime_s=round(time.monotonic() - self._started, 3),
            nib_backend=self.store.backend,
            version=__version__,
            audit=self._audit.status if self._audit is not None else None,
            children=self._children(),
        )
        key = SigningKey.from_ed25519(identity_key_id(self.controller_id), self.controller_id, self._key)
        return seal(
            MessageType.HEARTBEAT, payload, sender_id=self.controller_id, recipient_id=BROADCAST, key=key
        )

    def _children(self) -> list[ChildStatus]:
        """The controllers below this one, as their last heartbeats told (an RC's LCs; the GC's RCs)."""
        below = {
            ControllerRole.GLOBAL: ControllerRole.REGIONAL,
            ControllerRole.REGIONAL: ControllerRole.LOCAL,
        }
        child_role = below.get(self.role)
        return [
            ChildStatus(
                controller_id=beat.controller_id,
                role=beat.role,
                region=beat.region,
                last_seen=seen,
                clock_skew_s=self.peer_clocks[beat.controller_id].skew_s,
                audit=beat.audit,
            )
            for beat, seen in self.peer_heartbeats.values()
            if beat.role is child_role and beat.controller_id in self.peer_clocks
        ]

    async def _watch_audit(self) -> None:
        """Check this controller's own chain now and every AUDIT_CHECK_S; heartbeats carry the result."""
        assert self._audit is not None
        while True:
            status = await self._audit.check()
            if not status.ok:
                log.error("the audit chain does not verify", extra={"problem": status.problem})
            await asyncio.sleep(AUDIT_CHECK_S)

    async def _publish_heartbeat(self) -> None:
        if self._mqtt is not None:
            # Retained, so whoever subscribes later (mosquitto_sub included) sees the latest at once.
            await self._mqtt.publish(
                topics.status(self.controller_id), self._heartbeat("online").to_bytes(), qos=0, retain=True
            )

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.config.mqtt.heartbeat_interval_s)
            await self._publish_heartbeat()

    async def _on_status(self, topic: str, payload: bytes) -> None:
        peer = topic.rsplit("/", 1)[-1]
        # A broadcast channel: heartbeats of controllers we hold no key for are not for us to judge.
        if payload == b"offline" or peer == self.controller_id or not self.verifier.keyring.keys_of(peer):
            return
        received = utcnow()
        try:
            envelope = await self.verifier.verify(payload, transport="mqtt", source=topic, now=received)
        except MessageRejected as exc:
            # Already audited. Refused for its timestamp with a valid signature, it still tells how far
            # off the peer's clock is, which is why the peer seems silent: the operator sees it.
            skew_s = exc.details.get("clock_skew_s")
            if isinstance(skew_s, float):
                self.peer_clocks[peer] = ClockReading(skew_s, received)
            return
        await self._seen(envelope, received)

    async def _on_heartbeat_message(self, envelope: Envelope) -> Envelope | None:
        await self._seen(envelope, utcnow())
        return None

    async def _seen(self, envelope: Envelope, received: datetime) -> None:
        """Record that a peer we know is alive (its heartbeat verified), and its clock."""
        sender = envelope.sender_id
        skew = (envelope.timestamp - received).total_seconds()
        self.peer_clocks[sender] = ClockReading(round(skew, 3), received)
        if envelope.message_type is MessageType.HEARTBEAT:
            self.peer_heartbeats[sender] = (envelope.payload_as(Heartbeat), envelope.timestamp)

        async def touch() -> NIBResult[Controller]:
            known = await self.store.get_controller(sender)
            if known is None:
                return NIBResult.fail(ReasonCode.NOT_FOUND, sender)
            return await self.store.update_controller(known.next_version(last_seen=envelope.timestamp))

        await retry_on_conflict(touch)
