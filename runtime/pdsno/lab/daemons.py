"""Starting the lab's daemons (``services`` says what they run with) and waiting until they serve;
stopping a device's snmpd. Their PIDs are recorded before the wait, so a lab that fails to come up
still knows what to end."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from pdsno.lab import outputs, services
from pdsno.lab.errors import LabError
from pdsno.lab.state import DeviceState, LabState, known_hosts_path, ssh_key_path
from pdsno.lab.system import (
    kill_pids,
    pids_in_netns,
    process_alive,
    spawn_detached,
    tcp_listening,
    udp_listening,
)
from pdsno.security.keys import write_file_atomically

DAEMON_TIMEOUT = 30.0


def start_snmpds(state_dir: Path, state: LabState, devices: list[DeviceState]) -> None:
    if not devices or not any(d.device.runs_snmpd for d in devices):
        return
    commands = []
    for d in devices:
        base = state_dir / "devices" / d.device.name
        persist = base / "persist"
        shutil.rmtree(persist, ignore_errors=True)
        persist.mkdir(parents=True, mode=0o700)
        conf = base / "snmpd.conf"
        _write_private(conf, services.snmpd_conf(d.device, persist))
        log = base / "snmpd.log"
        commands.append(
            (services.snmpd_command(d.device, d.netns, conf, log), services.snmpd_env(persist), log)
        )
    pids = spawn_detached(commands, owner=state_dir)
    for d, pid in zip(devices, pids, strict=True):
        d.pid = pid
    outputs.save(state_dir, state)
    _wait_ready(
        [
            (d.device.name, pid, "snmpd", lambda p: udp_listening(p, services.SNMP_PORT), c[2])
            for d, pid, c in zip(devices, pids, commands, strict=True)
        ]
    )


def start_sshds(state_dir: Path, state: LabState) -> None:
    client_key = ssh_key_path(state_dir)
    authorized_keys = client_key.parent / "authorized_keys"
    client_pub = services.new_ssh_key(client_key, f"pdsno-lab-ansible@{state.prefix}")
    write_file_atomically(authorized_keys, (client_pub + "\n").encode(), mode=0o600, dir_mode=0o700)
    known = []
    commands = []
    for h in state.hosts.values():
        base = state_dir / "hosts" / h.host.name
        host_key = base / "ssh_host_ed25519_key"
        pub = services.new_ssh_key(host_key, f"root@{h.host.name}")
        known.append(f"{h.host.mgmt_ip} {' '.join(pub.split()[:2])}")
        conf = base / "sshd_config"
        write_file_atomically(
            conf,
            services.sshd_conf(h.host, host_key, authorized_keys).encode(),
            mode=0o600,
            dir_mode=0o700,
        )
        log = base / "sshd.log"
        commands.append((services.sshd_command(h.host, h.netns, conf), services.sshd_env(), log))
    write_file_atomically(
        known_hosts_path(state_dir), ("\n".join(known) + "\n").encode(), mode=0o644, dir_mode=0o700
    )
    pids = spawn_detached(commands, owner=state_dir)
    for h, pid in zip(state.hosts.values(), pids, strict=True):
        h.pid = pid
    outputs.save(state_dir, state)
    _wait_ready(
        [
            (h.host.name, pid, "sshd", lambda p: tcp_listening(p, services.SSH_PORT), c[2])
            for h, pid, c in zip(state.hosts.values(), pids, commands, strict=True)
        ]
    )


def stop_snmpd(device: DeviceState) -> None:
    if device.pid is not None:
        # only a PID still inside the device's namespace is ours to end
        ours = pids_in_netns([device.netns]).get(device.netns, [])
        kill_pids([pid for pid in ours if pid == device.pid])
    device.pid = None


_Ready = tuple[str, int, str, Callable[[int], bool], Path]


def _wait_ready(items: list[_Ready], timeout: float = DAEMON_TIMEOUT) -> None:
    """Wait until every ``(name, pid, comm, ready(pid), log)`` daemon is ``comm`` and ready; a daemon that
    died (or did not get ready within ``timeout``) is an error quoting its log."""
    pending = list(items)
    deadline = time.monotonic() + timeout + 0.05 * len(items)
    while pending:
        still = []
        for name, pid, comm, ready, log in pending:
            if not process_alive(pid):
                raise LabError(f"{comm} of {name} exited at start: {_log_tail(log)}")
            if _comm(pid) == comm and ready(pid):
                continue
            still.append((name, pid, comm, ready, log))
        pending = still
        if not pending:
            return
        if time.monotonic() > deadline:
            names = ", ".join(p[0] for p in pending[:5])
            raise LabError(
                f"{len(pending)} daemon(s) not ready after {timeout:g} s ({names}): {_log_tail(pending[0][4])}"
            )
        time.sleep(0.02)


def _write_private(path: Path, text: str) -> None:
    """A throwaway configuration file (rewritten on every start): 0600, no fsync."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(text)


def _comm(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def _log_tail(log: Path) -> str:
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no log)"
    return " | ".join(lines[-3:]) or "(empty log)"
