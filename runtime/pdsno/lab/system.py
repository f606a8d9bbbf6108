"""The few system calls the lab makes: run a command with a deadline, ``ip -batch``, find and end processes.

Processes are only ever signalled by PID, and only PIDs that sit in one of the lab's own network
namespaces (or whose command line names the lab's state directory) are chosen.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from pdsno.lab.errors import LabError

NETNS_DIR = Path("/run/netns")
CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def run(
    argv: Sequence[str],
    *,
    timeout: float = 30.0,
    input: str | None = None,
    check: bool = True,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv``; with ``check`` a non-zero exit or a timeout is a :class:`LabError` naming the command."""
    try:
        done = subprocess.run(
            list(argv),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=None if env is None else dict(env),
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        if not check:
            return subprocess.CompletedProcess(list(argv), 124, "", f"timed out after {timeout:g} s")
        raise LabError(f"{shlex.join(argv[:6])}: timed out after {timeout:g} s") from None
    except FileNotFoundError:
        if not check:
            return subprocess.CompletedProcess(list(argv), 127, "", f"{argv[0]}: not found")
        raise LabError(f"{argv[0]}: command not found (run scripts/bootstrap.sh)") from None
    if check and done.returncode != 0:
        detail = (done.stderr.strip() or done.stdout.strip()).splitlines()
        reason = detail[-1] if detail else "no output"
        raise LabError(f"{shlex.join(argv[:6])}: exit {done.returncode}: {reason}")
    return done


def ip_batch(
    lines: Sequence[str], *, netns: str | None = None, force: bool = False, timeout: float = 60.0
) -> None:
    """Run ``ip`` commands in one process (``ip [-n NETNS] -batch -``); the first failure stops it."""
    if not lines:
        return
    argv = ["ip"]
    if netns is not None:
        argv += ["-n", netns]
    if force:
        argv.append("-force")
    argv += ["-batch", "-"]
    done = run(argv, input="\n".join(lines) + "\n", timeout=timeout, check=False)
    if done.returncode != 0 and not force:
        where = f" in {netns}" if netns else ""
        detail = " ".join(done.stderr.split())
        raise LabError(f"ip -batch{where} failed: {detail[-300:] or f'exit {done.returncode}'}")


def list_netns() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def _ns_key(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _all_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def pids_in_netns(names: Iterable[str]) -> dict[str, list[int]]:
    """The processes inside each named namespace (what ``ip netns pids`` prints), in one scan of /proc."""
    keys: dict[tuple[int, int], str] = {}
    for name in names:
        key = _ns_key(str(NETNS_DIR / name))
        if key is not None:
            keys[key] = name
    found: dict[str, list[int]] = {name: [] for name in keys.values()}
    if not keys:
        return found
    me = os.getpid()
    for pid in _all_pids():
        if pid == me:
            continue
        key = _ns_key(f"/proc/{pid}/ns/net")
        if key is not None and key in keys:
            found[keys[key]].append(pid)
    return found


OWNER_ENV = "PDSNO_LAB_OWNER"
"""Set (to the lab's state directory) in the environment of every process the lab starts."""


def pids_of_lab(state_dir: Path) -> list[int]:
    """Live processes this lab started, whatever stage they are at (the launcher ``sh``, ``env``, ``ip``,
    ``unshare``, the daemon): their environment carries ``PDSNO_LAB_OWNER=<state_dir>``; an snmpd or
    sshd also counts if its command line names a file in ``state_dir`` (sshd rewrites its environment)."""
    marker = f"{OWNER_ENV}={state_dir}\0".encode()
    path = f"{state_dir}/".encode()
    out = []
    for pid in _all_pids():
        if pid == os.getpid() or not process_alive(pid):
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        state = process_state(pid)
        daemon = state is not None and state[0] in ("snmpd", "sshd") and path in cmdline
        if marker in environ or daemon:
            out.append(pid)
    return out


SUPERVISORS = frozenset({"runsvdir", "runsv"})
"""Process names of the supervisor deployed services run under in the lab (runit, roles/pdsno_service)."""


def supervisors_of(pids: Iterable[int]) -> set[int]:
    """Those of ``pids`` that are supervisors: ended before the rest, since a live one restarts its child."""
    return {pid for pid in pids if (state := process_state(pid)) is not None and state[0] in SUPERVISORS}


def process_state(pid: int) -> tuple[str, str] | None:
    """``(comm, state letter)`` of a process, or ``None`` if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    left, right = stat.find("("), stat.rfind(")")
    return stat[left + 1 : right], stat[right + 2 : right + 3]


def process_alive(pid: int) -> bool:
    """True for a running process; a zombie (dead, not yet reaped) counts as gone."""
    state = process_state(pid)
    return state is not None and state[1] not in ("Z", "X")


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def kill_pids(pids: Iterable[int], *, grace: float = 5.0) -> list[int]:
    """SIGTERM, then SIGKILL whatever still runs after ``grace`` seconds; returns the PIDs signalled."""
    targets = sorted({pid for pid in pids if pid > 1 and pid != os.getpid() and process_alive(pid)})
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        for pid in targets:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            for pid in targets:
                _reap(pid)
            if not any(process_alive(pid) for pid in targets):
                return targets
            time.sleep(0.02)
    still = [pid for pid in targets if process_alive(pid)]
    if still:
        raise LabError(f"processes {still} survived SIGKILL")
    return targets


def udp_listening(pid: int, port: int) -> bool:
    """True once the network namespace of ``pid`` has a UDP socket bound to ``port``."""
    return _listening(pid, "udp", port, None)


def tcp_listening(pid: int, port: int) -> bool:
    return _listening(pid, "tcp", port, "0A")


def _listening(pid: int, proto: str, port: int, state: str | None) -> bool:
    try:
        lines = Path(f"/proc/{pid}/net/{proto}").read_text().splitlines()[1:]
    except OSError:
        return False
    want = f":{port:04X}"
    for line in lines:
        fields = line.split()
        if len(fields) > 3 and fields[1].endswith(want) and (state is None or fields[3] == state):
            return True
    return False


def spawn_detached(
    commands: Sequence[tuple[Sequence[str], Mapping[str, str], Path]], *, owner: Path
) -> list[int]:
    """Start each ``(argv, env, log)`` in the background, detached from us; their PIDs in order.

    One ``sh`` starts them all (``cmd >>log 2>&1 </dev/null &; echo $!``) and exits: the daemons are
    reparented to init rather than being our children, so they outlive the ``pdsno lab up`` command and
    a test process never has to reap them. ``exec`` chains (``ip netns exec``, ``unshare``) keep the PID.
    Every process gets ``PDSNO_LAB_OWNER=<owner>`` (see :func:`pids_of_lab`).
    """
    mark = {OWNER_ENV: str(owner)}
    if not commands:
        return []
    script = ["exec </dev/null"]
    for argv, env, log in commands:
        assignments = ["env", "-i", *(f"{k}={v}" for k, v in {**env, **mark}.items())]
        script.append(f"{shlex.join([*assignments, *argv])} >>{shlex.quote(str(log))} 2>&1 &")
        script.append('echo "$!"')
    try:
        done = subprocess.run(
            ["sh", "-c", "\n".join(script)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            start_new_session=True,
            env={"PATH": CLEAN_PATH, **mark},
        )
    except subprocess.TimeoutExpired:
        raise LabError("starting daemons timed out after 60 s") from None
    pids = [int(line) for line in done.stdout.split()]
    if done.returncode != 0 or len(pids) != len(commands):
        raise LabError(f"starting daemons failed: {done.stderr.strip()[-300:] or 'no PIDs reported'}")
    return pids


_CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err) or errno.errorcode.get(err, err)}")


@contextlib.contextmanager
def thread_in_netns(path: Path) -> Iterator[None]:
    """The calling thread in the network namespace at ``path`` for the block, then back where it was."""
    here = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        there = os.open(path, os.O_RDONLY)
    except OSError:
        os.close(here)
        raise LabError(f"{path}: no such network namespace") from None
    try:
        _setns(there)
        try:
            yield
        finally:
            _setns(here)
    finally:
        os.close(there)
        os.close(here)
