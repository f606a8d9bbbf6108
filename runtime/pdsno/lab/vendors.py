"""Vendors of simulated devices: IANA enterprise numbers, and profiles that make a device look like one.

A profile fills what a topology leaves out of a device: ``sysDescr``, ``sysObjectID`` (under the vendor's
real enterprise number), ``sysServices``, the interface names, and the vendor's OUI for derived MACs.
"""

from __future__ import annotations

from dataclasses import dataclass

from pdsno.discovery.vendors import vendor_for


def normalise_oid(oid: str) -> str:
    """``.1.3.6...`` and ``1.3.6...`` are the same OID; the lab writes them without the leading dot."""
    return oid.strip().lstrip(".")


def vendor_name(sys_object_id: str | None, sys_descr: str | None = None) -> str | None:
    """The vendor a device's system group names, by the same registry and rules discovery uses (so ground
    truth and results speak one language): net-snmp's Linux agents are ``Linux``."""
    return vendor_for(sys_object_id, sys_descr) if sys_object_id else None


@dataclass(frozen=True)
class Profile:
    """How one kind of real device answers SNMP; ``{name}`` in ``sys_descr`` becomes the device's name."""

    sys_descr: str
    sys_object_id: str
    sys_services: int
    interfaces: tuple[str, ...]
    oui: str | None = None
    """First three octets of derived MACs (the vendor's); ``None``: locally administered ``02:...``."""


PROFILES: dict[str, Profile] = {
    "cisco-isr": Profile(
        "Cisco IOS Software [Amsterdam], ISR Software (X86_64_LINUX_IOSD-UNIVERSALK9-M), "
        "Version 17.3.4a, RELEASE SOFTWARE (fc3)",
        "1.3.6.1.4.1.9.1.1861",
        78,
        ("Gi0-0-0", "Gi0-0-1", "Gi0-0-2"),
        "00:1b:54",
    ),
    "cisco-catalyst": Profile(
        "Cisco IOS Software, C2960X Software (C2960X-UNIVERSALK9-M), Version 15.2(7)E4, "
        "RELEASE SOFTWARE (fc2)",
        "1.3.6.1.4.1.9.1.1208",
        6,
        ("Vlan1", "Gi1-0-1", "Gi1-0-2", "Gi1-0-48"),
        "00:1b:54",
    ),
    "juniper-mx": Profile(
        "Juniper Networks, Inc. mx204 internet router, kernel JUNOS 21.4R3-S3.4, "
        "Build date: 2023-03-03 02:51:44 UTC Copyright (c) 1996-2023 Juniper Networks, Inc.",
        "1.3.6.1.4.1.2636.1.1.1.2.144",  # jnxProductNameJNP204: the MX204
        4,
        ("fxp0", "et-0-0-0", "et-0-0-1"),
        "00:05:85",
    ),
    "juniper-ex": Profile(
        "Juniper Networks, Inc. ex4300-48t Ethernet Switch, kernel JUNOS 20.4R3.8, "
        "Build date: 2021-11-19 22:53:58 UTC Copyright (c) 1996-2021 Juniper Networks, Inc.",
        "1.3.6.1.4.1.2636.1.1.1.2.63",
        6,
        ("irb", "ge-0-0-0", "ge-0-0-1"),
        "00:05:85",
    ),
    "arista-eos": Profile(
        "Arista Networks EOS version 4.28.3M running on an Arista Networks DCS-7050SX3-48YC8",
        "1.3.6.1.4.1.30065.1.3011.7050.3741.48",
        14,
        ("Management1", "Ethernet1", "Ethernet2"),
        "00:1c:73",
    ),
    "hp-procurve": Profile(
        "HP J9772A 2530-48G-PoEP Switch, revision YA.16.10.0016, ROM YA.15.20 "
        "(/ws/swbuildm/rel_venice_qaoff/code/build/lakes(swbuildm_rel_venice_qaoff_rel_venice))",
        "1.3.6.1.4.1.11.2.3.7.11.153",
        2,
        ("DEFAULT_VLAN", "A1", "A2"),
        "00:1e:0b",
    ),
    "mikrotik": Profile(
        "RouterOS CCR2004-1G-12S+2XS",
        "1.3.6.1.4.1.14988.1",
        78,
        ("ether1", "sfp-plus1", "bridge"),
        "4c:5e:0c",
    ),
    "aruba-ap": Profile(
        "ArubaOS (MODEL: 515), Version 8.10.0.9-8.10.0.9 LSR",
        "1.3.6.1.4.1.14823.1.2.107",  # Aruba AP-515 (wlanAPModel 107, ARUBA-MIB)
        72,
        ("eth0", "radio0", "radio1"),
        "00:0b:86",
    ),
    "linux": Profile(
        "Linux {name} 6.1.0-18-amd64 #1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01) x86_64",
        "1.3.6.1.4.1.8072.3.2.10",
        72,
        ("eth0",),
        "52:54:00",
    ),
}
"""Built-in device profiles, by the name a topology's ``profile:`` uses."""
