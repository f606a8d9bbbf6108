#!/usr/bin/env bash
# The main job as far as the project goes today: build the demo lab (network namespaces with devices
# that answer ARP, ICMP and SNMP), discover it from each local controller host, and compare what was
# found with the lab's ground truth. Then the NIB part: a Global controller's NIB with a verified audit
# log. Everything is torn down at the end (the NIB stays in .demo/). Needs root (namespaces).
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/bootstrap.sh
export PATH="$ROOT/.venv/bin:$PATH"

DEMO="$ROOT/.demo"
LAB="$DEMO/lab"
mkdir -p "$DEMO"
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

cleanup() { pdsno lab down --state-dir "$LAB" >/dev/null 2>&1 || true; }
trap cleanup EXIT
cleanup

step pdsno lab up --state-dir "$LAB"
python - "$LAB" <<'PY'
import ipaddress, json, subprocess, sys
from pathlib import Path

lab = Path(sys.argv[1])
truth = json.loads((lab / "ground_truth.json").read_text())
found: dict[str, dict] = {}
for host in (h for h in truth["controllers"] if h["role"] == "lc"):
    argv = ["ip", "netns", "exec", host["netns"], "pdsno", "discover", "--json", "--community", "public",
            "--community", "facilities", "--snmpv3", "pdsno-ro:lab-auth-b1:lab-priv-b1"]
    for subnet in host["subnets"]:
        argv += ["--subnet", subnet["cidr"]]
    print(f"\n$ {' '.join(argv[4:])}    (inside {host['name']})")
    result = json.loads(subprocess.run(argv, check=True, capture_output=True, text=True).stdout)
    for device in result["devices"]:
        found[device["mac_address"]] = device
    print(f"  {len(result['devices'])} devices in {result['duration_s']:.2f} s")

print(f"\n{'device':<14} {'addresses':<40} {'sysName':<16} {'vendor':<12} {'type':<8} ok")
right = 0
for want in sorted(truth["devices"], key=lambda d: ipaddress.ip_address(d["addresses"][0]["ip"])):
    got = found.get(want["mac"], {})
    ok = (sorted(a["ip"] for a in want["addresses"]) == sorted(got.get("addresses", []))
          and got.get("hostname") == want["sysName"] and got.get("vendor") == want["vendor"])
    right += ok
    addresses = ", ".join(got.get("addresses", [])) or "-"
    print(f"{want['name']:<14} {addresses:<40} {got.get('hostname') or '-':<16} {got.get('vendor') or '-':<12} "
          f"{got.get('device_type', '-'):<8} {'yes' if ok else 'NO'}")
extra = set(found) - {d["mac"] for d in truth["devices"]}
print(f"\n{right}/{len(truth['devices'])} devices exactly as in the ground truth, {len(extra)} extra")
sys.exit(0 if right == len(truth["devices"]) and not extra else 1)
PY

CONFIG="$DEMO/gc.yml"
cat >"$CONFIG" <<YAML
# Demo Global controller: SQLite NIB under .demo/gc, plain transport (nothing listens in this demo).
controller: {id: global_cntl_1, role: global, data_dir: $DEMO/gc}
nib: {backend: sqlite}
rest: {tls: {insecure: true}}
mqtt: {tls: {insecure: true}}
YAML
step pdsno nib init --config "$CONFIG"
step pdsno audit verify --config "$CONFIG"
step pdsno lab down --state-dir "$LAB"
