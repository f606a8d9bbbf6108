#!/usr/bin/env bash
# The main job: build the lab (network namespaces: devices that answer ARP, ICMP and SNMP, and
# controller hosts that run sshd), deploy the whole PDSNO hierarchy into it with Ansible over SSH
# (playbooks/deploy.yml: broker, the GC's PostgreSQL NIB server, global, regional and local controllers,
# TLS everywhere), check that the GC's devices and audit log are in PostgreSQL on nib-1
# (playbooks/lab_nib.yml, after the discovery), discover
# through the Global controller's API (playbooks/discover.yml, module pdsno.net.discover), list the
# devices per region beside the lab's ground truth, show that a second deploy changes nothing, and make
# a configuration change (playbooks/lab_changes.yml: sysLocation of one device through
# playbooks/change.yml, executed, read back with snmpget from its Local controller's namespace, rolled
# back, read back again; a MEDIUM change approved by a second operator (four-eyes), a HIGH one
# escalated to the GC and approved there; one through the ansible executor, a playbook the LC runs),
# then kill a controller and the broker with SIGKILL and see their supervisor (runit) start them again.
# The lab stays up at the end so you can explore it; the last lines say how. Needs root (namespaces).
#
#   ./scripts/demo.sh                     # DEMO_SECOND_DEPLOY=0 skips the second deploy;
#                                         # DEMO_PREFIX=pdsx- names the lab's namespaces (default pdsno-)
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/bootstrap.sh
export PATH="$ROOT/.venv/bin:$PATH"
export ANSIBLE_CONFIG="$ROOT/ansible.cfg" ANSIBLE_NOCOLOR=1 ANSIBLE_FORKS=16

DEMO="$ROOT/.demo"
LAB="$DEMO/lab"
PREFIX="${DEMO_PREFIX:-pdsno-}"
INVENTORY=(-i inventory/lab -i "$LAB/inventory.yml")
mkdir -p "$DEMO"
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
timed() {
    local started=$SECONDS
    "$@"
    printf '(%d s)\n' $((SECONDS - started))
}

# A previous demo's lab (and what was deployed into it) goes first.
pdsno lab down --state-dir "$LAB" --prefix "$PREFIX" >/dev/null 2>&1 || true
rm -rf "$LAB/deploy"

step pdsno lab up --state-dir "$LAB" --prefix "$PREFIX"
step timed ansible-playbook "${INVENTORY[@]}" playbooks/deploy.yml
step timed ansible-playbook "${INVENTORY[@]}" playbooks/discover.yml -e "pdsno_discover_save_to=$DEMO/discovered.json"

python - "$LAB" "$DEMO/discovered.json" <<'PY'
import ipaddress, json, sys
from pathlib import Path

import yaml

lab, found_file = Path(sys.argv[1]), Path(sys.argv[2])
truth = json.loads((lab / "ground_truth.json").read_text())
inventory = yaml.safe_load((lab / "inventory.yml").read_text())
lc_ids = {host: hv["pdsno_controller_id"]
          for host, hv in inventory["all"]["children"]["controllers"]["children"]["local"]["hosts"].items()}
found = {d["mac_address"]: d for d in json.loads(found_file.read_text())}

right = 0
for region in sorted({d["zone"] for d in truth["devices"]}):
    devices = sorted((d for d in truth["devices"] if d["zone"] == region),
                     key=lambda d: ipaddress.ip_address(d["addresses"][0]["ip"]))
    print(f"\nregion {region}: {len(devices)} devices in the lab")
    print(f"  {'device':<13} {'addresses':<38} {'sysName':<13} {'vendor':<9} {'type':<8} {'local controller':<20} ok")
    for want in devices:
        got = found.get(want["mac"], {})
        ok = (sorted(a["ip"] for a in want["addresses"]) == sorted(got.get("addresses", []))
              and got.get("hostname") == want["sysName"] and got.get("vendor") == want["vendor"]
              and got.get("region") == region and got.get("local_controller") == lc_ids[want["lc"]])
        right += ok
        print(f"  {want['name']:<13} {', '.join(sorted(got.get('addresses', []), key=ipaddress.ip_address)) or '-':<38} {got.get('hostname') or '-':<13} "
              f"{got.get('vendor') or '-':<9} {got.get('device_type') or '-':<8} {got.get('local_controller') or '-':<20} "
              f"{'yes' if ok else 'NO'}")
extra = set(found) - {d["mac"] for d in truth["devices"]}
print(f"\n{right}/{len(truth['devices'])} devices in the NIB exactly as in the lab's ground truth, {len(extra)} extra")
sys.exit(0 if right == len(truth["devices"]) and not extra else 1)
PY

# The GC's NIB lives on its own PostgreSQL host (nib-1): its database there holds what was just found.
step timed ansible-playbook "${INVENTORY[@]}" playbooks/lab_nib.yml | tee "$DEMO/nib.log" |
    grep -E '"msg"|^[(][0-9]+ s[)]$'

if [[ "${DEMO_SECOND_DEPLOY:-1}" != 0 ]]; then
    step timed ansible-playbook "${INVENTORY[@]}" playbooks/deploy.yml | tee "$DEMO/second-deploy.log" | sed -n '/PLAY RECAP/,$p'
    if grep -E 'changed=[1-9]' "$DEMO/second-deploy.log" >/dev/null; then
        echo "the second deploy changed something (a source file edited meanwhile is reinstalled):" >&2
        grep -E '^(TASK|RUNNING HANDLER) |^changed:' "$DEMO/second-deploy.log" | grep -B1 '^changed:' >&2
        exit 1
    fi
    echo "second deploy: changed=0 on every host"
fi

# The change's own lines (proposal, status, the values snmpget read) come last; the whole run is in
# changes.log.
step timed ansible-playbook "${INVENTORY[@]}" playbooks/lab_changes.yml | tee "$DEMO/changes.log" |
    sed -n -e '/Show the changes with the values snmpget read/,/^PLAY RECAP/{/^PLAY RECAP/!p}' -e '/^([0-9]* s)$/p'

# Supervision: a controller and the broker killed with SIGKILL are started again by runit, and the GC
# hears every controller's heartbeat afterwards.
step timed ansible-playbook "${INVENTORY[@]}" playbooks/lab_restart.yml | tee "$DEMO/restart.log" |
    grep -E '"msg"|^[(][0-9]+ s[)]$'

GC_IP="$(python -c 'import sys, yaml; inv = yaml.safe_load(open(sys.argv[1]))
print(next(iter(inv["all"]["children"]["controllers"]["children"]["global"]["hosts"].values()))["ansible_host"])' "$LAB/inventory.yml")"
GC_HOST="$(python -c 'import sys, yaml; inv = yaml.safe_load(open(sys.argv[1]))
print(next(iter(inv["all"]["children"]["controllers"]["children"]["global"]["hosts"])))' "$LAB/inventory.yml")"
CA="$LAB/deploy/$GC_HOST/data/tls/ca.crt"
NIB_DSN="$(python -c 'import sys, yaml
print(yaml.safe_load(open(sys.argv[1]))["nib"].get("dsn") or "(none: the GC keeps SQLite)")' "$LAB/deploy/$GC_HOST/etc/controller.yml")"
TOKEN="$LAB/deploy/secrets/nbi/ansible.token"
# The NIB as Ansible inventory (plugin pdsno.net.nib): the devices just discovered, grouped by region.
cat >"$DEMO/lab.pdsno.yml" <<EOF
plugin: pdsno.net.nib
url: https://$GC_IP:8443
ca_path: $CA
EOF
echo
echo "ansible-inventory -i $DEMO/lab.pdsno.yml --graph (from the lab's management namespace), by region:"
PDSNO_TOKEN="$(cat "$TOKEN")" ip netns exec "${PREFIX}mgmt" "$ROOT/.venv/bin/ansible-inventory" \
    -i "$DEMO/lab.pdsno.yml" --graph | awk '/[|]--@/ { show = /@region_/ } show'

cat <<EOF

The lab and the hierarchy are up.
  API (Global controller):  https://$GC_IP:8443/api/v1   (docs: /docs, schema: /openapi.json)
  dashboard:                https://$GC_IP:8443/ui/   (log in with an operator token; docs/ui.md)
    open it from the management namespace (where the lab's addresses are), with $CA imported as an authority:
        sudo ip netns exec ${PREFIX}mgmt chromium --user-data-dir=\$(mktemp -d) https://$GC_IP:8443/ui/
  reach it from the lab's management namespace ${PREFIX}mgmt, trusting the deployment CA $CA:
    sudo ip netns exec ${PREFIX}mgmt curl --cacert $CA \\
        -H "Authorization: Bearer \$(sudo cat $TOKEN)" https://$GC_IP:8443/api/v1/devices
  tokens: operator 'ansible' in $TOKEN, admin 'lab-admin' and approver 'lab-approver' beside it;
    another: sudo .venv/bin/pdsno operator add --config $LAB/deploy/$GC_HOST/etc/controller.yml --name NAME --role viewer
  discover again: sudo .venv/bin/ansible-playbook ${INVENTORY[*]} playbooks/discover.yml
  the GC's NIB (PostgreSQL on nib-1), as the GC reaches it (TLS, its passfile), from the GC's namespace:
    sudo ip netns exec ${PREFIX}c-$GC_HOST psql '$NIB_DSN' -c 'SELECT count(*) FROM devices'
  tear it all down (the NIB's cluster too): sudo .venv/bin/pdsno lab down --state-dir $LAB
EOF
