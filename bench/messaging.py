"""Messaging benchmark: what signing and verifying East/West messages costs, REST and MQTT, in one run.

    .venv/bin/python bench/messaging.py [--seconds N] [--rounds N] [--json] [--quick]

1. REST, side by side on 127.0.0.1, plain HTTP then TLS. The unsigned peer is a bare FastAPI
   ``POST /echo`` that parses the envelope with pydantic and answers 202. Ours is the real
   ``build_app(node)``: ``POST /ew/v1/messages`` runs ``Verifier.verify`` (HMAC key, the replay log on disk,
   refusals audited in a real SQLite NIB) then a HEARTBEAT handler that does nothing. Every server is its own process with the same
   uvicorn settings as ``ControllerNode`` (httptools, no access log). One load process drives them in turn
   (``--rounds`` rounds, medians reported) with N requests in flight over keep-alive connections, sending
   envelopes signed before the timer starts, each with a fresh message id and nonce. A diagnostic server
   (plain HTTP only) is the same app and Verifier with the replay cache in memory only: the upper bound.
2. MQTT through a real Mosquitto (TLS, password file, ACL: ``tests/runtime/mosquitto_server.py``): a
   publisher process seals HEARTBEAT envelopes and publishes them QoS 1 through ``MqttLink``; the
   subscribing ``MqttLink`` (this process) runs ``Verifier.verify`` then a trivial handler, or, for the
   peer run, the handler alone. "End to end" is first publish to last handled; "drain" lets the broker
   queue every message first, so that the subscriber's own rate shows.
3. Per-operation costs in this process (seal, parse, HMAC, thread-pool hop, replay-log write, verify).

The servers and the subscriber run on the default asyncio loop, as ``pdsno controller run`` does
(``--loop uvloop`` to compare). The load generator is a minimal HTTP/1.1 client (``--client httpx`` for
httpx, which on a 2-core machine saturates before either server). Every process started here is ended by
its PID.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import platform
import secrets
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from importlib.metadata import PackageNotFoundError, version
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pdsno.canonical import utcnow
from pdsno.controller.app import MESSAGES_PATH, build_app
from pdsno.messaging.envelope import Envelope, MessageRejected, MessageType
from pdsno.messaging.keys import KeyRing, SigningKey, new_key_id
from pdsno.messaging.replay import ReplayLog
from pdsno.messaging.sign import seal
from pdsno.messaging.verify import Verifier
from pdsno.nib.connect import open_nib
from pdsno.nib.models import ControllerRole, MessageKey
from pdsno.security.keys import Ed25519Signer

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
SENDER = "local_cntl_zone-a_1"  # signs (a local controller)
RECEIVER = "regional_cntl_zone-a_1"  # verifies (its regional controller)
REGION = "zone-a"
SENDERS = tuple(f"local_cntl_zone-a_{n}" for n in range(1, 9))
"""The MQTT publishers, each its own LC account and topic (all sign as SENDER: one key to verify)."""
HEARTBEAT = {
    "controller_id": SENDER,
    "role": "local",
    "region": REGION,
    "status": "online",
    "uptime_s": 1234.5,
    "nib_backend": "sqlite",
    "version": "0.1.0",
}
UNSIGNED_PATH = "/echo"
DIAGNOSTICS = ["signed-memreplay"]
POOL_MAX_AGE_S = 120  # pre-signed envelopes are refused as stale after 300 s (decisions.md C14)

T = TypeVar("T")


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# --- shared helpers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SharedKey:
    """The HMAC key SENDER signs with and RECEIVER verifies with (passed to the child processes)."""

    key_id: str
    secret: bytes

    @classmethod
    def new(cls) -> SharedKey:
        return cls(new_key_id(SENDER), secrets.token_bytes(32))

    def signing(self) -> SigningKey:
        return SigningKey.from_hmac_secret(self.key_id, SENDER, self.secret)

    def verifying(self) -> MessageKey:
        return self.signing().message_key(peer_id=RECEIVER, not_before=utcnow() - timedelta(minutes=5))


def make_bodies(key: SharedKey, count: int) -> list[bytes]:
    """``count`` signed HEARTBEAT envelopes on the wire, each with its own message id and nonce."""
    signing = key.signing()
    return [
        seal(
            MessageType.HEARTBEAT, HEARTBEAT, sender_id=SENDER, recipient_id=RECEIVER, key=signing
        ).to_bytes()
        for _ in range(count)
    ]


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return None


def run_async(coro: Coroutine[Any, Any, T], loop: str) -> T:
    with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
        return runner.run(coro)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, round(q * (len(sorted_values) - 1)))]


async def open_bench_nib(directory: Path, name: str) -> Any:
    """A fresh SQLite NIB with the controller's default pool of 4 threads (``nib.pool_size``), and a
    signer, so that refusals could be audited."""
    signer = Ed25519Signer(RECEIVER, Ed25519PrivateKey.generate())
    return await open_nib("sqlite", path=directory / name, signer=signer, create=True, pool_size=4)


class MemoryReplay:
    """Diagnostic only: the replay cache as a dict in memory, never written to disk."""

    def __init__(self) -> None:
        self._seen: dict[str, Any] = {}

    def first_sighting(self, message_id: str, expires_at: Any) -> bool:
        if message_id in self._seen:
            return False
        self._seen[message_id] = expires_at
        return True

    def __len__(self) -> int:
        return len(self._seen)


# --- REST servers (child processes) -----------------------------------------------------------


@dataclass
class BenchNode:
    """The least a ``build_app`` node needs: a real Verifier and one do-nothing HEARTBEAT handler."""

    store: Any
    verifier: Verifier
    controller_id: str = RECEIVER
    role: ControllerRole = ControllerRole.REGIONAL
    region: str | None = REGION
    public_key: str = ""
    validator: None = None
    mqtt_connected: bool = False
    mqtt_outbox_depth: int = 0
    handlers: dict[MessageType, Callable[[Envelope], Awaitable[Envelope | None]]] = field(
        default_factory=dict
    )


async def _ignore(envelope: Envelope) -> Envelope | None:
    return None


def unsigned_app() -> Any:
    """The peer: a bare FastAPI endpoint parsing the same body with pydantic, answering 202."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.post(UNSIGNED_PATH, status_code=202)
    async def echo(envelope: Envelope) -> JSONResponse:
        return JSONResponse({"status": "accepted", "message_id": envelope.message_id}, status_code=202)

    return app


async def _serve(kind: str, port: int, workdir: str, key: SharedKey, tls: tuple[str, str] | None) -> None:
    import uvicorn

    store = None
    if kind == "unsigned":
        app = unsigned_app()
    else:
        store = await open_bench_nib(Path(workdir), f"nib-{kind}-{port}.sqlite3")
        replay = MemoryReplay() if kind == "signed-memreplay" else ReplayLog(Path(workdir) / f"replay-{port}")
        verifier = Verifier(RECEIVER, KeyRing([key.verifying()]), store, replay)  # type: ignore[arg-type]
        app = build_app(BenchNode(store=store, verifier=verifier, handlers={MessageType.HEARTBEAT: _ignore}))
    options: dict[str, Any] = {}
    if tls is not None:
        options = {"ssl_certfile": tls[0], "ssl_keyfile": tls[1]}
    # What ControllerNode._serve_rest passes; http="auto" picks httptools when installed, as there.
    config = uvicorn.Config(
        app, host=HOST, port=port, log_config=None, access_log=False, lifespan="off", **options
    )
    server = uvicorn.Server(config)
    try:
        await server.serve()
    finally:
        if store is not None:
            await store.close()


def server_main(kind: str, port: int, workdir: str, key: SharedKey, tls: Any, loop: str) -> None:
    run_async(_serve(kind, port, workdir, key, tls), loop)


@dataclass
class Server:
    kind: str
    port: int
    process: Any
    path: str

    @property
    def pid(self) -> int:
        pid: int = self.process.pid
        return pid


def start_servers(
    ctx: Any, kinds: list[str], workdir: Path, key: SharedKey, tls: tuple[str, str] | None, loop: str
) -> dict[str, Server]:
    """One process per kind, all listening when this returns (all stopped again if one fails)."""
    servers: dict[str, Server] = {}
    try:
        for kind in kinds:
            port = free_port()
            process = ctx.Process(
                target=server_main,
                args=(kind, port, str(workdir), key, tls, loop),
                name=f"bench-{kind}",
                daemon=True,
            )
            process.start()
            path = UNSIGNED_PATH if kind == "unsigned" else MESSAGES_PATH
            servers[kind] = Server(kind, port, process, path)
        deadline = time.monotonic() + 30
        for server in servers.values():
            while True:
                if not server.process.is_alive():
                    raise RuntimeError(f"the {server.kind} server exited at start-up")
                with contextlib.suppress(OSError), socket.create_connection((HOST, server.port), timeout=0.5):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the {server.kind} server did not listen in time")
                time.sleep(0.05)
    except BaseException:
        for server in servers.values():
            stop_process(server.process, f"{server.kind} server")
        raise
    return servers


def stop_process(process: Any, what: str) -> None:
    """SIGTERM to this one PID, then SIGKILL if it does not go."""
    if process is None or process.pid is None:
        return
    if process.is_alive():
        process.terminate()
        process.join(10)
        if process.is_alive():
            log(f"{what} (pid {process.pid}) ignored SIGTERM; killing it")
            process.kill()
            process.join(5)


# --- REST load (child process) ----------------------------------------------------------------


class RawHttp(asyncio.Protocol):
    """A minimal HTTP/1.1 keep-alive connection: one request in flight, Content-Length responses only.

    httpx spends about a millisecond of CPU per request here, so it saturates before either server does;
    this client writes pre-built request bytes and reads back the status line and the body length.
    """

    def __init__(self) -> None:
        self.transport: Any = None  # an asyncio or a uvloop transport
        self.buffer = bytearray()
        self.waiter: asyncio.Future[int] | None = None

    @classmethod
    async def open(cls, host: str, port: int, ssl_context: Any) -> RawHttp:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(cls, host, port, ssl=ssl_context)
        return protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is None:
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                self._finish(exception=ConnectionError("chunked responses are not supported"))
                return
        if len(self.buffer) < end + 4 + length:
            return
        del self.buffer[: end + 4 + length]
        self._finish(status=int(head[9:12]))

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish(exception=ConnectionError(f"connection lost: {exc}"))

    def _finish(self, *, status: int = 0, exception: Exception | None = None) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is None or waiter.done():
            return
        if exception is not None:
            waiter.set_exception(exception)
        else:
            waiter.set_result(status)

    async def request(self, data: bytes) -> int:
        assert self.transport is not None
        if self.transport.is_closing():
            raise ConnectionError("connection closed")
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self.waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


Sender = Callable[[bytes], Awaitable[str]]


async def _load(spec: dict[str, Any], bodies: list[bytes]) -> dict[str, Any]:
    """Drive one server with ``concurrency`` workers for warm-up + seconds; measure the second part."""
    import ssl

    import httpx

    concurrency: int = spec["concurrency"]
    ssl_context = ssl.create_default_context(cafile=spec["ca"]) if spec["ca"] is not None else None
    host, port, path = HOST, spec["port"], spec["path"]
    cleanup: list[Callable[[], Awaitable[None]]] = []
    items: list[bytes]

    if spec["client"] == "httpx":
        scheme = "https" if ssl_context is not None else "http"
        client = httpx.AsyncClient(
            base_url=f"{scheme}://{host}:{port}",
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            verify=ssl_context or False,
            timeout=30,
        )
        cleanup.append(client.aclose)
        headers = {"content-type": "application/json"}
        items = bodies

        async def open_sender() -> Sender:
            async def send(body: bytes) -> str:
                response = await client.post(path, content=body, headers=headers)
                return str(response.status_code)

            return send

    else:
        items = [
            (
                f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body
            for body in bodies
        ]

        async def open_sender() -> Sender:
            connection = await RawHttp.open(host, port, ssl_context)

            async def close() -> None:
                connection.close()

            cleanup.append(close)

            async def send(data: bytes) -> str:
                return str(await connection.request(data))

            return send

    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    cursor = 0
    exhausted = False
    unique = spec["unique"]
    server_pid: int = spec["server_pid"]
    samples: dict[str, float] = {}
    begin = time.perf_counter()
    t_start = begin + spec["warmup"]
    t_end = t_start + spec["seconds"]

    async def sampler() -> None:
        await asyncio.sleep(max(0.0, t_start - time.perf_counter()))
        samples["server0"], samples["client0"] = cpu_seconds(server_pid), time.process_time()
        await asyncio.sleep(max(0.0, t_end - time.perf_counter()))
        samples["server1"], samples["client1"] = cpu_seconds(server_pid), time.process_time()

    async def worker() -> None:
        nonlocal cursor, exhausted
        send = await open_sender()
        while True:
            if cursor >= len(items):
                if unique:
                    exhausted = True
                    return
                cursor = 0
            item = items[cursor]
            cursor += 1
            sent = time.perf_counter()
            if sent >= t_end:
                return
            try:
                status = await send(item)
            except (httpx.HTTPError, OSError) as exc:
                status = type(exc).__name__
                send = await open_sender()
            done = time.perf_counter()
            if sent >= t_start and done <= t_end:
                latencies.append(done - sent)
                statuses[status] += 1

    sampling = asyncio.create_task(sampler())
    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        if exhausted:
            sampling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampling
    finally:
        for close in cleanup:
            await close()

    latencies.sort()
    requests = len(latencies)
    window = spec["seconds"]
    result: dict[str, Any] = {
        "requests": requests,
        "seconds": window,
        "rps": requests / window,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "max_ms": (latencies[-1] if latencies else float("nan")) * 1000,
        "errors": sum(n for status, n in statuses.items() if status != "202"),
        "statuses": dict(statuses),
        "exhausted": exhausted,
        "sent": cursor,
        "concurrency": concurrency,
        "client": spec["client"],
    }
    if "server1" in samples:
        server_cpu = samples["server1"] - samples["server0"]
        client_cpu = samples["client1"] - samples["client0"]
        result.update(
            server_cpu_pct=100 * server_cpu / window,
            client_cpu_pct=100 * client_cpu / window,
            server_cpu_us_per_req=1e6 * server_cpu / requests if requests else float("nan"),
        )
    return result


def client_main(conn: Connection, key: SharedKey, loop: str) -> None:
    """The load process: for each spec received, drive the target and reply with the numbers.

    The unsigned peer gets a small pool of signed bodies over and over. A signed target must see every
    message id once: one pool, signed before the first signed run, serves every signed server (each has its
    own NIB, hence its own replay cache), each server reading on from where its previous round stopped
    (``spec["stream"]``). The pool is signed anew (and every stream restarted) when it is too small or older
    than :data:`POOL_MAX_AGE_S`, well inside the verifier's clock-skew window.
    """
    small = make_bodies(key, 2000)
    pool: list[bytes] = []
    pool_made = 0.0
    used: dict[str, int] = {}
    while True:
        spec = conn.recv()
        if spec is None:
            return
        if not spec["unique"]:
            conn.send(run_async(_load(spec, small), loop))
            continue
        if len(pool) < spec["bodies"] or time.monotonic() - pool_made > POOL_MAX_AGE_S:
            pool, pool_made, used = make_bodies(key, spec["bodies"]), time.monotonic(), {}
        offset = used.get(spec["stream"], 0)
        result = run_async(_load(spec, pool[offset:]), loop)
        used[spec["stream"]] = offset + result["sent"]
        conn.send(result)


# --- MQTT -------------------------------------------------------------------------------------


async def _publisher(conn: Connection, spec: dict[str, Any], key: SharedKey) -> None:
    """Publish through one MqttLink per sender account, each on its own discovery topic, messages dealt
    out in turn: an RC hears many LCs at once, not one."""
    from pdsno.transport import topics
    from pdsno.transport.mqtt import MqttLink

    links = [
        (MqttLink(client_id=name, host=spec["host"], port=spec["port"], username=name, password=password,
                  outbox_path=Path(spec["workdir"]) / f"publisher-outbox-{name}.sqlite3", status_topic=None,
                  ca_file=Path(spec["ca"])), topics.discovery(REGION, name))
        for name, password in spec["senders"]
    ]  # fmt: skip
    for link, _ in links:
        await link.start()
    try:
        for link, _ in links:
            if not await link.wait_connected(15):
                raise RuntimeError("a publisher could not connect to the broker")
        bodies: list[bytes] = []
        while True:
            command = await asyncio.to_thread(conn.recv)
            if command[0] == "stop":
                return
            if command[0] == "prepare":
                bodies = make_bodies(key, command[1])
                conn.send("ready")
            elif command[0] == "publish":
                batch, bodies = bodies[: command[1]], bodies[command[1] :]
                first = time.perf_counter()
                for n, body in enumerate(batch):
                    link, topic = links[n % len(links)]
                    await link.publish(topic, body, qos=1)
                    await asyncio.sleep(0)  # let PUBACKs in, as a real sender's loop would
                published = time.perf_counter()
                flushed = all([await link.wait_until_flushed(120) for link, _ in links])
                conn.send({"first": first, "published": published, "flushed": flushed})
    finally:
        for link, _ in links:
            await link.stop()


def publisher_main(conn: Connection, spec: dict[str, Any], key: SharedKey, loop: str) -> None:
    run_async(_publisher(conn, spec, key), loop)


@dataclass
class Inbox:
    """What the subscriber counts for one run."""

    mode: str = "raw"
    target: int = 0
    handled: int = 0
    refused: int = 0
    last: float = 0.0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    """Handlers wait on it: closed while the broker queues a drain run's messages."""

    def reset(self, mode: str, target: int, *, gated: bool = False) -> None:
        self.mode, self.target, self.handled, self.refused, self.last = mode, target, 0, 0, 0.0
        self.done = asyncio.Event()
        self.gate = asyncio.Event()
        if not gated:
            self.gate.set()


async def mqtt_bench(
    ctx: Any, workdir: Path, key: SharedKey, messages: int, warm: int, loop: str
) -> dict[str, Any]:
    sys.path.insert(0, str(REPO))  # tests.runtime.mosquitto_server: the test suite's real broker
    from pdsno.transport import topics
    from pdsno.transport.mqtt import MqttLink
    from tests.runtime.mosquitto_server import DEFAULT_ACCOUNTS, MosquittoBroker

    broker = MosquittoBroker(
        workdir / "mqtt", accounts=[*DEFAULT_ACCOUNTS, *((name, "local", REGION) for name in SENDERS[2:])]
    )
    publisher = store = link = None
    try:
        store = await open_bench_nib(workdir, "nib-mqtt.sqlite3")
        verifier = Verifier(RECEIVER, KeyRing([key.verifying()]), store, ReplayLog(workdir / "replay-mqtt"))
        inbox = Inbox()

        async def handle(envelope: Envelope) -> None:
            return None

        async def on_message(topic: str, payload: bytes) -> None:
            await inbox.gate.wait()
            if inbox.mode == "signed":
                try:
                    envelope = await verifier.verify(payload, transport="mqtt", source=topic)
                except MessageRejected:
                    inbox.refused += 1
                else:
                    await handle(envelope)
            inbox.handled += 1
            if inbox.handled + inbox.refused >= inbox.target and not inbox.done.is_set():
                inbox.last = time.perf_counter()
                inbox.done.set()

        link = MqttLink(
            client_id=RECEIVER,
            host=broker.host,
            port=broker.port,
            username=RECEIVER,
            password=broker.account(RECEIVER).password,
            outbox_path=workdir / "subscriber-outbox.sqlite3",
            status_topic=None,
            ca_file=broker.ca,
        )
        link.subscribe(topics.discovery_filter(REGION), on_message, qos=1)
        await link.start()
        if not await link.wait_connected(15):
            raise RuntimeError("the subscriber could not connect to the broker")
        conn, child_conn = ctx.Pipe()
        spec = {
            "host": broker.host,
            "port": broker.port,
            "senders": [(name, broker.account(name).password) for name in SENDERS],
            "ca": str(broker.ca),
            "workdir": str(workdir),
        }
        publisher = ctx.Process(
            target=publisher_main, args=(child_conn, spec, key, loop), name="bench-publisher", daemon=True
        )
        publisher.start()
        child_conn.close()
        assert broker.pid is not None
        broker_pid, publisher_pid = broker.pid, publisher.pid

        async def ask(command: tuple[Any, ...]) -> Any:
            conn.send(command)
            return await asyncio.wait_for(asyncio.to_thread(conn.recv), 300)

        def cpu() -> tuple[float, float, float]:
            return time.process_time(), cpu_seconds(publisher_pid), cpu_seconds(broker_pid)

        def numbers(
            start: float, cpu0: tuple[float, float, float], cpu1: tuple[float, float, float]
        ) -> dict[str, Any]:
            elapsed = (inbox.last or time.perf_counter()) - start
            handled = inbox.handled - inbox.refused
            return {
                "messages": messages,
                "handled": handled,
                "refused": inbox.refused,
                "complete": inbox.done.is_set() and inbox.refused == 0,
                "seconds": elapsed,
                "msgs_per_s": handled / elapsed if elapsed > 0 else float("nan"),
                "subscriber_cpu_us_per_msg": 1e6 * (cpu1[0] - cpu0[0]) / messages,
                "publisher_cpu_us_per_msg": 1e6 * (cpu1[1] - cpu0[1]) / messages,
                "broker_cpu_us_per_msg": 1e6 * (cpu1[2] - cpu0[2]) / messages,
                "subscriber_cpu_pct": 100 * (cpu1[0] - cpu0[0]) / elapsed,
                "publisher_cpu_pct": 100 * (cpu1[1] - cpu0[1]) / elapsed,
            }

        timeout = max(60.0, messages / 50)
        results: dict[str, Any] = {"end_to_end": {}, "drain": {}}
        for mode in ("raw", "signed"):
            assert await ask(("prepare", 2 * warm + 2 * messages)) == "ready"
            # Warm-up (and proof that the subscription is live): these must all arrive first.
            inbox.reset(mode, warm)
            await ask(("publish", warm))
            await asyncio.wait_for(inbox.done.wait(), 60)

            # End to end: from the first publish to the last message handled.
            inbox.reset(mode, messages)
            cpu0 = cpu()
            conn.send(("publish", messages))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(inbox.done.wait(), timeout)
            cpu1 = cpu()
            times = await asyncio.wait_for(asyncio.to_thread(conn.recv), 300)
            row = numbers(times["first"], cpu0, cpu1)
            row["publish_loop_s"] = times["published"] - times["first"]
            results["end_to_end"][mode] = row
            log(f"mqtt end to end {mode}: {row['msgs_per_s']:.0f} msg/s")

            # Drain: the broker holds every message (handlers gated), then the subscriber alone works.
            inbox.reset(mode, warm)
            await ask(("publish", warm))
            await asyncio.wait_for(inbox.done.wait(), 60)
            inbox.reset(mode, messages, gated=True)
            await ask(("publish", messages))  # returns once the broker acknowledged them all
            cpu0 = cpu()
            start = time.perf_counter()
            inbox.gate.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(inbox.done.wait(), timeout)
            row = numbers(start, cpu0, cpu())
            results["drain"][mode] = row
            log(f"mqtt drain {mode}: {row['msgs_per_s']:.0f} msg/s")
        conn.send(("stop",))
        publisher.join(30)
        for part in ("end_to_end", "drain"):
            rows = results[part]
            rows["ratio_signed_raw"] = rows["signed"]["msgs_per_s"] / rows["raw"]["msgs_per_s"]
        return results
    finally:
        if publisher is not None:
            stop_process(publisher, "publisher")
        if link is not None:
            await link.stop()
        if store is not None:
            await store.close()
        broker.close()


# --- per-operation costs (this process) -------------------------------------------------------


async def micro_bench(workdir: Path, key: SharedKey, n: int, rounds: int = 5) -> dict[str, float]:
    """Mean microseconds per operation, each the median of ``rounds`` rounds of ``n`` operations."""
    signing = key.signing()
    verifying = key.verifying()
    keyring = KeyRing([verifying])
    envelopes = [
        seal(MessageType.HEARTBEAT, HEARTBEAT, sender_id=SENDER, recipient_id=RECEIVER, key=signing)
        for _ in range(n)
    ]
    raws = [envelope.to_bytes() for envelope in envelopes]
    out: dict[str, float] = {"envelope_bytes": float(len(raws[0]))}
    results: dict[str, list[float]] = {}

    async def measure(name: str, body: Callable[[], Awaitable[None]]) -> None:
        start = time.perf_counter()
        await body()
        results.setdefault(name, []).append(1e6 * (time.perf_counter() - start) / n)

    store = await open_bench_nib(workdir, "nib-micro.sqlite3")
    replay = ReplayLog(workdir / "replay-micro")
    loop = asyncio.get_running_loop()
    verifier = Verifier(RECEIVER, keyring, store, replay)
    expires = utcnow() + timedelta(minutes=5)
    try:
        with ThreadPoolExecutor(4) as pool:
            for _ in range(rounds):
                fresh = make_bodies(key, 2 * n)  # the verifier must not see a message id twice

                async def do_seal() -> None:
                    for _ in range(n):
                        seal(
                            MessageType.HEARTBEAT,
                            HEARTBEAT,
                            sender_id=SENDER,
                            recipient_id=RECEIVER,
                            key=signing,
                        )

                async def do_parse() -> None:
                    for raw in raws:
                        Envelope.parse(raw)

                async def do_hmac() -> None:
                    for envelope in envelopes:
                        keyring.verify(verifying, envelope.signing_bytes(), envelope.signature or "")

                async def do_hop() -> None:
                    for _ in range(n):
                        await loop.run_in_executor(pool, int)

                async def do_remember() -> None:
                    for _ in range(n):
                        replay.first_sighting(str(uuid.uuid4()), expires)

                async def do_verify_serial(batch: list[bytes] = fresh[:n]) -> None:
                    for raw in batch:
                        await verifier.verify(raw, transport="bench")

                async def do_verify_concurrent(batch: list[bytes] = fresh[n:]) -> None:
                    chunks = [batch[i::32] for i in range(32)]

                    async def one(chunk: list[bytes]) -> None:
                        for raw in chunk:
                            await verifier.verify(raw, transport="bench")

                    await asyncio.gather(*(one(chunk) for chunk in chunks))

                await measure("seal_us", do_seal)
                await measure("parse_us", do_parse)
                await measure("signing_bytes_and_hmac_us", do_hmac)
                await measure("thread_pool_round_trip_us", do_hop)
                await measure("replay_log_first_sighting_us", do_remember)
                await measure("verify_serial_us", do_verify_serial)
                await measure("verify_32_in_flight_us", do_verify_concurrent)
    finally:
        replay.close()
        await store.close()
    for name, values in results.items():
        out[name] = sorted(values)[len(values) // 2]
    return out


# --- machine facts, table ---------------------------------------------------------------------


def machine_facts(workdir: Path) -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    packages: dict[str, str | None] = {}
    for name in ("pdsno", "fastapi", "uvicorn", "httptools", "uvloop", "httpx", "pydantic", "paho-mqtt"):
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    mosquitto = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True, timeout=5, check=False)
        mosquitto = (out.stdout or out.stderr).splitlines()[0].strip()
    fs = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["df", "--output=fstype", str(workdir)], capture_output=True, text=True, timeout=5, check=False
        )
        fs = out.stdout.split()[-1]
    return {
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "sqlite": sqlite3.sqlite_version,
        "mosquitto": mosquitto,
        "workdir_fs": fs,
        "packages": packages,
    }


def print_table(report: dict[str, Any], out: Any) -> None:
    def w(line: str = "") -> None:
        print(line, file=out)

    m = report["machine"]
    w(
        f"machine: {m['nproc']} CPUs ({m['cpu_model']}), Python {m['python']}, SQLite {m['sqlite']}, {m['mosquitto']}"
    )
    s = report["settings"]
    w(
        f"settings: REST {s['rounds']} rounds x {s['seconds']} s per target (after {s['warmup']} s warm-up), "
        f"{s['mqtt_messages']} MQTT messages per run, servers on the {s['loop']} loop"
    )
    w()
    client = "httpx" if s["client"] == "httpx" else "raw HTTP/1.1 keep-alive"
    w(
        f"REST: one uvicorn process per server, {s['concurrency']} requests in flight from one {client} client process"
    )
    header = (
        f"{'scheme':6} {'endpoint':38} {'req/s':>6} {'(min-max)':>11} {'p50 ms':>6} {'p99 ms':>6} "
        f"{'errors':>6} {'srv CPU':>7} {'srv us/req':>10} {'load CPU':>8}"
    )
    w(header)
    w("-" * len(header))
    labels = {
        "unsigned": "unsigned FastAPI /echo",
        "signed": "signed /ew/v1/messages (verify)",
        "signed-memreplay": "  same, replay cache in memory *",
    }
    nan = float("nan")
    for scheme, rows in report["rest"].items():
        for kind, label in labels.items():
            if kind not in rows:
                continue
            r = rows[kind]
            spread = f"{r['rps_min']:.0f}-{r['rps_max']:.0f}"
            w(
                f"{scheme:6} {label:38} {r['rps']:6.0f} {spread:>11} {r['p50_ms']:6.1f} {r['p99_ms']:6.1f} "
                f"{r['errors']:6d} {r.get('server_cpu_pct', nan):6.0f}% {r.get('server_cpu_us_per_req', nan):10.0f} "
                f"{r.get('client_cpu_pct', nan):7.0f}%" + ("  (bodies ran out!)" if r["exhausted"] else "")
            )
        per_round = ", ".join(f"{x:.2f}" for x in rows["ratio_per_round"])
        ratio = rows["ratio_signed_unsigned"]
        w(f"{scheme:6} {'ratio signed / unsigned, req/s':38} {ratio:6.2f}  (rounds: {per_round})")
        if "cpu_ratio_signed_unsigned" in rows:
            cpu_ratio = rows["cpu_ratio_signed_unsigned"]
            w(f"{scheme:6} {'ratio from server CPU per request':38} {cpu_ratio:6.2f}")
    if not report["settings"]["no_diagnostics"]:
        w("* a diagnostic, not a runtime configuration: the same app and Verifier, the replay cache kept in")
        w("  memory only (never written to disk): the upper bound of the signed endpoint")
    if "mqtt" in report:
        w()
        w("MQTT (Mosquitto over TLS, QoS 1; MqttLink publisher process -> MqttLink subscriber, this process)")
        header = (
            f"{'run':11} {'handler':27} {'msg/s':>7} {'handled':>7} {'refused':>7} "
            f"{'sub us/msg':>10} {'pub us/msg':>10} {'broker us/msg':>13}"
        )
        w(header)
        w("-" * len(header))
        for part, name in (("end_to_end", "end to end"), ("drain", "drain")):
            rows = report["mqtt"][part]
            for mode, label in (("raw", "raw (no verification)"), ("signed", "Verifier.verify + handler")):
                r = rows[mode]
                w(
                    f"{name:11} {label:27} {r['msgs_per_s']:7.0f} {r['handled']:7d} {r['refused']:7d} "
                    f"{r['subscriber_cpu_us_per_msg']:10.0f} {r['publisher_cpu_us_per_msg']:10.0f} "
                    f"{r['broker_cpu_us_per_msg']:13.0f}"
                )
            w(f"{name:11} {'ratio signed / raw':27} {rows['ratio_signed_raw']:7.2f}")
        w("end to end: first publish to last handled; drain: the broker already holds them all")
    if "micro" in report:
        w()
        w("Per operation, this process (us, mean)")
        for name, value in report["micro"].items():
            w(f"  {name:34} {value:8.1f}")
    w(f"\ntotal wall time: {report['wall_s']:.0f} s")


# --- main -------------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def summarise(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from the rounds of one target: medians, the req/s range, every error."""
    row: dict[str, Any] = {
        name: median([r[name] for r in rounds if name in r])
        for name in ("rps", "p50_ms", "p99_ms", "server_cpu_pct", "client_cpu_pct", "server_cpu_us_per_req")
        if any(name in r for r in rounds)
    }
    statuses: Counter[str] = Counter()
    for r in rounds:
        statuses.update(r["statuses"])
    row.update(
        rps_min=min(r["rps"] for r in rounds),
        rps_max=max(r["rps"] for r in rounds),
        requests=sum(r["requests"] for r in rounds),
        errors=sum(r["errors"] for r in rounds),
        statuses=dict(statuses),
        exhausted=any(r["exhausted"] for r in rounds),
        rounds=rounds,
    )
    return row


def rest_bench(
    ctx: Any, workdir: Path, key: SharedKey, args: argparse.Namespace, conn: Connection
) -> dict[str, Any]:
    """Per scheme: start every server, then ``args.rounds`` rounds driving each in turn; medians."""
    from pdsno.security.pki import create_ca, issue_certificate

    schemes = ["http"] if args.no_tls else ["http", "https"]
    ca = cert = None
    if "https" in schemes:
        ca = create_ca(workdir / "pki", common_name="bench CA")
        cert = issue_certificate(ca, workdir / "pki", "rest", [HOST, "localhost"])
    results: dict[str, Any] = {}
    pool = 0  # signed bodies to pre-sign: every round at 1.5x the unsigned peer's rate (signed can't beat it)
    for scheme in schemes:
        kinds = ["unsigned", "signed"]
        if scheme == "http" and not args.no_diagnostics:
            kinds += DIAGNOSTICS
        tls = (str(cert.cert), str(cert.key)) if scheme == "https" and cert is not None else None
        servers = start_servers(ctx, kinds, workdir, key, tls, args.loop)
        rounds: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
        try:
            for number in range(args.rounds):
                for kind in kinds:
                    server = servers[kind]
                    spec = {
                        "port": server.port,
                        "client": args.client,
                        "path": server.path,
                        "ca": str(ca.cert) if scheme == "https" and ca is not None else None,
                        "seconds": args.seconds,
                        "warmup": args.warmup,
                        "concurrency": args.concurrency,
                        "bodies": pool,
                        "unique": kind != "unsigned",
                        "stream": f"{scheme}-{kind}",
                        "server_pid": server.pid,
                    }
                    conn.send(spec)
                    if not conn.poll(args.seconds + args.warmup + 120):
                        raise RuntimeError(f"the load client did not report on {scheme} {kind}")
                    result = conn.recv()
                    rounds[kind].append(result)
                    if kind == "unsigned":
                        per_round = 1.5 * result["rps"] * (args.seconds + args.warmup) + 10 * args.concurrency
                        pool = max(pool, int(args.rounds * per_round))
                    log(
                        f"rest {scheme} round {number + 1} {kind}: {result['rps']:.0f} req/s, "
                        f"errors {result['errors']}"
                    )
        finally:
            for server in servers.values():
                stop_process(server.process, f"{server.kind} server")
        rows: dict[str, Any] = {kind: summarise(rounds[kind]) for kind in kinds}
        ratios = [s["rps"] / u["rps"] for s, u in zip(rounds["signed"], rounds["unsigned"], strict=True)]
        rows["ratio_signed_unsigned"] = median(ratios)
        rows["ratio_per_round"] = ratios
        # The steadier figure on a noisy machine: what one saturated core would give, from CPU per request.
        cpu_signed = rows["signed"].get("server_cpu_us_per_req")
        cpu_unsigned = rows["unsigned"].get("server_cpu_us_per_req")
        if cpu_signed and cpu_unsigned:
            rows["cpu_ratio_signed_unsigned"] = cpu_unsigned / cpu_signed
        results[scheme] = rows
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seconds", type=float, default=1.5, help="measured seconds per REST target and round (1.5)"
    )
    parser.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds before each (0.5)")
    parser.add_argument("--rounds", type=int, default=3, help="REST rounds, targets in turn; medians (3)")
    parser.add_argument("--concurrency", type=int, default=32, help="REST requests in flight (32)")
    parser.add_argument("--mqtt-messages", type=int, default=3000, help="messages per MQTT run (3000)")
    parser.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="servers' loop (asyncio, as the runtime)",
    )
    parser.add_argument(
        "--client",
        choices=("raw", "httpx"),
        default="raw",
        help="load generator (raw: pre-built HTTP/1.1 requests)",
    )
    parser.add_argument("--no-tls", action="store_true", help="skip the REST-over-TLS rows")
    parser.add_argument(
        "--no-diagnostics", action="store_true", help="skip the diagnostic replay-cache variants (REST)"
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke run (about 20 s)")
    parser.add_argument(
        "--json", action="store_true", help="print the report as JSON on stdout (table on stderr)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.warmup, args.rounds, args.mqtt_messages = 1.0, 0.3, 1, 300
    if args.seconds <= 0 or args.warmup < 0 or min(args.concurrency, args.rounds, args.mqtt_messages) < 1:
        parser.error("--seconds, --rounds, --concurrency and --mqtt-messages must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.monotonic()
    ctx = mp.get_context("spawn")
    key = SharedKey.new()
    with tempfile.TemporaryDirectory(prefix="pdsno-bench-") as tmp:
        workdir = Path(tmp)
        report: dict[str, Any] = {
            "command": " ".join([".venv/bin/python", "bench/messaging.py", *sys.argv[1:]]),
            "machine": machine_facts(workdir),
            "settings": {
                "seconds": args.seconds,
                "warmup": args.warmup,
                "rounds": args.rounds,
                "concurrency": args.concurrency,
                "mqtt_messages": args.mqtt_messages,
                "loop": args.loop,
                "no_diagnostics": args.no_diagnostics,
                "client": args.client,
                "client_loop": "uvloop" if _has("uvloop") else "asyncio",
            },
        }
        conn, child_conn = ctx.Pipe()
        client = ctx.Process(
            target=client_main,
            args=(child_conn, key, "uvloop" if _has("uvloop") else "asyncio"),
            name="bench-client",
            daemon=True,
        )
        client.start()
        child_conn.close()  # so that recv() sees EOF if the client dies
        stages: dict[str, float] = {}
        report["stage_s"] = stages
        try:
            report["rest"] = rest_bench(ctx, workdir, key, args, conn)
            conn.send(None)
            client.join(10)
        finally:
            stop_process(client, "load client")
        stages["rest"] = time.monotonic() - began
        warm = max(50, args.mqtt_messages // 10)
        report["mqtt"] = run_async(
            mqtt_bench(ctx, workdir, key, args.mqtt_messages, warm, args.loop), args.loop
        )
        stages["mqtt"] = time.monotonic() - began - stages["rest"]
        n, rounds = (300, 1) if args.quick else (1000, 3)
        report["micro"] = run_async(micro_bench(workdir, key, n, rounds), args.loop)
        stages["micro"] = time.monotonic() - began - stages["rest"] - stages["mqtt"]
    report["wall_s"] = time.monotonic() - began
    if args.json:
        print_table(report, sys.stderr)
        print(json.dumps(report, indent=2))
    else:
        print_table(report, sys.stdout)
    ok = all(
        row["errors"] == 0 and not row["exhausted"]
        for rows in report["rest"].values()
        for row in rows.values()
        if isinstance(row, dict) and "rps" in row
    ) and all(
        report["mqtt"][part][mode]["complete"]
        for part in ("end_to_end", "drain")
        for mode in ("raw", "signed")
    )
    return 0 if ok else 1


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
