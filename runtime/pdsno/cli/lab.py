"""``pdsno lab``: build, inspect and tear down the namespace lab (docs/lab.md)."""

from __future__ import annotations

import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import click

from pdsno.cli.output import emit_json, json_option
from pdsno.lab import DEFAULT_PREFIX, Lab, default_state_dir
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
    for host in lab.hosts():
        served = ", ".join(f"{s.cidr} ({s.interface} {s.ip})" for s in host.subnets)
        click.echo(
            f"  {host.role:<6} {host.name:<12} {lab.netns(host.name):<22} {host.mgmt_ip}"
            + (f"  {served}" if served else "")
        )
    click.echo(f"inventory     {lab.inventory_path}")
    click.echo(f"ground truth  {lab.ground_truth_path}")
    click.echo(
        f"try           ip netns exec {lab.netns(lab.hosts('lc')[0].name)} ping -c1 {devices[0].addresses[0]}"
        if devices
        else ""
    )


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
    for name, host in hosts.items():
        alive = "sshd running" if host["sshd_alive"] else "sshd DEAD"
        click.echo(
            f"host         {host['role']:<6} {name:<12} {host['netns']:<22} {host['mgmt_ip']:<15} {alive}"
        )
