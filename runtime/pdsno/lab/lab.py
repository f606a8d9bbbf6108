"""The :class:`Lab`: build, inspect, change and tear down a lab network made of Linux network namespaces.

The steps live beside it: ``build`` (up), ``daemons`` (snmpd, sshd), ``routes`` (the black-hole route),
``teardown`` (down), ``state`` (``state.json`` and the lock), ``outputs`` (ground truth, inventory).

Layout (``P`` is the name prefix, ``pdsno-`` by default):

* ``Psw`` -- the switch: one Linux bridge per subnet (``Pbr0``, ``Pbr1``...) and one for management
  (``Pbrm``). Every other namespace is plugged into it by a veth pair created directly between the two
  namespaces, so no lab interface or address ever exists in the root namespace.
* ``Pd-<device>`` -- one per simulated device: its uplink (``eth0`` or the profile's first interface name)
  on its subnet's bridge, extra interfaces as dummy (or ifb) links, ``snmpd`` for SNMP devices.
* ``Pc-<host>`` -- one per controller host (GC, RCs, LCs, broker, NIB server): ``mgmt0`` on management, and for an
  LC ``lan0``, ``lan1``... on the subnets it serves; ``sshd`` in its own mount and UTS namespaces.
* ``Pmgmt`` -- the operator's seat on management: ssh's ProxyCommand runs ``nc`` in it.

Safety: before anything is created, the whole address block is black-holed in the root namespace
(``ip route add blackhole BLOCK metric M``, ``M`` derived from the prefix so that labs with other prefixes
keep their own route), and it is removed last. Every probe of a lab address runs inside a lab namespace.
Processes are ended by PID only: those in the lab's namespaces, and those whose command line names the
state directory.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from pdsno.lab import daemons, outputs, services
from pdsno.lab.build import DEFAULT_PARALLEL, build, build_devices, plan, preflight
from pdsno.lab.errors import LabAlreadyUp, LabError, LabNotUp, TopologyError
from pdsno.lab.routes import route_metric, route_present
from pdsno.lab.state import (
    DEFAULT_PREFIX,
    GROUND_TRUTH_FILE,
    INVENTORY_FILE,
    DeviceState,
    HostState,
    LabState,
    SubnetState,
    check_prefix,
    default_state_dir,
    known_hosts_path,
    locked,
    nib_cluster_name,
    own_netns_re,
    read_state,
    ssh_key_path,
)
from pdsno.lab.system import (
    CLEAN_PATH,
    NETNS_DIR,
    ip_batch,
    list_netns,
    process_alive,
    run,
    thread_in_netns,
)
from pdsno.lab.teardown import drop_nib_cluster, remove_namespace, teardown
from pdsno.lab.topology import (
    DeviceSpec,
    LabController,
    LabDevice,
    Text,
    Topology,
    load_topology,
    resolve_added_device,
    validation_problems,
)

__all__ = ["Lab"]

_TEXT: TypeAdapter[str] = TypeAdapter(Text)


class Lab:
    """A lab that is up; get one from :meth:`up` or :meth:`load`."""

    def __init__(self, state: LabState, state_dir: Path) -> None:
        self._state = state
        self.state_dir = state_dir

    # -- lifecycle ---------------------------------------------------------------------------------

    @classmethod
    def up(
        cls,
        topology: Topology | str | Path = "default",
        state_dir: Path | None = None,
        *,
        prefix: str = DEFAULT_PREFIX,
        parallel: int = DEFAULT_PARALLEL,
    ) -> Lab:
        """Build the lab; refuses (:class:`LabAlreadyUp`) if one with this state dir or prefix exists.

        On any failure (or Ctrl-C) whatever was built is torn down again before the error propagates.
        """
        check_prefix(prefix)
        _require_root()
        source = str(topology) if not isinstance(topology, Topology) else f"<{topology.name}>"
        topo = topology if isinstance(topology, Topology) else load_topology(topology)
        preflight(topo)
        state_dir = (state_dir or default_state_dir()).resolve()
        with locked(state_dir):
            existing = read_state(state_dir)
            if existing is not None:
                how = "is already up" if existing.status == "up" else "was left half built"
                raise LabAlreadyUp(
                    f"a lab ({existing.topology}, prefix {existing.prefix}) {how} in {state_dir}; "
                    "run `pdsno lab down` first"
                )
            orphans = [ns for ns in list_netns() if own_netns_re(prefix).fullmatch(ns)]
            if orphans:
                raise LabAlreadyUp(
                    f"namespaces with prefix {prefix} exist ({', '.join(orphans[:3])}...) without lab state in "
                    f"{state_dir}; run `pdsno lab down --prefix {prefix}` first"
                )
            if topo.controllers.nib is not None:
                # a cluster left by a lab of this prefix that was never taken down would hand the new
                # GC the old one's NIB (another identity's audit chain)
                drop_nib_cluster(nib_cluster_name(prefix))
            state = plan(topo, source, prefix, state_dir)
            lab = cls(state, state_dir)
            started = time.monotonic()
            try:
                outputs.save(state_dir, state)
                build(state_dir, state, parallel=max(1, parallel))
                state.status = "up"
                state.build_seconds = round(time.monotonic() - started, 3)
                outputs.save(state_dir, state)
            except BaseException:
                with contextlib.suppress(Exception):
                    teardown(state_dir, prefix, state)
                raise
            return lab

    @classmethod
    def load(cls, state_dir: Path | None = None) -> Lab:
        """The lab recorded in ``state_dir`` (:class:`LabNotUp` if there is none)."""
        state_dir = (state_dir or default_state_dir()).resolve()
        state = read_state(state_dir)
        if state is None:
            raise LabNotUp(f"no lab in {state_dir} (run `pdsno lab up`)")
        return cls(state, state_dir)

    @staticmethod
    def down(state_dir: Path | None = None, *, prefix: str | None = None) -> dict[str, Any]:
        """Tear the lab down; idempotent. Without state, finds the prefix's namespaces and route by name."""
        state_dir = (state_dir or default_state_dir()).resolve()
        _require_root()
        with locked(state_dir):
            try:
                state = read_state(state_dir)
            except LabError:
                state = None
            use = prefix or (state.prefix if state else DEFAULT_PREFIX)
            check_prefix(use)
            report = teardown(state_dir, use, state)
        with contextlib.suppress(OSError):
            (state_dir / ".lock").unlink()
            state_dir.rmdir()
        return report

    @staticmethod
    def status(state_dir: Path | None = None, *, prefix: str | None = None) -> dict[str, Any]:
        """What is up: namespaces, daemons, the route; ``state`` is up, down, degraded or building."""
        state_dir = (state_dir or default_state_dir()).resolve()
        state = read_state(state_dir)
        use = prefix or (state.prefix if state else DEFAULT_PREFIX)
        present = set(list_netns())
        own = sorted(ns for ns in present if own_netns_re(use).fullmatch(ns))
        route = route_present(route_metric(use))
        if state is None:
            return {
                "state": "down" if not own and not route else "leftovers",
                "state_dir": str(state_dir),
                "prefix": use,
                "leftover_namespaces": own,
                "route": route,
            }
        expected = state.namespaces()
        missing = [ns for ns in expected if ns not in present]
        snmpd = [d for d in state.devices.values() if d.device.runs_snmpd and d.up]
        dead_snmpd = [d.device.name for d in snmpd if d.pid is None or not process_alive(d.pid)]
        hosts = {
            name: {
                "role": h.host.role,
                "netns": h.netns,
                "mgmt_ip": h.host.mgmt_ip,
                "sshd_pid": h.pid,
                "sshd_alive": h.pid is not None and process_alive(h.pid),
            }
            for name, h in state.hosts.items()
        }
        healthy = not missing and not dead_snmpd and route and all(h["sshd_alive"] for h in hosts.values())
        kinds: dict[str, int] = {}
        for d in state.devices.values():
            kinds[d.device.kind] = kinds.get(d.device.kind, 0) + 1
        return {
            "state": "building" if state.status == "building" else ("up" if healthy else "degraded"),
            "state_dir": str(state_dir),
            "prefix": state.prefix,
            "topology": state.topology,
            "block": state.block,
            "route": route,
            "created_at": state.created_at,
            "build_seconds": state.build_seconds,
            "namespaces": {
                "expected": len(expected),
                "present": len(expected) - len(missing),
                "missing": missing,
                "unrecorded": [ns for ns in own if ns not in expected],
            },
            "devices": {
                "total": len(state.devices),
                "by_kind": kinds,
                "stopped": sorted(n for n, d in state.devices.items() if not d.up),
                "snmpd_expected": len(snmpd),
                "snmpd_alive": len(snmpd) - len(dead_snmpd),
                "snmpd_dead": dead_snmpd,
            },
            "hosts": hosts,
        }

    # -- what the lab holds ------------------------------------------------------------------------

    @property
    def prefix(self) -> str:
        return self._state.prefix

    @property
    def topology_name(self) -> str:
        return self._state.topology

    @property
    def block(self) -> IPv4Network:
        return IPv4Network(self._state.block)

    @property
    def switch_netns(self) -> str:
        return self._state.switch_netns

    @property
    def operator_netns(self) -> str:
        """The namespace on the management network that ssh's ProxyCommand (and an operator) use."""
        return self._state.operator_netns

    @property
    def inventory_path(self) -> Path:
        return self.state_dir / INVENTORY_FILE

    @property
    def ground_truth_path(self) -> Path:
        return self.state_dir / GROUND_TRUTH_FILE

    @property
    def ssh_key_path(self) -> Path:
        return ssh_key_path(self.state_dir)

    @property
    def known_hosts_path(self) -> Path:
        return known_hosts_path(self.state_dir)

    def devices(self) -> list[LabDevice]:
        return [d.device for d in self._state.devices.values()]

    def device(self, name: str) -> LabDevice:
        return self._device_state(name).device

    def device_is_up(self, name: str) -> bool:
        return self._device_state(name).up

    def hosts(self, role: str | None = None) -> list[LabController]:
        return [h.host for h in self._state.hosts.values() if role is None or h.host.role == role]

    def host(self, name: str) -> LabController:
        return self._host_state(name).host

    def lc_for(self, subnet: str | IPv4Network) -> LabController:
        """The LC host serving ``subnet``."""
        found = self._state.subnets.get(str(IPv4Network(str(subnet))))
        if found is None:
            raise LabNotUp(f"subnet {subnet} is not in the lab ({', '.join(self._state.subnets)})")
        return self.host(found.lc)

    def subnets(self) -> dict[str, SubnetState]:
        return dict(self._state.subnets)

    def netns(self, name: str) -> str:
        """The namespace of a device or host (by name), or ``name`` itself if it is a lab namespace."""
        if name in self._state.devices:
            return self._state.devices[name].netns
        if name in self._state.hosts:
            return self._state.hosts[name].netns
        if name in self._state.namespaces():
            return name
        raise LabNotUp(f"{name}: no such device, host or namespace in the lab")

    def host_mac(self, host: str, interface: str) -> str:
        return self._host_state(host).macs[interface]

    def daemon_pid(self, name: str) -> int | None:
        """The PID of a device's snmpd or a host's sshd (``None`` if it has none running)."""
        if name in self._state.hosts:
            return self._state.hosts[name].pid
        return self._device_state(name).pid

    # -- running things inside -----------------------------------------------------------------------

    def exec_in(
        self,
        netns: str,
        argv: Sequence[str],
        *,
        timeout: float = 10.0,
        check: bool = True,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in a lab namespace (or a device's or host's, by name): ``ip netns exec NS argv``.

        Only the lab's own namespaces are accepted. ``env`` is added to a clean environment (PATH,
        ``MIBS=`` so that net-snmp tools need no MIB files, their cache in the state dir); ``check`` turns
        a failure into LabError.
        """
        ns = self.netns(netns)
        full_env = {
            "PATH": CLEAN_PATH,
            "HOME": os.environ.get("HOME", "/root"),
            "MIBS": "",
            "SNMP_PERSISTENT_DIR": str(self.state_dir / "snmp-client"),
        }
        full_env.update(env or {})
        return run(
            [services.tool("ip"), "netns", "exec", ns, *argv],
            timeout=timeout,
            check=check,
            input=input,
            env=full_env,
        )

    @contextlib.contextmanager
    def inside(self, netns: str) -> Iterator[None]:
        """Move the calling thread into a lab namespace for the block (``setns(2)``), then back.

        Sockets opened inside stay in that namespace after the block, so a scanner thread can open its
        sockets in an LC host's namespace and use them from anywhere. Only this thread moves: use it in
        a thread of its own, not around ``await`` in an event loop that other code shares.
        """
        with thread_in_netns(NETNS_DIR / self.netns(netns)):
            yield

    def ssh_argv(self, host: str, *command: str) -> list[str]:
        """An ``ssh`` command line that reaches ``host`` from the root namespace as Ansible does."""
        return [
            services.tool("ssh"),
            "-i",
            str(self.ssh_key_path),
            "-o",
            f"ProxyCommand={services.proxy_command(self.operator_netns)}",
            "-o",
            f"UserKnownHostsFile={self.known_hosts_path}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
            f"root@{self.host(host).mgmt_ip}",
            *command,
        ]

    # -- changing devices (what discovery tests need for NEW / UPDATED / INACTIVE) -------------------

    def stop_device(self, name: str) -> None:
        """Take a device off the network: stop its snmpd and take its uplink down (its MAC, addresses
        and namespace are kept, so :meth:`start_device` brings the same device back)."""
        with self._mutate():
            state = self._device_state(name)
            if not state.up:
                return
            daemons.stop_snmpd(state)
            ip_batch([f"link set {state.device.uplink.name} down"], netns=state.netns)
            state.up = False

    def start_device(self, name: str) -> None:
        with self._mutate():
            state = self._device_state(name)
            if state.up:
                return
            ip_batch([f"link set {state.device.uplink.name} up"], netns=state.netns)
            state.up = True
            daemons.start_snmpds(self.state_dir, self._state, [state])

    def set_sysname(self, name: str, sys_name: str) -> None:
        """Give an SNMP device a new sysName: its snmpd is restarted with the new configuration."""
        try:
            sys_name = _TEXT.validate_python(sys_name)
        except ValidationError as exc:
            raise TopologyError(f"{name}: sysName: {'; '.join(validation_problems(exc))}") from None
        with self._mutate():
            state = self._device_state(name)
            if not state.device.runs_snmpd:
                raise TopologyError(f"{name}: a {state.device.kind} device has no snmpd to rename")
            daemons.stop_snmpd(state)
            state.device = state.device.model_copy(update={"sysName": sys_name})
            if state.up:
                daemons.start_snmpds(self.state_dir, self._state, [state])

    def set_addresses(self, name: str, addresses: Sequence[str]) -> None:
        """Move a device to other addresses of its subnet (same MAC), e.g. to test an UPDATED ip."""
        with self._mutate():
            state = self._device_state(name)
            subnet = IPv4Network(state.device.subnet)
            taken = self._taken_addresses(exclude=name)
            new = [IPv4Address(a) for a in addresses]
            if not new or len(set(new)) != len(new):
                raise TopologyError(f"{name}: give one or more distinct addresses")
            for ip in new:
                if ip not in subnet or ip in (subnet.network_address, subnet.broadcast_address):
                    raise TopologyError(f"{name}: {ip} is not a host address of {subnet}")
                if ip in taken:
                    raise TopologyError(f"{name}: {ip} is already used by {taken[ip]}")
            uplink = state.device.uplink
            lines = [f"addr flush dev {uplink.name}"]
            lines += [f"addr add {ip}/{subnet.prefixlen} dev {uplink.name}" for ip in new]
            ip_batch(lines, netns=state.netns)
            interfaces = [
                uplink.model_copy(update={"addresses": [str(ip) for ip in new]}),
                *state.device.interfaces[1:],
            ]
            state.device = state.device.model_copy(update={"interfaces": interfaces})

    def add_device(self, spec: DeviceSpec | Mapping[str, Any], *, zone: str | None = None) -> LabDevice:
        """Plug a new device into the running lab (same keys as a topology's device); returns it as built.

        ``zone`` defaults to the zone whose subnet holds the device's first address.
        """
        try:
            parsed = spec if isinstance(spec, DeviceSpec) else DeviceSpec.model_validate(dict(spec))
        except ValidationError as exc:
            raise TopologyError(f"device: {'; '.join(validation_problems(exc))}") from None
        with self._mutate():
            st = self._state
            subnets = {IPv4Network(c): (s.zone, s.lc) for c, s in st.subnets.items()}
            if zone is None:
                first = parsed.all_addresses[0]
                zones = [z for net, (z, _) in subnets.items() if first in net]
                if not zones:
                    raise TopologyError(f"device {parsed.name}: {first} is in no subnet of the lab")
                zone = zones[0]
            try:
                device = resolve_added_device(
                    parsed,
                    zone,
                    subnets=subnets,
                    names=st.devices,
                    addresses=self._taken_addresses(),
                    macs=st.macs(),
                )
            except ValueError as exc:
                raise TopologyError(str(exc)) from None
            state = DeviceState(
                device=device, netns=f"{st.prefix}d-{device.name}", port=st.allocate_port("v")
            )
            st.devices[device.name] = state
            outputs.save(self.state_dir, st)
            try:
                build_devices(self.state_dir, st, [state], parallel=1)
            except BaseException:
                remove_namespace(state.netns)
                del st.devices[device.name]
                raise
            return device

    def remove_device(self, name: str) -> None:
        """Unplug a device for good: its snmpd is stopped and its namespace deleted."""
        with self._mutate():
            state = self._device_state(name)
            remove_namespace(state.netns)
            del self._state.devices[name]

    def ground_truth(self) -> dict[str, Any]:
        """What a perfect discovery of the lab finds (also written to ``ground_truth.json``)."""
        return outputs.ground_truth(self._state)

    # -- internals ---------------------------------------------------------------------------------

    def _device_state(self, name: str) -> DeviceState:
        found = self._state.devices.get(name)
        if found is None:
            raise LabNotUp(f"{name}: no such device in the lab")
        return found

    def _host_state(self, name: str) -> HostState:
        found = self._state.hosts.get(name)
        if found is None:
            raise LabNotUp(f"{name}: no such controller host in the lab")
        return found

    def _taken_addresses(self, exclude: str | None = None) -> dict[IPv4Address, str]:
        st = self._state
        taken = {IPv4Address(st.operator_ip): "the operator"}
        for h in st.hosts.values():
            taken[IPv4Address(h.host.mgmt_ip)] = h.host.name
            taken.update({IPv4Address(s.ip): h.host.name for s in h.host.subnets})
        for d in st.devices.values():
            if d.device.name != exclude:
                taken.update({IPv4Address(ip): d.device.name for ip in d.device.addresses})
        return taken

    @contextlib.contextmanager
    def _mutate(self) -> Iterator[None]:
        with locked(self.state_dir):
            fresh = read_state(self.state_dir)
            if fresh is None:
                raise LabNotUp(f"no lab in {self.state_dir} (it was taken down)")
            self._state = fresh
            try:
                yield
            finally:
                outputs.save(self.state_dir, self._state)


def _require_root() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, bridges, routes); run it as root")
