#!/usr/bin/env bash
# The main job, as far as the project goes today: bring up a Global controller's NIB from nothing,
# record its first audit events, verify the chain and show what the NIB holds.
# Everything lands in .demo/ (delete it, or run `make clean`, to start over). Safe to run again.
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/bootstrap.sh
export PATH="$ROOT/.venv/bin:$PATH"

DEMO="$ROOT/.demo"
mkdir -p "$DEMO"
CONFIG="$DEMO/gc.yml"
cat >"$CONFIG" <<YAML
# Demo Global controller: SQLite NIB under .demo/gc, plain transport (nothing listens yet).
controller:
  id: global_cntl_1
  role: global
  data_dir: $DEMO/gc
nib:
  backend: sqlite
rest:
  tls: {insecure: true}
mqtt:
  tls: {insecure: true}
YAML

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
step pdsno nib init --config "$CONFIG"
step pdsno nib stats --config "$CONFIG"
step pdsno audit verify --config "$CONFIG"
step pdsno audit tail --config "$CONFIG" -n 5
