"""What a device is, from what SNMP says about it: vendor, device type and firmware version.

* Vendor: the IANA private enterprise number in ``sysObjectID`` (1.3.6.1.4.1.<n>...), looked up in our own
  table of network vendors, else a few ``sysDescr`` keywords.
* Type: ``sysServices`` (RFC 3418: bit L-1 set for a device offering layer L services) refined by
  ``sysDescr`` keywords, which win when they name the kind of box.
* Firmware: a version-looking token in ``sysDescr`` for the common formats.
"""

from __future__ import annotations

import re

from pdsno.nib.models import DeviceType

ENTERPRISE_PREFIX = (1, 3, 6, 1, 4, 1)

ENTERPRISES: dict[int, str] = {
    2: "IBM",
    9: "Cisco",
    11: "HP",
    23: "Novell",
    42: "Sun Microsystems",
    43: "3Com",
    171: "D-Link",
    207: "Allied Telesis",
    232: "Compaq",
    311: "Microsoft",
    318: "APC",
    674: "Dell",
    890: "ZyXEL",
    1588: "Brocade",
    1916: "Extreme Networks",
    1991: "Brocade (Foundry)",
    2011: "Huawei",
    2021: "UC Davis (ucd-snmp)",
    2352: "Ericsson (Redback)",
    2620: "Check Point",
    2636: "Juniper",
    3375: "F5",
    3902: "ZTE",
    4526: "Netgear",
    5624: "Enterasys",
    5951: "Citrix",
    6027: "Force10",
    6486: "Alcatel-Lucent Enterprise",
    6527: "Nokia",
    6876: "VMware",
    6889: "Avaya",
    7779: "Infoblox",
    8072: "net-snmp",
    8691: "Moxa",
    8741: "SonicWall",
    11863: "TP-Link",
    12356: "Fortinet",
    14179: "Cisco (Airespace)",
    14823: "Aruba",
    14988: "MikroTik",
    17163: "Riverbed",
    25461: "Palo Alto Networks",
    25506: "H3C",
    30065: "Arista",
    41112: "Ubiquiti",
}
"""IANA private enterprise numbers of vendors seen on networks (our own list; add as needed)."""

_DESCR_VENDORS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), vendor)
    for pattern, vendor in (
        (r"\bcisco\b", "Cisco"),
        (r"\bjunos\b|\bjuniper\b", "Juniper"),
        (r"\barista\b", "Arista"),
        (r"\bmikrotik\b|\brouteros\b", "MikroTik"),
        (r"\bhuawei\b", "Huawei"),
        (r"\bfortigate\b|\bfortinet\b", "Fortinet"),
        (r"\bpan-os\b|\bpalo alto\b", "Palo Alto Networks"),
    )
)


def enterprise_number(sys_object_id: str | None) -> int | None:
    """The private enterprise number of a ``sysObjectID`` (``1.3.6.1.4.1.9.1.1208`` → 9), else None."""
    if not sys_object_id:
        return None
    try:
        arcs = tuple(int(a) for a in sys_object_id.strip().lstrip(".").split("."))
    except ValueError:
        return None
    if len(arcs) > len(ENTERPRISE_PREFIX) and arcs[: len(ENTERPRISE_PREFIX)] == ENTERPRISE_PREFIX:
        return arcs[len(ENTERPRISE_PREFIX)]
    return None


def vendor_for(sys_object_id: str | None, sys_descr: str | None = None) -> str | None:
    number = enterprise_number(sys_object_id)
    if number is not None and number in ENTERPRISES:
        return ENTERPRISES[number]
    for pattern, vendor in _DESCR_VENDORS:
        if sys_descr and pattern.search(sys_descr):
            return vendor
    return None


_TYPE_KEYWORDS: tuple[tuple[re.Pattern[str], DeviceType], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), kind)
    for pattern, kind in (
        (r"\bprinter\b|laserjet|officejet|\bip phone\b|\bcamera\b|\bworkstation\b", DeviceType.ENDPOINT),
        (r"\bswitch\b|catalyst|nexus|procurve|\bex\d{3,4}|\bqfx|\bdcs-7|\bs\d{4}-", DeviceType.SWITCH),
        (
            r"\brouter\b|ios xr|ios-xr|\brouteros\b|\bisr\d|\basr\d|\bmx\d|\bsrx\d|firewall|fortigate|pan-os|\basa\b",
            DeviceType.ROUTER,
        ),
    )
)


def type_from_services(sys_services: int | None) -> DeviceType:
    """RFC 3418 ``sysServices``: layer 2 only → switch; layer 3 → router; layers 4/7 alone → server."""
    if sys_services is None or sys_services <= 0:
        return DeviceType.UNKNOWN
    layers = {layer for layer in range(1, 8) if sys_services & (1 << (layer - 1))}
    if 3 in layers:
        return DeviceType.ROUTER
    if 2 in layers:
        return DeviceType.SWITCH
    if layers & {4, 7}:
        return DeviceType.SERVER
    return DeviceType.UNKNOWN


def device_type_for(sys_services: int | None, sys_descr: str | None) -> DeviceType:
    """Keywords naming the kind of box in ``sysDescr`` win; otherwise ``sysServices`` decides."""
    if sys_descr:
        for pattern, kind in _TYPE_KEYWORDS:
            if pattern.search(sys_descr):
                return kind
    return type_from_services(sys_services)


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
