"""Discovery benchmark: PDSNO's discovery beside nmap, net-snmp and arp-scan, in one run, on the lab.

    sudo .venv/bin/python bench/discovery.py [--quick] [--json] [--reps N] [--only 24|16]

Each scenario builds its own lab (``pdsno.lab``, prefix ``pdsnob-``, state under a fresh /tmp directory),
runs every tool **inside the lab's LC namespace** (``ip netns exec``; the lab black-holes its address
block in the root namespace first), and tears the lab down again in a ``finally``. Nothing is sent to
any address outside the lab; every command has a hard timeout and the whole run a time budget.

1. ``bench-24``: one /24 with 200 live devices (179 SNMP v2c, one SNMPv3-only, 15 ICMP-only, 5 ARP-only).

   * PDSNO pipeline: a small entry point (this file, ``--inner pdsno``) started in the LC namespace times
     ``scan()`` (ARP + ICMP + SNMP system group) + ``compute_delta`` + ``apply_delta`` into a fresh SQLite
     NIB (``open_nib(create=True)`` with an Ed25519 signer, so audit events are sealed and written). The
     row is the in-process time; the process' wall clock (Python start-up and imports) is reported too.
   * ``pdsno discover --json`` with its default options (interface and address tables walked): wall
     clock, process start included; the ratio to ``nmap -sn`` is the issue-15 target (<= 1).
   * ``pdsno discover --json`` and ``python -m pdsno.discovery --json`` with ``--system-only``
     (``scan(snmp_tables=False)`` in the pipeline) when this checkout has it: the run says whether it did.
   * ``nmap -sn -n SUBNET``: wall clock.
   * ``nmap -sn`` then ``snmpget -v2c -c public -t 1 -r 1`` of the same five system-group OIDs (numeric,
     ``MIBS=``) on every responder, 64 in parallel (``xargs -P 64``): wall clock of the whole pipeline.
   * Diagnostic: the PDSNO pipeline with the community only (no v3 user): what the v3-only device costs.

2. ``bench-16``: a sparse /16 (20 live hosts among 65,534 addresses; ARP and ICMP only).

   * PDSNO pipeline and ``pdsno discover --no-snmp --json`` (target: under 4 s).
   * ``arp-scan`` tuned (``-B 20M``, and ``-B 20M -r 1``), ``nmap -sn -n`` tuned (``-T5 --min-rate 10000
     --max-retries 1``, and ``-T4 --min-rate 20000 --max-retries 0``).
   * ``arp-scan`` and ``nmap -sn`` with their defaults run once, cut at ``--default-cap`` seconds
     (default 60; 20 with ``--quick``; 0 skips them): they take minutes here (nmap reportedly over 20).

Before every measurement the LC namespace's neighbour table is flushed, so no tool profits from the ARP
resolutions of the one before; the order of the tools rotates from one repetition to the next.
Each measurement is repeated ``--reps`` times (3; 1 with ``--quick``); the table shows median and min,
the CPU time of the tool's whole process tree (``CPU s``, median) and how many CPUs everything else kept
busy meanwhile (``others``: other work on the machine and the lab's daemons answering; on a 2-CPU
machine a value near 1 or above means the timings are contended).
Correctness is checked against the lab's ground truth: addresses found, MACs, and for PDSNO the
``sysName`` of every SNMP device (for net-snmp: the v2c ones; ``snmpget -v2c`` cannot reach the v3 one).

``--json`` prints the report as JSON (every repetition, the per-probe timings of every PDSNO run) instead
of the table; ``--json-out FILE`` writes it beside the table. ``--budget`` bounds the whole run (900 s).
Results and their reading: docs/performance.md ("Performance: discovery").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import json
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable  # the venv's interpreter (not resolved: that would leave the venv)
BIN = Path(PYTHON).parent
PREFIX = "pdsnob-"
FOREIGN_PREFIXES = ("pdsno-", "pdsnot-", "pdl")
SYSTEM_OIDS = (
    "1.3.6.1.2.1.1.1.0",
    "1.3.6.1.2.1.1.2.0",
    "1.3.6.1.2.1.1.3.0",
    "1.3.6.1.2.1.1.5.0",
    "1.3.6.1.2.1.1.7.0",
)  # sysDescr, sysObjectID, sysUpTime, sysName, sysServices
CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LC_ID = "local_cntl_bench_1"
REGION = "bench"
CMD_TIMEOUT = 60.0
TARGET_16_S = 4.0


# =========================================================================================== inner side
# Runs inside the LC namespace: ``python bench/discovery.py --inner pdsno --subnet ... --nib PATH``.


async def _inner_pdsno(args: argparse.Namespace) -> dict[str, Any]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from pdsno.canonical import utcnow
    from pdsno.discovery import SnmpCredentials, SnmpV3Credential, scan
    from pdsno.inventory.delta import apply_delta, compute_delta
    from pdsno.nib.connect import open_nib
    from pdsno.security.keys import Ed25519Signer

    imported = time.perf_counter()
    kwargs: dict[str, Any] = {}
    if args.no_snmp:
        kwargs["protocols"] = ("arp", "icmp")
    else:
        kwargs["snmp_credentials"] = SnmpCredentials(
            tuple(args.community or ["public"]), tuple(SnmpV3Credential.parse(t) for t in args.snmpv3)
        )
    system_only = False
    if not args.no_snmp and "snmp_tables" in inspect.signature(scan).parameters:
        kwargs["snmp_tables"] = False
        system_only = True
    signer = Ed25519Signer(LC_ID, Ed25519PrivateKey.generate())

    t0 = time.perf_counter()
    store = await open_nib("sqlite", path=Path(args.nib), signer=signer, create=True)
    t1 = time.perf_counter()
    try:
        result = await scan(list(args.subnet), **kwargs)
        t2 = time.perf_counter()
        known = await store.list_devices(local_controller=LC_ID)
        delta = compute_delta(
            known, result.devices, lc_id=LC_ID, region=REGION, now=utcnow(), missed_cycles_before_inactive=3
        )
        t3 = time.perf_counter()
        applied = await apply_delta(store, delta, actor=LC_ID)
        t4 = time.perf_counter()
        nib_stats = await store.stats()
    finally:
        await store.close()
    scan_dict = result.as_dict()
    return {
        "system_only": system_only,
        "import_s": round(imported - args.started, 4),
        "open_nib_s": round(t1 - t0, 4),
        "scan_s": round(t2 - t1, 4),
        "delta_s": round(t3 - t2, 4),
        "write_s": round(t4 - t3, 4),
        "pipeline_s": round(t4 - t1, 4),  # scan + delta + NIB write (the NIB is open in a controller)
        "written": len(applied.written),
        "conflicts": len(applied.conflicts),
        "nib_tables": nib_stats.get("tables", {}),
        "scan": {k: scan_dict[k] for k in ("duration_s", "timings", "targets", "probes", "failures")},
        "devices": [_device_summary(d) for d in scan_dict["devices"]],
    }


def _device_summary(d: dict[str, Any]) -> dict[str, Any]:
    return {
        "ip": d.get("ip_address"),
        "addresses": d.get("addresses") or [],
        "mac": d.get("mac_address"),
        "hostname": d.get("hostname"),
        "caps": d.get("protocol_caps") or [],
    }


def inner_main(args: argparse.Namespace) -> int:
    out = asyncio.run(_inner_pdsno(args))
    json.dump(out, sys.stdout)
    return 0


# =========================================================================================== outer side


@dataclass
class Run:
    wall_s: float | None  # None: timed out (cut at ``cap_s``)
    rc: int | None
    stdout: str
    stderr: str
    cap_s: float
    cpu_s: float = 0.0
    """CPU time (user + system) of the command's whole process tree."""
    others_cpus: float = 0.0
    """CPUs kept busy meanwhile by everything else (other work on the machine, the lab's daemons)."""


class Budget:
    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()


def run_timed(argv: Sequence[str], *, timeout: float, env: dict[str, str]) -> Run:
    """Wall clock of one command, process start included. Its own process group: a timeout (or our
    own interruption) kills the whole group (an ``sh`` pipeline included), by its id."""
    busy0, cpu0 = _busy_cpu_s(), _children_cpu_s()
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
        wall: float | None = time.perf_counter() - start
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate(timeout=10)
        wall = None
    except BaseException:
        _kill_group(proc)
        with contextlib.suppress(Exception):
            proc.communicate(timeout=10)
        raise
    elapsed = time.perf_counter() - start
    cpu = _children_cpu_s() - cpu0
    others = max(0.0, (_busy_cpu_s() - busy0 - cpu) / elapsed) if elapsed > 0 else 0.0
    return Run(wall, proc.returncode, out, err, timeout, cpu, others)


def _busy_cpu_s() -> float:
    """Busy CPU seconds of the whole machine so far (/proc/stat: all but idle and iowait)."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def netns_env(workdir: Path) -> dict[str, str]:
    return {
        "PATH": CLEAN_PATH,
        "HOME": os.environ.get("HOME", "/root"),
        "MIBS": "",
        "SNMP_PERSISTENT_DIR": str(workdir / "snmp-client"),
        "LANG": "C.UTF-8",
    }


@dataclass
class Measure:
    """One row: a tool, its repetitions, and what it found."""

    scenario: str
    key: str
    label: str
    command: str
    walls: list[float] = field(default_factory=list)
    primary: list[float] = field(default_factory=list)  # what the row reports (in-process for the pipeline)
    found: list[int] = field(default_factory=list)
    extra: list[int] = field(default_factory=list)
    mac_ok: list[int] = field(default_factory=list)
    named: list[int] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    others: list[float] = field(default_factory=list)
    timeouts: int = 0
    cap_s: float | None = None
    notes: list[str] = field(default_factory=list)
    details: list[dict[str, Any]] = field(default_factory=list)

    def record(self, run: Run, seconds: float | None = None) -> None:
        assert run.wall_s is not None
        self.primary.append(run.wall_s if seconds is None else seconds)
        self.walls.append(run.wall_s)
        self.cpu.append(run.cpu_s)
        self.others.append(run.others_cpus)

    def stats(self) -> dict[str, Any]:
        vals = self.primary
        return {
            "median_s": round(statistics.median(vals), 3) if vals else None,
            "min_s": round(min(vals), 3) if vals else None,
            "max_s": round(max(vals), 3) if vals else None,
            "wall_median_s": round(statistics.median(self.walls), 3) if self.walls else None,
            "cpu_median_s": round(statistics.median(self.cpu), 3) if self.cpu else None,
            "others_cpus_median": round(statistics.median(self.others), 2) if self.others else None,
            "runs": len(vals),
            "timeouts": self.timeouts,
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "key": self.key,
            "label": self.label,
            "command": self.command,
            **self.stats(),
            "seconds": [round(v, 4) for v in self.primary],
            "wall_seconds": [round(v, 4) for v in self.walls],
            "found": self.found,
            "extra": self.extra,
            "mac_ok": self.mac_ok,
            "sysname_ok": self.named,
            "cpu_s": [round(v, 3) for v in self.cpu],
            "others_cpus": [round(v, 2) for v in self.others],
            "cap_s": self.cap_s,
            "notes": self.notes,
            "details": self.details,
        }


@dataclass
class Truth:
    ips: dict[str, dict[str, Any]]  # address -> device
    devices: list[dict[str, Any]]
    own_ips: set[str]

    @property
    def live(self) -> int:
        return len(self.devices)

    @property
    def snmp(self) -> list[dict[str, Any]]:
        return [d for d in self.devices if d.get("snmp")]

    @property
    def snmp_v2c(self) -> list[dict[str, Any]]:
        return [d for d in self.snmp if d["snmp"].get("version") == "2c"]


def load_truth(lab: Any) -> Truth:
    gt = lab.ground_truth()
    devices = [d for d in gt["devices"] if d.get("up")]
    ips = {a["ip"]: d for d in devices for a in d["addresses"]}
    own = {s["ip"] for c in gt["controllers"] for s in c.get("subnets", [])}
    return Truth(ips, devices, own)


def check_pdsno(devices: list[dict[str, Any]], truth: Truth) -> tuple[int, int, int, int, list[str]]:
    """(live devices found, extra addresses, MACs right, SNMP devices with the right sysName, the names
    of the live devices not found or SNMP devices without their sysName)."""
    found_names: set[str] = set()
    extra = 0
    mac_ok = 0
    named = 0
    by_name_host: dict[str, str | None] = {}
    for d in devices:
        addrs = set(d["addresses"]) | ({d["ip"]} if d["ip"] else set())
        owners = {truth.ips[a]["name"] for a in addrs if a in truth.ips}
        extra += len([a for a in addrs if a not in truth.ips and a not in truth.own_ips])
        for name in owners:
            found_names.add(name)
            by_name_host[name] = d["hostname"]
            dev = next(x for x in truth.devices if x["name"] == name)
            if (d["mac"] or "").lower() == dev["mac"].lower():
                mac_ok += 1
    missing = [d["name"] for d in truth.devices if d["name"] not in found_names]
    for dev in truth.snmp:
        if dev["name"] in by_name_host and by_name_host[dev["name"]] == dev["sysName"]:
            named += 1
        elif dev["name"] in found_names:
            missing.append(f"{dev['name']} (sysName {by_name_host[dev['name']]!r})")
    return len(found_names), extra, mac_ok, named, missing


def check_ips(ips: set[str], truth: Truth) -> tuple[int, int]:
    ips = ips - truth.own_ips
    names = {truth.ips[a]["name"] for a in ips if a in truth.ips}
    return len(names), len([a for a in ips if a not in truth.ips])


def grepable_up(text: str) -> set[str]:
    return set(re.findall(r"^Host: (\S+) .*Status: Up", text, re.M))


def arp_scan_ips(text: str) -> set[str]:
    return {line.split("\t")[0] for line in text.splitlines() if re.match(r"^\d+\.\d+\.\d+\.\d+\t", line)}


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path, budget: Budget) -> None:
        self.args = args
        self.workdir = workdir
        self.budget = budget
        self.env = netns_env(workdir)
        self.measures: dict[tuple[str, str], Measure] = {}
        self.skipped: list[str] = []
        self.counter = 0

    def measure(self, scenario: str, key: str, label: str, command: str) -> Measure:
        m = self.measures.get((scenario, key))
        if m is None:
            m = self.measures[(scenario, key)] = Measure(scenario, key, label, command)
        return m

    def ns_run(self, ns: str, argv: Sequence[str], cap: float = CMD_TIMEOUT) -> Run | None:
        left = self.budget.left()
        if left < 5:
            return None
        # a cold start for every tool: nobody profits from the previous one's ARP resolutions
        subprocess.run(
            ["ip", "-n", ns, "neigh", "flush", "all"],
            check=False,
            timeout=10,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return run_timed(["ip", "netns", "exec", ns, *argv], timeout=min(cap, left - 2), env=self.env)

    # ---------------------------------------------------------------------------- the tools

    def pdsno_inner(
        self,
        scenario: str,
        ns: str,
        subnet: str,
        truth: Truth,
        *,
        snmp: bool,
        v3: list[str],
        key: str = "pdsno-pipeline",
        label: str = "PDSNO pipeline: scan + delta + NIB write (in-process)",
    ) -> None:
        self.counter += 1
        nib = self.workdir / f"nib-{scenario}-{self.counter}.sqlite"
        argv = [
            PYTHON,
            str(Path(__file__).resolve()),
            "--inner",
            "pdsno",
            "--subnet",
            subnet,
            "--nib",
            str(nib),
        ]
        if snmp:
            argv += ["--community", "public"] + [x for c in v3 for x in ("--snmpv3", c)]
        else:
            argv += ["--no-snmp"]
        shown = [
            "ip netns exec LC",
            ".venv/bin/python bench/discovery.py --inner pdsno",
            f"--subnet {subnet}",
        ]
        shown += (
            ["--community public"] + (["--snmpv3 USER:AUTH:PRIV"] if v3 else []) if snmp else ["--no-snmp"]
        )
        m = self.measure(scenario, key, label, " ".join(shown))
        run = self.ns_run(ns, argv)
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                Path(str(nib) + suffix).unlink()
        if run is None:
            return
        if run.wall_s is None or run.rc != 0:
            m.timeouts += run.wall_s is None
            m.notes.append(f"failed rc={run.rc}: {run.stderr.strip()[-300:]}")
            return
        out = json.loads(run.stdout)
        found, extra, mac_ok, named, missing = check_pdsno(out["devices"], truth)
        m.record(run, out["pipeline_s"])
        m.found.append(found)
        m.extra.append(extra)
        m.mac_ok.append(mac_ok)
        m.named.append(named)
        del out["devices"]
        out["wall_s"] = round(run.wall_s, 4)
        out["missing"] = missing
        m.details.append(out)
        if out.get("system_only"):
            m.command += " (scan(snmp_tables=False))" if "snmp_tables" not in m.command else ""

    def pdsno_cli(
        self,
        scenario: str,
        ns: str,
        subnet: str,
        truth: Truth,
        *,
        snmp: bool,
        v3: list[str],
        system_only: bool,
        module: bool,
        key: str | None = None,
    ) -> None:
        head = [PYTHON, "-m", "pdsno.discovery"] if module else [str(BIN / "pdsno"), "discover"]
        opts = ["--subnet", subnet, "--json"]
        if snmp:
            opts += ["--community", "public"] + [x for c in v3 for x in ("--snmpv3", c)]
            if system_only:
                opts += ["--system-only"]
        else:
            opts += ["--no-snmp"]
        shown_opts = " ".join(opts).replace(" ".join(["--snmpv3", *v3[:1]]), "--snmpv3 USER:AUTH:PRIV")
        key = key or ("pdsno-module" if module else "pdsno-cli")
        label = (
            ("python -m pdsno.discovery" if module else "pdsno discover")
            + (" --system-only" if system_only else "")
            + " (wall, process start incl.)"
        )
        shown = ("python -m pdsno.discovery " if module else "pdsno discover ") + shown_opts
        m = self.measure(scenario, key, label, shown)
        run = self.ns_run(ns, [*head, *opts])
        if run is None:
            return
        if run.wall_s is None or run.rc != 0:
            m.timeouts += run.wall_s is None
            m.notes.append(f"failed rc={run.rc}: {run.stderr.strip()[-300:]}")
            return
        data = json.loads(run.stdout)
        found, extra, mac_ok, named, missing = check_pdsno(
            [_device_summary(d) for d in data["devices"]], truth
        )
        m.record(run)
        m.found.append(found)
        m.extra.append(extra)
        m.mac_ok.append(mac_ok)
        m.named.append(named)
        snmp_stats = data["probes"].get("snmp", {})
        m.details.append(
            {
                "scan_duration_s": data["duration_s"],
                "timings": data["timings"],
                "missing": missing,
                "snmp_errors": snmp_stats.get("errors"),
                "snmp_versions": snmp_stats.get("versions"),
                "startup_s": round(run.wall_s - data["duration_s"], 4),
                "probes": {
                    name: {
                        k: p.get(k)
                        for k in ("started_s", "first_response_s", "last_response_s", "finished_s")
                    }
                    for name, p in data["probes"].items()
                },
            }
        )

    def nmap(
        self,
        scenario: str,
        key: str,
        label: str,
        ns: str,
        subnet: str,
        opts: list[str],
        truth: Truth,
        cap: float = CMD_TIMEOUT,
    ) -> None:
        m = self.measure(scenario, key, label, " ".join(["nmap -sn -n", *opts, subnet]))
        m.cap_s = cap
        run = self.ns_run(ns, ["nmap", "-sn", "-n", *opts, "-oG", "-", subnet], cap=cap)
        if run is None:
            return
        if run.wall_s is None:
            m.timeouts += 1
            m.notes.append(f"cut at {run.cap_s:.0f} s")
            return
        found, extra = check_ips(grepable_up(run.stdout), truth)
        m.record(run)
        m.found.append(found)
        m.extra.append(extra)

    def arp_scan(
        self,
        scenario: str,
        key: str,
        label: str,
        ns: str,
        ifname: str,
        subnet: str,
        opts: list[str],
        truth: Truth,
        cap: float = CMD_TIMEOUT,
    ) -> None:
        m = self.measure(scenario, key, label, " ".join(["arp-scan -q -x -I", ifname, *opts, subnet]))
        m.cap_s = cap
        run = self.ns_run(ns, ["arp-scan", "-q", "-x", "-I", ifname, *opts, subnet], cap=cap)
        if run is None:
            return
        if run.wall_s is None:
            m.timeouts += 1
            m.notes.append(f"cut at {run.cap_s:.0f} s")
            return
        ips = arp_scan_ips(run.stdout)
        found, extra = check_ips(ips, truth)
        m.record(run)
        m.found.append(found)
        m.extra.append(extra)

    def nmap_snmpget(self, scenario: str, ns: str, subnet: str, own: str, truth: Truth) -> None:
        hosts = self.workdir / "nmap-hosts.txt"
        script = (
            f"nmap -sn -n -oG - {subnet} | awk '/Status: Up/{{print $2}}' | grep -vxF {own} | tee {hosts} "
            f"| xargs -P 64 -I{{}} snmpget -v2c -c public -t 1 -r 1 -On {{}} {' '.join(SYSTEM_OIDS)}"
        )
        shown = script.replace(f" | tee {hosts}", "").replace(f" | grep -vxF {own}", " | grep -vxF LC_IP")
        m = self.measure(scenario, "nmap-snmpget", "nmap -sn + snmpget x5 OIDs (xargs -P 64)", shown)
        hosts.unlink(missing_ok=True)
        run = self.ns_run(ns, ["sh", "-c", script])
        if run is None:
            return
        if run.wall_s is None:
            m.timeouts += 1
            m.notes.append(f"cut at {run.cap_s:.0f} s")
            return
        ips = set(hosts.read_text().split()) if hosts.exists() else set()
        found, extra = check_ips(ips, truth)
        names = re.findall(r'^\.1\.3\.6\.1\.2\.1\.1\.5\.0 = STRING: "?([^"\n]*)"?$', run.stdout, re.M)
        expected = {d["sysName"] for d in truth.snmp}
        m.record(run)
        m.found.append(found)
        m.extra.append(extra)
        m.named.append(len([n for n in names if n in expected]))
        got = set(names)
        missing = [f"{d['name']} (sysName None)" for d in truth.snmp_v2c if d["sysName"] not in got]
        seen = {truth.ips[a]["name"] for a in ips if a in truth.ips}
        missing = [d["name"] for d in truth.devices if d["name"] not in seen] + missing
        m.details.append({"snmpget_timeouts": run.stderr.count("Timeout: No Response"), "missing": missing})

    # ---------------------------------------------------------------------------- the scenarios

    def scenario_24(self, lab: Any) -> None:
        scenario = "bench-24"
        truth = load_truth(lab)
        subnet = next(iter(lab.subnets()))
        lc = lab.lc_for(subnet)
        ns = lab.netns(lc.name)
        own = next(s.ip for s in lc.subnets if s.cidr == subnet)
        v3 = [
            f"{d['snmp']['user']}:{d['snmp']['auth_password']}:{d['snmp']['priv_password']}"
            for d in truth.snmp
            if d["snmp"].get("version") == "3"
        ][:1]
        system_only = cli_has_system_only()
        tools = [
            lambda: self.pdsno_inner(scenario, ns, subnet, truth, snmp=True, v3=v3),
            # the command as an operator types it: interface and address tables walked
            lambda: self.pdsno_cli(
                scenario,
                ns,
                subnet,
                truth,
                snmp=True,
                v3=v3,
                system_only=False,
                module=False,
                key="pdsno-cli-default",
            ),
            lambda: self.pdsno_cli(
                scenario, ns, subnet, truth, snmp=True, v3=v3, system_only=system_only, module=False
            ),
            lambda: self.pdsno_cli(
                scenario, ns, subnet, truth, snmp=True, v3=v3, system_only=system_only, module=True
            ),
            lambda: self.nmap(scenario, "nmap", "nmap -sn (wall)", ns, subnet, [], truth),
            lambda: self.nmap_snmpget(scenario, ns, subnet, own, truth),
            lambda: self.pdsno_inner(
                scenario,
                ns,
                subnet,
                truth,
                snmp=True,
                v3=[],
                key="pdsno-pipeline-v2c",
                label="diagnostic: PDSNO pipeline, community only (no v3 user)",
            ),
        ]
        self._rotate(scenario, tools)

    def scenario_16(self, lab: Any) -> None:
        scenario = "bench-16"
        truth = load_truth(lab)
        subnet = next(iter(lab.subnets()))
        lc = lab.lc_for(subnet)
        ns = lab.netns(lc.name)
        ifname = next(s.interface for s in lc.subnets if s.cidr == subnet)
        nmap_tuned = ["-T5", "--min-rate", "10000", "--max-retries", "1"]
        nmap_fast = ["-T4", "--min-rate", "20000", "--max-retries", "0"]
        tools = [
            lambda: self.pdsno_inner(scenario, ns, subnet, truth, snmp=False, v3=[]),
            lambda: self.pdsno_cli(
                scenario, ns, subnet, truth, snmp=False, v3=[], system_only=False, module=False
            ),
            lambda: self.arp_scan(
                scenario,
                "arp-scan-tuned",
                "arp-scan -B 20M (2 tries, default)",
                ns,
                ifname,
                subnet,
                ["-B", "20M"],
                truth,
            ),
            lambda: self.arp_scan(
                scenario,
                "arp-scan-r1",
                "arp-scan -B 20M -r 1 (1 try)",
                ns,
                ifname,
                subnet,
                ["-B", "20M", "-r", "1"],
                truth,
            ),
            lambda: self.nmap(
                scenario,
                "nmap-tuned",
                "nmap -sn -T5 --min-rate 10000 --max-retries 1",
                ns,
                subnet,
                nmap_tuned,
                truth,
            ),
            lambda: self.nmap(
                scenario,
                "nmap-fast",
                "nmap -sn -T4 --min-rate 20000 --max-retries 0",
                ns,
                subnet,
                nmap_fast,
                truth,
            ),
        ]
        self._rotate(scenario, tools)
        cap = self.args.default_cap
        if cap > 0:  # once each: they take minutes, only a lower bound is wanted
            self.arp_scan(
                scenario,
                "arp-scan-default",
                "arp-scan, defaults (256 kbit/s, 2 tries)",
                ns,
                ifname,
                subnet,
                [],
                truth,
                cap=cap,
            )
            self.nmap(scenario, "nmap-default", "nmap -sn, defaults", ns, subnet, [], truth, cap=cap)
        else:
            self.skipped.append("bench-16 defaults of arp-scan and nmap (--default-cap 0)")

    def _rotate(self, scenario: str, tools: list[Any]) -> None:
        for rep in range(self.args.reps):
            shift = rep % len(tools)
            for tool in tools[shift:] + tools[:shift]:
                if self.budget.left() < 5:
                    self.skipped.append(f"{scenario}: time budget spent at repetition {rep + 1}")
                    return
                tool()


def cli_has_system_only() -> bool:
    from pdsno.cli.discover import discover

    return any("--system-only" in p.opts for p in discover.params)


def scan_has_snmp_tables() -> bool:
    from pdsno.discovery import scan

    return "snmp_tables" in inspect.signature(scan).parameters


@contextlib.contextmanager
def lab_up(topology: str, state_dir: Path, prefix: str) -> Iterator[Any]:
    from pdsno.lab import Lab

    lab = None
    try:
        lab = Lab.up(topology, state_dir, prefix=prefix)
        yield lab
    finally:
        Lab.down(state_dir, prefix=prefix)
        left = [n for n in _netns() if n.startswith(prefix)]
        if left:
            print(f"bench: WARNING: namespaces of {prefix} left after lab down: {left[:5]}", file=sys.stderr)


def _netns() -> list[str]:
    try:
        return sorted(os.listdir("/run/netns"))
    except OSError:
        return []


def _version(argv: list[str], pattern: str) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(pattern, done.stdout + done.stderr)
    return found.group(1) if found else None


def machine_facts() -> dict[str, Any]:
    cpu = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    rev = _version(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], r"(\w+)")
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--", "runtime"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    ).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "loadavg_start": list(os.getloadavg()),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nmap": _version(["nmap", "--version"], r"Nmap version (\S+)"),
        "arp_scan": _version(["arp-scan", "--version"], r"arp-scan (\S+)"),
        "net_snmp": _version(["snmpget", "--version"], r"NET-SNMP version: (\S+)"),
        "pdsno_commit": rev,
        "runtime_modified": bool(dirty),
        "scan_snmp_tables_option": scan_has_snmp_tables(),
        "cli_system_only_option": cli_has_system_only(),
    }


# ------------------------------------------------------------------------------------------- reporting


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _found(m: Measure, truth_live: int) -> str:
    if not m.found:
        return "-"
    lo, hi = min(m.found), max(m.found)
    text = f"{lo}/{truth_live}" if lo == hi else f"{lo}-{hi}/{truth_live}"
    if any(m.extra):
        text += f" +{max(m.extra)}"
    return text


def summarize(bench: Bench, truths: dict[str, Truth]) -> dict[str, Any]:
    rows = [m.as_dict() for m in bench.measures.values()]
    get = {(m.scenario, m.key): m.stats() for m in bench.measures.values()}
    checks: dict[str, Any] = {}

    def ratio(a: tuple[str, str], b: tuple[str, str], which: str = "median_s") -> float | None:
        x, y = get.get(a, {}).get(which), get.get(b, {}).get(which)
        return round(x / y, 3) if x and y else None

    s24 = "bench-24"
    if (s24, "pdsno-pipeline") in get:
        t = truths[s24]
        pipe = bench.measures[(s24, "pdsno-pipeline")]
        clis = [m for k in ("pdsno-cli", "pdsno-cli-default") if (m := bench.measures.get((s24, k)))]
        checks["bench-24"] = {
            "pipeline_vs_nmap": ratio((s24, "pdsno-pipeline"), (s24, "nmap")),
            "pipeline_vs_nmap_snmpget": ratio((s24, "pdsno-pipeline"), (s24, "nmap-snmpget")),
            "pipeline_wall_vs_nmap": _ratio_vals(
                get[(s24, "pdsno-pipeline")]["wall_median_s"], get.get((s24, "nmap"), {})
            ),
            "cli_default_vs_nmap": ratio((s24, "pdsno-cli-default"), (s24, "nmap")),
            "cli_vs_nmap": ratio((s24, "pdsno-cli"), (s24, "nmap")),
            "cli_vs_nmap_snmpget": ratio((s24, "pdsno-cli"), (s24, "nmap-snmpget")),
            "module_vs_nmap": ratio((s24, "pdsno-module"), (s24, "nmap")),
            "module_vs_nmap_snmpget": ratio((s24, "pdsno-module"), (s24, "nmap-snmpget")),
            "target_not_slower_than_nmap": "ratio <= 1.0",
            "target_half_of_nmap_snmpget": "ratio <= 0.5",
            "all_found": all(bool(m.found) and min(m.found) == t.live for m in [pipe, *clis]),
            "all_snmp_named": all(bool(m.named) and min(m.named) == len(t.snmp) for m in [pipe, *clis]),
            "no_extra": not any(any(m.extra) for m in [pipe, *clis]),
            "live": t.live,
            "snmp": len(t.snmp),
            "snmp_v2c": len(t.snmp_v2c),
        }
    s16 = "bench-16"
    if (s16, "pdsno-pipeline") in get:
        t = truths[s16]
        pipe = bench.measures[(s16, "pdsno-pipeline")]
        cli = bench.measures.get((s16, "pdsno-cli"))
        checks["bench-16"] = {
            "target_s": TARGET_16_S,
            "pipeline_median_s": get[(s16, "pdsno-pipeline")]["median_s"],
            "cli_median_s": get.get((s16, "pdsno-cli"), {}).get("median_s"),
            "pipeline_under_target": (get[(s16, "pdsno-pipeline")]["median_s"] or 99) < TARGET_16_S,
            "cli_under_target": (get.get((s16, "pdsno-cli"), {}).get("median_s") or 99) < TARGET_16_S,
            "all_found": bool(pipe.found)
            and min(pipe.found) == t.live
            and (cli is None or (bool(cli.found) and min(cli.found) == t.live)),
            "live": t.live,
        }
    return {"rows": rows, "checks": checks, "skipped": bench.skipped}


def _ratio_vals(x: float | None, nmap: dict[str, Any]) -> float | None:
    y = nmap.get("median_s")
    return round(x / y, 3) if x and y else None


def phases(bench: Bench, scenario: str, key: str = "pdsno-pipeline") -> dict[str, Any] | None:
    """Median of each phase of the pipeline runs (seconds from the scan's start, as ScanResult gives)."""
    m = bench.measures.get((scenario, key))
    if m is None or not m.details:
        return None
    acc: dict[str, list[float]] = {}

    def add(name: str, v: Any) -> None:
        if isinstance(v, (int, float)):
            acc.setdefault(name, []).append(float(v))

    for d in m.details:
        for k in ("import_s", "open_nib_s", "scan_s", "delta_s", "write_s", "pipeline_s", "wall_s"):
            add(k, d.get(k))
        add("startup_s", d["wall_s"] - d["pipeline_s"] - d["open_nib_s"])
        add("scan_consolidate_s", d["scan_s"] - d["scan"]["duration_s"])
        add("scan.first_response_s", d["scan"]["timings"].get("first_response_s"))
        add("scan.last_observation_s", d["scan"]["timings"].get("last_observation_s"))
        add("scan.total_s", d["scan"]["timings"].get("total_s"))
        for name, p in d["scan"]["probes"].items():
            for k in ("started_s", "first_response_s", "last_response_s", "finished_s", "sent", "retries"):
                add(f"{name}.{k}", p.get(k))
            if name == "arp":
                add("arp.adaptive_wait_s", p.get("adaptive_wait_s"))
            if name == "snmp":
                add("snmp.adaptive_timeout_s", p.get("adaptive_timeout_s"))
                add("snmp.decode_cpu_s", p.get("decode_cpu_s"))
        add("events_written", d["nib_tables"].get("events"))
        add("devices_written", d.get("written"))
    return {k: round(statistics.median(v), 4) for k, v in acc.items()}


def cli_phases(bench: Bench, scenario: str, key: str) -> dict[str, float] | None:
    """Median start-up (wall clock minus the scan) and probe timings of a command's runs."""
    m = bench.measures.get((scenario, key))
    if m is None or not m.details:
        return None
    acc: dict[str, list[float]] = {}
    for d in m.details:
        acc.setdefault("startup_s", []).append(d["startup_s"])
        acc.setdefault("scan_s", []).append(d["scan_duration_s"])
        for name, p in d["probes"].items():
            for k, v in p.items():
                if isinstance(v, (int, float)):
                    acc.setdefault(f"{name}.{k}", []).append(float(v))
    return {k: round(statistics.median(v), 4) for k, v in acc.items()}


def print_table(report: dict[str, Any], truths: dict[str, Truth]) -> None:
    mach = report["machine"]
    print(
        f"machine: {mach['nproc']} CPU ({mach['cpu']}), load {mach['loadavg_start'][0]:.1f} at start, "
        f"{mach['loadavg_end'][0]:.1f} at end; kernel {mach['kernel']}, Python {mach['python']}, "
        f"nmap {mach['nmap']}, arp-scan {mach['arp_scan']}, net-snmp {mach['net_snmp']}"
    )
    print(
        f"pdsno {mach['pdsno_commit']}{' (runtime/ modified)' if mach['runtime_modified'] else ''}; "
        f"scan(snmp_tables=) {'yes' if mach['scan_snmp_tables_option'] else 'no'}, "
        f"--system-only {'yes' if mach['cli_system_only_option'] else 'no'}; "
        f"repetitions {report['settings']['reps']}"
    )
    header = (
        f"{'scenario':9} {'tool':58} {'median s':>9} {'min s':>7} {'CPU s':>6} {'others':>6}  {'found':>10} "
        f"{'sysName':>8}  notes"
    )
    for scenario in ("bench-24", "bench-16"):
        rows = [r for r in report["rows"] if r["scenario"] == scenario]
        if not rows:
            continue
        t = truths[scenario]
        print()
        print(header)
        print("-" * len(header))
        for r in rows:
            m = next(x for x in [*report["_measures"]] if x.scenario == scenario and x.key == r["key"])
            med, mn = r["median_s"], r["min_s"]
            if not r["seconds"] and r["timeouts"]:
                med_s, min_s = f">{r['cap_s']:.0f}", "-"
            else:
                med_s, min_s = _fmt(med), _fmt(mn)
            named = "-"
            if r["sysname_ok"] and t.snmp:
                denom = len(t.snmp_v2c) if r["key"] == "nmap-snmpget" else len(t.snmp)
                lo, hi = min(r["sysname_ok"]), max(r["sysname_ok"])
                named = f"{lo}/{denom}" if lo == hi else f"{lo}-{hi}/{denom}"
            notes = []
            if r["key"] == "pdsno-pipeline" and r["wall_median_s"] is not None:
                notes.append(f"process wall {r['wall_median_s']:.2f}")
            if r["timeouts"] and r["seconds"]:
                notes.append(f"{r['timeouts']} cut")
            notes += r["notes"][:1]
            missed = sorted({x for d in r["details"] for x in d.get("missing", [])})
            if missed:
                notes.append("missed: " + ", ".join(missed[:3]) + (" ..." if len(missed) > 3 else ""))
            cpu, others = r["cpu_median_s"], r["others_cpus_median"]
            print(
                f"{scenario:9} {r['label'][:58]:58} {med_s:>9} {min_s:>7} {_fmt(cpu):>6} {_fmt(others):>6}  "
                f"{_found(m, t.live):>10} {named:>8}  {'; '.join(notes)}"
            )
    c24 = report["checks"].get("bench-24")
    if c24:
        print()
        print(
            f"bench-24: pdsno discover (default options)/nmap -sn = {c24['cli_default_vs_nmap']} (target <= 1)"
        )
        print(
            f"bench-24: pipeline/nmap -sn = {c24['pipeline_vs_nmap']} (target <= 1), "
            f"pipeline/(nmap+snmpget) = {c24['pipeline_vs_nmap_snmpget']} (target <= 0.5); "
            f"CLI --system-only: {c24['cli_vs_nmap']} and {c24['cli_vs_nmap_snmpget']}; "
            f"process wall/nmap = {c24['pipeline_wall_vs_nmap']}; all found: {c24['all_found']}, "
            f"every SNMP device named: {c24['all_snmp_named']}"
        )
    c16 = report["checks"].get("bench-16")
    if c16:
        print(
            f"bench-16: pipeline {c16['pipeline_median_s']} s, CLI {c16['cli_median_s']} s "
            f"(target < {c16['target_s']:.0f} s): {c16['pipeline_under_target'] and c16['cli_under_target']}; "
            f"all found: {c16['all_found']}"
        )
    for scenario, ph in report["phases"].items():
        if not ph:
            continue
        print()
        print(
            f"{scenario}: where the PDSNO pipeline's time goes (medians; probe times from the scan's start)"
        )
        keys = [k for k in ph if "." in k]
        print(
            "  "
            + ", ".join(
                f"{k} {ph[k]:g}"
                for k in (
                    "import_s",
                    "startup_s",
                    "open_nib_s",
                    "scan_s",
                    "scan_consolidate_s",
                    "delta_s",
                    "write_s",
                )
                if k in ph
            )
        )
        print("  " + ", ".join(f"{k} {ph[k]:g}" for k in keys))
    for scenario, ph in report["phases_cli"].items():
        if ph:
            print()
            print(f"{scenario}: pdsno discover (default options), medians, probe times from the scan's start")
            print("  " + ", ".join(f"{k} {v:g}" for k, v in ph.items()))
    for s in report["skipped"]:
        print(f"skipped: {s}")


# ---------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="one repetition, defaults cut at 20 s")
    p.add_argument("--json", action="store_true", help="machine-readable report on stdout")
    p.add_argument("--json-out", type=Path, default=None, help="also write the JSON report to this file")
    p.add_argument("--reps", type=int, default=None, help="repetitions per measurement (default 3)")
    p.add_argument("--only", choices=("24", "16"), default=None, help="one scenario")
    p.add_argument(
        "--default-cap",
        type=float,
        default=None,
        help="seconds allowed to arp-scan/nmap with their defaults on the /16 (60; 0 skips)",
    )
    p.add_argument("--budget", type=float, default=900.0, help="hard limit for the whole run, seconds")
    p.add_argument("--prefix", default=PREFIX, help=f"lab namespace prefix (default {PREFIX})")
    # inner side (run inside the LC namespace by the outer one)
    p.add_argument("--inner", choices=("pdsno",), help=argparse.SUPPRESS)
    p.add_argument("--subnet", action="append", help=argparse.SUPPRESS)
    p.add_argument("--nib", help=argparse.SUPPRESS)
    p.add_argument("--community", action="append", help=argparse.SUPPRESS)
    p.add_argument("--snmpv3", action="append", default=[], help=argparse.SUPPRESS)
    p.add_argument("--no-snmp", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.reps is None:
        args.reps = 1 if args.quick else 3
    if args.default_cap is None:
        args.default_cap = 20.0 if args.quick else 60.0
    return args


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    args = parse_args(argv)
    args.started = started
    if args.inner:
        return inner_main(args)
    if os.geteuid() != 0:
        print("bench: needs root (the lab's namespaces, raw sockets)", file=sys.stderr)
        return 2
    if any(args.prefix.startswith(f) for f in FOREIGN_PREFIXES) or not args.prefix.endswith("-"):
        print(
            f"bench: prefix {args.prefix!r} may be another lab's; use your own, e.g. {PREFIX}",
            file=sys.stderr,
        )
        return 2
    for tool in ("nmap", "arp-scan", "snmpget", "ip"):
        if shutil.which(tool, path=CLEAN_PATH) is None:
            print(f"bench: {tool} not found (scripts/bootstrap.sh installs the lab's tools)", file=sys.stderr)
            return 2

    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    budget = Budget(args.budget)
    began = time.monotonic()
    report: dict[str, Any] = {
        "command": " ".join(
            ["sudo .venv/bin/python bench/discovery.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "machine": machine_facts(),
        "settings": {
            "reps": args.reps,
            "default_cap_s": args.default_cap,
            "budget_s": args.budget,
            "prefix": args.prefix,
        },
    }
    # warm the page cache for what the timed runs import (no network)
    subprocess.run(
        [
            PYTHON,
            "-c",
            "import pdsno.cli.discover, pdsno.inventory.delta, pdsno.nib.sqlite, pysnmp.hlapi.v3arch.asyncio",
        ],
        check=False,
        timeout=60,
    )
    truths: dict[str, Truth] = {}
    workdir = Path(tempfile.mkdtemp(prefix="pdsnob-bench-"))
    bench = Bench(args, workdir, budget)
    scenarios = [("bench-24", bench.scenario_24), ("bench-16", bench.scenario_16)]
    if args.only:
        scenarios = [s for s in scenarios if s[0] == f"bench-{args.only}"]
    lab_seconds: dict[str, float] = {}
    try:
        for topology, body in scenarios:
            if budget.left() < 30:
                bench.skipped.append(f"{topology}: time budget spent")
                continue
            t0 = time.monotonic()
            with lab_up(topology, workdir / f"lab-{topology}", args.prefix) as lab:
                lab_seconds[topology] = round(time.monotonic() - t0, 2)
                truths[topology] = load_truth(lab)
                print(f"bench: {topology} up in {lab_seconds[topology]} s; measuring", file=sys.stderr)
                body(lab)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report["machine"]["loadavg_end"] = list(os.getloadavg())
    report["lab_up_s"] = lab_seconds
    report.update(summarize(bench, truths))
    report["phases"] = {s: phases(bench, s) for s in truths}
    report["phases_cli"] = {
        "bench-24": cli_phases(bench, "bench-24", "pdsno-cli-default"),
        "bench-16": cli_phases(bench, "bench-16", "pdsno-cli"),
    }
    report["phases_community_only"] = {"bench-24": phases(bench, "bench-24", "pdsno-pipeline-v2c")}
    report["total_s"] = round(time.monotonic() - began, 1)
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    if args.json:
        json.dump(report, sys.stdout, indent=2, default=str)
        print()
    else:
        report["_measures"] = list(bench.measures.values())
        print_table(report, truths)
        print(f"\ntotal {report['total_s']} s")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as exc:
        print(f"bench: interrupted ({exc or 'Ctrl-C'}); the lab was torn down", file=sys.stderr)
        sys.exit(130)
