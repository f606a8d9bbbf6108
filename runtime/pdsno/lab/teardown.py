"""Taking a lab down, whole or one namespace at a time. Processes are ended by PID only: those in the
lab's namespaces, and those whose command line names the state directory."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Any

from pdsno.lab.errors import LabError
from pdsno.lab.routes import remove_routes, route_metric
from pdsno.lab.state import OUR_FILES, LabState, own_netns_re
from pdsno.lab.system import ip_batch, kill_pids, list_netns, pids_in_netns, pids_of_lab, supervisors_of


def teardown(state_dir: Path, prefix: str, state: LabState | None) -> dict[str, Any]:
    """Kill, delete, unroute, forget: everything of this prefix (and of the state, if there is one)."""
    own = own_netns_re(prefix)
    present = list_netns()
    namespaces = sorted(
        {ns for ns in present if own.fullmatch(ns)}
        | ({ns for ns in state.namespaces() if ns in present} if state else set())
    )
    killed: set[int] = set()
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
        "state_dir": str(state_dir),
    }


def remove_namespace(netns: str) -> None:
    """End what runs in one namespace of the lab (a device's) and delete it."""
    kill_pids(pids_in_netns([netns]).get(netns, []))
    ip_batch([f"netns del {netns}"], force=True)
