"""Change latency benchmark: propose -> executed through the whole hierarchy, beside a bare snmpset.

    sudo .venv/bin/python bench/changes.py [--reps N] [--json]

Builds the default lab with a GC, two RCs, three LCs and Mosquitto as real processes (TLS everywhere;
the same hierarchy the end-to-end tests use, prefix ``pdsnoc-``), waits for the first discovery, then
times from the operator's ``POST /api/v1/proposals`` until the GC reports ``EXECUTED``:

* LOW: a sysLocation SET on one device (the RC approves, the LC plans, sets, verifies and reports);
* HIGH: the same with ``suggested_tier=HIGH``, approved at once by a second operator (escalation to the
  GC, the GC's token, the LC's execution), so the time is the machinery's, not a human's.

The peer is net-snmp's ``snmpset`` of the same object, run in the LC's namespace: what a script that
skips every check would pay. The GC is polled every 20 ms. Everything runs inside the lab's namespaces
and is torn down at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.runtime.hierarchy import (
    World,
    devices,
    gc_api,
    operator_token,
    running_world,
    truth,
    wait_for,
    writable_lcs,
)

SYS_LOCATION = "1.3.6.1.2.1.1.6.0"
DEVICE = "acc-sw-a1-3"


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def one_change(world: World, tokens: dict[str, str], target: str, value: str, tier: str) -> float:
    body = {
        "executor": "snmp",
        "targets": [target],
        "payload": {"set": {SYS_LOCATION: value}},
        "suggested_tier": tier,
    }
    with gc_api(world, tokens["olga"]) as api, gc_api(world, tokens["alice"]) as approver:
        started = time.perf_counter()
        made = api.post("/api/v1/proposals", json=body)
        made.raise_for_status()
        proposal_id = made.json()["proposal_id"]
        if tier == "HIGH":
            approver.post(f"/api/v1/proposals/{proposal_id}/approve", json={}).raise_for_status()
        deadline = started + 60
        while (status := api.get(f"/api/v1/proposals/{proposal_id}").json()["status"]) not in {
            "EXECUTED", "FAILED", "ROLLED_BACK", "DEGRADED", "DENIED"
        }:  # fmt: skip
            if time.perf_counter() > deadline:
                raise SystemExit(f"{proposal_id} still {status} after 60 s")
            time.sleep(0.02)
        elapsed = time.perf_counter() - started
    if status != "EXECUTED":
        raise SystemExit(f"{proposal_id} ended {status}")
    return elapsed


def snmpset(world: World, value: str) -> float:
    device = world.lab.device(DEVICE)
    started = time.perf_counter()
    world.lab.exec_in(device.lc, ["snmpset", "-v2c", "-c", "private", "-t", "1", "-r", "1", device.addresses[0],
                                  SYS_LOCATION, "s", value], timeout=15)  # fmt: skip
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results: dict[str, list[float]] = {"LOW": [], "HIGH": [], "snmpset": []}
    with (
        tempfile.TemporaryDirectory(prefix="pdsno-bench-changes-") as root,
        running_world(Path(root), "pdsnoc-", writable_lcs) as world,
    ):
        wait_for(lambda: len(devices(world, "gc-1")) >= len(truth(world)), 120, "the first discovery")
        tokens = {"olga": operator_token(world, "olga", "operator"),
                  "alice": operator_token(world, "alice", "approver")}  # fmt: skip
        target = devices(world, "gc-1")[world.lab.device(DEVICE).mac].device_id
        for rep in range(args.reps):
            for tier in ("LOW", "HIGH"):
                results[tier].append(one_change(world, tokens, target, f"bench {tier} {rep}", tier))
            results["snmpset"].append(snmpset(world, f"bench snmpset {rep}"))
    summary = {
        name: {"median_s": statistics.median(v), "p95_s": p95(v), "n": len(v)} for name, v in results.items()
    }
    peer = summary["snmpset"]["median_s"]
    for name in ("LOW", "HIGH"):
        summary[name]["ratio_to_snmpset"] = summary[name]["median_s"] / peer
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"{'what':<10} {'median ms':>10} {'p95 ms':>10} {'x snmpset':>10}   (n={args.reps})")
    for name, row in summary.items():
        ratio = f"{row['ratio_to_snmpset']:.1f}" if "ratio_to_snmpset" in row else "1.0"
        print(f"{name:<10} {row['median_s'] * 1000:>10.0f} {row['p95_s'] * 1000:>10.0f} {ratio:>10}")


if __name__ == "__main__":
    main()
