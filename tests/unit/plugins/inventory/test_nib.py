"""The inventory plugin's pure helpers: group names, host names, host variables."""

from ansible_collections.pdsno.net.plugins.inventory.nib import host_names, host_vars, safe_group_name


def test_group_names_are_safe_for_ansible():
    assert safe_group_name("region", "zone-a") == "region_zone_a"
    assert safe_group_name("vendor", "Juniper Networks, Inc.") == "vendor_juniper_networks__inc_"
    assert safe_group_name("type", "router") == "type_router"


def test_hosts_are_named_by_hostname_unless_missing_or_taken():
    devices = [
        {"device_id": "nib-dev-1", "hostname": "edge-1"},
        {"device_id": "nib-dev-2", "hostname": "core"},
        {"device_id": "nib-dev-3", "hostname": "core"},
        {"device_id": "nib-dev-4", "hostname": None},
    ]
    assert host_names(devices) == {
        "nib-dev-1": "edge-1",
        "nib-dev-2": "nib-dev-2",
        "nib-dev-3": "nib-dev-3",
        "nib-dev-4": "nib-dev-4",
    }


def test_host_vars_carry_the_address_mac_sysname_and_local_controller():
    device = {
        "device_id": "nib-dev-1",
        "mac_address": "02:00:00:00:03:01",
        "ip_address": "198.18.3.1",
        "addresses": ["198.18.3.1", "10.0.0.1"],
        "hostname": "edge-1",
        "snmp_info": {"sys_name": "edge-1.example.net"},
        "region": "zone-a",
        "local_controller": "local_cntl_zone-a_1",
        "vendor": "Cisco",
        "device_type": "router",
        "status": "active",
        "critical": True,
    }
    variables = host_vars(device)
    assert variables["ansible_host"] == "198.18.3.1"
    assert variables["pdsno_mac"] == "02:00:00:00:03:01"
    assert variables["pdsno_sysname"] == "edge-1.example.net"
    assert variables["pdsno_lc"] == "local_cntl_zone-a_1"
    assert variables["pdsno_addresses"] == ["198.18.3.1", "10.0.0.1"]
    assert variables["pdsno_critical"] is True and variables["pdsno_protected"] is False


def test_a_device_without_an_address_gets_no_ansible_host():
    assert "ansible_host" not in host_vars({"device_id": "nib-dev-9", "ip_address": None})
