"""What the lab writes for others beside its state: ``ground_truth.json``, what a perfect discovery of
the lab finds, and ``inventory.yml``, what ``playbooks/deploy.yml`` deploys the lab's controllers from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from pdsno.discovery.vendors import enterprise_number
from pdsno.lab import services
from pdsno.lab.state import (
    GROUND_TRUTH_FILE,
    INVENTORY_FILE,
    LabState,
    known_hosts_path,
    nib_cluster_name,
    ssh_key_path,
    write_state,
)
from pdsno.lab.topology import LabDevice
from pdsno.security.keys import write_file_atomically


def save(state_dir: Path, state: LabState) -> None:
    """Record the state; once the lab is up, every change to it also changes the ground truth."""
    write_state(state_dir, state)
    if state.status == "up":
        truth = json.dumps(ground_truth(state), indent=2) + "\n"
        write_file_atomically(state_dir / GROUND_TRUTH_FILE, truth.encode(), mode=0o644, dir_mode=0o700)


def ground_truth(state: LabState) -> dict[str, Any]:
    devices = []
    for d in state.devices.values():
        dev = d.device
        snmp: dict[str, Any] | None = None
        if dev.kind == "snmp":
            snmp = {"version": "2c", "community": dev.community, "write_community": dev.write_community}
        elif dev.snmpv3 is not None:
            snmp = {"version": "3", "level": "authPriv", **dev.snmpv3.model_dump()}
        if snmp is not None:
            snmp["writable"] = dev.writable
        devices.append(
            {
                "name": dev.name,
                "zone": dev.zone,
                "subnet": dev.subnet,
                "lc": dev.lc,
                "kind": dev.kind,
                "up": d.up,
                "mac": dev.mac,
                "addresses": [
                    {"ip": ip, "mac": dev.mac, "interface": dev.uplink.name} for ip in dev.addresses
                ],
                "interfaces": [{"name": i.name, "mac": i.mac} for i in dev.interfaces],
                "sysName": dev.sysName,
                "sysDescr": dev.sysDescr,
                "sysObjectID": dev.sysObjectID,
                "sysServices": dev.sysServices,
                "sysContact": dev.sysContact,
                "sysLocation": dev.sysLocation,
                "enterprise": enterprise_number(dev.sysObjectID) if dev.sysObjectID else None,
                "vendor": dev.vendor,
                "snmp": snmp,
            }
        )
    hosts = [
        {
            **h.host.model_dump(),
            "netns": h.netns,
            "macs": h.macs,
        }
        for h in state.hosts.values()
    ]
    return {
        "topology": state.topology,
        "prefix": state.block,
        "management": state.management,
        "operator_ip": state.operator_ip,
        "subnets": {c: {"zone": s.zone, "lc": s.lc} for c, s in state.subnets.items()},
        "devices": devices,
        "controllers": hosts,
    }


def write_inventory(state_dir: Path, state: LabState) -> None:
    """The inventory ``playbooks/deploy.yml`` deploys the lab from (with ``inventory/lab``'s group vars):
    groups ``global``, ``regional``, ``local`` (under ``controllers``), ``broker`` and ``nib``; each
    controller's id, region and subnets; each LC the SNMP credentials its subnets' devices answer to.
    With a ``nib`` host the GC keeps its NIB there (``controller_nib_backend: postgresql``), in the
    lab's own cluster (``nib_postgresql_cluster``), which ``pdsno lab down`` drops again."""
    groups: dict[str, dict[str, Any]] = {"global": {}, "regional": {}, "local": {}, "broker": {}, "nib": {}}
    group_of = {"gc": "global", "rc": "regional", "lc": "local", "broker": "broker", "nib": "nib"}
    servers = {"broker", "nib"}
    has_nib = any(h.host.role == "nib" for h in state.hosts.values())
    serial: dict[tuple[str, str | None], int] = {}
    for h in sorted(state.hosts.values(), key=lambda h: h.host.name):
        group = group_of[h.host.role]
        hv: dict[str, Any] = {
            "ansible_host": h.host.mgmt_ip,
            "pdsno_lab_role": h.host.role,
            "pdsno_lab_netns": h.netns,
        }
        if group not in servers:
            n = serial[(group, h.host.zone)] = serial.get((group, h.host.zone), 0) + 1
            region = f"{h.host.zone}_" if h.host.zone is not None else ""
            hv["pdsno_controller_id"] = f"{group}_cntl_{region}{n}"
        if group == "global" and has_nib:
            hv["controller_nib_backend"] = "postgresql"
        if group == "nib":
            hv["nib_postgresql_cluster"] = nib_cluster_name(state.prefix)
        if h.host.zone is not None:
            hv["pdsno_region"] = h.host.zone
        if h.host.subnets:
            hv["pdsno_subnets"] = [s.cidr for s in h.host.subnets]
            hv["pdsno_lab_subnets"] = [s.model_dump() for s in h.host.subnets]
            hv.update(_snmp_credentials(state, h.host.name))
        groups[group][h.host.name] = hv
    ssh_args = (
        f"-o ProxyCommand='{services.proxy_command(state.operator_netns)}' "
        f"-o UserKnownHostsFile={known_hosts_path(state_dir)} -o StrictHostKeyChecking=yes"
    )
    inventory = {
        "all": {
            "vars": {
                "ansible_user": "root",
                "ansible_connection": "ssh",
                "ansible_ssh_private_key_file": str(ssh_key_path(state_dir)),
                "ansible_ssh_common_args": ssh_args,
                "ansible_python_interpreter": "/usr/bin/python3",
                "pdsno_lab_prefix": state.prefix,
                "pdsno_lab_topology": state.topology,
                "pdsno_lab_management": state.management,
                "pdsno_lab_operator_netns": state.operator_netns,
                "pdsno_lab_state_dir": str(state_dir),
            },
            "children": {
                "controllers": {
                    "children": {
                        g: {"hosts": hosts} for g, hosts in groups.items() if hosts and g not in servers
                    }
                },
                **{g: {"hosts": groups[g]} for g in sorted(servers) if groups[g]},
            },
        }
    }
    text = "# written by `pdsno lab up`; the lab's controller hosts, reached over ssh through the management namespace\n"
    text += yaml.safe_dump(inventory, sort_keys=False, width=200)
    write_file_atomically(state_dir / INVENTORY_FILE, text.encode(), mode=0o644, dir_mode=0o700)


def _snmp_credentials(state: LabState, lc: str) -> dict[str, list[str]]:
    """The v2c communities and v3 users (``USER:AUTH:PRIV``) the devices an LC serves answer to: to
    read (discovery) and, where a device takes SETs, to write (changes)."""
    devices = [d.device for d in state.devices.values() if d.device.lc == lc]
    writable = [d for d in devices if d.writable]

    def v3(of: list[LabDevice], *, write: bool = False) -> list[str]:
        return sorted(
            {
                f"{d.snmpv3.user}:{d.snmpv3.auth_password}:{d.snmpv3.priv_password}"
                for d in of
                if d.snmpv3 and (d.snmpv3.write or not write)
            }
        )

    return {
        "pdsno_lab_snmp_communities": sorted({d.community for d in devices if d.community is not None}),
        "pdsno_lab_snmp_v3": v3(devices),
        "pdsno_lab_snmp_write_communities": sorted(
            {d.write_community for d in writable if d.write_community is not None}
        ),
        "pdsno_lab_snmp_write_v3": v3(writable, write=True),
    }
