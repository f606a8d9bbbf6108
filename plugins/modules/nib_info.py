#!/usr/bin/python
# Copyright: PDSNO maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)


DOCUMENTATION = r"""
module: nib_info
short_description: Read devices, controllers, proposals and audit events from the PDSNO NIB
version_added: 0.1.0
description:
  - Reads the Global controller's Network Information Base through its northbound API.
  - Devices are read page by page until the end (1000 per request).
  - Never changes anything.
author:
  - PDSNO maintainers (@pdsno)
extends_documentation_fragment:
  - pdsno.net.connection
  - ansible.builtin.action_common_attributes
attributes:
  platform:
    platforms: all
  check_mode:
    support: full
  diff_mode:
    support: none
options:
  gather:
    description:
      - What to read. Each entry fills the return value of the same name.
    type: list
    elements: str
    choices: [devices, controllers, proposals, audit]
    default: [devices]
  device_id:
    description:
      - Read only this device (with O(gather=devices)); fails if the NIB does not know it.
    type: str
  region:
    description:
      - Only devices and controllers of this region.
    type: str
  status:
    description:
      - Only devices in this status.
    type: str
    choices: [active, inactive, unreachable, quarantined, degraded]
  vendor:
    description:
      - Only devices of this vendor, as the NIB spells it (for example V(Cisco)).
    type: str
  device_type:
    description:
      - Only devices of this type.
    type: str
    choices: [router, switch, firewall, access_point, wireless_controller, server, endpoint, unknown]
  controller_role:
    description:
      - Only controllers of this role.
    type: str
    choices: [global, regional, local]
  proposal_id:
    description:
      - Read only this configuration proposal, with its audit trail.
    type: str
  proposal_status:
    description:
      - Only proposals in this status.
    type: str
    choices: [PENDING, QUEUED, APPROVED, DENIED, EXPIRED, EXECUTING, EXECUTED, FAILED, ROLLING_BACK, ROLLED_BACK, DEGRADED]
  audit:
    description:
      - Filters for the audit events (with O(gather=audit)).
    type: dict
    default: {}
    suboptions:
      actor:
        description: Only events by this actor (controller id or operator name).
        type: str
      event_type:
        description: Only events of this type, for example V(DEVICE_DISCOVERED).
        type: str
      subject:
        description: Only events about this subject (device id, proposal id, controller id).
        type: str
      since:
        description: Only events at or after this ISO 8601 time.
        type: str
      until:
        description: Only events before this ISO 8601 time.
        type: str
      after_seq:
        description: Only events after this sequence number.
        type: int
      max_events:
        description: Read at most this many events.
        type: int
        default: 1000
"""

EXAMPLES = r"""
- name: Every active router of zone-a
  pdsno.net.nib_info:
    url: https://gc.example.net:8443
    token: "{{ pdsno_viewer_token }}"
    ca_path: /etc/pdsno/ca.crt
    region: zone-a
    status: active
    device_type: router
  register: routers

- name: Controllers and pending proposals
  pdsno.net.nib_info:
    gather: [controllers, proposals]
    proposal_status: PENDING
  environment:
    PDSNO_URL: https://gc.example.net:8443
    PDSNO_TOKEN: "{{ pdsno_viewer_token }}"
  register: state

- name: What the discovery of the last hour changed
  pdsno.net.nib_info:
    gather: [audit]
    audit:
      event_type: DEVICE_DISCOVERED
      since: "{{ '%Y-%m-%dT%H:%M:%SZ' | strftime(now(utc=true).timestamp() - 3600) }}"
  register: discovered
"""

RETURN = r"""
devices:
  description: The devices read (with O(gather=devices)), ordered by device id.
  returned: when devices are gathered
  type: list
  elements: dict
  sample:
    - device_id: nib-dev-0200000003010
      mac_address: "02:00:00:00:03:01"
      ip_address: 198.18.3.1
      addresses: [198.18.3.1]
      hostname: edge-1
      vendor: Cisco
      device_type: router
      region: zone-a
      local_controller: local_cntl_zone-a_1
      status: active
controllers:
  description: The controllers the GC knows (itself and the regional controllers it admitted).
  returned: when controllers are gathered
  type: list
  elements: dict
  sample:
    - controller_id: regional_cntl_zone-a_1
      role: regional
      region: zone-a
      status: active
      rest_url: https://198.18.0.2:8443
proposals:
  description:
    - The configuration proposals read; with O(proposal_id), one proposal with its C(audit) trail.
  returned: when proposals are gathered
  type: list
  elements: dict
audit:
  description: Audit events, oldest first, each with its hash-chain fields.
  returned: when audit events are gathered
  type: list
  elements: dict
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

from ansible_collections.pdsno.net.plugins.module_utils.pdsno_api import (  # noqa: E402
    DEVICE_STATUSES,
    DEVICE_TYPES,
    PROPOSAL_STATUSES,
    PdsnoApiError,
    client_from_module,
    connection_argument_spec,
    quote_id,
)


def read(client, params):
    result = {}
    gather = params["gather"]
    if "devices" in gather:
        if params["device_id"]:
            result["devices"] = [client.get("/devices/" + quote_id(params["device_id"]))]
        else:
            query = {
                "region": params["region"],
                "status": params["status"],
                "vendor": params["vendor"],
                "type": params["device_type"],
            }
            result["devices"] = client.get_all("/devices", query)
    if "controllers" in gather:
        query = {"role": params["controller_role"], "region": params["region"]}
        result["controllers"] = client.get("/controllers", query)
    if "proposals" in gather:
        if params["proposal_id"]:
            result["proposals"] = [client.get("/proposals/" + quote_id(params["proposal_id"]))]
        else:
            result["proposals"] = client.get_all("/proposals", {"status": params["proposal_status"]})
    if "audit" in gather:
        filters = dict(params["audit"] or {})
        limit = filters.pop("max_events", None) or 1000
        result["audit"] = client.get_audit(filters, max_items=limit)
    return result


def main():
    argument_spec = connection_argument_spec()
    argument_spec.update(
        gather={
            "type": "list",
            "elements": "str",
            "choices": ["devices", "controllers", "proposals", "audit"],
            "default": ["devices"],
        },
        device_id={"type": "str"},
        region={"type": "str"},
        status={"type": "str", "choices": DEVICE_STATUSES},
        vendor={"type": "str"},
        device_type={"type": "str", "choices": DEVICE_TYPES},
        controller_role={"type": "str", "choices": ["global", "regional", "local"]},
        proposal_id={"type": "str"},
        proposal_status={"type": "str", "choices": PROPOSAL_STATUSES},
        audit={
            "type": "dict",
            "default": {},
            "options": {
                "actor": {"type": "str"},
                "event_type": {"type": "str"},
                "subject": {"type": "str"},
                "since": {"type": "str"},
                "until": {"type": "str"},
                "after_seq": {"type": "int"},
                "max_events": {"type": "int", "default": 1000},
            },
        },
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    client = client_from_module(module)
    try:
        result = read(client, module.params)
    except PdsnoApiError as exc:
        module.fail_json(**exc.as_result())
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
