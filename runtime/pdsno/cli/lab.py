"""``pdsno lab``: build, inspect and tear down the namespace lab (docs/lab.md)."""

from __future__ import annotations

import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from pdsno.cli import render
from pdsno.cli.output import emit_json, json_option
from pdsno.ipsort import ip_key
from pdsno.lab import DEFAULT_PREFIX, Lab, default_state_dir, load_topology
from pdsno.lab.state import own_netns_re
from pdsno.lab.system import list_netns
from pdsno.lab.topology import BUILTIN_TOPOLOGIES

state_dir_option = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="PDSNO_LAB_DIR",
    default=None,
    help="Where the lab keeps its state, keys, inventory and ground truth "
    "(default: .lab at the source tree's root, or $PDSNO_LAB_DIR).",
)


_PREFIX_HELP = "Name prefix of the lab's namespaces, bridges and veths (at most 9 characters)."
new_prefix_option = click.option("--prefix", default=DEFAULT_PREFIX, show_default=True, help=_PREFIX_HELP)
prefix_option = click.option(
    "--prefix", default=None, help=_PREFIX_HELP + " Default: the lab's own, else " + DEFAULT_PREFIX
)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@click.group("lab")
def lab_group() -> None:
    """A network of Linux namespaces to run PDSNO against: devices that answer ARP, ICMP and SNMP,
    controller hosts reachable over SSH, a management network. Needs root."""


@lab_group.command("up")
@click.option(
    "--topology",
    "topology",
    default="default",
    show_default=True,
    help=f"A topology file, or a built-in one: {', '.join(BUILTIN_TOPOLOGIES)}.",
)
@state_dir_option
@new_prefix_option
@click.option(
    "--parallel", default=64, show_default=True, type=click.IntRange(1, 512), help="snmpd started at once."
)
@json_option
def up(topology: str, state_dir: Path | None, prefix: str, parallel: int, as_json: bool) -> None:
    """Build the lab. Refuses if a lab is already up in the state directory (run `lab down` first).

    Interrupted (Ctrl-C, SIGTERM) or failed, it removes whatever it had built.
    """
    started = time.monotonic()
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with render.status(f"building lab {topology}", enabled=not as_json,
                           poll=_build_progress(topology, prefix)):  # fmt: skip
            lab = Lab.up(topology, state_dir, prefix=prefix, parallel=parallel)
    finally:
        signal.signal(signal.SIGTERM, previous)
    seconds = time.monotonic() - started
    devices = lab.devices()
    kinds = Counter(d.kind for d in devices)
    if as_json:
        emit_json(
            {
                "state_dir": str(lab.state_dir),
                "prefix": lab.prefix,
                "topology": lab.topology_name,
                "seconds": round(seconds, 3),
                "devices": dict(kinds),
                "hosts": [h.name for h in lab.hosts()],
                "inventory": str(lab.inventory_path),
                "ground_truth": str(lab.ground_truth_path),
            }
        )
        return
    click.echo(
        f"lab {lab.topology_name} up in {seconds:.1f} s: {len(devices)} devices ("
        + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        + f"), {len(lab.hosts())} controller hosts"
    )
    render.table(
        ("ROLE", "HOST", "NAMESPACE", "MGMT IP", "SERVES"),
        [(host.role, host.name, lab.netns(host.name), host.mgmt_ip,
          ", ".join(f"{s.cidr} ({s.interface} {s.ip})" for s in host.subnets))
         for host in lab.hosts()],
    )  # fmt: skip
    click.echo(f"inventory     {lab.inventory_path}")
    click.echo(f"ground truth  {lab.ground_truth_path}")
    lcs = lab.hosts("lc")
    near = [a for d in devices if lcs and d.lc == lcs[0].name for a in d.addresses]
    if near:
        click.echo(f"try           ip netns exec {lab.netns(lcs[0].name)} ping -c1 {min(near, key=ip_key)}")


def _build_progress(topology: str, prefix: str) -> Callable[[float], str]:
    """What the status line says while ``Lab.up`` builds: namespaces made so far (it reports nothing
    itself), then that the daemons are starting. The topology is read on the first call (a terminal's)."""
    own = own_netns_re(prefix)
    expected: list[int] = []

    def line(seconds: float) -> str:
        if not expected:
            try:
                topo = load_topology(topology)
                expected.append(len(topo.devices()) + len(topo.hosts()) + 2)  # + switch and management
            except Exception:  # Lab.up reports a bad topology itself
                expected.append(0)
        made = sum(1 for ns in list_netns() if own.fullmatch(ns))
        if expected[0] and made >= expected[0]:
            return f"building lab {topology}: {made} namespaces, starting sshd and snmpd [{seconds:.0f}s]"
        return f"building lab {topology}: {made}/{expected[0] or '?'} namespaces [{seconds:.0f}s]"

    return line


@lab_group.command("down")
@state_dir_option
@prefix_option
def down(state_dir: Path | None, prefix: str | None) -> None:
    """Stop every process of the lab, delete its namespaces and route, remove its state (idempotent).

    Without state (a crashed `up`), --prefix (default pdsno-) finds the namespaces and route by name.
    """
    report = Lab.down(state_dir, prefix=prefix)
    if not (report["namespaces"] or report["routes"] or report["processes"]):
        click.echo(f"no lab in {report['state_dir']}; nothing to do")
        return
    click.echo(
        f"lab down: {report['processes']} processes stopped, {report['namespaces']} namespaces and "
        f"{report['routes']} route(s) removed"
    )


@lab_group.command("status")
@state_dir_option
@prefix_option
@json_option
def status(state_dir: Path | None, prefix: str | None, as_json: bool) -> None:
    """Show whether the lab is up: namespaces, snmpd and sshd processes, the black-hole route.

    Exits 0 when the lab is up and healthy, 3 when it is down, 1 when it is degraded or half built.
    """
    data = Lab.status(state_dir, prefix=prefix)
    if as_json:
        emit_json(data)
    else:
        _print_status(data)
    code = {"up": 0, "down": 3}.get(str(data["state"]), 1)
    if code:
        sys.exit(code)


def _print_status(data: dict[str, Any]) -> None:
    where = data["state_dir"] if data.get("state_dir") else default_state_dir()
    if data["state"] in ("down", "leftovers"):
        click.echo(f"lab: {data['state']} ({where}, prefix {data['prefix']})")
        leftovers = data.get("leftover_namespaces")
        if leftovers:
            click.echo(
                f"leftover namespaces: {', '.join(map(str, leftovers))}; run `pdsno lab down --prefix {data['prefix']}`"
            )
        if data.get("route"):
            click.echo("the prefix's black-hole route is still installed; `pdsno lab down` removes it")
        return
    ns = data["namespaces"]
    devices = data["devices"]
    hosts = data["hosts"]
    click.echo(
        f"lab: {data['state']}  topology {data['topology']}, prefix {data['prefix']}, block {data['block']} ({where})"
    )
    click.echo(f"route        blackhole {data['block']}: {'installed' if data['route'] else 'MISSING'}")
    click.echo(
        f"namespaces   {ns['present']}/{ns['expected']} present"
        + (f"; missing {', '.join(ns['missing'][:5])}" if ns["missing"] else "")
    )
    by_kind = ", ".join(f"{n} {k}" for k, n in sorted(devices["by_kind"].items()))
    stopped = devices["stopped"]
    click.echo(
        f"devices      {devices['total']} ({by_kind})"
        + (f"; stopped: {', '.join(stopped)}" if stopped else "")
    )
    click.echo(
        f"snmpd        {devices['snmpd_alive']}/{devices['snmpd_expected']} running"
        + (f"; dead: {', '.join(devices['snmpd_dead'][:5])}" if devices["snmpd_dead"] else "")
    )
    render.table(
        ("ROLE", "HOST", "NAMESPACE", "MGMT IP", "SSHD"),
        [(host["role"], name, host["netns"], host["mgmt_ip"], "running" if host["sshd_alive"] else "DEAD")
         for name, host in hosts.items()],
        title="hosts",
    )  # fmt: skip
