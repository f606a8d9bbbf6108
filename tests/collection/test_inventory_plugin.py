"""``pdsno.net.nib``: the GC's devices as Ansible inventory, read by the real ``ansible-inventory``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tests.collection.conftest import SEEDED, Ansible, RunningGC

ZONE_A = sorted(h for h, region, *_ in SEEDED if region == "zone-a")
ZONE_B = sorted(h for h, region, *_ in SEEDED if region == "zone-b")


def write_source(ansible: Ansible, name: str, **options: Any) -> Path:
    """An inventory source file; the token stays in the environment (PDSNO_TOKEN)."""
    path = ansible.workdir / name
    source = {"plugin": "pdsno.net.nib", "url": ansible.gc.url, "ca_path": str(ansible.gc.ca), **options}
    path.write_text(yaml.safe_dump(source))
    return path


def trusted(value: Any) -> Any:
    """ansible-inventory writes values an inventory plugin set as {"__ansible_unsafe": value}."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {key: trusted(item) for key, item in value.items()}
    if isinstance(value, list):
        return [trusted(item) for item in value]
    return value


def inventory(ansible: Ansible, source: Path, **env: str) -> dict[str, Any]:
    done = ansible.run("ansible-inventory", "-i", str(source), "--list", **env)
    assert done.returncode == 0, done.stderr
    listed: dict[str, Any] = trusted(json.loads(done.stdout))
    return listed


def members(listed: dict[str, Any], group: str) -> list[str]:
    return sorted(listed.get(group, {}).get("hosts", []))


def test_the_graph_lists_the_devices_by_region(ansible: Ansible) -> None:
    source = write_source(ansible, "site.pdsno.yml")
    done = ansible.run("ansible-inventory", "-i", str(source), "--graph")
    assert done.returncode == 0, done.stderr
    graph = done.stdout
    assert "@region_zone_a:" in graph and "@region_zone_b:" in graph
    zone_a_block = graph.split("@region_zone_a:")[1].split("@")[0]
    assert sorted(line.strip(" |-") for line in zone_a_block.splitlines() if line.strip(" |-")) == ZONE_A
    assert "[WARNING]" not in done.stderr, done.stderr


def test_groups_and_host_variables(ansible: Ansible) -> None:
    listed = inventory(ansible, write_source(ansible, "vars.pdsno.yml"))
    assert members(listed, "region_zone_a") == ZONE_A and members(listed, "region_zone_b") == ZONE_B
    assert members(listed, "vendor_cisco") == ["edge-1", "edge-2"]
    assert members(listed, "type_router") == ["core-b", "edge-1", "edge-2"]
    assert members(listed, "status_active") == sorted(h for h, *_ in SEEDED)
    edge = listed["_meta"]["hostvars"]["edge-1"]
    assert edge["ansible_host"] == "127.0.5.10" and edge["pdsno_addresses"] == ["127.0.5.10"]
    assert edge["pdsno_mac"] == "02:00:00:00:05:00" and edge["pdsno_sysname"] == "edge-1.lab"
    assert edge["pdsno_lc"] == "local_cntl_zone-a_1" and edge["pdsno_device_id"].startswith("nib-dev-")
    # A device without a vendor is in no vendor group.
    assert "srv-b" not in {
        h for g, v in listed.items() if g.startswith("vendor_") for h in v.get("hosts", [])
    }


def test_constructed_options_and_filters(ansible: Ansible) -> None:
    source = write_source(
        ansible,
        "constructed.pdsno.yml",
        filters={"region": "zone-a"},
        compose={
            "ansible_network_os": "'cisco.ios.ios' if pdsno_vendor == 'Cisco' else 'junipernetworks.junos.junos'"
        },
        keyed_groups=[{"key": "pdsno_lc", "prefix": "lc"}],
        groups={"edges": "pdsno_hostname.startswith('edge')"},
        strict=True,
    )
    listed = inventory(ansible, source)
    assert sorted(listed["_meta"]["hostvars"]) == ZONE_A
    assert members(listed, "lc_local_cntl_zone_a_1") == ["edge-1", "edge-2"]
    assert members(listed, "lc_local_cntl_zone_a_2") == ["access-1"]
    assert members(listed, "edges") == ["edge-1", "edge-2"]
    hostvars = listed["_meta"]["hostvars"]
    assert hostvars["edge-1"]["ansible_network_os"] == "cisco.ios.ios"
    assert hostvars["access-1"]["ansible_network_os"] == "junipernetworks.junos.junos"


def test_the_cache_answers_without_asking_the_gc(ansible: Ansible, gc: RunningGC) -> None:
    cache_dir = ansible.workdir / "inventory-cache"
    source = write_source(
        ansible, "cached.pdsno.yml", cache=True, cache_plugin="ansible.builtin.jsonfile",
        cache_connection=str(cache_dir), cache_timeout=600,
    )  # fmt: skip
    first = inventory(ansible, source)
    assert members(first, "region_zone_a") == ZONE_A
    assert any(cache_dir.iterdir()), "the first run filled the cache"
    # A token the GC refuses: only the cache can answer now.
    cached = inventory(ansible, source, PDSNO_TOKEN="pdsno_" + "y" * 43)
    assert cached["_meta"]["hostvars"] == first["_meta"]["hostvars"]
    refused = ansible.run("ansible-inventory", "-i", str(write_source(ansible, "uncached.pdsno.yml")),
                          "--list", PDSNO_TOKEN="pdsno_" + "y" * 43,
                          ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED="true")  # fmt: skip
    assert refused.returncode != 0 and "UNAUTHENTICATED" in refused.stderr


def test_files_not_named_for_the_plugin_are_left_alone(ansible: Ansible) -> None:
    source = write_source(ansible, "other.yml")
    done = ansible.run(
        "ansible-inventory", "-i", str(source), "--list", ANSIBLE_INVENTORY_ENABLED="pdsno.net.nib"
    )
    assert "region_zone_a" not in done.stdout
