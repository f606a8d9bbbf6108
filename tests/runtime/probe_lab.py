"""A tiny real network for the discovery probes: Linux network namespaces on one bridge, net-snmp agents.

Everything this module creates is named ``pdsnot-*`` and lives in 198.19.250.0/24 (or the subnet given):

* a black-hole route for the subnet in the root namespace, installed **before** anything else and removed
  last, so no packet for the lab can ever leave through the machine's real interfaces;
* ``pdsnot-sw``: a namespace holding the bridge ``br0`` (the "switch");
* ``pdsnot-scan``: the scanner's namespace, one address on the subnet; scans run inside it
  (``ip netns exec pdsnot-scan ...``);
* one namespace per simulated device, its veth ``eth0`` (``eth1``...) plugged into the bridge; devices
  may run ``snmpd`` (v2c communities and/or SNMPv3 users), ignore ICMP echo, or hold several addresses.

Veth pairs are created directly between two lab namespaces, so the root namespace never holds a lab
interface. Only processes this module started are signalled (by PID), and at teardown the remaining
processes of each lab namespace (``ip netns pids``); nothing else is touched. ``python -m
tests.runtime.probe_lab up|down`` drives the default lab by hand.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "pdsnot-"
DEFAULT_SUBNET = "198.19.250.0/24"
SCANNER_NS = PREFIX + "scan"
SWITCH_NS = PREFIX + "sw"
SCANNER_IP = "198.19.250.10"


class LabError(RuntimeError):
    """The lab could not be built."""


@dataclass(frozen=True)
class V3User:
    user: str
    auth_key: str
    priv_key: str
    auth_protocol: str = "SHA"
    priv_protocol: str = "AES"


@dataclass(frozen=True)
class SnmpAgent:
    sys_name: str
    sys_object_id: str
    sys_descr: str
    sys_services: int = 72
    communities: tuple[str, ...] = ()
    v3_users: tuple[V3User, ...] = ()


@dataclass(frozen=True)
class LabDevice:
    """One simulated device: a namespace with one veth per entry of ``interfaces`` (``eth0``, ``eth1``...)."""

    name: str
    interfaces: tuple[tuple[str, tuple[str, ...]], ...]
    """(MAC, addresses) per interface, addresses without prefix length (the lab subnet's is used)."""
    snmp: SnmpAgent | None = None
    ignore_icmp_echo: bool = False

    @property
    def namespace(self) -> str:
        return PREFIX + self.name

    @property
    def addresses(self) -> list[str]:
        return [ip for _, ips in self.interfaces for ip in ips]

    @property
    def macs(self) -> list[str]:
        return [mac for mac, _ in self.interfaces]


def _run(*args: str, check: bool = True, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise LabError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def _ns_exec(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run("ip", "netns", "exec", ns, *args, check=check)


def lab_namespaces() -> list[str]:
    """Every namespace of ours that exists now (leftovers of an earlier run included)."""
    out = _run("ip", "netns", "list").stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(PREFIX)]


def _ns_pids(ns: str) -> list[int]:
    out = _run("ip", "netns", "pids", ns, check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def _delete_namespace(ns: str) -> None:
    """Stop what still runs in ``ns`` (SIGTERM, then SIGKILL after a short, bounded wait) and delete it."""
    for sig, wait in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 2.0)):
        pids = _ns_pids(ns)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while _ns_pids(ns) and time.monotonic() < deadline:
            time.sleep(0.05)
    _run("ip", "netns", "del", ns, check=False)


def _snmpd_conf(device: LabDevice, agent: SnmpAgent, persist: Path) -> str:
    listen = ",".join(f"udp:{ip}:161" for ip in device.addresses)
    lines = [
        f"agentAddress {listen}",
        f"sysName {agent.sys_name}",
        f"sysDescr {agent.sys_descr}",
        f"sysObjectID {agent.sys_object_id}",
        f"sysServices {agent.sys_services}",
        "sysLocation pdsno probe lab",
        "sysContact lab@example.invalid",
        f"[snmp] persistentDir {persist}",
    ]
    lines += [f"rocommunity {community} default" for community in agent.communities]
    for user in agent.v3_users:
        lines.append(
            f'createUser {user.user} {user.auth_protocol} "{user.auth_key}" {user.priv_protocol} "{user.priv_key}"'
        )
        lines.append(f"rouser {user.user} priv")
    return "\n".join(lines) + "\n"


@dataclass
class ProbeLab:
    """The lab; :meth:`up` builds it, :meth:`down` removes everything (also after a failed ``up``)."""

    devices: Sequence[LabDevice]
    subnet: str = DEFAULT_SUBNET
    scanner_ip: str = SCANNER_IP
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="pdsnot-lab-")))
    _route: bool = False
    _namespaces: list[str] = field(default_factory=list)
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def prefixlen(self) -> int:
        return ipaddress.ip_network(self.subnet).prefixlen

    def _check_safe(self) -> None:
        net = ipaddress.ip_network(self.subnet)
        allowed = ipaddress.ip_network("198.19.250.0/24")
        if not net.subnet_of(allowed):
            raise LabError(f"{net} is outside the probe lab's range {allowed}")
        for d in self.devices:
            if not d.namespace.startswith(PREFIX) or len(d.namespace) > 40:
                raise LabError(f"bad device name {d.name!r}")
            for ip in d.addresses:
                if ipaddress.ip_address(ip) not in net:
                    raise LabError(f"{d.name}: {ip} is not in {net}")

    def _add_ns(self, ns: str) -> None:
        _run("ip", "netns", "add", ns)
        self._namespaces.append(ns)
        _ns_exec(ns, "ip", "link", "set", "lo", "up")
        _ns_exec(ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
        _ns_exec(ns, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1")

    def _plug(self, ns: str, port: str, ifname: str, mac: str | None, ips: Sequence[str]) -> None:
        """A veth from ``ns`` (``ifname``) to the bridge (``port``), created directly between the two."""
        _run(
            "ip", "link", "add", port, "netns", SWITCH_NS, "type", "veth", "peer", "name", ifname, "netns", ns,
        )  # fmt: skip
        _run("ip", "-n", SWITCH_NS, "link", "set", port, "master", "br0", "up")
        if mac:
            _run("ip", "-n", ns, "link", "set", ifname, "address", mac)
        for ip in ips:
            _run("ip", "-n", ns, "addr", "add", f"{ip}/{self.prefixlen}", "dev", ifname)
        _run("ip", "-n", ns, "link", "set", ifname, "up")

    def up(self) -> ProbeLab:
        self._check_safe()
        try:
            self._build()
        except BaseException:
            self.down()
            raise
        return self

    def _build(self) -> None:
        for ns in lab_namespaces():  # leftovers of an interrupted run of ours
            _delete_namespace(ns)
        # First of all: the subnet is a black hole in the root namespace.
        existing = _run("ip", "route", "show", "exact", self.subnet).stdout
        if existing.strip():
            if not existing.startswith("blackhole"):
                raise LabError(f"the root namespace already routes {self.subnet}: {existing.strip()}")
        else:
            _run("ip", "route", "add", "blackhole", self.subnet)
        self._route = True

        self._add_ns(SWITCH_NS)
        _run("ip", "-n", SWITCH_NS, "link", "add", "br0", "type", "bridge", "stp_state", "0")
        _run("ip", "-n", SWITCH_NS, "link", "set", "br0", "type", "bridge", "forward_delay", "0")
        _run("ip", "-n", SWITCH_NS, "link", "set", "br0", "up")

        self._add_ns(SCANNER_NS)
        self._plug(SCANNER_NS, "p-scan", "eth0", "02:19:fa:00:00:0a", [self.scanner_ip])

        for n, device in enumerate(self.devices):
            ns = device.namespace
            self._add_ns(ns)
            if len(device.interfaces) > 1:  # each interface answers ARP only for its own addresses
                for key in ("all", "default"):
                    _ns_exec(ns, "sysctl", "-qw", f"net.ipv4.conf.{key}.arp_ignore=1")
                    _ns_exec(ns, "sysctl", "-qw", f"net.ipv4.conf.{key}.arp_announce=2")
            if device.ignore_icmp_echo:
                _ns_exec(ns, "sysctl", "-qw", "net.ipv4.icmp_echo_ignore_all=1")
            for i, (mac, ips) in enumerate(device.interfaces):
                self._plug(ns, f"p{n}-{i}", f"eth{i}", mac, ips)
        for device in self.devices:
            if device.snmp is not None:
                self._start_snmpd(device, device.snmp)
        for device in self.devices:
            if device.snmp is not None:
                self._wait_snmpd(device)

    def _start_snmpd(self, device: LabDevice, agent: SnmpAgent) -> None:
        base = self.workdir / device.name
        persist = base / "persist"
        persist.mkdir(parents=True, exist_ok=True)
        conf = base / "snmpd.conf"
        conf.write_text(_snmpd_conf(device, agent, persist))
        log = (base / "snmpd.log").open("wb")
        snmpd = shutil.which("snmpd") or "/usr/sbin/snmpd"
        env = {**os.environ, "MIBS": "", "SNMP_PERSISTENT_DIR": str(persist)}
        cmd = ["ip", "netns", "exec", device.namespace, snmpd, "-f", "-Lo", "-C", "-c", str(conf)]
        self._procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env))
        log.close()

    def _wait_snmpd(self, device: LabDevice, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        want = {f"{ip}:161" for ip in device.addresses}
        while time.monotonic() < deadline:
            out = _ns_exec(device.namespace, "ss", "-Hnul", check=False).stdout
            if want <= {line.split()[3] for line in out.splitlines() if len(line.split()) > 3}:
                return
            time.sleep(0.05)
        log = (self.workdir / device.name / "snmpd.log").read_text(errors="replace")
        raise LabError(f"snmpd of {device.name} did not listen within {timeout}s: {log[-500:]}")

    def down(self) -> None:
        """Remove everything this lab created; safe to call twice and after a partial ``up``."""
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=3)
        self._procs.clear()
        for ns in reversed(self._namespaces):
            _delete_namespace(ns)
        self._namespaces.clear()
        if self._route:
            _run("ip", "route", "del", "blackhole", self.subnet, check=False)
            self._route = False
        shutil.rmtree(self.workdir, ignore_errors=True)

    def exec_in_scanner(
        self, *args: str, timeout: float = 60.0, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the scanner's namespace (bounded by ``timeout``)."""
        return subprocess.run(
            ["ip", "netns", "exec", SCANNER_NS, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=env,
        )

    def __enter__(self) -> ProbeLab:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()


def _mac(n: int, i: int = 0) -> str:
    return f"02:19:fa:{i:02x}:{n // 256:02x}:{n % 256:02x}"


V2C_COMMUNITY = "pdsnot-ro"
SECOND_COMMUNITY = "pdsnot-second"
V3_USER = V3User("pdsnot-v3", "pdsnot-authpass-1", "pdsnot-privpass-1")


def default_devices() -> list[LabDevice]:
    """The six devices the probe tests expect (their facts are what the tests compare against)."""
    return [
        LabDevice(
            "r1",
            ((_mac(21), ("198.19.250.21",)),),
            SnmpAgent(
                "lab-r1",
                ".1.3.6.1.4.1.9.1.1208",
                "Cisco IOS Software, C2900 Software (C2900-UNIVERSALK9-M), Version 15.2(4)M7, RELEASE SOFTWARE",
                sys_services=6,
                communities=(V2C_COMMUNITY,),
            ),
        ),
        LabDevice(
            "sw2",
            ((_mac(22), ("198.19.250.22",)),),
            SnmpAgent(
                "lab-sw2",
                ".1.3.6.1.4.1.2636.1.1.1.2.31",
                "Juniper Networks, Inc. ex2200-24t-4g Ethernet Switch, kernel JUNOS 12.3R6.6",
                sys_services=2,
                communities=(SECOND_COMMUNITY,),
            ),
        ),
        LabDevice(
            "v3",
            ((_mac(23), ("198.19.250.23",)),),
            SnmpAgent(
                "lab-v3",
                ".1.3.6.1.4.1.30065.1.3011.7048.427.3648",
                "Arista Networks EOS version 4.28.3M running on an Arista Networks DCS-7048T-A",
                sys_services=6,
                v3_users=(V3_USER,),
            ),
        ),
        LabDevice("icmp", ((_mac(24), ("198.19.250.24",)),)),
        LabDevice("arp", ((_mac(25), ("198.19.250.25",)),), ignore_icmp_echo=True),
        LabDevice(
            "multi",
            ((_mac(26), ("198.19.250.26", "198.19.250.27")), (_mac(26, 1), ("198.19.250.28",))),
            SnmpAgent(
                "lab-multi",
                ".1.3.6.1.4.1.8072.3.2.10",
                "Linux lab-multi 6.1.0-pdsno #1 SMP x86_64",
                sys_services=72,
                communities=(V2C_COMMUNITY,),
            ),
        ),
    ]


def bulk_devices(count: int, *, snmp_every: int = 10) -> list[LabDevice]:
    """``count`` devices at .21 upwards; all but every ``snmp_every``-th run a v2c agent."""
    devices = []
    for n in range(count):
        host = 21 + n
        agent = None
        if n % snmp_every != snmp_every - 1:
            agent = SnmpAgent(
                f"bulk-{n:03d}",
                ".1.3.6.1.4.1.8072.3.2.10",
                f"Linux bulk-{n:03d} 6.1.0 #1 SMP x86_64",
                communities=(V2C_COMMUNITY,),
            )
        devices.append(LabDevice(f"b{n:03d}", ((_mac(host), (f"198.19.250.{host}",)),), agent))
    return devices


def unavailable() -> str | None:
    """Why the lab cannot be built here (a test's skip reason), or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("ip", "snmpd", "ss"):
        if shutil.which(tool) is None and shutil.which(tool, path="/usr/sbin:/sbin") is None:
            return f"{tool} not installed"
    return None


@contextlib.contextmanager
def probe_lab(devices: Sequence[LabDevice] | None = None) -> Iterator[ProbeLab]:
    lab = ProbeLab(default_devices() if devices is None else devices)
    with lab:
        yield lab


def _main(argv: list[str]) -> int:
    if argv[:1] == ["down"]:
        for ns in lab_namespaces():
            _delete_namespace(ns)
        _run("ip", "route", "del", "blackhole", DEFAULT_SUBNET, check=False)
        for workdir in Path(tempfile.gettempdir()).glob("pdsnot-lab-*"):
            shutil.rmtree(workdir, ignore_errors=True)
        return 0
    if argv[:1] == ["up"]:
        devices = bulk_devices(int(argv[1])) if len(argv) > 1 else default_devices()
        lab = ProbeLab(devices).up()
        print(f"lab up: {len(devices)} devices, scanner {SCANNER_NS} {SCANNER_IP}; workdir {lab.workdir}")
        print("snmpd processes are children of this command; `down` stops them via ip netns pids")
        return 0
    print("usage: python -m tests.runtime.probe_lab up [N]|down", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
