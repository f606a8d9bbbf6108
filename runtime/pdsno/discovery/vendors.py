"""What a device is, from what SNMP (or, without SNMP, its MAC address) says: vendor, type and firmware.

* Vendor: the IANA private enterprise number in ``sysObjectID`` (1.3.6.1.4.1.<n>...) looked up in the
  registry file ``data/enterprise-numbers.tsv`` (the whole registry; ``scripts/update_enterprise_numbers.py``
  regenerates it from IANA or from Debian's offline copy), its organization named as people name the vendor (``ciscoSystems`` → ``Cisco``). A generic
  agent's number (net-snmp, ucd-snmp) names the agent, not the box: the vendor is then a vendor named in
  ``sysDescr``, else the operating system the agent's ``sysObjectID`` names (``Linux``), and
  :func:`agent_for` names the agent. Else a few ``sysDescr`` keywords. Without SNMP, the MAC's OUI in the
  IEEE registry (Debian's ``ieee-data``: ``/usr/share/ieee-data/oui.csv``) when that file is installed.
* Type: ``sysObjectID`` first (:data:`FAMILIES`, per vendor: the model families under its enterprise arc),
  then ``sysDescr`` keywords naming the kind of box, then ``sysServices`` (RFC 3418: bit L-1 set for a
  device offering layer L services).
* Firmware: a version-looking token in ``sysDescr`` for the common formats.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from pdsno.nib.models import DeviceType

ENTERPRISE_PREFIX = (1, 3, 6, 1, 4, 1)
ENTERPRISES_FILE = "data/enterprise-numbers.tsv"
"""``<number>\\t<organization>`` lines (``#`` comments), inside this package."""
OUI_FILE = Path("/usr/share/ieee-data/oui.csv")
"""The IEEE MA-L registry as Debian's ``ieee-data`` installs it; absent: no vendor from MACs."""

NET_SNMP = 8072
UCD_SNMP = 2021
GENERIC_AGENTS = {NET_SNMP: "net-snmp", UCD_SNMP: "ucd-snmp", 12325: "bsnmpd"}
"""Enterprises whose ``sysObjectID`` names the SNMP agent's software, not the device's maker."""
OEM_PLATFORMS = {4413: "Broadcom"}
"""Enterprises of switch platforms sold under other brands (Broadcom FASTPATH: Ubiquiti's UniFi and
EdgeSwitch switches): a vendor named in ``sysDescr`` wins over the registered organization."""

_AGENT_OS: dict[int, str] = {
    1: "HP-UX",
    2: "SunOS",
    3: "Solaris",
    4: "OSF",
    5: "Ultrix",
    6: "HP-UX",
    7: "NetBSD",
    8: "FreeBSD",
    9: "IRIX",
    10: "Linux",
    11: "BSDi",
    12: "OpenBSD",
    13: "Windows",
    14: "HP-UX",
    15: "AIX",
    16: "macOS",
    17: "DragonFly BSD",
}
"""The OS a generic agent reports in ``sysObjectID``: NET-SNMP-TC ``netSnmpAgentOIDs`` (8072.3.2.<n>) and
UCD-SNMP-MIB ``ucdSnmpAgent`` (2021.250.<n>) number them alike."""


def _arcs(sys_object_id: str | None) -> tuple[int, ...] | None:
    if not sys_object_id:
        return None
    try:
        return tuple(int(a) for a in sys_object_id.strip().lstrip(".").split("."))
    except ValueError:
        return None


def enterprise_number(sys_object_id: str | None) -> int | None:
    """The private enterprise number of a ``sysObjectID`` (``1.3.6.1.4.1.9.1.1208`` → 9), else None."""
    arcs = _arcs(sys_object_id)
    if (
        arcs is not None
        and len(arcs) > len(ENTERPRISE_PREFIX)
        and arcs[: len(ENTERPRISE_PREFIX)] == ENTERPRISE_PREFIX
    ):
        return arcs[len(ENTERPRISE_PREFIX)]
    return None


def _under_enterprise(sys_object_id: str | None) -> tuple[int, tuple[int, ...]] | None:
    """``(enterprise, arcs below it)``: ``1.3.6.1.4.1.2636.1.1.1.2.63`` → ``(2636, (1, 1, 1, 2, 63))``."""
    number = enterprise_number(sys_object_id)
    arcs = _arcs(sys_object_id)
    if number is None or arcs is None:
        return None
    return number, arcs[len(ENTERPRISE_PREFIX) + 1 :]


# ----------------------------------------------------------------------------------------------- names

_ALIASES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), name)
    for pattern, name in (
        (r"^(cisco|airespace|meraki|cerent|altiga|tandberg)", "Cisco"),
        (r"^(juniper|netscreen|unisphere|trapeze)", "Juniper"),
        (r"^arista", "Arista"),
        (r"^(hewlett[- ]?packard enterprise|hpe\b|compaq)", "HPE"),  # Compaq's number: ProLiant iLO
        (r"^(hewlett[- ]?packard|hp\b|hp inc)", "HP"),
        (r"^aruba", "Aruba"),
        (r"^(mikrotik|routerboard)", "MikroTik"),
        (r"^(ubiquiti|frogfoot)", "Ubiquiti"),  # airOS radios answer under Frogfoot's number
        (r"^fortinet", "Fortinet"),
        (r"^palo alto", "Palo Alto Networks"),
        (r"^huawei", "Huawei"),
        (r"^(hangzhou h3c|new h3c|h3c)", "H3C"),
        (r"^dell", "Dell"),
        (r"^netgear", "Netgear"),
        (r"^microsoft", "Microsoft"),
        (r"^apple", "Apple"),
        (r"^(ibm|international business machines)", "IBM"),
        (r"^tp-link", "TP-Link"),
        (r"^d-link", "D-Link"),
        (r"^zyxel", "ZyXEL"),
        (r"^check ?point", "Check Point"),
        (r"^f5\b", "F5"),
        (r"^extreme networks", "Extreme Networks"),
        (r"^(brocade|foundry)", "Brocade"),
        (r"^(nokia|timetra)", "Nokia"),
        (r"^vmware", "VMware"),
        (r"^(seiko )?epson", "Epson"),
        (r"^(hangzhou )?hikvision", "Hikvision"),
        (r"^axis communications", "Axis"),
        (r"^brother", "Brother"),
        (r"^(american power conversion|apc\b)", "APC"),
        (r"^(netscaler|citrix)", "Citrix"),
        (r"^(rapid city|nortel)", "Nortel"),
        (r"^redback", "Ericsson (Redback)"),
        (r"^ruckus", "Ruckus"),
        (r"^sonicwall", "SonicWall"),
    )
)
"""How people name the vendor behind a registered organization name (IANA's or IEEE's)."""

_LEGAL = re.compile(
    r"([,.]?\s+(inc|incorporated|corp|corporation|co|company|ltd|limited|llc|gmbh|ag|s\.?a|b\.?v|plc|"
    r"oy|ab|sia|spa|srl|kk|co\.,?\s*ltd|international)\.?)+\s*$",
    re.IGNORECASE,
)


_SHOUTED_WORD = re.compile(r"\b[A-Z]{5,}\b")


def display_name(organization: str) -> str:
    """``Cisco Systems, Inc`` → ``Cisco``; an organization without an alias loses its legal suffix and
    any ``(url)`` or ``(remark)``: ``Allied Telesis, Inc.`` → ``Allied Telesis``. A name the registry
    spells in capitals reads as the vendor writes it (``KYOCERA Corporation`` → ``Kyocera``); short
    capitals are acronyms and stay (``QNAP SYSTEMS, INC`` → ``QNAP Systems``)."""
    name = re.sub(r"\s*\([^)]*\)\s*", " ", organization).strip()
    for pattern, alias in _ALIASES:
        if pattern.search(name):
            return alias
    cleaned = _LEGAL.sub("", name).strip(" ,.") or name
    if not any(c.islower() for c in cleaned) or _SHOUTED_WORD.fullmatch(cleaned.split()[0]):
        cleaned = _SHOUTED_WORD.sub(lambda word: word.group(0).capitalize(), cleaned)
    return cleaned


@cache
def enterprises() -> dict[int, str]:
    """Enterprise number → organization, from the registry file shipped with this package."""
    table: dict[int, str] = {}
    text = resources.files(__package__).joinpath(ENTERPRISES_FILE).read_text(encoding="utf-8")
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        number, _, organization = line.partition("\t")
        if number.isdigit() and organization.strip():
            table[int(number)] = organization.strip()
    return table


def enterprise_vendor(number: int) -> str | None:
    """The vendor registered under an enterprise number, as people name it (``9`` → ``Cisco``)."""
    organization = enterprises().get(number)
    return display_name(organization) if organization else None


_DESCR_VENDORS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), vendor)
    for pattern, vendor in (
        (r"\bcisco\b|\bmeraki\b", "Cisco"),
        (r"\bjunos\b|\bjuniper\b", "Juniper"),
        (r"\barista\b", "Arista"),
        (r"\baruba\b", "Aruba"),
        (r"\bmikrotik\b|\brouteros\b", "MikroTik"),
        (r"\bubiquiti\b|\bunifi\b|\bedgeos\b|\bedgeswitch\b|^(USW|UAP|U6|U7)-", "Ubiquiti"),
        (r"\bhuawei\b", "Huawei"),
        (r"\bfortigate\b|\bfortinet\b", "Fortinet"),
        (r"\bpan-os\b|\bpalo alto\b", "Palo Alto Networks"),
        (r"\bsynology\b|\bdiskstation\b", "Synology"),
        (r"\bqnap\b", "QNAP"),
        (r"\bvyos\b", "VyOS"),
        (r"\bpfsense\b", "Netgate"),
    )
)


def agent_for(sys_object_id: str | None) -> str | None:
    """The generic SNMP agent a ``sysObjectID`` names (``net-snmp``, ``ucd-snmp``), else None."""
    number = enterprise_number(sys_object_id)
    return GENERIC_AGENTS.get(number) if number is not None else None


def _agent_os(number: int, below: tuple[int, ...]) -> str | None:
    if number == NET_SNMP and below[:2] == (3, 2) and len(below) > 2:
        return _AGENT_OS.get(below[2])
    if number == UCD_SNMP and below[:1] == (250,) and len(below) > 1:
        return _AGENT_OS.get(below[1])
    return None


def _descr_vendor(sys_descr: str | None) -> str | None:
    for pattern, vendor in _DESCR_VENDORS:
        if sys_descr and pattern.search(sys_descr):
            return vendor
    return None


def vendor_for(sys_object_id: str | None, sys_descr: str | None = None) -> str | None:
    """The device's vendor from its system group; see the module's docstring for the order."""
    place = _under_enterprise(sys_object_id)
    if place is not None:
        number, below = place
        if number in GENERIC_AGENTS:
            return _descr_vendor(sys_descr) or _agent_os(number, below) or GENERIC_AGENTS[number]
        if number in OEM_PLATFORMS:
            return _descr_vendor(sys_descr) or enterprise_vendor(number) or OEM_PLATFORMS[number]
        vendor = enterprise_vendor(number)
        if vendor:
            return vendor
    return _descr_vendor(sys_descr)


@cache
def _oui_table(path: Path) -> dict[str, str]:
    table: dict[str, str] = {}
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            for row in csv.reader(handle):
                if len(row) >= 3 and len(row[1]) == 6 and row[0] == "MA-L":
                    table[row[1].lower()] = row[2]
    except OSError:
        return {}
    return table


def oui_vendor(mac: str | None, path: Path | None = None) -> str | None:
    """The vendor an IEEE OUI names for a MAC (``00:00:0c:...`` → ``Cisco``); None for locally
    administered or group MACs, and when the registry file is not installed."""
    if not mac or mac.startswith("unknown-"):
        return None
    digits = re.sub(r"[^0-9a-fA-F]", "", mac).lower()
    if len(digits) != 12 or int(digits[:2], 16) & 0x03:
        return None
    organization = _oui_table(path or OUI_FILE).get(digits[:6])
    return display_name(organization) if organization else None


# ------------------------------------------------------------------------------------------------ type


@dataclass(frozen=True, slots=True)
class Family:
    """Models under one OID prefix (the arcs below the vendor's enterprise number) and their type."""

    prefix: tuple[int, ...]
    kind: DeviceType
    name: str


def _numbers(spec: str) -> list[int]:
    """``"1-3 7"`` → ``[1, 2, 3, 7]``."""
    out: list[int] = []
    for part in spec.split():
        low, _, high = part.partition("-")
        out.extend(range(int(low), int(high or low) + 1))
    return out


def _juniper(kind: DeviceType, name: str, numbers: str) -> tuple[Family, ...]:
    """JUNIPER-CHASSIS-DEFINES-MIB numbers a model alike under jnxProductLine (1.1.1.1.<n>) and
    jnxProductName (1.1.1.2.<n>); agents answer the latter in ``sysObjectID``."""
    return tuple(Family((1, 1, 1, line, n), kind, name) for n in _numbers(numbers) for line in (1, 2))


_R, _S, _F = DeviceType.ROUTER, DeviceType.SWITCH, DeviceType.FIREWALL
_AP, _WLC = DeviceType.ACCESS_POINT, DeviceType.WIRELESS_CONTROLLER
_SV, _E = DeviceType.SERVER, DeviceType.ENDPOINT

FAMILIES: dict[int, tuple[Family, ...]] = {
    9: (  # Cisco: CISCO-PRODUCTS-MIB is one flat list (9.1.<n>) of thousands; sysDescr names the image
        # family of the rest (C2960X Software, Catalyst L3 Switch Software, ISR Software, ...)
        Family((12, 3, 1, 3), _S, "Nexus (cevChassis, NX-OS)"),
        *(
            Family((1, n), _WLC, "AireOS / Catalyst wireless controller")
            for n in _numbers("828 926 1069 1279 1293 1295 1615 1631 1645 2026 2170 2171")
        ),
    ),
    14179: (Family((), _WLC, "Airespace wireless controllers"),),
    2636: (  # Juniper: jnxProductName numbers by family
        *_juniper(_S, "EX", "30 31 32 33 43 44 63 74 76 92 102 103 104 109 131 132 151 156 165 169 508"),
        *_juniper(_S, "QFX", "60 61 62 82 84 85 91 100 525 526"),
        *_juniper(_F, "SRX", "26 28 34 35 36 39 40 41 49 58 64 65 86 96 105 129 133-137 140-143 164 577"),
        *_juniper(_R, "M/T/J", "1-11 13-15 18-20 22-24 27 83"),
        *_juniper(_R, "MX", "21 25 29 57 88-90 93 97 99 108 111 139 144-146 152 154 155 167 168"),
        *_juniper(_R, "PTX", "69 98 130 147 150 513 523 524 555 570"),
        *_juniper(_R, "ACX", "87 113-124 126 127 148 158-163 576 579-582"),
        *_juniper(_R, "vRR", "110"),
    ),
    14525: (Family((), _WLC, "Trapeze wireless"),),
    30065: (Family((1, 3011), _S, "Arista DCS/CCS switches"),),
    11: (  # HP
        Family((2, 3, 7, 11), _S, "ProCurve / Aruba (hpEtherSwitch)"),
        Family((2, 3, 9, 1), _E, "JetDirect printers"),
    ),
    47196: (Family((4, 1, 1), _S, "ArubaOS-CX switches"),),
    14823: (  # Aruba (ARUBA-MIB)
        Family((1, 1), _WLC, "mobility controllers"),
        Family((1, 2), _AP, "access points (Instant included)"),
    ),
    25506: (Family((11, 1), _S, "H3C / HPE Comware switches"),),
    41112: (Family((1, 5), _R, "EdgeMax (EdgeRouter)"),),
    10002: (Family((1,), _AP, "airOS radios"),),
    12356: (  # Fortinet
        Family((101, 1), _F, "FortiGate / FortiWiFi"),
        Family((103, 1), _SV, "FortiManager"),
        Family((106, 1), _S, "FortiSwitch"),
    ),
    25461: (Family((2, 3), _F, "PAN-OS firewalls"),),
    2620: (Family((1,), _F, "Check Point"),),
    8741: (Family((1,), _F, "SonicWall"),),
    3224: (Family((1,), _F, "NetScreen"),),
    2011: (Family((2, 23), _S, "Huawei S series switches"),),
    311: (  # Microsoft (LAN Manager MIB: windowsNT...)
        Family((1, 1, 3, 1, 1), _E, "Windows workstation"),
        Family((1, 1, 3, 1, 2), _SV, "Windows server"),
        Family((1, 1, 3, 1, 3), _SV, "Windows domain controller"),
    ),
    **{
        number: (Family((), _E, name),)
        for number, name in (
            (253, "Xerox printers"),
            (367, "Ricoh printers"),
            (368, "Axis cameras"),
            (641, "Lexmark printers"),
            (1248, "Epson printers"),
            (1347, "Kyocera printers"),
            (1602, "Canon printers"),
            (2435, "Brother printers"),
            (39165, "Hikvision cameras"),
        )
    },
    6574: (Family((), _SV, "Synology NAS"),),
    24681: (Family((), _SV, "QNAP NAS"),),
}
"""Model families by vendor: OID prefixes under the enterprise arc (longest match wins). Sources: the
vendors' MIBs (JUNIPER-CHASSIS-DEFINES-MIB, CISCO-PRODUCTS-MIB, ARUBA-MIB, FORTINET-*-MIB,
PAN-PRODUCTS-MIB, LanMgr-Mib-II) as far as their arcs tell the kind of box."""


def type_from_object_id(sys_object_id: str | None) -> DeviceType | None:
    """The type :data:`FAMILIES` gives a ``sysObjectID`` (longest prefix), else None."""
    place = _under_enterprise(sys_object_id)
    if place is None:
        return None
    number, below = place
    best: Family | None = None
    for family in FAMILIES.get(number, ()):
        if below[: len(family.prefix)] == family.prefix and (
            best is None or len(family.prefix) > len(best.prefix)
        ):
            best = family
    return best.kind if best else None


_TYPE_KEYWORDS: tuple[tuple[re.Pattern[str], DeviceType], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), kind)
    for pattern, kind in (
        (
            r"wireless (lan )?controller|mobility (master|controller)|^cisco controller$|\bC9800|\bAIR-CT\d"
            r"|zonedirector|smartzone|\bvwlc\b",
            DeviceType.WIRELESS_CONTROLLER,
        ),
        (
            r"access point|cloud managed ap\b|\bmeraki mr|\bUAP\b|\bUAP-|\bU6-|\bU7-|unifi ap\b|\b[cw]AP\b"
            r"|-K9W[78]\b|\bap\d?\w*-k9w[78]|fortiap|\binstant ap\b|\bIAP-\d|\bairos\b",
            DeviceType.ACCESS_POINT,
        ),
        (
            r"firewall|\bfortigate|\bfortiwifi|\bpan-os\b|\bPA-\d|adaptive security appliance|firepower"
            r"|\bv?srx\d|\bvsrx\b|sonicwall|sonicos|check ?point|\bgaia\b|security appliance|pfsense|opnsense",
            DeviceType.FIREWALL,
        ),
        (
            r"\bprinter\b|laserjet|officejet|jetdirect|pagewide|\bMFP\b|imagerunner|bizhub|workcentre|versalink"
            r"|ecosys|\blexmark\b|\bbrother NC-|\bip phone\b|\bcamera\b|\baxis\b|hikvision|\bworkstation\b",
            DeviceType.ENDPOINT,
        ),
        (
            r"\bswitch\b|catalyst|\bnexus\b|nx-os|procurve|\bex\d{3,4}|\bqfx|\bdcs-7|\bccs-7|\bs\d{4}-"
            r"|\bCRS\d|\bCSS\d|edgeswitch|\bUSW\b|\bUSW-|\bUS-\d|\bcat[39]k|\bs72033|\bs2t54|\bIE-?\d{4}"
            r"|\bC(29[4-7]0|35[56]0|3750|3850|4500|1000)\w*\s+Software|\bSG\d{3}|\bCBS\d{3}",
            DeviceType.SWITCH,
        ),
        (
            r"\brouter\b|ios xr|ios-xr|\brouteros\b|\bisr\d|\bisr software|\basr\d|\bcsr1000v|\bc8[05]00"
            r"|\bmx\d|\bptx\d|\bacx\d|edgeos|edgerouter|\bvyos\b|\bUDM\b|\bUDM-|\bUSG\b|\bUXG|\bC\d{3,4}\w*\s+Software",
            DeviceType.ROUTER,
        ),
        (r"windows.*server|\bsynology\b|diskstation|\bqnap\b|\bNAS\b|\besxi\b", DeviceType.SERVER),
    )
)
"""``sysDescr`` keywords naming the kind of box, most specific first: a Catalyst 9800 wireless
controller's descr also says IOS-XE, an SRX's also says JUNOS."""


def type_from_descr(sys_descr: str | None) -> DeviceType | None:
    if sys_descr:
        for pattern, kind in _TYPE_KEYWORDS:
            if pattern.search(sys_descr):
                return kind
    return None


def type_from_services(sys_services: int | None) -> DeviceType:
    """RFC 3418 ``sysServices``: layer 2 only → switch; layer 3 with layer 2, or alone → router; layer 3
    with 4/7 but not 2 (a host that forwards, as Windows and net-snmp report) or 4/7 alone → server."""
    if sys_services is None or sys_services <= 0:
        return DeviceType.UNKNOWN
    layers = {layer for layer in range(1, 8) if sys_services & (1 << (layer - 1))}
    if 3 in layers and (2 in layers or not layers & {4, 7}):
        return DeviceType.ROUTER
    if 2 in layers:
        return DeviceType.SWITCH
    if layers & {4, 7}:
        return DeviceType.SERVER
    return DeviceType.UNKNOWN


def device_type_for(
    sys_services: int | None, sys_descr: str | None, sys_object_id: str | None = None
) -> DeviceType:
    """The model family of ``sysObjectID``, else keywords in ``sysDescr``, else ``sysServices``."""
    return (
        type_from_object_id(sys_object_id) or type_from_descr(sys_descr) or type_from_services(sys_services)
    )


_FIRMWARE: tuple[re.Pattern[str], ...] = tuple(
    re.compile(pattern, re.IGNORECASE)
    for pattern in (
        r"\bversion\s+([0-9][\w.()\-]*[\w)])",  # Cisco IOS "Version 15.2(4)M7", Arista "EOS version 4.28.3M"
        r"\bjunos\s+([0-9][\w.\-]*\w)",  # "kernel JUNOS 12.3R6.6"
        r"\brouteros\s+([0-9][\w.\-]*\w)",
        r"^linux\s+\S+\s+([0-9][\w.\-+]*\w)",  # net-snmp: "Linux host 6.1.0-13-amd64 #1 SMP ..."
        r"\bv([0-9]+\.[0-9][\w.\-]*\w)",  # "FortiGate-60E v6.4.9"
    )
)


def firmware_for(sys_descr: str | None) -> str | None:
    if not sys_descr:
        return None
    for pattern in _FIRMWARE:
        match = pattern.search(sys_descr)
        if match:
            return match.group(1)
    return None
