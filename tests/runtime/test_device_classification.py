"""Vendor and device type from recorded system groups of real models (device_classification.yml), the
registries behind vendors (enterprise numbers shipped with the package, the IEEE OUI file when installed),
and the NIB schema that stores the new device types."""

from __future__ import annotations

import hashlib
import importlib.util
import re
import sqlite3
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from pdsno.discovery import vendors
from pdsno.discovery.consolidate import consolidate
from pdsno.discovery.probes.base import Observation
from pdsno.discovery.vendors import (
    FAMILIES,
    agent_for,
    device_type_for,
    display_name,
    enterprises,
    oui_vendor,
    type_from_services,
    vendor_for,
)
from pdsno.nib.connect import open_nib
from pdsno.nib.models import DeviceType
from pdsno.nib.sqlite import MIGRATIONS as SQLITE_MIGRATIONS
from pdsno.security.keys import Ed25519Signer

ROOT = Path(__file__).resolve().parents[2]
RECORDS: list[dict[str, Any]] = yaml.safe_load(
    (Path(__file__).with_name("device_classification.yml")).read_text()
)


@pytest.mark.parametrize("record", RECORDS, ids=[r["model"] for r in RECORDS])
def test_recorded_system_group(record: dict[str, Any]) -> None:
    oid, descr, services = record["oid"], record["descr"], record["services"]
    assert vendor_for(oid, descr) == record["vendor"]
    assert device_type_for(services, descr, oid) == DeviceType(record["type"])


def test_the_recorded_models_cover_the_promised_ground() -> None:
    assert len(RECORDS) >= 50
    assert len({r["model"] for r in RECORDS}) == len(RECORDS)
    vendors_seen = Counter(r["vendor"] for r in RECORDS)
    for vendor in ("Cisco", "Juniper", "Arista", "HP", "HPE", "Aruba", "MikroTik", "Ubiquiti", "Fortinet"):
        assert vendors_seen[vendor] >= 1, vendor
    assert (
        vendors_seen["Palo Alto Networks"] >= 1
        and vendors_seen["Linux"] >= 1
        and vendors_seen["Microsoft"] >= 1
    )
    printers = [
        r
        for r in RECORDS
        if re.search(r"printer|laserjet|brother|lexmark|xerox|kyocera|canon|epson", r["model"], re.I)
    ]
    cameras = [r for r in RECORDS if "camera" in r["model"].lower() or r["vendor"] == "Hikvision"]
    assert len(printers) >= 5 and len(cameras) >= 2
    assert {r["type"] for r in RECORDS} == {t.value for t in DeviceType} - {"unknown"}


def test_every_recorded_oid_is_under_its_vendors_registered_number() -> None:
    numbers = enterprises()
    for record in RECORDS:
        assert vendors.enterprise_number(record["oid"]) in numbers, record["model"]


# -------------------------------------------------------------------------------------- the type order


def test_sys_object_id_wins_over_descr_and_descr_over_services() -> None:
    srx = "1.3.6.1.4.1.2636.1.1.1.2.133"
    assert device_type_for(4, "Juniper Networks, Inc. srx300 internet router", srx) == DeviceType.FIREWALL
    assert (
        device_type_for(6, "Arista Networks EOS running on an Arista Networks DCS-7050SX3")
        == DeviceType.SWITCH
    )
    assert device_type_for(6, "some box", "1.3.6.1.4.1.99999.1") == DeviceType.ROUTER  # services alone
    assert device_type_for(None, None, None) == DeviceType.UNKNOWN


@pytest.mark.parametrize(
    ("services", "kind"),
    [
        (2, DeviceType.SWITCH),
        (6, DeviceType.ROUTER),  # layers 2+3: a router or a layer-3 switch; only OID or descr can tell
        (4, DeviceType.ROUTER),
        (78, DeviceType.ROUTER),
        (76, DeviceType.SERVER),  # layers 3+4+7 without 2: a host that forwards (Windows, net-snmp)
        (72, DeviceType.SERVER),
        (1, DeviceType.UNKNOWN),
        (0, DeviceType.UNKNOWN),
    ],
)
def test_services_fallback(services: int, kind: DeviceType) -> None:
    assert type_from_services(services) == kind


def test_family_tables_name_real_types_and_no_prefix_twice() -> None:
    for number, families in FAMILIES.items():
        prefixes = [f.prefix for f in families]
        assert len(prefixes) == len(set(prefixes)), number
        assert all(f.kind != DeviceType.UNKNOWN for f in families)


# ------------------------------------------------------------------------------------------------ vendors


def test_enterprise_registry_ships_with_the_package_and_says_where_it_came_from() -> None:
    text = (ROOT / "runtime/pdsno/discovery/data/enterprise-numbers.tsv").read_text(encoding="utf-8")
    assert re.search(r"^# source: IANA", text, re.M)
    numbers = enterprises()
    assert len(numbers) > 50_000  # the whole registry, not a hand-made list
    for number, vendor in ((9, "Cisco"), (2636, "Juniper"), (30065, "Arista"), (11, "HP"), (14823, "Aruba")):
        assert display_name(numbers[number]) == vendor
    assert "discovery/data/*.tsv" in (ROOT / "pyproject.toml").read_text()  # in the wheel


def test_generic_agents_report_the_os_and_keep_the_agent_apart() -> None:
    assert vendor_for("1.3.6.1.4.1.8072.3.2.10", "Linux a 6.1.0") == "Linux"
    assert vendor_for("1.3.6.1.4.1.8072.3.2.8") == "FreeBSD"
    assert vendor_for("1.3.6.1.4.1.8072.3.2.255") == "net-snmp"  # netSnmpAgentOIDs.unknown
    assert vendor_for("1.3.6.1.4.1.2021.250.10") == "Linux"  # ucd-snmp's own numbering
    assert agent_for("1.3.6.1.4.1.8072.3.2.10") == "net-snmp"
    assert agent_for("1.3.6.1.4.1.9.1.1208") is None
    assert agent_for(None) is None


@pytest.mark.parametrize(
    ("organization", "name"),
    [
        ("ciscoSystems", "Cisco"),
        ("Cisco Systems, Inc", "Cisco"),
        ("Juniper Networks, Inc.", "Juniper"),
        ("Hewlett Packard", "HP"),
        ("Hewlett Packard Enterprise", "HPE"),
        ("Routerboard.com", "MikroTik"),
        ("Ubiquiti Networks Inc.", "Ubiquiti"),
        ("IBM (https://w3.ibm.com/standards )", "IBM"),
        ("Allied Telesis, Inc.", "Allied Telesis"),
        ("Super Micro Computer, Inc.", "Super Micro Computer"),
        ("Raspberry Pi Trading Ltd", "Raspberry Pi Trading"),
    ],
)
def test_display_names(organization: str, name: str) -> None:
    assert display_name(organization) == name


@pytest.fixture
def oui_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "oui.csv"
    path.write_text(
        "Registry,Assignment,Organization Name,Organization Address\n"
        'MA-L,00000C,"Cisco Systems, Inc",170 WEST TASMAN DRIVE SAN JOSE CA US 95134-1706\n'
        "MA-L,4C5E0C,Routerboard.com,Mikrotikls SIA Riga  LV LV1009\n"
        "MA-L,B827EB,Raspberry Pi Foundation,Mitchell Wood House Caldecote Cambridgeshire GB CB23 7NU\n",
        encoding="utf-8",
    )
    monkeypatch.setattr(vendors, "OUI_FILE", path)
    return path


def test_oui_vendor_from_the_ieee_registry(oui_file: Path) -> None:
    assert oui_vendor("00:00:0C:12:34:56") == "Cisco"
    assert oui_vendor("4c5e.0c00.0001") == "MikroTik"
    assert oui_vendor("b8:27:eb:01:02:03") == "Raspberry Pi Foundation"
    assert oui_vendor("02:00:00:00:00:01") is None  # locally administered
    assert oui_vendor("01:00:5e:00:00:01") is None  # group address
    assert oui_vendor("00:11:22:33:44:55") is None  # not in the registry
    assert oui_vendor("unknown-10.0.0.1") is None
    assert oui_vendor("00:00:0c:00:00:01", oui_file.with_name("absent.csv")) is None  # not installed


def test_devices_without_snmp_get_their_vendor_from_the_oui(oui_file: Path) -> None:
    observations = [
        Observation("10.0.0.5", "arp", mac="b8:27:eb:01:02:03"),
        Observation("10.0.0.5", "snmp", fields={"reachable": False, "error": "timeout"}),
        Observation("10.0.0.6", "arp", mac="02:00:00:00:00:06"),
        Observation("10.0.0.7", "arp", mac="00:00:0c:00:00:07"),
        Observation(
            "10.0.0.7",
            "snmp",
            fields={
                "reachable": True,
                "version": "v2c",
                "sys_name": "lin",
                "sys_descr": "Linux lin 6.1.0 #1 SMP",
                "sys_object_id": "1.3.6.1.4.1.8072.3.2.10",
                "sys_services": 72,
            },
        ),
    ]
    by_ip = {d.ip_address: d for d in consolidate(observations).devices}
    assert by_ip["10.0.0.5"].vendor == "Raspberry Pi Foundation"
    assert by_ip["10.0.0.6"].vendor is None
    seven = by_ip["10.0.0.7"]
    assert (seven.vendor, seven.device_type, seven.snmp_info["agent"]) == (
        "Linux",
        DeviceType.SERVER,
        "net-snmp",
    )


def test_the_installed_ieee_registry_when_present() -> None:
    if not vendors.OUI_FILE.exists():
        pytest.skip("ieee-data is not installed (scripts/bootstrap.sh installs it)")
    assert (
        display_name("KYOCERA Corporation") == "Kyocera"
    )  # the registry's capitals, as the vendor writes it
    assert display_name("QNAP SYSTEMS, INC") == "QNAP Systems"  # short capitals are an acronym
    assert oui_vendor("00:00:0c:00:00:01") == "Cisco"
    assert oui_vendor("00:05:85:00:00:01") == "Juniper"


# ------------------------------------------------------------------------------- the regeneration script


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "update_enterprise_numbers", ROOT / "scripts/update_enterprise_numbers.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REGISTRY_SAMPLE = """PRIVATE ENTERPRISE NUMBERS

(last updated 2026-12-01)

Decimal
| Organization
| | Contact
| | | Email
| | | |
0
  Reserved
    Internet Assigned Numbers Authority
      iana&iana.org
2
  IBM (https://w3.ibm.com/standards )
    Glenn Daly
      gdaly&us.ibm.com
9
  ciscoSystems
    Dave Jones
      davej&cisco.com
10
  ---none---
30065
  Arista Networks, Inc.
    Bill Fenner
      fenner&arista.com
"""


DEBIAN_TABLE = (  # the same registry as libwireshark-data ships it, offline
    "# generated from the IANA registry\n#\n# (last updated 2024-08-23)\n\n"
    "0\tReserved\n9\tciscoSystems\n30065\tArista Networks, Inc.\t# formerly 'Arastra, Inc.'\n"
    "1347 KYOCERA Corporation\n"
)


@pytest.mark.parametrize(
    ("registry", "expected"),
    [
        (
            REGISTRY_SAMPLE,
            {2: "IBM (https://w3.ibm.com/standards )", 9: "ciscoSystems", 30065: "Arista Networks, Inc."},
        ),
        (DEBIAN_TABLE, {9: "ciscoSystems", 30065: "Arista Networks, Inc.", 1347: "KYOCERA Corporation"}),
    ],
    ids=["iana-text", "debian-table"],
)
def test_script_parses_the_registry_and_writes_numbers_and_organizations(
    tmp_path: Path, registry: str, expected: dict[int, str]
) -> None:
    script = _script()
    assert script.parse(registry) == expected
    source, out = tmp_path / "registry", tmp_path / "out.tsv"
    source.write_text(registry, encoding="utf-8")
    assert script.main(["--from", str(source), "--out", str(out), "--min-entries", "3"]) == 0
    text = out.read_text(encoding="utf-8")
    assert "\n9\tciscoSystems\n" in text and "\n30065\tArista Networks, Inc.\n" in text
    assert "&" not in text and "formerly" not in text  # no e-mail addresses, no remarks
    assert re.search(
        rf"^# source: IANA \(registry of \d{{4}}-\d\d-\d\d\), {len(expected)} entries$", text, re.M
    )


def test_script_refuses_a_short_registry_and_keeps_the_file(tmp_path: Path) -> None:
    script = _script()
    source, out = tmp_path / "enterprise-numbers.txt", tmp_path / "out.tsv"
    source.write_text(REGISTRY_SAMPLE, encoding="utf-8")
    out.write_text("kept\n", encoding="utf-8")
    assert script.main(["--from", str(source), "--out", str(out)]) == 1  # default minimum: 50,000
    assert out.read_text(encoding="utf-8") == "kept\n"


# --------------------------------------------------------------------------------- types stored and named


def test_the_collection_offers_every_device_type() -> None:
    text = (ROOT / "plugins/module_utils/pdsno_api.py").read_text(encoding="utf-8")
    match = re.search(r"DEVICE_TYPES = \[(.*?)\]", text, re.S)
    assert match is not None
    assert re.findall(r'"(\w+)"', match.group(1)) == [t.value for t in DeviceType]
    doc = (ROOT / "plugins/modules/nib_info.py").read_text(encoding="utf-8")
    assert f"choices: [{', '.join(t.value for t in DeviceType)}]" in doc
    for schema in ROOT.glob("runtime/pdsno/nib/migrations/*/0004_device_types.sql"):
        assert all(f"'{t.value}'" in schema.read_text() for t in DeviceType), schema


async def test_sqlite_nib_at_schema_3_upgrades_keeping_devices_addresses_and_interfaces(
    tmp_path: Path, signer: Ed25519Signer
) -> None:
    path = tmp_path / "nib.sqlite3"
    migrations = sorted((ROOT / "runtime/pdsno/nib/migrations/sqlite").glob("000[123]_*.sql"))
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL)"
    )
    for file in migrations:
        sql = file.read_text(encoding="utf-8")
        conn.executescript(sql)
        version, name = int(file.name[:4]), file.stem[5:]
        conn.execute(
            "INSERT INTO schema_migrations VALUES (?, ?, ?, ?)",
            (version, name, hashlib.sha256(sql.encode()).hexdigest(), "2026-01-01T00:00:00.000000Z"),
        )
    stamp = "2026-01-01T00:00:00.000000Z"
    conn.execute(
        "INSERT INTO devices (device_id, mac_address, device_type, status, version, created_at, updated_at, vendor) "
        "VALUES ('nib-dev-1', '02:00:00:00:00:01', 'router', 'active', 1, ?, ?, 'Cisco')",
        (stamp, stamp),
    )
    conn.execute("INSERT INTO device_addresses VALUES ('nib-dev-1', '198.18.0.1')")
    conn.execute("INSERT INTO device_interfaces (device_id, if_index, name) VALUES ('nib-dev-1', 1, 'Gi0/1')")
    conn.commit()
    conn.close()

    store = await open_nib("sqlite", path=path, signer=signer, migrate=True)
    try:
        assert await store.schema_version() == SQLITE_MIGRATIONS.latest
        device = await store.get_device("nib-dev-1")
        assert device is not None and device.vendor == "Cisco" and device.device_type is DeviceType.ROUTER
        assert device.addresses == ["198.18.0.1"]
        assert [i.name for i in device.interfaces] == ["Gi0/1"]
        moved = (
            await store.put_device(device.next_version(device_type=DeviceType.WIRELESS_CONTROLLER))
        ).unwrap()
        assert moved.device_type is DeviceType.WIRELESS_CONTROLLER
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute(
                "UPDATE devices SET device_type = 'toaster', updated_at = ? WHERE device_id = 'nib-dev-1'",
                (datetime.now(UTC).isoformat(),),
            )
    finally:
        conn.close()
