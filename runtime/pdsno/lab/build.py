"""Bringing a lab up: the plan, the programs it needs, then the route, namespaces, bridges, veths,
addresses and daemons. No lab interface or address is ever created in the root namespace: each veth is
made between the switch namespace and the namespace it serves."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from ipaddress import IPv4Network
from pathlib import Path

from pdsno.lab import daemons, outputs, services
from pdsno.lab.errors import LabError
from pdsno.lab.routes import install_route, route_metric
from pdsno.lab.state import DeviceState, HostState, LabState, SubnetState
from pdsno.lab.system import ip_batch, run
from pdsno.lab.topology import Topology, derive_mac

DEFAULT_PARALLEL = 64


def plan(topo: Topology, source: str, prefix: str, state_dir: Path) -> LabState:
    """Every name, port and MAC of the lab, fixed before anything is created (so ``down`` finds it all)."""
    subnets: dict[str, SubnetState] = {}
    for zone in topo.zones:
        for sub in zone.subnets:
            subnets[str(sub.cidr)] = SubnetState(
                zone=zone.name, lc=sub.lc, bridge=f"{prefix}br{len(subnets)}"
            )
    state = LabState(
        prefix=prefix,
        state_dir=str(state_dir),
        topology=topo.name,
        topology_source=source,
        block=str(topo.prefix),
        route_metric=route_metric(prefix),
        management=str(topo.management),
        management_bridge=f"{prefix}brm",
        operator_ip=str(topo.operator_address),
        switch_netns=f"{prefix}sw",
        operator_netns=f"{prefix}mgmt",
        subnets=subnets,
    )
    for d in topo.devices():
        state.devices[d.name] = DeviceState(
            device=d, netns=f"{prefix}d-{d.name}", port=state.allocate_port("v")
        )
    taken = state.macs()
    state.operator_mac = derive_mac(f"operator/{prefix}", None, taken)
    for h in topo.hosts():
        ifaces = ["mgmt0", *(s.interface for s in h.subnets)]
        state.hosts[h.name] = HostState(
            host=h,
            netns=f"{prefix}c-{h.name}",
            ports=[state.allocate_port("h") for _ in ifaces],
            macs={i: derive_mac(f"host:{h.name}/{i}", None, taken) for i in ifaces},
        )
    return state


def preflight(topo: Topology) -> None:
    """Every program the build will run, found before anything is created."""
    needed = ["ip", "sh", "env", "unshare", "sshd", "nc", "ssh"]
    kinds = {d.kind for d in topo.devices()}
    if kinds & {"snmp", "snmpv3"}:
        needed.append("snmpd")
    if "arp_only" in kinds:
        needed.append("sysctl")
    for name in needed:
        services.tool(name)


def build(state_dir: Path, state: LabState, *, parallel: int) -> None:
    install_route(IPv4Network(state.block), state.route_metric)
    ip_batch(
        [
            f"netns add {ns}"
            for ns in [state.switch_netns, state.operator_netns, *(h.netns for h in state.hosts.values())]
        ]
    )
    state.extra_link_type = _extra_link_type(state.switch_netns, f"{state.prefix}probe")
    sw: list[str] = []
    for sub in state.subnets.values():
        sw += _bridge_lines(sub.bridge)
    sw += _bridge_lines(state.management_bridge)
    op_port = f"{state.prefix}op"
    sw += _veth_lines(op_port, state.management_bridge, state.operator_netns, "mgmt0", state.operator_mac)
    for h in state.hosts.values():
        sw += _veth_lines(h.ports[0], state.management_bridge, h.netns, "mgmt0", h.macs["mgmt0"])
        for link, port in zip(h.host.subnets, h.ports[1:], strict=True):
            bridge = state.subnets[link.cidr].bridge
            sw += _veth_lines(port, bridge, h.netns, link.interface, h.macs[link.interface])
    ip_batch(sw, netns=state.switch_netns)
    mgmt_len = IPv4Network(state.management).prefixlen
    ip_batch(_host_lines("mgmt0", [f"{state.operator_ip}/{mgmt_len}"]), netns=state.operator_netns)
    for h in state.hosts.values():
        lines = _host_lines("mgmt0", [f"{h.host.mgmt_ip}/{mgmt_len}"])
        for link in h.host.subnets:
            lines += _host_lines(link.interface, [f"{link.ip}/{IPv4Network(link.cidr).prefixlen}"])[1:]
        ip_batch(lines, netns=h.netns)
    daemons.start_sshds(state_dir, state)
    build_devices(state_dir, state, list(state.devices.values()), parallel=parallel)
    outputs.write_inventory(state_dir, state)


def build_devices(state_dir: Path, state: LabState, devices: list[DeviceState], *, parallel: int) -> None:
    ip_batch([f"netns add {d.netns}" for d in devices])
    sw: list[str] = []
    for d in devices:
        bridge = state.subnets[d.device.subnet].bridge
        sw += _veth_lines(d.port, bridge, d.netns, d.device.uplink.name, d.device.mac)
    ip_batch(sw, netns=state.switch_netns)

    def configure(d: DeviceState) -> None:
        prefixlen = IPv4Network(d.device.subnet).prefixlen
        lines = _host_lines(d.device.uplink.name, [f"{ip}/{prefixlen}" for ip in d.device.addresses])
        for extra in d.device.interfaces[1:]:
            lines += [
                f"link add name {extra.name} address {extra.mac} type {state.extra_link_type}",
                f"link set {extra.name} up",
            ]
        if not d.up:
            lines.append(f"link set {d.device.uplink.name} down")
        ip_batch(lines, netns=d.netns)
        if d.device.kind == "arp_only":
            ignore_echo = [services.tool("sysctl"), "-qw", "net.ipv4.icmp_echo_ignore_all=1"]
            run([services.tool("ip"), "netns", "exec", d.netns, *ignore_echo])

    with ThreadPoolExecutor(max_workers=min(parallel, 16)) as pool:
        list(pool.map(configure, devices))
    snmp = [d for d in devices if d.device.runs_snmpd and d.up]
    for i in range(0, len(snmp), parallel):
        daemons.start_snmpds(state_dir, state, snmp[i : i + parallel])


def _bridge_lines(bridge: str) -> list[str]:
    return [f"link add name {bridge} type bridge stp_state 0 forward_delay 0", f"link set {bridge} up"]


def _veth_lines(port: str, bridge: str, netns: str, inner: str, mac: str) -> list[str]:
    """A veth whose switch end joins ``bridge`` and whose other end is born inside ``netns``."""
    return [
        f"link add name {port} type veth peer name {inner} address {mac} netns {netns}",
        f"link set {port} master {bridge} up",
    ]


def _host_lines(interface: str, addresses: list[str]) -> list[str]:
    return [
        "link set lo up",
        *(f"addr add {a} dev {interface}" for a in addresses),
        f"link set {interface} up",
    ]


def _extra_link_type(netns: str, probe: str) -> str:
    """``dummy`` where the kernel has it, else ``ifb``: both make a plain extra interface with a MAC.

    The probe link is made (and deleted) in the lab's switch namespace, never in the root namespace.
    """
    ip = services.tool("ip")
    for kind in ("dummy", "ifb"):
        if run([ip, "-n", netns, "link", "add", "name", probe, "type", kind], check=False).returncode == 0:
            run([ip, "-n", netns, "link", "del", probe])
            return kind
    raise LabError("the kernel offers neither dummy nor ifb links for a device's extra interfaces")
