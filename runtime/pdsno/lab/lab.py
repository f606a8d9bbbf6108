"""Build, inspect, change and tear down a lab network made of Linux network namespaces.

Layout (``P`` is the name prefix, ``pdsno-`` by default):

* ``Psw`` -- the switch: one Linux bridge per subnet (``Pbr0``, ``Pbr1``...) and one for management
  (``Pbrm``). Every other namespace is plugged into it by a veth pair created directly between the two
  namespaces, so no lab interface or address ever exists in the root namespace.
* ``Pd-<device>`` -- one per simulated device: its uplink (``eth0`` or the profile's first interface name)
  on its subnet's bridge, extra interfaces as dummy (or ifb) links, ``snmpd`` for SNMP devices.
* ``Pc-<host>`` -- one per controller host (GC, RCs, LCs, broker): ``mgmt0`` on management, and for an
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
import fcntl
import json
import os
import re
import shutil
import subprocess
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from pdsno.discovery.vendors import enterprise_number
from pdsno.lab import services
from pdsno.lab.errors import LabAlreadyUp, LabError, LabNotUp, TopologyError
from pdsno.lab.system import (
    CLEAN_PATH,
    NETNS_DIR,
    ip_batch,
    kill_pids,
    list_netns,
    pids_in_netns,
    pids_of_lab,
    process_alive,
    run,
    spawn_detached,
    supervisors_of,
    tcp_listening,
    thread_in_netns,
    udp_listening,
)
from pdsno.lab.topology import (
    DeviceSpec,
    LabController,
    LabDevice,
    Text,
    Topology,
    derive_mac,
    load_topology,
    resolve_added_device,
    validation_problems,
)
from pdsno.security.keys import write_file_atomically

__all__ = ["DEFAULT_PREFIX", "Lab", "default_state_dir"]

DEFAULT_PREFIX = "pdsno-"
STATE_FILE = "state.json"
GROUND_TRUTH_FILE = "ground_truth.json"
INVENTORY_FILE = "inventory.yml"
_OUR_FILES = (
    STATE_FILE,
    GROUND_TRUTH_FILE,
    INVENTORY_FILE,
    "devices",
    "hosts",
    "ssh",
    "snmp-client",
    "deploy",  # what playbooks/deploy.yml put into the lab hosts (inventory/lab)
    ".lock",
)
_TEXT: TypeAdapter[str] = TypeAdapter(Text)
_PREFIX_RE = re.compile(r"[a-z][a-z0-9-]{0,8}")
DAEMON_TIMEOUT = 30.0
DEFAULT_PARALLEL = 64


def default_state_dir() -> Path:
    """``$PDSNO_LAB_DIR``, else ``.lab`` at the root of the source tree we run in, else ``./.lab``."""
    env = os.environ.get("PDSNO_LAB_DIR")
    if env:
        return Path(env).resolve()
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents):
        if (candidate / "pyproject.toml").is_file() and (candidate / "runtime" / "pdsno").is_dir():
            return candidate / ".lab"
    return here / ".lab"


def check_prefix(prefix: str) -> str:
    if _PREFIX_RE.fullmatch(prefix) is None:
        raise TopologyError(
            f"prefix {prefix!r}: must be 1 to 9 characters, lower-case letters, digits or '-', starting "
            "with a letter (interface names are limited to 15 characters)"
        )
    return prefix


def route_metric(prefix: str) -> int:
    """The metric of this prefix's black-hole route: it tells our route from another lab's."""
    return 0x7D000000 + (zlib.crc32(prefix.encode()) & 0xFFFFF)


def _own_netns_re(prefix: str) -> re.Pattern[str]:
    return re.compile(re.escape(prefix) + r"(?:sw|mgmt|[dc]-[a-z0-9-]+)")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------------------
# state


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeviceState(_Model):
    device: LabDevice
    netns: str
    port: str
    up: bool = True
    pid: int | None = None


class HostState(_Model):
    host: LabController
    netns: str
    ports: list[str]
    macs: dict[str, str]
    pid: int | None = None


class SubnetState(_Model):
    zone: str
    lc: str
    bridge: str


class LabState(_Model):
    """Everything ``down`` and ``status`` need, and what the API reads: written to ``state.json``."""

    version: Literal[1] = 1
    status: Literal["building", "up"] = "building"
    prefix: str
    state_dir: str
    topology: str
    topology_source: str
    block: str
    route_metric: int
    management: str
    management_bridge: str
    operator_ip: str
    operator_mac: str = ""
    switch_netns: str
    operator_netns: str
    extra_link_type: str = "dummy"
    subnets: dict[str, SubnetState]
    devices: dict[str, DeviceState] = Field(default_factory=dict)
    hosts: dict[str, HostState] = Field(default_factory=dict)
    next_port: int = 0
    created_at: str = Field(default_factory=_now)
    build_seconds: float | None = None

    def allocate_port(self, kind: str) -> str:
        """A new switch-side veth name: ``<prefix><kind><n>`` (at most 15 characters)."""
        self.next_port += 1
        return f"{self.prefix}{kind}{self.next_port - 1}"

    def macs(self) -> set[str]:
        """Every MAC in the lab (devices, hosts, the operator)."""
        macs = {i.mac for d in self.devices.values() for i in d.device.interfaces}
        macs |= {m for h in self.hosts.values() for m in h.macs.values()}
        return macs | ({self.operator_mac} if self.operator_mac else set())

    def namespaces(self) -> list[str]:
        return [
            self.switch_netns,
            self.operator_netns,
            *(h.netns for h in self.hosts.values()),
            *(d.netns for d in self.devices.values()),
        ]


def _read_state(state_dir: Path) -> LabState | None:
    path = state_dir / STATE_FILE
    try:
        return LabState.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValidationError, ValueError) as exc:
        raise LabError(
            f"{path}: unreadable lab state ({exc.__class__.__name__}); `pdsno lab down --prefix P` cleans up by prefix"
        ) from None


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    """One lab command at a time per state directory (``up``, ``down`` and every change)."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(state_dir / ".lock", "a+") as handle:
        deadline = time.monotonic() + 120
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LabError(f"{state_dir}: another lab command holds the lock for 120 s") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------------------
# the lab


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
        _preflight(topo)
        state_dir = (state_dir or default_state_dir()).resolve()
        with _locked(state_dir):
            existing = _read_state(state_dir)
            if existing is not None:
                how = "is already up" if existing.status == "up" else "was left half built"
                raise LabAlreadyUp(
                    f"a lab ({existing.topology}, prefix {existing.prefix}) {how} in {state_dir}; "
                    "run `pdsno lab down` first"
                )
            orphans = [ns for ns in list_netns() if _own_netns_re(prefix).fullmatch(ns)]
            if orphans:
                raise LabAlreadyUp(
                    f"namespaces with prefix {prefix} exist ({', '.join(orphans[:3])}...) without lab state in "
                    f"{state_dir}; run `pdsno lab down --prefix {prefix}` first"
                )
            state = _plan(topo, source, prefix, state_dir)
            lab = cls(state, state_dir)
            started = time.monotonic()
            try:
                lab._save()
                lab._build(parallel=max(1, parallel))
                state.status = "up"
                state.build_seconds = round(time.monotonic() - started, 3)
                lab._save()
            except BaseException:
                with contextlib.suppress(Exception):
                    _teardown(state_dir, prefix, state)
                raise
            return lab

    @classmethod
    def load(cls, state_dir: Path | None = None) -> Lab:
        """The lab recorded in ``state_dir`` (:class:`LabNotUp` if there is none)."""
        state_dir = (state_dir or default_state_dir()).resolve()
        state = _read_state(state_dir)
        if state is None:
            raise LabNotUp(f"no lab in {state_dir} (run `pdsno lab up`)")
        return cls(state, state_dir)

    @staticmethod
    def down(state_dir: Path | None = None, *, prefix: str | None = None) -> dict[str, Any]:
        """Tear the lab down; idempotent. Without state, finds the prefix's namespaces and route by name."""
        state_dir = (state_dir or default_state_dir()).resolve()
        _require_root()
        with _locked(state_dir):
            try:
                state = _read_state(state_dir)
            except LabError:
                state = None
            use = prefix or (state.prefix if state else DEFAULT_PREFIX)
            check_prefix(use)
            report = _teardown(state_dir, use, state)
        with contextlib.suppress(OSError):
            (state_dir / ".lock").unlink()
            state_dir.rmdir()
        return report

    @staticmethod
    def status(state_dir: Path | None = None, *, prefix: str | None = None) -> dict[str, Any]:
        """What is up: namespaces, daemons, the route; ``state`` is up, down, degraded or building."""
        state_dir = (state_dir or default_state_dir()).resolve()
        state = _read_state(state_dir)
        use = prefix or (state.prefix if state else DEFAULT_PREFIX)
        present = set(list_netns())
        own = sorted(ns for ns in present if _own_netns_re(use).fullmatch(ns))
        route = _route_present(route_metric(use))
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
        return self.state_dir / "ssh" / "id_ed25519"

    @property
    def known_hosts_path(self) -> Path:
        return self.state_dir / "ssh" / "known_hosts"

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
            self._stop_daemon(state)
            ip_batch([f"link set {state.device.uplink.name} down"], netns=state.netns)
            state.up = False

    def start_device(self, name: str) -> None:
        with self._mutate():
            state = self._device_state(name)
            if state.up:
                return
            ip_batch([f"link set {state.device.uplink.name} up"], netns=state.netns)
            state.up = True
            self._start_snmpds([state])

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
            self._stop_daemon(state)
            state.device = state.device.model_copy(update={"sysName": sys_name})
            if state.up:
                self._start_snmpds([state])

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
            self._save()
            try:
                self._build_devices([state], parallel=1)
            except BaseException:
                kill_pids(pids_in_netns([state.netns]).get(state.netns, []))
                ip_batch([f"netns del {state.netns}"], force=True)
                del st.devices[device.name]
                raise
            return device

    def remove_device(self, name: str) -> None:
        """Unplug a device for good: its snmpd is stopped and its namespace deleted."""
        with self._mutate():
            state = self._device_state(name)
            kill_pids(pids_in_netns([state.netns]).get(state.netns, []))
            ip_batch([f"netns del {state.netns}"], force=True)
            del self._state.devices[name]

    def ground_truth(self) -> dict[str, Any]:
        """What a perfect discovery of the lab finds (also written to ``ground_truth.json``)."""
        st = self._state
        devices = []
        for d in st.devices.values():
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
            for h in st.hosts.values()
        ]
        return {
            "topology": st.topology,
            "prefix": st.block,
            "management": st.management,
            "operator_ip": st.operator_ip,
            "subnets": {c: {"zone": s.zone, "lc": s.lc} for c, s in st.subnets.items()},
            "devices": devices,
            "controllers": hosts,
        }

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
        with _locked(self.state_dir):
            fresh = _read_state(self.state_dir)
            if fresh is None:
                raise LabNotUp(f"no lab in {self.state_dir} (it was taken down)")
            self._state = fresh
            try:
                yield
            finally:
                self._save()

    def _save(self) -> None:
        write_file_atomically(
            self.state_dir / STATE_FILE,
            self._state.model_dump_json(indent=2).encode(),
            mode=0o600,
            dir_mode=0o700,
        )
        if self._state.status == "up":
            self._write_outputs()

    def _write_outputs(self) -> None:
        truth = json.dumps(self.ground_truth(), indent=2) + "\n"
        write_file_atomically(self.ground_truth_path, truth.encode(), mode=0o644, dir_mode=0o700)

    def _stop_daemon(self, state: DeviceState) -> None:
        if state.pid is not None:
            # only a PID still inside the device's namespace is ours to end
            ours = pids_in_netns([state.netns]).get(state.netns, [])
            kill_pids([pid for pid in ours if pid == state.pid])
        state.pid = None

    # -- building ----------------------------------------------------------------------------------

    def _build(self, *, parallel: int) -> None:
        st = self._state
        _install_route(IPv4Network(st.block), st.route_metric)
        ip_batch(
            [
                f"netns add {ns}"
                for ns in [st.switch_netns, st.operator_netns, *(h.netns for h in st.hosts.values())]
            ]
        )
        st.extra_link_type = _extra_link_type(st.switch_netns, f"{st.prefix}probe")
        sw: list[str] = []
        for sub in st.subnets.values():
            sw += _bridge_lines(sub.bridge)
        sw += _bridge_lines(st.management_bridge)
        op_port = f"{st.prefix}op"
        sw += _veth_lines(op_port, st.management_bridge, st.operator_netns, "mgmt0", st.operator_mac)
        for h in st.hosts.values():
            sw += _veth_lines(h.ports[0], st.management_bridge, h.netns, "mgmt0", h.macs["mgmt0"])
            for link, port in zip(h.host.subnets, h.ports[1:], strict=True):
                bridge = st.subnets[link.cidr].bridge
                sw += _veth_lines(port, bridge, h.netns, link.interface, h.macs[link.interface])
        ip_batch(sw, netns=st.switch_netns)
        mgmt_len = IPv4Network(st.management).prefixlen
        ip_batch(_host_lines("mgmt0", [f"{st.operator_ip}/{mgmt_len}"]), netns=st.operator_netns)
        for h in st.hosts.values():
            lines = _host_lines("mgmt0", [f"{h.host.mgmt_ip}/{mgmt_len}"])
            for link in h.host.subnets:
                lines += _host_lines(link.interface, [f"{link.ip}/{IPv4Network(link.cidr).prefixlen}"])[1:]
            ip_batch(lines, netns=h.netns)
        self._start_sshds()
        self._build_devices(list(st.devices.values()), parallel=parallel)
        self._write_inventory()

    def _build_devices(self, states: list[DeviceState], *, parallel: int) -> None:
        st = self._state
        ip_batch([f"netns add {d.netns}" for d in states])
        sw: list[str] = []
        for d in states:
            bridge = st.subnets[d.device.subnet].bridge
            sw += _veth_lines(d.port, bridge, d.netns, d.device.uplink.name, d.device.mac)
        ip_batch(sw, netns=st.switch_netns)

        def configure(d: DeviceState) -> None:
            prefixlen = IPv4Network(d.device.subnet).prefixlen
            lines = _host_lines(d.device.uplink.name, [f"{ip}/{prefixlen}" for ip in d.device.addresses])
            for extra in d.device.interfaces[1:]:
                lines += [
                    f"link add name {extra.name} address {extra.mac} type {st.extra_link_type}",
                    f"link set {extra.name} up",
                ]
            if not d.up:
                lines.append(f"link set {d.device.uplink.name} down")
            ip_batch(lines, netns=d.netns)
            if d.device.kind == "arp_only":
                ignore_echo = [services.tool("sysctl"), "-qw", "net.ipv4.icmp_echo_ignore_all=1"]
                run([services.tool("ip"), "netns", "exec", d.netns, *ignore_echo])

        with ThreadPoolExecutor(max_workers=min(parallel, 16)) as pool:
            list(pool.map(configure, states))
        snmp = [d for d in states if d.device.runs_snmpd and d.up]
        for i in range(0, len(snmp), parallel):
            self._start_snmpds(snmp[i : i + parallel])

    def _start_snmpds(self, states: list[DeviceState]) -> None:
        if not states or not any(d.device.runs_snmpd for d in states):
            return
        commands = []
        for d in states:
            base = self.state_dir / "devices" / d.device.name
            persist = base / "persist"
            shutil.rmtree(persist, ignore_errors=True)
            persist.mkdir(parents=True, mode=0o700)
            conf = base / "snmpd.conf"
            _write_private(conf, services.snmpd_conf(d.device, persist))
            log = base / "snmpd.log"
            commands.append(
                (services.snmpd_command(d.device, d.netns, conf, log), services.snmpd_env(persist), log)
            )
        pids = spawn_detached(commands, owner=self.state_dir)
        for d, pid in zip(states, pids, strict=True):
            d.pid = pid
        self._save()
        _wait_ready(
            [
                (d.device.name, pid, "snmpd", lambda p: udp_listening(p, services.SNMP_PORT), c[2])
                for d, pid, c in zip(states, pids, commands, strict=True)
            ]
        )

    def _start_sshds(self) -> None:
        st = self._state
        ssh_dir = self.state_dir / "ssh"
        client_pub = services.new_ssh_key(ssh_dir / "id_ed25519", f"pdsno-lab-ansible@{st.prefix}")
        write_file_atomically(
            ssh_dir / "authorized_keys", (client_pub + "\n").encode(), mode=0o600, dir_mode=0o700
        )
        known = []
        commands = []
        for h in st.hosts.values():
            base = self.state_dir / "hosts" / h.host.name
            host_key = base / "ssh_host_ed25519_key"
            pub = services.new_ssh_key(host_key, f"root@{h.host.name}")
            known.append(f"{h.host.mgmt_ip} {' '.join(pub.split()[:2])}")
            conf = base / "sshd_config"
            write_file_atomically(
                conf,
                services.sshd_conf(h.host, host_key, ssh_dir / "authorized_keys").encode(),
                mode=0o600,
                dir_mode=0o700,
            )
            log = base / "sshd.log"
            commands.append((services.sshd_command(h.host, h.netns, conf), services.sshd_env(), log))
        write_file_atomically(
            ssh_dir / "known_hosts", ("\n".join(known) + "\n").encode(), mode=0o644, dir_mode=0o700
        )
        pids = spawn_detached(commands, owner=self.state_dir)
        for h, pid in zip(st.hosts.values(), pids, strict=True):
            h.pid = pid
        self._save()
        _wait_ready(
            [
                (h.host.name, pid, "sshd", lambda p: tcp_listening(p, services.SSH_PORT), c[2])
                for h, pid, c in zip(st.hosts.values(), pids, commands, strict=True)
            ]
        )

    def _write_inventory(self) -> None:
        """The inventory ``playbooks/deploy.yml`` deploys the lab from (with ``inventory/lab``'s group vars):
        groups ``global``, ``regional``, ``local`` (under ``controllers``) and ``broker``; each controller's
        id, region and subnets; each LC the SNMP credentials its subnets' devices answer to."""
        st = self._state
        groups: dict[str, dict[str, Any]] = {"global": {}, "regional": {}, "local": {}, "broker": {}}
        group_of = {"gc": "global", "rc": "regional", "lc": "local", "broker": "broker"}
        serial: dict[tuple[str, str | None], int] = {}
        for h in sorted(st.hosts.values(), key=lambda h: h.host.name):
            group = group_of[h.host.role]
            hv: dict[str, Any] = {
                "ansible_host": h.host.mgmt_ip,
                "pdsno_lab_role": h.host.role,
                "pdsno_lab_netns": h.netns,
            }
            if group != "broker":
                n = serial[(group, h.host.zone)] = serial.get((group, h.host.zone), 0) + 1
                region = f"{h.host.zone}_" if h.host.zone is not None else ""
                hv["pdsno_controller_id"] = f"{group}_cntl_{region}{n}"
            if h.host.zone is not None:
                hv["pdsno_region"] = h.host.zone
            if h.host.subnets:
                hv["pdsno_subnets"] = [s.cidr for s in h.host.subnets]
                hv["pdsno_lab_subnets"] = [s.model_dump() for s in h.host.subnets]
                hv.update(self._snmp_credentials(h.host.name))
            groups[group][h.host.name] = hv
        ssh_args = (
            f"-o ProxyCommand='{services.proxy_command(st.operator_netns)}' "
            f"-o UserKnownHostsFile={self.known_hosts_path} -o StrictHostKeyChecking=yes"
        )
        inventory = {
            "all": {
                "vars": {
                    "ansible_user": "root",
                    "ansible_connection": "ssh",
                    "ansible_ssh_private_key_file": str(self.ssh_key_path),
                    "ansible_ssh_common_args": ssh_args,
                    "ansible_python_interpreter": "/usr/bin/python3",
                    "pdsno_lab_prefix": st.prefix,
                    "pdsno_lab_topology": st.topology,
                    "pdsno_lab_management": st.management,
                    "pdsno_lab_operator_netns": st.operator_netns,
                    "pdsno_lab_state_dir": str(self.state_dir),
                },
                "children": {
                    "controllers": {
                        "children": {
                            g: {"hosts": hosts} for g, hosts in groups.items() if hosts and g != "broker"
                        }
                    },
                    **({"broker": {"hosts": groups["broker"]}} if groups["broker"] else {}),
                },
            }
        }
        text = "# written by `pdsno lab up`; the lab's controller hosts, reached over ssh through the management namespace\n"
        text += yaml.safe_dump(inventory, sort_keys=False, width=200)
        write_file_atomically(self.inventory_path, text.encode(), mode=0o644, dir_mode=0o700)

    def _snmp_credentials(self, lc: str) -> dict[str, list[str]]:
        """The v2c communities and v3 users (``USER:AUTH:PRIV``) the devices an LC serves answer to: to
        read (discovery) and, where a device takes SETs, to write (changes)."""
        devices = [d.device for d in self._state.devices.values() if d.device.lc == lc]
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


# --------------------------------------------------------------------------------------------------
# planning and building helpers


def _plan(topo: Topology, source: str, prefix: str, state_dir: Path) -> LabState:
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


def _preflight(topo: Topology) -> None:
    """Every program the build will run, found before anything is created."""
    needed = ["ip", "sh", "env", "unshare", "sshd", "nc", "ssh"]
    kinds = {d.kind for d in topo.devices()}
    if kinds & {"snmp", "snmpv3"}:
        needed.append("snmpd")
    if "arp_only" in kinds:
        needed.append("sysctl")
    for name in needed:
        services.tool(name)


def _require_root() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, bridges, routes); run it as root")


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


def _route_present(metric: int) -> bool:
    return bool(_our_routes(metric))


def _our_routes(metric: int) -> list[str]:
    done = run([services.tool("ip"), "-j", "-4", "route", "show", "type", "blackhole"], check=False)
    try:
        routes = json.loads(done.stdout or "[]")
    except json.JSONDecodeError:
        return []
    return [r["dst"] for r in routes if r.get("metric") == metric]


def _install_route(block: IPv4Network, metric: int) -> None:
    """Refuse if the root namespace already holds an address or a real route inside the block; then
    black-hole the block, so nothing addressed to the lab can leave through the machine's interfaces."""
    ip = services.tool("ip")
    addrs = json.loads(run([ip, "-j", "-4", "addr", "show"]).stdout or "[]")
    for link in addrs:
        for info in link.get("addr_info", []):
            if IPv4Address(info["local"]) in block:
                raise LabError(
                    f"the root namespace holds {info['local']} ({link['ifname']}), inside the lab block {block}; "
                    "choose another prefix in the topology"
                )
    routes = json.loads(run([ip, "-j", "-4", "route", "show", "table", "all"]).stdout or "[]")
    for route in routes:
        dst = route.get("dst", "default")
        if dst == "default" or route.get("type") in ("blackhole", "unreachable", "prohibit"):
            continue
        if IPv4Network(dst, strict=False).overlaps(block):
            raise LabError(
                f"the root namespace routes {dst} (inside the lab block {block}); choose another prefix"
            )
    if str(block) not in _our_routes(metric):
        run([ip, "route", "add", "blackhole", str(block), "metric", str(metric)])


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


def _teardown(state_dir: Path, prefix: str, state: LabState | None) -> dict[str, Any]:
    """Kill, delete, unroute, forget: everything of this prefix (and of the state, if there is one)."""
    own = _own_netns_re(prefix)
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
    metric = state.route_metric if state else route_metric(prefix)
    routes = _our_routes(metric)
    for dst in routes:
        run([services.tool("ip"), "route", "del", "blackhole", dst, "metric", str(metric)])
    for name in _OUR_FILES:
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
