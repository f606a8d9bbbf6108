"""Lab topology files: zones, subnets, simulated devices and controller hosts, validated strictly.

A topology names addresses only; ``pdsno lab up`` turns it into namespaces. Every key is declared (an
unknown key is refused), and the cross checks run on load: every subnet and the management network lie
inside ``prefix`` and do not overlap, every address is a host address of its subnet and is used once,
every subnet names an LC of its zone, names and MACs are unique. ``docs/lab.md`` is the reference; the
built-in topologies ship in ``pdsno/lab/topologies/``.

Devices are resolved into :class:`LabDevice` records (profile defaults applied, the subnet found from the
address, MACs derived where none is given): the lab builds those, and ``ground_truth.json`` lists them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from importlib import resources
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)

from pdsno.config import Slug, StrictLoader, dotted_key, yaml_error
from pdsno.errors import ReasonCode
from pdsno.lab.errors import TopologyError
from pdsno.lab.vendors import PROFILES, normalise_oid, vendor_name

__all__ = [
    "BUILTIN_TOPOLOGIES",
    "DeviceKind",
    "DeviceSetSpec",
    "DeviceSpec",
    "LabController",
    "LabDevice",
    "LabInterface",
    "SnmpV3Spec",
    "Topology",
    "load_topology",
    "resolve_added_device",
]

DeviceKind = Literal["snmp", "snmpv3", "icmp_only", "arp_only"]
SNMP_KINDS: frozenset[str] = frozenset({"snmp", "snmpv3"})
DEFAULT_COMMUNITY = "public"
DEFAULT_WRITE_COMMUNITY = "private"

_NAME_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?")
_IFNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,14}")
_MAC_RE = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")
_OUI_RE = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){2}")
_WORD_RE = re.compile(r"[A-Za-z0-9._-]+")
_OID_RE = re.compile(r"1(?:\.(?:0|[1-9][0-9]*))+")

CONTROLLER_INTERFACES = ("mgmt0", "lan")
"""A controller host's management interface, and the stem of its subnet interfaces (``lan0``, ``lan1``...)."""


def _name(value: str) -> str:
    if _NAME_RE.fullmatch(value) is None:
        raise ValueError("must be 1 to 40 characters: lower-case letters, digits and '-' inside")
    return value


def _ifname(value: str) -> str:
    if _IFNAME_RE.fullmatch(value) is None:
        raise ValueError(
            "must be a Linux interface name: 1 to 15 characters, letters, digits, '.', '_' or '-' "
            "(no '/': write Gi0-1 for Gi0/1)"
        )
    return value


def _mac(value: str) -> str:
    mac = value.strip().lower().replace("-", ":")
    if _MAC_RE.fullmatch(mac) is None:
        raise ValueError("must be a MAC address like 00:1b:54:0a:00:01")
    if int(mac[:2], 16) & 1:
        raise ValueError("must be a unicast MAC address (the first octet even)")
    if mac == "00:00:00:00:00:00":
        raise ValueError("must not be all zeros")
    return mac


def _word(what: str, low: int, high: int) -> Any:
    def check(value: str) -> str:
        if _WORD_RE.fullmatch(value) is None or not low <= len(value) <= high:
            raise ValueError(f"{what} must be {low} to {high} characters: letters, digits, '.', '_' or '-'")
        return value

    return check


def _oid(value: str) -> str:
    oid = normalise_oid(value)
    if _OID_RE.fullmatch(oid) is None:
        raise ValueError("must be a numeric OID like 1.3.6.1.4.1.9.1.1208")
    return oid


def _text(value: str) -> str:
    if not value.strip() or "\n" in value or '"' in value or "\\" in value:
        raise ValueError("must be one line of text without '\"' or '\\'")
    return value


Name = Annotated[str, AfterValidator(_name)]
IfName = Annotated[str, AfterValidator(_ifname)]
Mac = Annotated[str, AfterValidator(_mac)]
Community = Annotated[str, AfterValidator(_word("a community", 1, 32))]
Password = Annotated[str, AfterValidator(_word("an SNMPv3 password", 8, 64))]
User = Annotated[str, AfterValidator(_word("an SNMPv3 user", 1, 32))]
Oid = Annotated[str, AfterValidator(_oid)]
Text = Annotated[str, AfterValidator(_text)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SnmpV3Spec(_Strict):
    """An SNMPv3 user with authentication and privacy (authPriv): SHA and AES-128.

    The user reads everything; with ``write`` it may also SET the system group (as a write community may).
    """

    user: User
    auth_protocol: Literal["SHA"] = "SHA"
    auth_password: Password
    priv_protocol: Literal["AES"] = "AES"
    priv_password: Password
    write: bool = False


class InterfaceSpec(_Strict):
    name: IfName
    mac: Mac | None = None


class _SnmpFields(_Strict):
    """What a device answers (or, for a device without SNMP, what it is): filled from ``profile``."""

    kind: DeviceKind = "snmp"
    profile: str | None = None
    community: Community | None = None
    write_community: Community | None = None
    """The v2c community that may SET the system group (default ``private``)."""
    writable: bool = True
    """False pins sysName, sysContact and sysLocation: a SET of them fails (notWritable)."""
    snmpv3: SnmpV3Spec | None = None
    sysName: Text | None = None
    sysDescr: Text | None = None
    sysObjectID: Oid | None = None
    sysServices: int | None = Field(None, ge=0, le=127)
    sysContact: Text | None = None
    sysLocation: Text | None = None

    @model_validator(mode="after")
    def _check_kind(self) -> _SnmpFields:
        if self.profile is not None and self.profile not in PROFILES:
            raise ValueError(f"profile: unknown profile {self.profile!r}; built-in: {', '.join(PROFILES)}")
        if self.kind == "snmpv3" and self.snmpv3 is None:
            raise ValueError("kind snmpv3 needs an snmpv3 section (user, auth_password, priv_password)")
        if self.kind != "snmpv3" and self.snmpv3 is not None:
            raise ValueError(f"snmpv3: only a device of kind snmpv3 has an SNMPv3 user (kind is {self.kind})")
        if self.kind != "snmp" and (self.community is not None or self.write_community is not None):
            raise ValueError(f"community: only a device of kind snmp answers SNMP v2c (kind is {self.kind})")
        write = self.write_community or DEFAULT_WRITE_COMMUNITY
        if self.kind == "snmp" and write == (self.community or DEFAULT_COMMUNITY):
            raise ValueError(
                f"write_community: {write!r} is also the read community (give two different ones)"
            )
        return self


class DeviceSpec(_SnmpFields):
    """One simulated device. ``ip`` or ``addresses`` (several addresses) sit on the first interface."""

    name: Name
    subnet: IPv4Network | None = None
    ip: IPv4Address | None = None
    addresses: list[IPv4Address] = Field(default_factory=list)
    mac: Mac | None = None
    interfaces: list[InterfaceSpec] = Field(default_factory=list, max_length=16)

    @model_validator(mode="after")
    def _check_addresses(self) -> DeviceSpec:
        if (self.ip is None) == (not self.addresses):
            raise ValueError("give exactly one of ip (one address) or addresses (a list)")
        if len(set(self.all_addresses)) != len(self.all_addresses):
            raise ValueError("addresses: an address is listed twice")
        names = [i.name for i in self.interfaces]
        if len(set(names)) != len(names):
            raise ValueError("interfaces: an interface name is listed twice")
        if self.mac is not None and self.interfaces and self.interfaces[0].mac not in (None, self.mac):
            raise ValueError("mac and interfaces[0].mac differ (mac is the first interface's MAC)")
        return self

    @property
    def all_addresses(self) -> list[IPv4Address]:
        return [self.ip] if self.ip is not None else list(self.addresses)


class DeviceSetSpec(_SnmpFields):
    """``count`` alike devices at ``start``, ``start + step``...; ``name`` is a format like ``sw-{n:03d}``.

    ``profiles`` are handed out in turn (``profile`` gives every device the same one).
    """

    name: str
    count: int = Field(ge=1, le=4096)
    first: int = Field(1, ge=0)
    start: IPv4Address
    step: int = Field(1, ge=1)
    profiles: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check_set(self) -> DeviceSetSpec:
        if "{n" not in self.name:
            raise ValueError("name: must contain {n} (or a format like {n:03d}) to number the devices")
        for profile in self.profiles:
            if profile not in PROFILES:
                raise ValueError(f"profiles: unknown profile {profile!r}; built-in: {', '.join(PROFILES)}")
        if self.profile is not None and self.profiles:
            raise ValueError("give profile (one for all) or profiles (in turn), not both")
        if self.sysName is not None:
            raise ValueError("sysName: a device set names each device itself (sysName is the device name)")
        return self

    def expand(self) -> list[DeviceSpec]:
        shared = self.model_dump(
            exclude={"name", "count", "first", "start", "step", "profiles", "profile"}, exclude_none=True
        )
        out = []
        for i in range(self.count):
            n = self.first + i
            try:
                name = self.name.format(n=n)
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(f"name: {self.name!r} is not a valid format: {exc}") from None
            profile = self.profiles[i % len(self.profiles)] if self.profiles else self.profile
            ip = self.start + i * self.step
            out.append(DeviceSpec.model_validate({**shared, "name": name, "ip": ip, "profile": profile}))
        return out


class SubnetSpec(_Strict):
    cidr: IPv4Network
    lc: Name
    lc_ip: IPv4Address | None = None
    """The LC host's address on this subnet (default: the last host address)."""


class ZoneSpec(_Strict):
    name: Slug
    subnets: list[SubnetSpec] = Field(min_length=1)
    devices: list[DeviceSpec] = Field(default_factory=list)
    device_sets: list[DeviceSetSpec] = Field(default_factory=list)


class HostSpec(_Strict):
    name: Name
    mgmt_ip: IPv4Address


class ZonedHostSpec(HostSpec):
    zone: Slug


class ControllersSpec(_Strict):
    gc: HostSpec | None = None
    rcs: list[ZonedHostSpec] = Field(default_factory=list)
    lcs: list[ZonedHostSpec] = Field(min_length=1)
    broker: HostSpec | None = None
    nib: HostSpec | None = None
    """A PostgreSQL server for the GC's NIB (inventory group ``nib``); without it the GC keeps SQLite."""


# --------------------------------------------------------------------------------------------------
# resolved records (what the lab builds; stored in state.json, listed in ground_truth.json)


class LabInterface(_Strict):
    name: str
    mac: str
    addresses: list[str] = Field(default_factory=list)


class LabDevice(_Strict):
    """A device as built: every default applied, the subnet and the serving LC known, MACs fixed."""

    name: str
    zone: str
    subnet: str
    lc: str
    kind: DeviceKind
    profile: str | None = None
    interfaces: list[LabInterface]
    community: str | None = None
    write_community: str | None = None
    writable: bool = True
    snmpv3: SnmpV3Spec | None = None
    sysName: str | None = None
    sysDescr: str | None = None
    sysObjectID: str | None = None
    sysServices: int | None = None
    sysContact: str | None = None
    sysLocation: str | None = None

    @property
    def uplink(self) -> LabInterface:
        """The interface plugged into the subnet; it holds every address."""
        return self.interfaces[0]

    @property
    def addresses(self) -> list[str]:
        return list(self.uplink.addresses)

    @property
    def mac(self) -> str:
        return self.uplink.mac

    @property
    def vendor(self) -> str | None:
        return vendor_name(self.sysObjectID, self.sysDescr)

    @property
    def runs_snmpd(self) -> bool:
        return self.kind in SNMP_KINDS


class LabSubnetLink(_Strict):
    cidr: str
    ip: str
    interface: str


class LabController(_Strict):
    """A controller host (or the broker or NIB server host): a namespace with sshd on the management network."""

    name: str
    role: Literal["gc", "rc", "lc", "broker", "nib"]
    zone: str | None = None
    mgmt_ip: str
    subnets: list[LabSubnetLink] = Field(default_factory=list)


# --------------------------------------------------------------------------------------------------
# resolution


def _last_host(net: IPv4Network) -> IPv4Address:
    return net.broadcast_address - 1 if net.prefixlen < 31 else net.broadcast_address


def _is_host(net: IPv4Network, ip: IPv4Address) -> bool:
    if ip not in net:
        return False
    return net.prefixlen >= 31 or ip not in (net.network_address, net.broadcast_address)


def derive_mac(key: str, oui: str | None, taken: set[str]) -> str:
    """A MAC that is the same for the same ``key`` every time (the vendor's OUI, or locally administered)."""
    for attempt in range(1000):
        digest = hashlib.sha256(f"{key}#{attempt}".encode()).digest()
        if oui is not None:
            mac = oui + ":" + ":".join(f"{b:02x}" for b in digest[:3])
        else:
            mac = "02:" + ":".join(f"{b:02x}" for b in digest[:5])
        if mac not in taken:
            taken.add(mac)
            return mac
    raise ValueError(f"cannot derive a free MAC for {key}")  # pragma: no cover - 1000 collisions


class _Registry:
    """What is taken (names, addresses, MACs) and where each subnet belongs, while devices are resolved."""

    def __init__(self, subnets: dict[IPv4Network, tuple[str, str]]) -> None:
        self.subnets = subnets  # cidr -> (zone, lc)
        self.names: set[str] = set()
        self.addresses: dict[IPv4Address, str] = {}
        self.macs: set[str] = set()

    def take_address(self, ip: IPv4Address, owner: str) -> None:
        other = self.addresses.get(ip)
        if other is not None:
            raise ValueError(f"address {ip} of {owner} is already used by {other}")
        self.addresses[ip] = owner

    def take_mac(self, mac: str, owner: str) -> None:
        if mac in self.macs:
            raise ValueError(f"MAC {mac} of {owner} is used twice")
        self.macs.add(mac)

    def resolve(self, spec: DeviceSpec, zone: str, *, macs_taken: bool) -> LabDevice:
        """``macs_taken``: the spec's explicit MACs were already registered (a whole topology's are, first)."""
        if spec.name in self.names:
            raise ValueError(f"device name {spec.name!r} is used twice")
        addresses = spec.all_addresses
        zone_subnets = [net for net, (z, _) in self.subnets.items() if z == zone]
        if spec.subnet is not None:
            if spec.subnet not in zone_subnets:
                raise ValueError(
                    f"device {spec.name}: subnet {spec.subnet} is not a subnet of zone {zone} "
                    f"({', '.join(map(str, zone_subnets))})"
                )
            subnet = spec.subnet
        else:
            found = [net for net in zone_subnets if addresses[0] in net]
            if not found:
                raise ValueError(
                    f"device {spec.name}: {addresses[0]} is in no subnet of zone {zone} "
                    f"({', '.join(map(str, zone_subnets))})"
                )
            subnet = found[0]
        for ip in addresses:
            if not _is_host(subnet, ip):
                raise ValueError(f"device {spec.name}: {ip} is not a host address of {subnet}")
            self.take_address(ip, spec.name)
        profile = PROFILES.get(spec.profile) if spec.profile else None
        specs = list(spec.interfaces)
        if not specs:
            names = profile.interfaces if profile is not None else ("eth0",)
            specs = [InterfaceSpec(name=n) for n in names]
        if spec.mac is not None:
            specs[0] = InterfaceSpec(name=specs[0].name, mac=spec.mac)
        interfaces = []
        for i, iface in enumerate(specs):
            if iface.mac is not None:
                if not macs_taken:
                    self.take_mac(iface.mac, spec.name)
                mac = iface.mac
            else:
                mac = derive_mac(f"{spec.name}/{iface.name}", profile.oui if profile else None, self.macs)
            on_it = [str(ip) for ip in addresses] if i == 0 else []
            interfaces.append(LabInterface(name=iface.name, mac=mac, addresses=on_it))
        snmp = spec.kind in SNMP_KINDS
        descr = spec.sysDescr or (profile.sys_descr.replace("{name}", spec.name) if profile else None)
        self.names.add(spec.name)
        return LabDevice(
            name=spec.name,
            zone=zone,
            subnet=str(subnet),
            lc=self.subnets[subnet][1],
            kind=spec.kind,
            profile=spec.profile,
            interfaces=interfaces,
            community=(spec.community or DEFAULT_COMMUNITY) if spec.kind == "snmp" else None,
            write_community=(spec.write_community or DEFAULT_WRITE_COMMUNITY)
            if spec.kind == "snmp"
            else None,
            writable=spec.writable,
            snmpv3=spec.snmpv3,
            sysName=spec.sysName or (spec.name if snmp else None),
            sysDescr=descr or (f"Linux {spec.name}" if snmp else None),
            sysObjectID=spec.sysObjectID
            or (profile.sys_object_id if profile else ("1.3.6.1.4.1.8072.3.2.10" if snmp else None)),
            sysServices=spec.sysServices
            if spec.sysServices is not None
            else (profile.sys_services if profile else (72 if snmp else None)),
            sysContact=spec.sysContact or ("noc@lab.pdsno.invalid" if snmp else None),
            sysLocation=spec.sysLocation or (f"pdsno lab, {zone}" if snmp else None),
        )


def _explicit_macs(spec: DeviceSpec) -> list[str]:
    first = spec.mac or (spec.interfaces[0].mac if spec.interfaces else None)
    return [m for m in [first, *(i.mac for i in spec.interfaces[1:])] if m is not None]


def _all_specs(zone: ZoneSpec) -> list[DeviceSpec]:
    out = list(zone.devices)
    for i, device_set in enumerate(zone.device_sets):
        try:
            out.extend(device_set.expand())
        except (ValueError, ValidationError) as exc:
            raise ValueError(f"zones[{zone.name}].device_sets[{i}]: {exc}") from None
    return out


class Topology(_Strict):
    """A whole lab: the address block, the management network, the zones and the controller hosts."""

    name: Name
    description: str = ""
    prefix: IPv4Network = IPv4Network("198.18.0.0/15")
    """The address block of the whole lab; black-holed in the root namespace while the lab is up."""
    management: IPv4Network
    operator_ip: IPv4Address | None = None
    """The operator's (Ansible's) address on the management network; default: its last host address."""
    zones: list[ZoneSpec] = Field(min_length=1)
    controllers: ControllersSpec

    _devices: list[LabDevice] = PrivateAttr(default_factory=list)
    _controllers: list[LabController] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _resolve(self) -> Topology:
        if not self.prefix.is_private:
            raise ValueError(f"prefix: {self.prefix} is a public block; use 198.18.0.0/15 or a private one")
        if not self.management.subnet_of(self.prefix):
            raise ValueError(f"management: {self.management} is not inside prefix {self.prefix}")
        zones = [z.name for z in self.zones]
        if len(set(zones)) != len(zones):
            raise ValueError("zones: a zone name is used twice")
        lcs = {lc.name: lc for lc in self.controllers.lcs}
        hosts: list[HostSpec] = [*self.controllers.lcs, *self.controllers.rcs]
        hosts += [
            h for h in (self.controllers.gc, self.controllers.broker, self.controllers.nib) if h is not None
        ]
        names = [h.name for h in hosts]
        if len(set(names)) != len(names):
            raise ValueError("controllers: a host name is used twice")
        for host in hosts:
            if isinstance(host, ZonedHostSpec) and host.zone not in zones:
                raise ValueError(f"controllers: {host.name} is in zone {host.zone}, which is not defined")

        subnets: dict[IPv4Network, tuple[str, str]] = {}
        for zone in self.zones:
            for sub in zone.subnets:
                net = sub.cidr
                if not net.subnet_of(self.prefix):
                    raise ValueError(f"zone {zone.name}: subnet {net} is not inside prefix {self.prefix}")
                if net.prefixlen > 30:
                    raise ValueError(f"zone {zone.name}: subnet {net} is too small for a lab subnet")
                for other in [self.management, *subnets]:
                    if net.overlaps(other):
                        raise ValueError(f"zone {zone.name}: subnet {net} overlaps {other}")
                lc = lcs.get(sub.lc)
                if lc is None:
                    raise ValueError(
                        f"zone {zone.name}: subnet {net} names LC {sub.lc}, not in controllers.lcs"
                    )
                if lc.zone != zone.name:
                    raise ValueError(f"zone {zone.name}: subnet {net} names LC {sub.lc} of zone {lc.zone}")
                subnets[net] = (zone.name, sub.lc)

        registry = _Registry(subnets)
        operator = self.operator_ip or _last_host(self.management)
        for ip, owner in [(operator, "the operator"), *((h.mgmt_ip, h.name) for h in hosts)]:
            if not _is_host(self.management, ip):
                raise ValueError(f"{owner}: {ip} is not a host address of management {self.management}")
            registry.take_address(ip, owner)

        links: dict[str, list[LabSubnetLink]] = {lc: [] for lc in lcs}
        for zone in self.zones:
            for sub in zone.subnets:
                ip = sub.lc_ip or _last_host(sub.cidr)
                if not _is_host(sub.cidr, ip):
                    raise ValueError(f"zone {zone.name}: lc_ip {ip} is not a host address of {sub.cidr}")
                registry.take_address(ip, sub.lc)
                interface = f"{CONTROLLER_INTERFACES[1]}{len(links[sub.lc])}"
                links[sub.lc].append(LabSubnetLink(cidr=str(sub.cidr), ip=str(ip), interface=interface))
        for lc_name, served in links.items():
            if not served:
                raise ValueError(f"controllers: LC {lc_name} serves no subnet (name it in a zone's subnets)")

        per_zone = [(zone.name, _all_specs(zone)) for zone in self.zones]
        for _, specs in per_zone:
            for spec in specs:
                for mac in _explicit_macs(spec):
                    registry.take_mac(mac, spec.name)
        self._devices = [
            registry.resolve(spec, zone, macs_taken=True) for zone, specs in per_zone for spec in specs
        ]

        def plain(h: HostSpec, role: Literal["gc", "rc", "broker", "nib"]) -> LabController:
            zone = h.zone if isinstance(h, ZonedHostSpec) else None
            return LabController(name=h.name, role=role, zone=zone, mgmt_ip=str(h.mgmt_ip))

        controllers = [plain(self.controllers.gc, "gc")] if self.controllers.gc else []
        controllers += [plain(rc, "rc") for rc in self.controllers.rcs]
        controllers += [
            LabController(
                name=lc.name, role="lc", zone=lc.zone, mgmt_ip=str(lc.mgmt_ip), subnets=links[lc.name]
            )
            for lc in self.controllers.lcs
        ]
        if self.controllers.broker is not None:
            controllers.append(plain(self.controllers.broker, "broker"))
        if self.controllers.nib is not None:
            controllers.append(plain(self.controllers.nib, "nib"))
        self._controllers = controllers
        return self

    @property
    def operator_address(self) -> IPv4Address:
        return self.operator_ip or _last_host(self.management)

    def devices(self) -> list[LabDevice]:
        return list(self._devices)

    def hosts(self) -> list[LabController]:
        return list(self._controllers)


def resolve_added_device(
    spec: DeviceSpec,
    zone: str,
    *,
    subnets: dict[IPv4Network, tuple[str, str]],
    names: Iterable[str],
    addresses: dict[IPv4Address, str],
    macs: Iterable[str],
) -> LabDevice:
    """Resolve a device added to a running lab against what the lab already holds (raises ValueError)."""
    registry = _Registry(subnets)
    registry.names.update(names)
    registry.addresses.update(addresses)
    registry.macs.update(macs)
    return registry.resolve(spec, zone, macs_taken=False)


# --------------------------------------------------------------------------------------------------
# loading


def validation_problems(exc: ValidationError) -> list[str]:
    """One ``key: reason`` line per problem pydantic found."""
    problems = []
    for err in exc.errors(include_url=False):
        key = dotted_key([p for p in err["loc"] if isinstance(p, str | int)])
        if err["type"] == "extra_forbidden":
            reason = "unknown key"
        elif err["type"] == "missing":
            reason = "required key is missing"
        else:
            reason = err["msg"].removeprefix("Value error, ")
        problems.append(f"{key}: {reason}" if key else reason)
    return problems


def parse_topology(data: Any, *, source: str) -> Topology:
    if not isinstance(data, dict):
        raise TopologyError(
            f"{source}: the top level must be a mapping (name, management, zones, controllers)"
        )
    try:
        return Topology.model_validate(data)
    except ValidationError as exc:
        problems = validation_problems(exc)
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise TopologyError(f"{source}: {problems[0]}{more}", file=source, errors=problems) from None


BUILTIN_TOPOLOGIES = ("default", "mini", "bench-24", "bench-16")


def builtin_topology_path(name: str) -> Path:
    return Path(str(resources.files("pdsno.lab").joinpath("topologies", f"{name}.yml")))


def load_topology(source: str | Path) -> Topology:
    """A topology from a file, or a built-in one by name (``default``, ``bench-24``, ``bench-16``)."""
    path = Path(source)
    if not path.exists() and str(source) in BUILTIN_TOPOLOGIES:
        path = builtin_topology_path(str(source))
    label = str(source)
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError):
        raise TopologyError(
            f"{label}: no such topology file (built-in topologies: {', '.join(BUILTIN_TOPOLOGIES)})",
            code=ReasonCode.CONFIG_NOT_FOUND,
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TopologyError(f"{label}: cannot read: {exc}", code=ReasonCode.CONFIG_NOT_FOUND) from None
    try:
        data = yaml.load(text, Loader=StrictLoader)  # noqa: S506 - StrictLoader is a SafeLoader
    except yaml.YAMLError as exc:
        raise TopologyError(str(yaml_error(label, exc).message)) from None
    return parse_topology(data, source=label)
