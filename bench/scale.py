"""Scale benchmark: a GC, ten RCs and a hundred LCs on loopback, a full inventory and a delta through them.

    .venv/bin/python bench/scale.py [--devices N] [--quick] [--json] [--requests N] [--idle-s S]

The GC and every RC are real ``pdsno controller run`` processes on 127.0.0.1, TLS everywhere, one real
Mosquitto (password file, PDSNO ACL: ``tests/runtime/mosquitto_server.py``) with an account per
controller. The GC's NIB is on a throwaway PostgreSQL 15 server started here (the test suite's
``tests/runtime/postgres_server.py``, with PostgreSQL's default fsync and synchronous commit), the RCs'
on SQLite. Two cores cannot also hold a hundred LC processes, so the LCs live in two load processes
(``bench/scale_lcs.py``): a hundred real LC nodes, each admitted by its RC with its own bootstrap token
(``pdsno token issue``), challenge, identity key and MQTT account, scanning a synthetic network of
``--devices`` devices in all (``--devices / 100`` per LC).

Phases, each timed from the moment it starts:

1. full inventory: every LC's first cycle finds its devices at once; time until the GC's NIB holds all
   of them (and until each tier's last device write, from the NIBs' event timestamps), and the CPU
   each process spent meanwhile;
2. steady state: ``--idle-s`` seconds with nothing but heartbeats (every 10 s per controller);
3. the GC's northbound ``GET /api/v1/devices``: ``--requests`` sequential requests per query (first page,
   deep offsets, vendor, region, region at its deepest page), p50/p95;
4. delta: 1 % of the devices change firmware and 1 % more appear; an operator's ``POST /api/v1/discovery``
   goes GC -> RCs -> LCs and the time is until the GC's NIB shows every change.

Then the NIB sizes (SQLite files, ``pg_database_size``). The table is on stderr, ``--json`` prints every
number as one object on stdout. Everything started here is stopped by its PID and the temporary directory
under /tmp removed. ``uptime`` load is recorded: other work on the machine inflates every number.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing as mp
import os
import random
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import yaml
from click.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.runtime: the test suite's real Mosquitto and PostgreSQL servers

from messaging import cpu_seconds, log, machine_facts, percentile  # noqa: E402
from scale_lcs import lc_subnet  # noqa: E402
from scale_lcs import main as lcs_main  # noqa: E402

from pdsno.canonical import format_ts, parse_ts, utcnow  # noqa: E402
from pdsno.cli.controller import add as operator_add  # noqa: E402
from pdsno.cli.controller import issue_token  # noqa: E402
from pdsno.security.pki import CAFiles, create_ca, issue_certificate  # noqa: E402
from pdsno.transport.broker import BrokerAccount  # noqa: E402
from tests.runtime.mosquitto_server import MosquittoServer  # noqa: E402
from tests.runtime.postgres_server import PostgresServer  # noqa: E402

PDSNO = REPO / ".venv" / "bin" / "pdsno"
HOST = "127.0.0.1"
GC = "global_cntl_1"
RCS = 10
LCS_PER_RC = 10
DELTA_SHARE = 0.01
"""Of every LC's devices, the share that changes firmware in the delta cycle, and the share that appears."""


LCS_PER_PROCESS = 50
"""LCs per load process (see bench/scale_lcs.py: paho's select() and the file descriptors of an LC)."""
PORTS = range(20_000, 32_768)
"""Where REST ports are picked: below Linux's ephemeral range, which outgoing connections draw from."""


def fresh_port(taken: set[int]) -> int:
    """A port of 127.0.0.1 nothing listens on and no server of this bench was given: picked when the
    configurations are written, bound minutes later (an LC listens once admitted)."""
    for _ in range(1000):
        port = random.choice(PORTS)  # noqa: S311 - a port, not a secret
        if port in taken:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                continue
        taken.add(port)
        return port
    raise RuntimeError(f"no free port in {PORTS}")


def region(r: int) -> str:
    return f"zone-{r + 1:02d}"


def rc_id(r: int) -> str:
    return f"regional_cntl_{region(r)}_1"


def lc_id(r: int, n: int) -> str:
    return f"local_cntl_{region(r)}_{n + 1}"


@dataclass
class Controller:
    controller_id: str
    config: Path
    data_dir: Path
    port: int
    log: Path
    popen: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid


@dataclass
class Deployment:
    root: Path
    ca: CAFiles
    broker: MosquittoServer
    postgres: PostgresServer
    dsn: str
    controllers: dict[str, Controller] = field(default_factory=dict)
    ports: set[int] = field(default_factory=set)

    def controller(self, cid: str, role: str, zone: str | None, parent: Controller | None) -> dict[str, Any]:
        """The configuration of one controller, as an operator would write it (certificates, password file)."""
        data_dir = self.root / cid
        data_dir.mkdir()
        cert = issue_certificate(self.ca, self.root / "pki", cid, [HOST, "localhost"])
        password = data_dir / "mqtt.password"
        password.write_text(self.broker.account(cid).password)
        password.chmod(0o600)
        controller: dict[str, Any] = {"id": cid, "role": role, "data_dir": str(data_dir)}
        if parent is not None:
            controller.update(region=zone, parent={"id": parent.controller_id, "url": parent.url})
        config: dict[str, Any] = {
            "controller": controller,
            "rest": {"host": HOST, "port": fresh_port(self.ports),
                     "tls": {"cert": str(cert.cert), "key": str(cert.key), "ca": str(self.ca.cert)}},
            "mqtt": {"host": HOST, "port": self.broker.port, "username": cid, "password_file": str(password),
                     "tls": {"ca": str(self.ca.cert)}},
            "admission": {"bootstrap_file": str(data_dir / "bootstrap.json")} if parent else {},
            "policy": {"max_controllers_per_region": 50},
            "logging": {"level": "WARNING"},
        }  # fmt: skip
        return config

    def add_process(self, cid: str, config: dict[str, Any]) -> Controller:
        path = self.root / f"{cid}.yml"
        path.write_text(yaml.safe_dump(config))
        node = Controller(cid, path, Path(config["controller"]["data_dir"]), config["rest"]["port"],
                          self.root / f"{cid}.log")  # fmt: skip
        self.controllers[cid] = node
        return node

    def start(self, node: Controller) -> None:
        handle = node.log.open("ab")
        node.popen = subprocess.Popen(
            [str(PDSNO), "controller", "run", "--config", str(node.config)],
            stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def wait_healthy(self, nodes: list[Controller], timeout: float) -> None:
        """Until every node answers /healthz (served once it holds an identity: admitted, for an RC)."""
        deadline = time.monotonic() + timeout
        waiting = list(nodes)
        with httpx.Client(verify=ssl_context(self.ca.cert), timeout=2) as client:
            while waiting:
                node = waiting[0]
                assert node.popen is not None
                if node.popen.poll() is not None:
                    raise RuntimeError(f"{node.controller_id} exited:\n{tail(node.log)}")
                with contextlib.suppress(httpx.TransportError):
                    if client.get(node.url + "/healthz").status_code == 200:
                        waiting.pop(0)
                        continue
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{node.controller_id} did not become healthy:\n{tail(node.log)}")
                time.sleep(0.2)

    def stop_all(self) -> None:
        """SIGTERM to each controller this bench started, by its PID; SIGKILL if it outlives 20 s."""
        running = [
            n.popen for n in self.controllers.values() if n.popen is not None and n.popen.poll() is None
        ]
        for popen in running:
            popen.send_signal(signal.SIGTERM)
        for popen in running:
            try:
                popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait(timeout=5)


def ssl_context(ca: Path) -> Any:
    import ssl

    return ssl.create_default_context(cafile=str(ca))


def tail(path: Path, size: int = 3000) -> str:
    return path.read_text(errors="replace")[-size:] if path.exists() else ""


def cli(command: Any, args: list[str]) -> str:
    """A ``pdsno`` command run in this process, as an operator runs it; its output."""
    result = CliRunner().invoke(command, args, catch_exceptions=False)
    if result.exit_code != 0:
        raise RuntimeError(f"pdsno {' '.join(args)} failed: {result.output}")
    return result.output


def issue_bootstrap(parent: Controller, role: str, zone: str, output: Path) -> None:
    cli(
        issue_token,
        ["--config", str(parent.config), "--type", role, "--region", zone, "--output", str(output)],
    )


# --- measuring --------------------------------------------------------------------------------


def postgres_pids(server: PostgresServer) -> list[int]:
    """The postmaster and its children (a backend per connection, the background workers)."""
    postmaster = int((server.datadir / "postmaster.pid").read_text().split()[0])
    pids = [postmaster]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/stat") as handle:
                if int(handle.read().rsplit(")", 1)[1].split()[1]) == postmaster:
                    pids.append(int(entry))
    return pids


class CpuMeter:
    """CPU seconds of named groups of processes between two readings (a group: the PostgreSQL server)."""

    def __init__(self, groups: dict[str, Callable[[], list[int]]]) -> None:
        self._groups = groups

    def read(self) -> dict[str, dict[int, float]]:
        readings: dict[str, dict[int, float]] = {}
        for name, pids in self._groups.items():
            readings[name] = {}
            for pid in pids():
                with contextlib.suppress(OSError):
                    readings[name][pid] = cpu_seconds(pid)
        return readings

    @staticmethod
    def spent(before: dict[str, dict[int, float]], after: dict[str, dict[int, float]]) -> dict[str, float]:
        """Per group, CPU seconds between the readings (a process born meanwhile counts from zero)."""
        return {
            name: round(sum(cpu - before.get(name, {}).get(pid, 0.0) for pid, cpu in now.items()), 3)
            for name, now in after.items()
        }


DEVICE_EVENTS = ("DEVICE_DISCOVERED", "DEVICE_UPDATED")


class Nibs:
    """Every tier's NIB, read beside the running controllers (SQLite WAL readers, one PostgreSQL
    connection): how many devices the GC holds, and when each tier last wrote a device."""

    def __init__(self, deployment: Deployment) -> None:
        import psycopg

        self._pg = psycopg.connect(deployment.dsn, autocommit=True)
        self._sqlite = {
            cid: c.data_dir / "nib.sqlite3" for cid, c in deployment.controllers.items() if cid != GC
        }
        self._sqlite |= {lc_id(r, n): deployment.root / lc_id(r, n) / "nib.sqlite3"
                         for r in range(RCS) for n in range(LCS_PER_RC)}  # fmt: skip

    def gc_devices(self, where: str = "") -> int:
        row = self._pg.execute(f"SELECT count(*) FROM devices {where}").fetchone()
        return int(row[0]) if row else 0

    def last_event(self, cid: str, kinds: tuple[str, ...], since: datetime) -> datetime | None:
        """When ``cid`` recorded the last event of one of ``kinds`` after ``since`` (its own clock: this
        machine's)."""
        marks = ", ".join("%s" if cid == GC else "?" for _ in kinds)
        query = f"SELECT max(timestamp) FROM events WHERE event_type IN ({marks}) AND timestamp > "
        if cid == GC:
            row = self._pg.execute(query + "%s", (*kinds, since)).fetchone()
            return row[0] if row else None
        with contextlib.closing(sqlite3.connect(f"file:{self._sqlite[cid]}?mode=ro", uri=True)) as db:
            found = db.execute(query + "?", (*kinds, format_ts(since))).fetchone()[0]
        return parse_ts(found) if found else None

    def pg_size(self) -> int:
        row = self._pg.execute("SELECT pg_database_size(current_database())").fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        self._pg.close()


def tier_times(nibs: Nibs, since: datetime) -> dict[str, float | None]:
    """Seconds from ``since`` until the last device write of each tier (and the LCs' last acknowledged
    report chunk), from the events every NIB keeps: polling a hundred NIBs would load the machine."""

    def latest(cids: list[str], kinds: tuple[str, ...]) -> float | None:
        found = [t for t in (nibs.last_event(c, kinds, since) for c in cids) if t is not None]
        return round((max(found) - since).total_seconds(), 2) if found else None

    lcs = [lc_id(r, n) for r in range(RCS) for n in range(LCS_PER_RC)]
    return {
        "lc_written_s": latest(lcs, DEVICE_EVENTS),
        "lc_acked_s": latest(lcs, ("DISCOVERY_REPORT_SENT",)),
        "rc_merged_s": latest([rc_id(r) for r in range(RCS)], DEVICE_EVENTS),
        "gc_merged_s": latest([GC], DEVICE_EVENTS),
    }


class LoadProcess:
    """The LC load process and the pipe to it; every question is answered within ``timeout``."""

    def __init__(self, spec: dict[str, Any]) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self.process = ctx.Process(target=lcs_main, args=(child, spec), name="bench-scale-lcs", daemon=True)
        self.process.start()
        self.log = Path(spec["log"])

    @property
    def pid(self) -> int:
        assert self.process.pid is not None  # started in __init__
        return self.process.pid

    def wait(self, kind: str, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._conn.poll(0.5):
                try:
                    got, value = self._conn.recv()
                except EOFError:
                    break
                if got == kind:
                    return value
            elif not self.process.is_alive():
                break
        raise RuntimeError(f"the LC load process gave no {kind!r} in {timeout:.0f} s:\n{tail(self.log)}")

    def send(self, command: str, *args: Any) -> None:
        self._conn.send((command, *args))

    def stop(self) -> None:
        """Ask it to stop its LCs (each says goodbye on MQTT); end it by its PID if it does not."""
        if self.process.is_alive():
            with contextlib.suppress(RuntimeError, OSError):
                self.send("stop")
                self.wait("stopped", 60)
            self.process.join(10)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)


class Fleet:
    """The load processes holding the LCs, :data:`LCS_PER_PROCESS` each (whole regions: an RC admits one
    LC at a time, so each region's LCs queue in one process), asked as one."""

    def __init__(self, configs: list[dict[str, Any]], root: Path, stack: contextlib.ExitStack) -> None:
        self.processes: list[LoadProcess] = []
        for first in range(0, len(configs), LCS_PER_PROCESS):
            number = first // LCS_PER_PROCESS + 1
            spec = {"configs": configs[first : first + LCS_PER_PROCESS], "first_index": first,
                    "log": str(root / f"lcs-{number}.log")}  # fmt: skip
            process = LoadProcess(spec)
            stack.callback(process.stop)
            self.processes.append(process)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def wait(self, kind: str, timeout: float) -> list[Any]:
        return [p.wait(kind, timeout) for p in self.processes]

    def ask(self, command: str, *args: Any, answer: str | None = None, timeout: float = 60) -> list[Any]:
        for process in self.processes:
            process.send(command, *args)
        return self.wait(answer or command, timeout)


def wait_for_count(
    what: str,
    count: Callable[[], int],
    target: int,
    *,
    started: float,
    args: argparse.Namespace,
    poll_s: float,
) -> float:
    """Seconds from ``started`` until ``count()`` reaches ``target``. Raises after ``--timeout-s``, or once
    the count has not moved for ``--stall-s``: then something was lost, and waiting would not bring it."""
    deadline = time.monotonic() + args.timeout_s
    last, moved = -1, time.monotonic()
    while (now_count := count()) < target:
        now = time.monotonic()
        if now_count != last:
            last, moved = now_count, now
        if now > deadline or now - moved > args.stall_s:
            raise RuntimeError(f"{what}: {now_count} of {target} after {now - started:.0f} s")
        time.sleep(poll_s)
    return time.monotonic() - started


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# --- the run ----------------------------------------------------------------------------------


@contextlib.contextmanager
def deployment_up(root: Path) -> Iterator[tuple[Deployment, Fleet]]:
    pki = root / "pki"
    ca = create_ca(pki)
    accounts = [BrokerAccount(GC, secrets.token_urlsafe(16), "global", None)]
    for r in range(RCS):
        accounts.append(BrokerAccount(rc_id(r), secrets.token_urlsafe(16), "regional", region(r)))
        accounts += [BrokerAccount(lc_id(r, n), secrets.token_urlsafe(16), "local", region(r))
                     for n in range(LCS_PER_RC)]  # fmt: skip
    broker_cert = issue_certificate(ca, pki, "broker", [HOST, "localhost"])
    broker = MosquittoServer(root / "broker", ca=ca.cert, cert=broker_cert.cert, key=broker_cert.key,
                             accounts=accounts)  # fmt: skip
    with contextlib.ExitStack() as stack:
        broker.start()
        stack.callback(broker.close)
        postgres = PostgresServer(durable=True)
        stack.callback(postgres.stop)
        world = Deployment(root, ca, broker, postgres, postgres.create_database("gcnib"))
        stack.callback(world.stop_all)

        started = time.monotonic()
        config = world.controller(GC, "global", None, None)
        config["nib"] = {"backend": "postgresql", "dsn": world.dsn}
        config["admission"] = {"valid_regions": [region(r) for r in range(RCS)]}
        gc = world.add_process(GC, config)
        world.start(gc)
        world.wait_healthy([gc], 60)
        rcs = []
        for r in range(RCS):
            config = world.controller(rc_id(r), "regional", region(r), gc)
            issue_bootstrap(gc, "regional", region(r), Path(config["admission"]["bootstrap_file"]))
            rcs.append(world.add_process(rc_id(r), config))
        for rc in rcs:
            world.start(rc)
        world.wait_healthy(rcs, 120)
        log(f"GC and {RCS} RCs up in {time.monotonic() - started:.1f} s")

        lc_configs: list[dict[str, Any]] = []
        for r, rc in enumerate(rcs):
            for n in range(LCS_PER_RC):
                config = world.controller(lc_id(r, n), "local", region(r), rc)
                config["nib"] = {"pool_size": 1}  # a hundred NIBs in one process: a thread each is plenty
                config["discovery"] = {"subnets": [str(lc_subnet(len(lc_configs)))], "interval_s": 86_400}
                issue_bootstrap(rc, "local", region(r), Path(config["admission"]["bootstrap_file"]))
                lc_configs.append(config)
        lcs = Fleet(lc_configs, root, stack)
        ready = lcs.wait("ready", 300)
        log(f"{sum(r['lcs'] for r in ready)} LCs admitted and running in {max(r['start_s'] for r in ready):.1f} s "
            f"({len(ready)} load processes)")  # fmt: skip
        yield world, lcs


def operator_token(world: Deployment, name: str) -> str:
    output = cli(
        operator_add, ["--config", str(world.controllers[GC].config), "--name", name, "--role", "operator"]
    )
    return output.strip().splitlines()[-1]


def api_latency(world: Deployment, token: str, devices: int, requests: int) -> dict[str, dict[str, Any]]:
    """Sequential GETs of the GC's northbound inventory (one in flight, keep-alive), per query."""
    per_region = devices // RCS
    queries: dict[str, dict[str, str | int]] = {
        "first page (limit=100)": {"limit": 100},
        "middle (offset=N/2)": {"limit": 100, "offset": devices // 2},
        "deepest page (offset=N-100)": {"limit": 100, "offset": max(0, devices - 100)},
        "vendor=Juniper": {"limit": 100, "vendor": "Juniper"},
        "region=zone-05": {"limit": 100, "region": region(4)},
        "region=zone-05, its last page": {
            "limit": 100,
            "region": region(4),
            "offset": max(0, per_region - 100),
        },
        "limit=1000": {"limit": 1000},
    }
    gc = world.controllers[GC]
    results: dict[str, dict[str, Any]] = {}
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(
        base_url=gc.url, verify=ssl_context(world.ca.cert), headers=headers, timeout=60
    ) as client:
        for name, params in queries.items():
            client.get("/api/v1/devices", params=params).raise_for_status()  # connection and caches warm
            times: list[float] = []
            items = 0
            for _ in range(requests):
                started = time.perf_counter()
                response = client.get("/api/v1/devices", params=params)
                times.append(time.perf_counter() - started)
                response.raise_for_status()
                items = len(response.json()["items"])
            times.sort()
            results[name] = {"params": params, "items": items, "n": requests,
                             "p50_ms": round(percentile(times, 0.5) * 1000, 2),
                             "p95_ms": round(percentile(times, 0.95) * 1000, 2)}  # fmt: skip
    return results


def nib_sizes(world: Deployment, nibs: Nibs) -> dict[str, Any]:
    def sqlite_bytes(data_dir: Path) -> int:
        return sum(p.stat().st_size for p in data_dir.glob("nib.sqlite3*"))

    rcs = {rc_id(r): sqlite_bytes(world.controllers[rc_id(r)].data_dir) for r in range(RCS)}
    lcs = [sqlite_bytes(world.root / lc_id(r, n)) for r in range(RCS) for n in range(LCS_PER_RC)]
    return {"gc_pg_database_bytes": nibs.pg_size(), "rc_sqlite_bytes": rcs,
            "rc_sqlite_bytes_mean": round(sum(rcs.values()) / len(rcs)),
            "lc_sqlite_bytes_mean": round(sum(lcs) / len(lcs)), "lc_sqlite_bytes_total": sum(lcs)}  # fmt: skip


def run(args: argparse.Namespace) -> dict[str, Any]:
    per_lc = max(1, args.devices // (RCS * LCS_PER_RC))
    total = per_lc * RCS * LCS_PER_RC
    delta = max(1, round(per_lc * DELTA_SHARE))
    report: dict[str, Any] = {
        "devices": total, "regional_controllers": RCS, "local_controllers": RCS * LCS_PER_RC,
        "devices_per_lc": per_lc, "load_processes": math.ceil(RCS * LCS_PER_RC / LCS_PER_PROCESS),
        "load_average_before": load_average(),
    }  # fmt: skip
    with contextlib.ExitStack() as keep:
        root = Path(tempfile.mkdtemp(prefix="pdsno-bench-scale-", dir="/tmp"))
        if args.keep:
            log(f"keeping {root} (logs, NIBs)")
        else:
            keep.callback(shutil.rmtree, root, ignore_errors=True)
        report["machine"] = machine_facts(root)
        set_up = time.monotonic()
        with deployment_up(root) as (world, lcs):
            report["setup_s"] = round(time.monotonic() - set_up, 1)
            nibs = Nibs(world)
            try:
                groups: dict[str, Callable[[], list[int]]] = {
                    "gc" if cid == GC else cid: [node.pid].copy for cid, node in world.controllers.items()
                }
                groups["lc load processes"] = lambda: lcs.pids
                groups["mosquitto"] = lambda: [world.broker.pid] if world.broker.pid else []
                groups["postgresql"] = lambda: postgres_pids(world.postgres)
                meter = CpuMeter(groups)
                report["inventory"] = full_inventory(lcs, nibs, meter, total, per_lc, args)
                log(f"full inventory at the GC in {report['inventory']['gc_s']:.1f} s")
                time.sleep(args.settle_s)
                before, started = meter.read(), time.monotonic()
                time.sleep(args.idle_s)
                report["steady"] = cpu_share(meter.spent(before, meter.read()), time.monotonic() - started)
                token = operator_token(world, "bench")
                report["api"] = api_latency(world, token, total, args.requests)
                report["delta"] = delta_cycle(world, lcs, nibs, meter, token, total, per_lc, delta, args)
                report["nib"] = nib_sizes(world, nibs)
            finally:
                nibs.close()
    report["load_average_after"] = load_average()
    return report


def cpu_share(spent: dict[str, float], wall_s: float) -> dict[str, Any]:
    rcs = [v for k, v in spent.items() if k.startswith("regional_cntl_")]
    return {
        "wall_s": round(wall_s, 2),
        "cpu_s": spent,
        "cpu_percent": {k: round(100 * v / wall_s, 2) for k, v in spent.items()},
        "rc_cpu_percent_mean": round(100 * sum(rcs) / len(rcs) / wall_s, 2),
        "rc_cpu_percent_max": round(100 * max(rcs) / wall_s, 2),
    }


def full_inventory(
    lcs: Fleet, nibs: Nibs, meter: CpuMeter, total: int, per_lc: int, args: argparse.Namespace
) -> dict[str, Any]:
    before, since = meter.read(), utcnow()
    started = time.monotonic()
    lcs.ask("go", 1, per_lc, answer="ok")
    gc_s = wait_for_count("devices at the GC", nibs.gc_devices, total, started=started, args=args, poll_s=0.5)
    spent = meter.spent(before, meter.read())
    return {"gc_s": round(gc_s, 2), **tier_times(nibs, since), "devices_per_s": round(total / gc_s),
            "cpu": cpu_share(spent, gc_s)}  # fmt: skip


def delta_cycle(
    world: Deployment, lcs: Fleet, nibs: Nibs, meter: CpuMeter, token: str, total: int,
    per_lc: int, delta: int, args: argparse.Namespace,
) -> dict[str, Any]:  # fmt: skip
    """Change ``delta`` devices per LC and add ``delta`` more, then ask the GC for discovery now."""
    lcs_count = RCS * LCS_PER_RC
    changed, added = delta * lcs_count, delta * lcs_count
    lcs.ask("go", 2, per_lc, delta, delta, answer="ok")
    gc = world.controllers[GC]
    headers = {"Authorization": f"Bearer {token}"}
    before, since = meter.read(), utcnow()
    with httpx.Client(
        base_url=gc.url, verify=ssl_context(world.ca.cert), headers=headers, timeout=60
    ) as client:
        started = time.monotonic()
        answer = client.post("/api/v1/discovery", json={})
        answer.raise_for_status()
        request_id = answer.json()["request_id"]
        gc_s = wait_for_count(
            "new and changed devices at the GC",
            lambda: nibs.gc_devices() - total + nibs.gc_devices("WHERE firmware_version = '2.0'"),
            added + changed, started=started, args=args, poll_s=0.2,
        )  # fmt: skip
        spent = meter.spent(before, meter.read())
        run_view: dict[str, Any] = {}
        deadline = time.monotonic() + args.timeout_s
        while time.monotonic() < deadline:
            run_view = client.get(f"/api/v1/discovery/{request_id}").json()
            if run_view["status"] != "running":
                break
            time.sleep(0.5)
        done_s = time.monotonic() - started
    return {
        "changed": changed, "added": added, "gc_s": round(gc_s, 2), "request_status": run_view.get("status"),
        "request_done_s": round(done_s, 2), "deltas_listed": len(run_view.get("deltas", [])),
        "targets": run_view.get("targets"), **tier_times(nibs, since), "cpu": cpu_share(spent, gc_s),
    }  # fmt: skip


# --- output -----------------------------------------------------------------------------------


def print_table(report: dict[str, Any], out: Any) -> None:
    def w(line: str = "") -> None:
        print(line, file=out)

    m = report["machine"]
    inv, steady, dl = report["inventory"], report["steady"], report["delta"]
    w(
        f"machine: {m['nproc']} CPUs ({m['cpu_model']}), Python {m['python']}, SQLite {m['sqlite']}, {m['mosquitto']}"
    )
    w(f"load average before {report['load_average_before']}, after {report['load_average_after']}")
    w(f"{report['devices']} devices, 1 GC (PostgreSQL), {report['regional_controllers']} RCs (SQLite), "
      f"{report['local_controllers']} LCs in {report['load_processes']} load processes; set-up {report['setup_s']} s")  # fmt: skip
    w()
    w(f"{'seconds until the last device write':<40} {'full':>8} {'delta':>8}   "
      f"(full: {report['devices']} new; delta: {dl['changed']} changed + {dl['added']} new)")  # fmt: skip
    for label, key in (("LC NIBs (scan -> delta written)", "lc_written_s"),
                       ("LCs' report chunks acknowledged", "lc_acked_s"), ("RC NIBs (merged)", "rc_merged_s"),
                       ("GC NIB (merged, PostgreSQL)", "gc_merged_s")):  # fmt: skip
        w(f"{label:<40} {inv[key] or 0:>8.2f} {dl[key] or 0:>8.2f}")
    w(f"full inventory at the GC: {inv['gc_s']} s ({inv['devices_per_s']} devices/s); delta: POST "
      f"/api/v1/discovery -> GC NIB {dl['gc_s']} s, request {dl['request_status']} after {dl['request_done_s']} s")  # fmt: skip
    w()
    w(f"{'CPU %':<26} {'ingest':>9} {'steady':>9} {'delta':>9}   (CPU s over wall s; 100 % = one core)")
    for name in inv["cpu"]["cpu_percent"]:
        if name.startswith("regional_cntl_"):
            continue
        w(f"{name:<26} {inv['cpu']['cpu_percent'][name]:>9.1f} {steady['cpu_percent'][name]:>9.1f} "
          f"{dl['cpu']['cpu_percent'][name]:>9.1f}")  # fmt: skip
    for label, key in (("RC (mean of 10)", "rc_cpu_percent_mean"), ("RC (busiest)", "rc_cpu_percent_max")):
        w(f"{label:<26} {inv['cpu'][key]:>9.1f} {steady[key]:>9.1f} {dl['cpu'][key]:>9.1f}")
    w()
    w(f"{'GET /api/v1/devices':<34} {'items':>6} {'p50 ms':>8} {'p95 ms':>8}   (n={report['requests']} each)")
    for name, row in report["api"].items():
        w(f"{name:<34} {row['items']:>6} {row['p50_ms']:>8.1f} {row['p95_ms']:>8.1f}")
    w()
    nib = report["nib"]
    w(f"NIB sizes: GC pg_database_size {nib['gc_pg_database_bytes'] / 2**20:.1f} MiB, RC SQLite mean "
      f"{nib['rc_sqlite_bytes_mean'] / 2**20:.1f} MiB, LC SQLite mean {nib['lc_sqlite_bytes_mean'] / 2**20:.2f} MiB")  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100_000, help="devices in all (default 100000)")
    parser.add_argument("--quick", action="store_true", help="1000 devices, short phases (about a minute)")
    parser.add_argument("--requests", type=int, default=50, help="requests per API query (default 50)")
    parser.add_argument("--idle-s", type=float, default=30.0, help="steady-state interval (default 30 s)")
    parser.add_argument("--settle-s", type=float, default=5.0, help="wait after the ingest before it")
    parser.add_argument("--timeout-s", type=float, default=1800.0, help="bound on each phase")
    parser.add_argument(
        "--stall-s", type=float, default=180.0, help="give up when the GC gains nothing so long"
    )
    parser.add_argument("--json", action="store_true", help="every number as JSON on stdout")
    parser.add_argument("--keep", action="store_true", help="leave the temporary directory (logs, NIBs)")
    args = parser.parse_args(argv)
    if args.quick:
        args.devices, args.requests, args.idle_s, args.settle_s = 1000, 20, 10.0, 2.0
    if args.devices < RCS * LCS_PER_RC or math.ceil(args.devices / (RCS * LCS_PER_RC)) > 4000:
        parser.error(f"--devices must be between {RCS * LCS_PER_RC} and {RCS * LCS_PER_RC * 4000}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C: every server and controller started here is stopped by its PID.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    report = run(args)
    report["requests"] = args.requests
    report["wall_s"] = round(time.monotonic() - started, 1)
    print_table(report, sys.stderr)
    if args.json:
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
