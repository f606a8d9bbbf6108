"""``MqttLink``: a controller's connection to the Mosquitto broker, asyncio-friendly over paho-mqtt.

paho runs its own network thread (``loop_start``) and calls back from it; every callback is handed to the
asyncio loop with ``call_soon_threadsafe``, so all state below is touched by the event loop thread only.

Delivery guarantees
-------------------
* **Publishing, QoS 1**: the message is written to the durable :class:`~pdsno.transport.outbox.Outbox`
  first, then handed to paho, and deleted from the outbox only when the broker's PUBACK arrives. While the
  broker is unreachable messages wait in the outbox; on every (re)connect it is flushed oldest first, at
  most ``max_inflight`` unacknowledged at a time. A PUBACK with a failure reason code (``0x87 Not
  authorized``: the broker's ACL refused the topic) deletes the message, logs ``MQTT_PUBLISH_REFUSED`` and
  calls ``on_refused(topic, reason)``: a refused message is never retried. Messages still in the outbox
  when the process stops are sent by the next :class:`MqttLink` opened on the same outbox file.
  Delivery is at least once: after a connection loss paho resends what was unacknowledged (flagged DUP),
  so a receiver may see a message twice (the signed envelope's ``message_id`` lets it drop the copy).
* **Publishing, QoS 0** (heartbeats): straight to paho, dropped while disconnected.
* **Receiving**: MQTT v5 session with ``clean_start=False`` and a session expiry (default one day), so the
  broker queues QoS 1 messages while the controller is briefly away. Messages are acknowledged only after
  their handler has run (paho ``manual_ack``), so one that arrived just before a crash is delivered again.
  Handlers run one at a time, in arrival order, on the event loop. A handler that raises
  (``MQTT_HANDLER_FAILED``: the NIB is full, a bug) leaves its message unacknowledged, and the link
  reconnects after a backoff (1 s doubling to 30 s) so the broker delivers it again: Mosquitto resends
  unacknowledged messages of a persistent session on reconnect, never on the same connection. A message
  whose handlers failed :data:`MAX_HANDLER_TRIES` times is acknowledged and logged
  (``MQTT_MESSAGE_DROPPED``): a poison message must not hold the session forever. A sender that must not
  lose it keeps it until the receiving controller acknowledges it (:mod:`pdsno.controller.upward`).
* **Subscriptions** are made again on every reconnect (retained messages are resent only to a brand-new
  subscription, or on the first subscription of this link, so a restarted controller gets the retained
  policy again).
* **Status**: the last will is ``b"offline"``, retained, QoS 1 on ``status_topic``: the broker's word that
  the controller went away without saying goodbye. :meth:`MqttLink.stop` publishes the same itself before
  disconnecting cleanly (a clean disconnect discards the will). A broker restart also publishes the wills
  of the controllers that were connected, so the status says ``offline`` until they speak again: pass
  ``on_connected`` to publish a fresh heartbeat on every (re)connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from pdsno.config import ControllerConfig
from pdsno.errors import ConfigError, PdsnoError
from pdsno.errors import ReasonCode as PdsnoReason
from pdsno.metrics import runtime_counts
from pdsno.transport import topics
from pdsno.transport.outbox import OUTBOX_FILE_NAME, Outbox

__all__ = [
    "MAX_HANDLER_TRIES",
    "OFFLINE",
    "ConnectedCallback",
    "MessageHandler",
    "MqttError",
    "MqttLink",
    "RefusedCallback",
]

logger = logging.getLogger(__name__)

OFFLINE: Final = b"offline"
"""Payload of the last will and of the goodbye published by :meth:`MqttLink.stop` on the status topic."""

MessageHandler = Callable[[str, bytes], Awaitable[None]]
"""``async def handler(topic, payload)``."""
RefusedCallback = Callable[[str, str], Awaitable[None]]
"""``async def on_refused(topic, reason)``: the broker refused a publish (reason e.g. ``"Not authorized"``)."""
ConnectedCallback = Callable[[bool], Awaitable[None]]
"""``async def on_connected(session_present)``: awaited after every successful (re)connect."""

_RESEND_BARRIER_S: Final = 30.0
_REDELIVERY_MAX_S: Final = 30.0
MAX_HANDLER_TRIES: Final = 5
HANDLERS_IN_FLIGHT: Final = 32
"""Messages whose handlers run at once (Mosquitto sends at most ``max_inflight_messages``, 20 by default,
unacknowledged QoS 1 messages to a client anyway)."""
"""Deliveries of one message whose handlers failed before it is acknowledged anyway (and dropped)."""
_RECEIVE_MAXIMUM: Final = 100


class _PahoNoise(logging.Filter):
    """paho logs "Client is not connected" at ERROR on every loop pass without a socket (after a disconnect,
    while reconnecting); the link logs connection changes itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Client is not connected")


_paho_logger = logging.getLogger(f"{__name__}.paho")
_paho_logger.addFilter(_PahoNoise())


class MqttError(PdsnoError):
    """The MQTT link was used wrongly (stopped, bad topic) or could not be set up."""


@dataclass(slots=True)
class _Subscription:
    topic_filter: str
    qos: int
    no_local: bool
    skip_retained: bool = False
    handlers: list[MessageHandler] = field(default_factory=list)
    made: bool = False
    """Subscribed at least once by this link (later subscriptions do not ask for retained messages)."""


def _check_topic(topic: str) -> None:
    if not isinstance(topic, str) or not topic:
        raise MqttError("an MQTT topic must be a non-empty string", code=PdsnoReason.MALFORMED_MESSAGE)
    if "+" in topic or "#" in topic or "\0" in topic:
        raise MqttError(
            f"cannot publish on {topic!r}: wildcards and NUL are not allowed in a topic name",
            code=PdsnoReason.MALFORMED_MESSAGE,
        )
    if len(topic.encode("utf-8")) > 65535:
        raise MqttError("an MQTT topic is at most 65535 bytes", code=PdsnoReason.MALFORMED_MESSAGE)


def _digest(topic: str, payload: bytes) -> bytes:
    return hashlib.sha256(topic.encode() + b"\0" + payload).digest()


def _check_filter(topic_filter: str) -> None:
    if not isinstance(topic_filter, str) or not topic_filter or "\0" in topic_filter:
        raise MqttError(f"bad topic filter {topic_filter!r}", code=PdsnoReason.MALFORMED_MESSAGE)
    levels = topic_filter.split("/")
    for index, level in enumerate(levels):
        if ("+" in level and level != "+") or ("#" in level and (level != "#" or index != len(levels) - 1)):
            raise MqttError(
                f"bad topic filter {topic_filter!r}: '+' must fill a whole level and '#' the last one",
                code=PdsnoReason.MALFORMED_MESSAGE,
            )


class MqttLink:
    """One controller's MQTT connection (see the module documentation for the guarantees).

    Use it from one asyncio event loop: :meth:`start` binds it to the running loop. Messages published
    before :meth:`start` wait in the outbox. Parameters:

    ``ca_file``: the deployment CA; the broker certificate must chain to it and name ``host`` (DNS name or
    IP address SAN). ``cert_file``/``key_file``: an optional client certificate. ``insecure=True`` connects
    without TLS (development only, logged as a warning); otherwise ``ca_file`` is required.
    ``status_topic``: where the last will (and the goodbye of :meth:`stop`) is published; ``None`` for none.
    ``on_refused``: awaited when the broker refuses a QoS 1 publish. ``on_connected``: awaited after every
    successful (re)connect, e.g. to publish a heartbeat at once. ``max_payload_bytes``: publishes larger
    than this raise :class:`MqttError` (``MESSAGE_TOO_LARGE``).
    """

    def __init__(
        self,
        *,
        client_id: str,
        host: str,
        port: int,
        username: str | None,
        password: str | None,
        outbox_path: Path,
        status_topic: str | None,
        ca_file: Path | None = None,
        cert_file: Path | None = None,
        key_file: Path | None = None,
        insecure: bool = False,
        keepalive: int = 30,
        session_expiry_s: int = 86_400,
        on_refused: RefusedCallback | None = None,
        on_connected: ConnectedCallback | None = None,
        reconnect_min_delay: int = 1,
        reconnect_max_delay: int = 30,
        max_inflight: int = 20,
        max_payload_bytes: int | None = None,
    ) -> None:
        if not client_id:
            raise ConfigError("an MQTT client id must not be empty")
        if ca_file is None and not insecure:
            raise ConfigError("MQTT over TLS needs the deployment CA file (or insecure=True for development)")
        if (cert_file is None) != (key_file is None):
            raise ConfigError("an MQTT client certificate needs both cert_file and key_file")
        if status_topic is not None:
            _check_topic(status_topic)
        if max_inflight < 1:
            raise ConfigError("max_inflight must be at least 1")

        self.client_id = client_id
        self.host = host
        self.port = port
        self.username = username
        self.status_topic = status_topic
        self.keepalive = keepalive
        self.session_expiry_s = session_expiry_s
        self.max_payload_bytes = max_payload_bytes
        self._on_refused = on_refused
        self._on_connected_cb = on_connected
        self._max_inflight = max_inflight
        self._window = max_inflight
        self._log = {"client_id": client_id, "broker": f"{host}:{port}"}
        self._redeliveries = runtime_counts(client_id).mqtt_redeliveries  # incremented from both threads

        self._outbox = Outbox(outbox_path)
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            manual_ack=True,
        )
        client.enable_logger(_paho_logger)
        client.max_inflight_messages_set(max_inflight)
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(reconnect_min_delay, reconnect_max_delay)
        client.connect_timeout = 10.0
        if username is not None:
            client.username_pw_set(username, password)
        if insecure:
            logger.warning(
                "MQTT without TLS: credentials and messages cross the network in clear", extra=self._log
            )
        else:
            assert ca_file is not None
            client.tls_set_context(self._tls_context(ca_file, cert_file, key_file))
        if status_topic is not None:
            client.will_set(status_topic, OFFLINE, qos=1, retain=True)
        client.on_connect = self._cb_connect
        client.on_connect_fail = self._cb_connect_fail
        client.on_disconnect = self._cb_disconnect
        client.on_publish = self._cb_publish
        client.on_subscribe = self._cb_subscribe
        client.on_message = self._cb_message
        self._client = client

        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = False
        self._stopped = False
        self._connected = False
        self._generation = 0
        self._connected_event = asyncio.Event()
        self._refused_event = asyncio.Event()
        self._progress = asyncio.Event()
        self._last_refusal: str | None = None
        self._inflight: dict[int, tuple[int, str]] = {}  # paho mid -> (outbox id, topic)
        self._handed_max_id = 0  # highest outbox id handed to paho
        self._barrier: set[int] = set()  # mids paho resends after a reconnect; new sends wait for them
        self._direct: dict[int, asyncio.Future[ReasonCode]] = {}  # publishes that bypass the outbox
        self._subscriptions: dict[str, _Subscription] = {}
        self._sub_mids: dict[int, str] = {}
        self._inbox: asyncio.Queue[tuple[int, str, bytes, int, int]] = asyncio.Queue()
        self._failures: dict[bytes, int] = {}  # digest of a message whose handlers failed -> deliveries
        self._redelivery_at: int | None = None  # the generation a forced reconnect is scheduled for
        self._dispatcher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -------------------------------------------------------------------------------------------------
    # construction helpers

    @staticmethod
    def _tls_context(ca_file: Path, cert_file: Path | None, key_file: Path | None) -> ssl.SSLContext:
        try:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
            if cert_file is not None and key_file is not None:
                context.load_cert_chain(str(cert_file), str(key_file))
        except FileNotFoundError as exc:
            raise ConfigError(f"MQTT TLS file missing: {exc.filename}") from None
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"MQTT TLS files unusable ({ca_file}): {exc}") from None
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.check_hostname = True
        context.verify_mode = ssl.CERT_REQUIRED
        return context

    @classmethod
    def from_config(
        cls,
        config: ControllerConfig,
        *,
        on_refused: RefusedCallback | None = None,
        on_connected: ConnectedCallback | None = None,
    ) -> MqttLink:
        """The link described by the ``mqtt`` section of a controller configuration.

        Client id and user name default to the controller id; the status topic is
        ``pdsno/status/<controller id>``; the outbox is ``<mqtt.outbox_dir>/mqtt-outbox.sqlite3``.
        """
        section = config.mqtt
        controller_id = config.controller.id
        password: str | None = None
        if section.password_file is not None:
            try:
                password = section.password_file.read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as exc:
                raise ConfigError(
                    f"mqtt.password_file {section.password_file}: {exc.strerror or exc}",
                    key="mqtt.password_file",
                ) from None
        return cls(
            client_id=controller_id,
            host=section.host,
            port=section.port,
            username=section.username or (controller_id if password is not None else None),
            password=password,
            outbox_path=section.outbox_dir / OUTBOX_FILE_NAME,
            status_topic=topics.status(controller_id),
            ca_file=section.tls.ca,
            cert_file=section.tls.cert,
            key_file=section.tls.key,
            insecure=section.tls.insecure,
            keepalive=section.keepalive_s,
            on_refused=on_refused,
            on_connected=on_connected,
            max_payload_bytes=config.security.max_message_bytes,
        )

    # -------------------------------------------------------------------------------------------------
    # public API

    @property
    def connected(self) -> bool:
        """True while the broker has accepted the connection (as seen by the event loop)."""
        return self._connected

    @property
    def connection(self) -> int:
        """How many times the broker accepted this link: a new number is a new connection, after which the
        broker may have lost what it held (a restart without saving)."""
        return self._generation

    @property
    def last_refusal(self) -> str | None:
        """Reason of the last refused CONNECT (e.g. ``"Not authorized"``), None once connected."""
        return self._last_refusal

    @property
    def outbox_path(self) -> Path:
        return self._outbox.path

    def pending(self) -> int:
        """Messages in the outbox (not yet acknowledged by the broker)."""
        return len(self._outbox)

    async def start(self) -> None:
        """Bind to the running loop and start connecting (in the background, retrying with backoff).

        Returns at once: use :meth:`wait_connected` to wait for the broker. Publishing works before the
        connection is up (QoS 1 messages wait in the outbox).
        """
        if self._started:
            raise MqttError("MqttLink.start() called twice")
        self._started = True
        self._loop = asyncio.get_running_loop()
        self._dispatcher = self._loop.create_task(self._dispatch(), name=f"mqtt-dispatch-{self.client_id}")
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = self.session_expiry_s
        properties.ReceiveMaximum = _RECEIVE_MAXIMUM
        self._client.connect_async(
            self.host, self.port, keepalive=self.keepalive, clean_start=False, properties=properties
        )
        self._client.loop_start()
        logger.info(
            "MQTT link starting", extra={**self._log, "pending": len(self._outbox), "user": self.username}
        )

    async def wait_connected(self, timeout: float) -> bool:  # noqa: ASYNC109 - a bounded wait is the API
        """Wait until connected (True), the broker refuses the login, or ``timeout`` passes (False)."""
        if self._connected:
            return True
        self._refused_event.clear()
        waiters = [
            asyncio.ensure_future(self._connected_event.wait()),
            asyncio.ensure_future(self._refused_event.wait()),
        ]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        return self._connected

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Publish ``payload`` on ``topic``.

        QoS 1: stored in the outbox (durably) before this returns, sent now or after the next (re)connect.
        QoS 0: sent now if connected, otherwise dropped. QoS 2 is not offered.
        """
        if self._stopped:
            raise MqttError(f"MQTT link {self.client_id} is stopped; cannot publish on {topic}")
        _check_topic(topic)
        if qos not in (0, 1):
            raise MqttError(f"QoS {qos} is not supported (use 0 or 1)", code=PdsnoReason.MALFORMED_MESSAGE)
        data = bytes(payload)
        if self.max_payload_bytes is not None and len(data) > self.max_payload_bytes:
            raise MqttError(
                f"{len(data)} byte message for {topic} exceeds the {self.max_payload_bytes} byte limit",
                code=PdsnoReason.MESSAGE_TOO_LARGE,
            )
        if qos == 0:
            if self._connected:
                self._client.publish(topic, data, qos=0, retain=retain)
            else:
                logger.debug("QoS 0 message dropped: not connected", extra={**self._log, "topic": topic})
            return
        self._outbox.add(topic, data, qos=qos, retain=retain)
        self._pump()

    def subscribe(
        self,
        topic_filter: str,
        handler: MessageHandler,
        qos: int = 1,
        *,
        no_local: bool = False,
        skip_retained: bool = False,
    ) -> None:
        """Call ``await handler(topic, payload)`` for every message matching ``topic_filter``.

        The subscription is made now if connected, and again after every reconnect. Several handlers may
        share a filter. ``no_local``: do not receive this link's own publications. ``skip_retained``: never
        receive retained messages at subscription time (MQTT 5 retain handling 2), for channels whose live
        messages are all that matters, where an old retained one would only be a replay. Subscribe
        **before** :meth:`start`: the broker delivers what it queued for the session as soon as the link
        connects.
        """
        if self._stopped:
            raise MqttError(f"MQTT link {self.client_id} is stopped")
        _check_filter(topic_filter)
        if qos not in (0, 1):
            raise MqttError(f"QoS {qos} is not supported (use 0 or 1)")
        sub = self._subscriptions.get(topic_filter)
        if sub is None:
            sub = self._subscriptions[topic_filter] = _Subscription(
                topic_filter, qos, no_local, skip_retained
            )
        else:
            sub.qos = max(sub.qos, qos)
        sub.handlers.append(handler)
        if self._connected:
            self._make_subscription(sub)

    async def wait_until_flushed(self, timeout: float) -> bool:  # noqa: ASYNC109 - a bounded wait is the API
        """Wait until the outbox is empty (every QoS 1 message acknowledged); False on timeout."""
        deadline = time.monotonic() + timeout
        while len(self._outbox) > 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            event = self._progress
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), remaining)
        return True

    async def stop(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109 - a bounded wait is the API
        """Flush what can be flushed within ``timeout``, say ``offline`` (retained), disconnect cleanly.

        What is still in the outbox stays there for the next link on the same file. Idempotent.
        """
        if self._stopped:
            return
        deadline = time.monotonic() + timeout
        if self._started and self._connected:
            await self.wait_until_flushed(max(0.0, deadline - time.monotonic()))
        self._stopped = True
        if self._started:
            if self._connected and self.status_topic is not None:
                await self._goodbye(max(0.5, deadline - time.monotonic()))
            self._client.disconnect()
            # paho's thread notices within a second (or after a connect attempt in progress times out)
            try:
                await asyncio.wait_for(
                    asyncio.to_thread(self._client.loop_stop), max(2.0, deadline - time.monotonic())
                )
            except TimeoutError:
                logger.warning(
                    "MQTT network thread did not stop in time; left to die with the process", extra=self._log
                )
        self._connected = False
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher
        for task in list(self._tasks):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(task), max(0.1, deadline - time.monotonic()))
        left = len(self._outbox)
        self._outbox.close()
        log = logger.warning if left else logger.info
        log("MQTT link stopped", extra={**self._log, "pending": left})

    # -------------------------------------------------------------------------------------------------
    # event-loop side

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        """From paho's thread: run ``fn(*args)`` on the event loop (ignored once the loop is gone)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(fn, *args)

    def _notify_progress(self) -> None:
        self._progress.set()
        self._progress = asyncio.Event()

    def _spawn(self, coro: Awaitable[None], what: str) -> None:
        async def run() -> None:
            try:
                await coro
            except Exception:
                logger.exception(f"{what} failed", extra=self._log)

        task = asyncio.ensure_future(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _pump(self) -> None:
        """Hand the next outbox messages to paho, keeping at most ``window`` unacknowledged."""
        if not self._connected or self._stopped or self._barrier:
            return
        room = self._window - len(self._inflight)
        if room <= 0:
            return
        for entry in self._outbox.pending(room, after_id=self._handed_max_id):
            try:
                info = self._client.publish(entry.topic, entry.payload, qos=entry.qos, retain=entry.retain)
            except ValueError as exc:  # cannot be sent at all (written by something else): drop it
                self._outbox.remove(entry.id)
                logger.error(
                    "MQTT outbox message dropped: paho refuses it",
                    extra={**self._log, "topic": entry.topic, "outbox_id": entry.id, "error": str(exc)},
                )
                continue
            if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:  # paho's message id space is exhausted
                logger.warning("paho queue full; will retry", extra={**self._log, "topic": entry.topic})
                return
            self._inflight[info.mid] = (entry.id, entry.topic)
            self._handed_max_id = entry.id
            logger.debug(
                "MQTT publish handed to paho",
                extra={**self._log, "topic": entry.topic, "mid": info.mid, "outbox_id": entry.id},
            )

    def _on_connected(self, session_present: bool, reason: ReasonCode, properties: Properties | None) -> None:
        if self._stopped:
            return
        if reason.is_failure:
            self._last_refusal = str(reason)
            self._refused_event.set()
            logger.error(
                "MQTT broker refused the connection",
                extra={**self._log, "reason": str(reason), "user": self.username},
            )
            return
        self._connected = True
        self._last_refusal = None
        self._generation += 1
        receive_max = getattr(properties, "ReceiveMaximum", None) if properties is not None else None
        self._window = min(self._max_inflight, receive_max) if receive_max else self._max_inflight
        self._connected_event.set()
        logger.info(
            "MQTT connected",
            extra={**self._log, "session_present": session_present, "pending": len(self._outbox)},
        )
        for sub in self._subscriptions.values():
            self._make_subscription(sub)
        # paho resends what was unacknowledged on the previous connection; new messages wait behind them.
        self._barrier = set(self._inflight)
        if self._barrier:
            self._redeliveries.labels("sent").inc(len(self._barrier))
            assert self._loop is not None
            self._loop.call_later(_RESEND_BARRIER_S, self._lift_barrier, self._generation)
        self._pump()
        if self._on_connected_cb is not None:
            self._spawn(self._on_connected_cb(session_present), "on_connected callback")

    def _lift_barrier(self, generation: int) -> None:
        if generation == self._generation and self._barrier:
            logger.warning("MQTT resend still unacknowledged; sending newer messages", extra=self._log)
            self._barrier.clear()
            self._pump()

    def _on_connect_failed(self) -> None:
        if not self._stopped:
            logger.warning("MQTT broker unreachable; retrying", extra=self._log)

    def _on_disconnected(self, reason: ReasonCode) -> None:
        was_connected = self._connected
        self._connected = False
        self._connected_event.clear()
        if was_connected and not self._stopped:
            logger.warning(
                "MQTT connection lost; reconnecting",
                extra={**self._log, "reason": str(reason), "pending": len(self._outbox)},
            )

    def _on_puback(self, mid: int, reason: ReasonCode) -> None:
        direct = self._direct.pop(mid, None)
        if direct is not None:
            if not direct.done():
                direct.set_result(reason)
            return
        handed = self._inflight.pop(mid, None)
        self._barrier.discard(mid)
        if handed is None:
            return  # a QoS 0 message
        entry_id, topic = handed
        self._outbox.remove(entry_id)
        if reason.is_failure:
            logger.error(
                "MQTT publish refused by the broker",
                extra={
                    **self._log,
                    "code": str(PdsnoReason.MQTT_PUBLISH_REFUSED),
                    "topic": topic,
                    "reason": str(reason),
                    "reason_code": reason.value,
                },
            )
            if self._on_refused is not None:
                self._spawn(self._on_refused(topic, str(reason)), "on_refused callback")
        self._notify_progress()
        self._pump()

    def _make_subscription(self, sub: _Subscription) -> None:
        if sub.skip_retained:
            retain = SubscribeOptions.RETAIN_DO_NOT_SEND
        elif sub.made:
            retain = SubscribeOptions.RETAIN_SEND_IF_NEW_SUB
        else:
            retain = SubscribeOptions.RETAIN_SEND_ON_SUBSCRIBE
        options = SubscribeOptions(qos=sub.qos, noLocal=sub.no_local, retainHandling=retain)
        rc, mid = self._client.subscribe(sub.topic_filter, options=options)
        if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and mid is not None:
            sub.made = True
            self._sub_mids[mid] = sub.topic_filter

    def _on_suback(self, mid: int, reasons: list[ReasonCode]) -> None:
        topic_filter = self._sub_mids.pop(mid, None)
        for reason in reasons:
            if reason.is_failure:
                logger.error(
                    "MQTT subscription refused by the broker",
                    extra={**self._log, "topic_filter": topic_filter, "reason": str(reason)},
                )
            else:
                logger.debug("MQTT subscribed", extra={**self._log, "topic_filter": topic_filter})

    async def _dispatch(self) -> None:
        """Hand each message to its handlers: several messages at once (a verification's replay-cache write
        then shares its transaction with the others'), one at a time per topic, so each topic's messages
        are handled in the order they came; acknowledgements leave in arrival order, as MQTT requires."""
        slots = asyncio.Semaphore(HANDLERS_IN_FLIGHT)
        handled: asyncio.Queue[tuple[asyncio.Task[bool], int, str, bytes, int, int]] = asyncio.Queue()
        last_of_topic: dict[str, asyncio.Task[bool]] = {}
        acker = asyncio.create_task(self._acknowledge_in_order(handled))
        try:
            while True:
                generation, topic, payload, mid, qos = await self._inbox.get()
                await slots.acquire()
                # One entry per topic, the latest message's (topics are few: one or two per controller).
                before = last_of_topic.get(topic)
                task = asyncio.create_task(
                    self._handle(topic, payload, None if before is None or before.done() else before, slots)
                )
                last_of_topic[topic] = task
                handled.put_nowait((task, generation, topic, payload, mid, qos))
        finally:
            unfinished: list[asyncio.Task[Any]] = [acker, *last_of_topic.values()]
            for pending in unfinished:
                pending.cancel()
            # Unacknowledged, they come again with the session; here they only need to end.
            await asyncio.gather(*unfinished, return_exceptions=True)

    async def _handle(
        self, topic: str, payload: bytes, after: asyncio.Task[bool] | None, slots: asyncio.Semaphore
    ) -> bool:
        """Every handler of ``topic``'s subscriptions, once ``after`` (the topic's previous message) is
        done; True if one failed."""
        try:
            if after is not None:
                await asyncio.wait({after})
            matched = failed = False
            for sub in list(self._subscriptions.values()):
                if not mqtt.topic_matches_sub(sub.topic_filter, topic):
                    continue
                matched = True
                for handler in list(sub.handlers):
                    try:
                        await handler(topic, payload)
                    except asyncio.CancelledError:
                        raise
                    except Exception:
                        failed = True
                        logger.exception(
                            "MQTT message handler failed",
                            extra={**self._log, "code": str(PdsnoReason.MQTT_HANDLER_FAILED), "topic": topic,
                                   "topic_filter": sub.topic_filter},
                        )  # fmt: skip
            if not matched:
                logger.warning(
                    "MQTT message without a handler dropped (subscribe before start() to get what the "
                    "broker queued for this session)",
                    extra={**self._log, "topic": topic},
                )
            return failed
        finally:
            slots.release()

    async def _acknowledge_in_order(
        self, handled: asyncio.Queue[tuple[asyncio.Task[bool], int, str, bytes, int, int]]
    ) -> None:
        while True:
            task, generation, topic, payload, mid, qos = await handled.get()
            failed = await task
            if qos > 0 and generation == self._generation and self._connected:
                if not failed:
                    if self._failures:  # it may be a redelivery that went through this time
                        self._failures.pop(_digest(topic, payload), None)
                    self._client.ack(mid, qos)
                elif not self._withhold_ack(_digest(topic, payload), topic):
                    self._client.ack(mid, qos)

    def _withhold_ack(self, digest: bytes, topic: str) -> bool:
        """After a failed handler: True to leave the message to a redelivery, False to give it up."""
        tries = self._failures[digest] = self._failures.get(digest, 0) + 1
        if tries >= MAX_HANDLER_TRIES:
            del self._failures[digest]
            logger.error(
                "MQTT message dropped: its handlers failed on every delivery",
                extra={**self._log, "code": str(PdsnoReason.MQTT_MESSAGE_DROPPED), "topic": topic,
                       "deliveries": tries},
            )  # fmt: skip
            return False
        if self._redelivery_at != self._generation:
            self._redelivery_at = self._generation
            assert self._loop is not None
            delay = min(_REDELIVERY_MAX_S, 2.0 ** (tries - 1))
            self._loop.call_later(delay, self._reconnect_for_redelivery, self._generation)
        return True

    def _reconnect_for_redelivery(self, generation: int) -> None:
        if generation != self._generation or not self._connected or self._stopped:
            return  # reconnected meanwhile: the broker has already redelivered
        sock = self._client.socket()
        if not isinstance(sock, socket.socket):  # TLS sockets are too; None between connections
            return
        logger.warning(
            "MQTT reconnecting so the broker redelivers unacknowledged messages",
            extra={**self._log, "waiting": len(self._failures)},
        )
        # paho sees the connection drop and reconnects on its own (a disconnect() would end its loop).
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    def _on_message(self, topic: str, payload: bytes, mid: int, qos: int) -> None:
        self._inbox.put_nowait((self._generation, topic, payload, mid, qos))

    async def _goodbye(self, timeout: float) -> None:  # noqa: ASYNC109
        """Publish ``offline`` retained on the status topic, bypassing the outbox (a stale goodbye replayed by
        the next process would declare a live controller dead)."""
        assert self.status_topic is not None
        assert self._loop is not None
        info = self._client.publish(self.status_topic, OFFLINE, qos=1, retain=True)
        future: asyncio.Future[ReasonCode] = self._loop.create_future()
        self._direct[info.mid] = future
        try:
            reason = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            logger.warning("MQTT goodbye not acknowledged in time", extra=self._log)
            return
        finally:
            self._direct.pop(info.mid, None)
        if reason.is_failure:
            logger.error("MQTT goodbye refused", extra={**self._log, "reason": str(reason)})

    # -------------------------------------------------------------------------------------------------
    # paho callbacks (network thread): hand over to the loop, nothing else

    def _cb_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._call(self._on_connected, flags.session_present, reason, properties)

    def _cb_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self._call(self._on_connect_failed)

    def _cb_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._call(self._on_disconnected, reason)

    def _cb_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode, properties: Properties
    ) -> None:
        self._call(self._on_puback, mid, reason)

    def _cb_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        self._call(self._on_suback, mid, reasons)

    def _cb_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:
            logger.warning("MQTT message with a non-UTF-8 topic dropped", extra=self._log)
            if message.qos > 0:
                client.ack(message.mid, message.qos)
            return
        if message.dup:
            self._redeliveries.labels("received").inc()
        self._call(self._on_message, topic, bytes(message.payload), message.mid, message.qos)
