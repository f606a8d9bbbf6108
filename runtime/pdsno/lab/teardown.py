"""Taking a lab down, whole or one namespace at a time. Processes are ended by PID only: those in the
lab's namespaces, and those whose command line names the state directory. The NIB host's PostgreSQL
cluster, whose files Debian keeps outside the state directory, is shut down by its postmaster's PID (when
that runs in the lab) and dropped."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

from pdsno.lab.errors import LabError
from pdsno.lab.routes import remove_routes, route_metric
from pdsno.lab.state import OUR_FILES, LabState, nib_cluster_name, own_netns_re
from pdsno.lab.system import (
    CLEAN_PATH,
    ip_batch,
    kill_pids,
    list_netns,
    pids_in_netns,
    pids_of_lab,
    process_alive,
    run,
    supervisors_of,
)

PG_CONF_ROOT = Path("/etc/postgresql")
PG_DATA_ROOT = Path("/var/lib/postgresql")
PG_LOG_DIR = Path("/var/log/postgresql")
PG_STOP_TIMEOUT_S = 15.0
_DATA_DIRECTORY_RE = re.compile(r"^\s*data_directory\s*=\s*'([^']+)'", re.MULTILINE)


def teardown(state_dir: Path, prefix: str, state: LabState | None) -> dict[str, Any]:
    """Kill, delete, unroute, forget: everything of this prefix (and of the state, if there is one)."""
    own = own_netns_re(prefix)
    present = list_netns()
    namespaces = sorted(
        {ns for ns in present if own.fullmatch(ns)}
        | ({ns for ns in state.namespaces() if ns in present} if state else set())
    )
    killed: set[int] = set()
    cluster = nib_cluster_name(prefix)
    if nib_cluster_versions(cluster):
        inside = {pid for found in pids_in_netns(namespaces).values() for pid in found}
        # runsv would start the server again the moment it stops
        killed |= set(kill_pids(supervisors_of(inside)))
        killed |= set(stop_nib_cluster(cluster, inside))
    for _ in range(5):  # a launcher interrupted mid-way may still be handing out processes
        pids = {pid for found in pids_in_netns(namespaces).values() for pid in found}
        pids |= set(pids_of_lab(state_dir))
        if not pids:
            break
        supervisors = supervisors_of(pids)
        killed |= set(kill_pids(supervisors))
        killed |= set(kill_pids(pids - supervisors))
    ip_batch([f"netns del {ns}" for ns in namespaces], force=True)
    left = [ns for ns in namespaces if ns in list_netns()]
    if left:
        raise LabError(f"could not delete namespaces {', '.join(left[:5])}")
    dropped = drop_nib_cluster(cluster)
    routes = remove_routes(state.route_metric if state else route_metric(prefix))
    for name in OUR_FILES:
        path = state_dir / name
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif name != ".lock":
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    return {
        "processes": len(killed),
        "namespaces": len(namespaces),
        "routes": len(routes),
        "nib_clusters": len(dropped),
        "state_dir": str(state_dir),
    }


def nib_cluster_versions(cluster: str) -> list[str]:
    """The PostgreSQL major versions that hold a cluster of this name (configuration or data)."""
    found = {p.parent.name for root in (PG_CONF_ROOT, PG_DATA_ROOT) for p in root.glob(f"*/{cluster}")}
    return sorted(v for v in found if v.replace(".", "").isdigit())


def _data_dir(version: str, cluster: str) -> Path:
    try:
        conf = (PG_CONF_ROOT / version / cluster / "postgresql.conf").read_text()
    except OSError:
        conf = ""
    found = _DATA_DIRECTORY_RE.search(conf)
    return Path(found.group(1)) if found else PG_DATA_ROOT / version / cluster


def _postmaster_pid(data_dir: Path) -> int | None:
    try:
        first = (data_dir / "postmaster.pid").read_text().split("\n", 1)[0].strip()
    except OSError:
        return None
    return int(first) if first.isdigit() else None


def stop_nib_cluster(cluster: str, ours: Collection[int]) -> list[int]:
    """Shut the cluster down (SIGINT: PostgreSQL's fast shutdown) if its postmaster is one of ``ours``;
    one running anywhere else was not started by the lab and is left alone."""
    stopped = []
    for version in nib_cluster_versions(cluster):
        pid = _postmaster_pid(_data_dir(version, cluster))
        if pid is None or pid not in ours or not process_alive(pid):
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + PG_STOP_TIMEOUT_S
        while process_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        stopped.append(pid)
    return stopped


def drop_nib_cluster(cluster: str) -> list[str]:
    """``pg_dropcluster``, then whatever it leaves (files the nib role added to the configuration
    directory, a half-made cluster): the versions dropped. A cluster still running is refused."""
    dropped = []
    for version in nib_cluster_versions(cluster):
        data_dir = _data_dir(version, cluster)
        pid = _postmaster_pid(data_dir)
        if pid is not None and process_alive(pid):
            raise LabError(
                f"PostgreSQL cluster {version}/{cluster} still runs (PID {pid}, not in the lab's namespaces); "
                f"stop it (pg_ctlcluster {version} {cluster} stop) and run `pdsno lab down` again"
            )
        conf_dir = PG_CONF_ROOT / version / cluster
        tool = shutil.which("pg_dropcluster", path=CLEAN_PATH)
        if (conf_dir / "postgresql.conf").is_file() and tool is not None:
            run([tool, version, cluster], check=False, timeout=60)
        # a data directory moved elsewhere is not ours to remove by its configured path alone
        owned = [data_dir] if data_dir.is_relative_to(PG_DATA_ROOT) else []
        for path in (conf_dir, PG_DATA_ROOT / version / cluster, *owned):
            shutil.rmtree(path, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            (PG_LOG_DIR / f"postgresql-{version}-{cluster}.log").unlink()
        dropped.append(version)
    return dropped


def remove_namespace(netns: str) -> None:
    """End what runs in one namespace of the lab (a device's) and delete it."""
    kill_pids(pids_in_netns([netns]).get(netns, []))
    ip_batch([f"netns del {netns}"], force=True)
