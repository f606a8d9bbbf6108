#!/usr/bin/env bash
# Make a Debian 12 machine ready to build and test PDSNO.
#
#   * installs the Debian packages listed in APT_PACKAGES (only the missing ones)
#   * creates the virtualenv .venv at the repository root and runs `pip install -e '.[dev]'`
#
# Idempotent: a second run does no apt or pip work unless something changed (the venv is
# reinstalled only when the sha256 of pyproject.toml differs from the stamp in .venv).
# Safe in CI (CI=true, stdin not a terminal): nothing here ever prompts.
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
STAMP="$VENV/.pdsno-bootstrap-stamp"

log() { printf 'bootstrap: %s\n' "$*" >&2; }
die() { printf 'bootstrap: ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# Debian packages.
# >>> Later issues: add packages here (e.g. mosquitto, snmpd, iproute2). One name per line. <<<
# ---------------------------------------------------------------------------------------------
APT_PACKAGES=(
    postgresql-15   # throwaway test servers; binaries in /usr/lib/postgresql/15/bin
    python3-venv
    python3-dev
    gcc
    sqlite3
    openssl
    git
    make
    mosquitto          # MQTT broker; tests start their own on 127.0.0.1 (never the packaged service)
    mosquitto-clients  # mosquitto_sub/mosquitto_pub for tests and operators
    # `pdsno lab` (network namespaces): its daemons, and the tools that probe it from inside
    iproute2           # ip netns / link / route
    procps             # sysctl (ARP-only devices ignore ICMP echo)
    snmpd              # one net-snmp agent per simulated SNMP device
    snmp               # snmpget / snmpwalk (net-snmp tools)
    openssh-server     # sshd per controller host
    runit              # runsvdir/runsv: restart deployed services where systemd does not run (the lab)
    openssh-client     # ssh (Ansible's connection)
    netcat-openbsd     # nc: ssh's ProxyCommand into the management namespace
    iputils-ping       # ping
    iputils-arping     # arping
    arp-scan           # ARP sweeps in tests and for operators
    nmap               # host discovery scans
    ieee-data          # IEEE OUI registry (/usr/share/ieee-data/oui.csv): vendors of devices without SNMP
    chromium           # the dashboard's browser tests (Playwright drives it; its own browser download is not used)
    libnss3-tools      # certutil: those tests' Chromium trusts the test CA
)

apt_missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    status="$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)"
    if [[ "$status" != "installed" ]]; then
        apt_missing+=("$pkg")
    fi
done

if ((${#apt_missing[@]})); then
    log "installing apt packages: ${apt_missing[*]}"
    SUDO=()
    if [[ "$(id -u)" -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "not root and sudo is missing; install: ${apt_missing[*]}"
        SUDO=(sudo -n)
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${apt_missing[@]}" </dev/null
else
    log "apt packages: all present"
fi

[[ -x /usr/lib/postgresql/15/bin/initdb ]] || die "/usr/lib/postgresql/15/bin/initdb missing after install"

# ---------------------------------------------------------------------------------------------
# Virtualenv.
# ---------------------------------------------------------------------------------------------
want_hash="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"

venv_ok() {
    [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null
}

if venv_ok && [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want_hash" ]]; then
    log "venv: up to date ($VENV)"
    exit 0
fi

if ! venv_ok; then
    if command -v python3.11 >/dev/null 2>&1; then
        PY=python3.11
    else
        PY=python3
    fi
    "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
        || die "$PY is $("$PY" -V 2>&1), need Python 3.11"
    log "venv: creating $VENV with $(command -v "$PY") ($("$PY" -V 2>&1))"
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
fi

rm -f "$STAMP"
log "venv: pip install -e '.[dev]' (pyproject.toml sha256 ${want_hash:0:12}; log in .venv/pip-install.log)"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
PIP_LOG="$VENV/pip-install.log"
if ! (
    cd "$ROOT"
    "$VENV/bin/python" -m pip install --upgrade pip
    "$VENV/bin/python" -m pip install -e '.[dev]'
) </dev/null >"$PIP_LOG" 2>&1; then
    tail -n 60 "$PIP_LOG" >&2
    die "pip install failed (full log: $PIP_LOG)"
fi
printf '%s\n' "$want_hash" >"$STAMP"
log "venv: ready"
