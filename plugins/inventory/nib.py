# Copyright: PDSNO maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)


DOCUMENTATION = r"""
name: nib
short_description: The devices of the PDSNO NIB as Ansible inventory
version_added: 0.1.0
description:
  - Reads every device the Global controller's Network Information Base holds (1000 per request) and
    makes each one a host, named after its hostname (its SNMP sysName), or its device id when it has
    none or the name is taken.
  - Groups the hosts by region, vendor, device type and status - C(region_<region>),
    C(vendor_<vendor>), C(type_<device type>), C(status_<status>) - with names made safe for Ansible
    (lower case, anything but letters, digits and C(_) becomes C(_)), for example C(region_zone_a).
  - Sets C(ansible_host) to the device's primary IP address and C(pdsno_*) host variables.
  - The configuration file name must end in C(pdsno.yml), C(pdsno.yaml), C(nib.yml) or C(nib.yaml).
author:
  - PDSNO maintainers (@pdsno)
extends_documentation_fragment:
  - pdsno.net.connection.plugin
  - constructed
  - inventory_cache
options:
  plugin:
    description: The name of this plugin; makes the file a C(pdsno.net.nib) inventory source.
    type: str
    required: true
    choices: [pdsno.net.nib]
  filters:
    description:
      - Only devices matching these, as the GC's C(/api/v1/devices) filters them.
    type: dict
    default: {}
    suboptions:
      region:
        description: Only this region.
        type: str
      status:
        description: Only this status (active, inactive, unreachable, quarantined, degraded).
        type: str
      vendor:
        description: Only this vendor, as the NIB spells it.
        type: str
      type:
        description: Only this device type (router, switch, firewall, access_point, wireless_controller, server, endpoint, unknown).
        type: str
notes:
  - Host variables set for each device - C(ansible_host), C(pdsno_device_id), C(pdsno_mac),
    C(pdsno_sysname), C(pdsno_hostname), C(pdsno_addresses), C(pdsno_region), C(pdsno_lc) (its local
    controller), C(pdsno_vendor), C(pdsno_device_type), C(pdsno_status), C(pdsno_firmware),
    C(pdsno_critical), C(pdsno_protected), C(pdsno_suspicious), C(pdsno_last_seen).
"""

EXAMPLES = r"""
# inventory/site.pdsno.yml
plugin: pdsno.net.nib
url: https://gc.example.net:8443
ca_path: /etc/pdsno/ca.crt
# token: from PDSNO_TOKEN, or an Ansible Vault encrypted string here
filters:
  status: active
compose:
  ansible_network_os: "'cisco.ios.ios' if pdsno_vendor == 'Cisco' else omit"
keyed_groups:
  - key: pdsno_lc
    prefix: lc
groups:
  critical: pdsno_critical
cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: ~/.cache/pdsno-inventory
cache_timeout: 300

# Then: ansible-inventory -i inventory/site.pdsno.yml --graph
"""

import re  # noqa: E402

from ansible.errors import AnsibleParserError  # noqa: E402
from ansible.module_utils.common.text.converters import to_native, to_text  # noqa: E402
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable  # noqa: E402

from ansible_collections.pdsno.net.plugins.module_utils.pdsno_api import PdsnoApiError, PdsnoClient  # noqa: E402

CONFIG_SUFFIXES = ("pdsno.yml", "pdsno.yaml", "nib.yml", "nib.yaml")
GROUPED_BY = (("region", "region"), ("vendor", "vendor"), ("type", "device_type"), ("status", "status"))


def safe_group_name(prefix, value):
    """``region`` + ``zone-A`` -> ``region_zone_a``."""
    return re.sub(r"[^a-z0-9_]", "_", f"{prefix}_{to_text(value).lower()}")


def host_vars(device):
    """The ``pdsno_*`` variables (and ``ansible_host``) of one device record."""
    snmp = device.get("snmp_info") or {}
    variables = {
        "pdsno_device_id": device["device_id"],
        "pdsno_mac": device.get("mac_address"),
        "pdsno_sysname": snmp.get("sys_name"),
        "pdsno_hostname": device.get("hostname"),
        "pdsno_addresses": device.get("addresses") or [],
        "pdsno_region": device.get("region"),
        "pdsno_lc": device.get("local_controller"),
        "pdsno_vendor": device.get("vendor"),
        "pdsno_device_type": device.get("device_type"),
        "pdsno_status": device.get("status"),
        "pdsno_firmware": device.get("firmware_version"),
        "pdsno_critical": bool(device.get("critical")),
        "pdsno_protected": bool(device.get("protected")),
        "pdsno_suspicious": bool(device.get("suspicious")),
        "pdsno_last_seen": device.get("last_seen"),
    }
    if device.get("ip_address"):
        variables["ansible_host"] = device["ip_address"]
    return variables


def host_names(devices):
    """device id -> inventory name: the hostname when it is set and unique, else the device id."""
    counts = {}
    for device in devices:
        if device.get("hostname"):
            counts[device["hostname"]] = counts.get(device["hostname"], 0) + 1
    return {
        d["device_id"]: d["hostname"] if d.get("hostname") and counts[d["hostname"]] == 1 else d["device_id"]
        for d in devices
    }


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):
    NAME = "pdsno.net.nib"

    def verify_file(self, path):
        return super().verify_file(path) and path.endswith(CONFIG_SUFFIXES)

    def _fetch(self):
        try:
            client = PdsnoClient(
                self.get_option("url"),
                self.get_option("token"),
                ca_path=self.get_option("ca_path"),
                validate_certs=self.get_option("validate_certs"),
                timeout=self.get_option("timeout"),
            )
            return client.get_all("/devices", self.get_option("filters"))
        except PdsnoApiError as exc:
            raise AnsibleParserError(f"pdsno.net.nib: {to_native(exc)}") from exc

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache=cache)
        self._read_config_data(path)

        cache_key = self.get_cache_key(path)
        use_cache = self.get_option("cache") and cache
        update_cache = self.get_option("cache") and not cache
        devices = None
        if use_cache:
            try:
                devices = self._cache[cache_key]
            except KeyError:
                update_cache = True
        if devices is None:
            devices = self._fetch()
        if update_cache:
            self._cache[cache_key] = devices
        self._populate(devices)

    def _populate(self, devices):
        strict = self.get_option("strict")
        names = host_names(devices)
        for device in devices:
            host = self.inventory.add_host(names[device["device_id"]])
            variables = host_vars(device)
            for key, value in variables.items():
                self.inventory.set_variable(host, key, value)
            for prefix, field in GROUPED_BY:
                if device.get(field):
                    group = self.inventory.add_group(safe_group_name(prefix, device[field]))
                    self.inventory.add_child(group, host)
            self._set_composite_vars(self.get_option("compose"), variables, host, strict=strict)
            self._add_host_to_composed_groups(self.get_option("groups"), variables, host, strict=strict)
            self._add_host_to_keyed_groups(self.get_option("keyed_groups"), variables, host, strict=strict)
