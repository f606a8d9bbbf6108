#!/usr/bin/python
# Copyright: PDSNO maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)


DOCUMENTATION = r"""
module: discover
short_description: Run a PDSNO device discovery now and return what it found
version_added: 0.1.0
description:
  - Asks the Global controller to discover devices now (an C(ON_DEMAND) discovery). The GC sends the
    request to the regional controllers of the scope, which run it on their local controllers.
  - Waits until every targeted regional controller has answered, then returns the inventory changes
    the run caused (new, updated and inactive devices) and the devices of the scope.
  - Needs an operator token of role C(operator) or higher.
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
    details:
      - Nothing is scanned; the module returns the scope and the regional controllers that would be asked.
  diff_mode:
    support: none
options:
  region:
    description:
      - Discover only this region. Without it, every region.
    type: str
  lc_ids:
    description:
      - Only these local controllers scan.
    type: list
    elements: str
    default: []
  subnets:
    description:
      - Only these subnets (CIDR), each of which must be one a local controller is configured to scan.
    type: list
    elements: str
    default: []
  wait:
    description:
      - Wait for the run to finish. With V(false) the module returns the C(request_id) at once and reports
        no change, since it cannot know yet whether the NIB will change.
    type: bool
    default: true
  wait_timeout:
    description:
      - Seconds to wait for the run to finish before failing.
    type: int
    default: 300
  poll_interval:
    description:
      - Seconds between two looks at the run's state.
    type: float
    default: 2
  allow_partial:
    description:
      - Succeed even when some regional controllers failed to run the discovery (the run's status is
        C(partial)). By default that fails the task, with the run in the result.
    type: bool
    default: false
notes:
  - C(changed) is true only when the run changed the NIB (a device was discovered, updated, reassigned
    or became inactive).
"""

EXAMPLES = r"""
- name: Discover zone-a and show the new devices
  pdsno.net.discover:
    url: https://gc.example.net:8443
    token: "{{ pdsno_operator_token }}"
    ca_path: /etc/pdsno/ca.crt
    region: zone-a
    wait_timeout: 600
  register: found

- name: Print them
  ansible.builtin.debug:
    msg: "{{ found.new | map(attribute='device_id') | list }}"

- name: One local controller, one subnet, without waiting
  pdsno.net.discover:
    lc_ids: [local_cntl_zone-a_1]
    subnets: [198.18.10.0/24]
    wait: false
"""

RETURN = r"""
request_id:
  description: The id of the discovery run (follow it with C(GET /api/v1/discovery/{request_id})).
  returned: when not in check mode
  type: str
  sample: 0b8f7f4e-1c3a-4c1e-9d3b-6c2f1b0e5a11
status:
  description: V(running), V(done) (every regional controller answered) or V(partial) (some failed).
  returned: when not in check mode
  type: str
  sample: done
scope:
  description: What was (or would be) discovered.
  returned: always
  type: dict
  sample: {region: zone-a, lc_ids: [], subnets: []}
targets:
  description:
    - Regional controller id -> its state in the run (V(pending), V(done) or C(failed) followed by a reason code).
    - In check mode, the regional controllers that would be asked, all V(pending).
  returned: always
  type: dict
  sample: {regional_cntl_zone-a_1: done}
deltas:
  description: Every inventory change of the run, in order.
  returned: when the run has finished
  type: list
  elements: dict
  sample:
    - event_type: DEVICE_DISCOVERED
      device_id: nib-dev-0200000003010
      timestamp: "2026-11-22T15:40:00Z"
      payload: {}
new:
  description: The C(deltas) of devices discovered for the first time.
  returned: when the run has finished
  type: list
  elements: dict
updated:
  description: The C(deltas) of devices whose record changed (including a new local controller).
  returned: when the run has finished
  type: list
  elements: dict
inactive:
  description: The C(deltas) of devices that became inactive.
  returned: when the run has finished
  type: list
  elements: dict
devices:
  description: The devices of the scope after the run, as C(pdsno.net.nib_info) returns them.
  returned: when the run has finished
  type: list
  elements: dict
"""

import ipaddress  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.common.text.converters import to_text  # noqa: E402

from ansible_collections.pdsno.net.plugins.module_utils.pdsno_api import (  # noqa: E402
    PdsnoApiError,
    client_from_module,
    connection_argument_spec,
    quote_id,
    wait_for,
)

DELTA_KINDS = {
    "DEVICE_DISCOVERED": "new",
    "DEVICE_UPDATED": "updated",
    "DEVICE_LC_REASSIGNED": "updated",
    "DEVICE_INACTIVE": "inactive",
}


def split_deltas(deltas):
    """Group a run's deltas into new, updated and inactive (unknown event types are kept in deltas only)."""
    kinds = {"new": [], "updated": [], "inactive": []}
    for delta in deltas:
        kind = DELTA_KINDS.get(delta.get("event_type"))
        if kind is not None:
            kinds[kind].append(delta)
    return kinds


def in_scope(device, lc_ids, networks):
    """Whether a device belongs to the requested local controllers and subnets (region is filtered by the GC)."""
    if lc_ids and device.get("local_controller") not in lc_ids:
        return False
    if not networks:
        return True
    for address in device.get("addresses") or [device.get("ip_address")]:
        try:
            ip = ipaddress.ip_address(to_text(address))
        except ValueError:
            continue
        if any(ip in network for network in networks):
            return True
    return False


def would_ask(client, region):
    """The regional controllers the GC would send the request to (active ones with a REST address)."""
    controllers = client.get("/controllers", {"role": "regional", "region": region})
    return {
        c["controller_id"]: "pending"
        for c in controllers
        if c.get("status") == "active" and c.get("rest_url")
    }


def run(module, client):
    params = module.params
    scope = {"region": params["region"], "lc_ids": params["lc_ids"], "subnets": params["subnets"]}
    try:
        networks = [ipaddress.ip_network(to_text(s), strict=False) for s in params["subnets"]]
    except ValueError as exc:
        module.fail_json(msg=f"subnets: {to_text(exc)}", code="INVALID_REQUEST", scope=scope)

    if module.check_mode:
        targets = would_ask(client, params["region"])
        if not targets:
            module.fail_json(
                msg="no active regional controller serves %s" % (params["region"] or "any region"),
                code="NOT_FOUND",
                scope=scope,
                targets=targets,
            )
        module.exit_json(changed=False, scope=scope, targets=targets)

    started = client.post("/discovery", scope)
    request_id = started["request_id"]
    if not params["wait"]:
        module.exit_json(changed=False, **started)

    path = "/discovery/" + quote_id(request_id)
    try:
        view = wait_for(
            lambda: client.get(path),
            lambda v: v.get("status") != "running",
            params["wait_timeout"],
            params["poll_interval"],
            f"discovery run {request_id}",
        )
    except PdsnoApiError as exc:
        module.fail_json(request_id=request_id, scope=scope, **exc.as_result())

    deltas = view.get("deltas") or []
    devices = [
        d
        for d in client.get_all("/devices", {"region": params["region"]})
        if in_scope(d, params["lc_ids"], networks)
    ]
    result = dict(view, deltas=deltas, devices=devices, **split_deltas(deltas))
    if view.get("status") == "partial" and not params["allow_partial"]:
        failed = sorted(rc for rc, state in (view.get("targets") or {}).items() if state != "done")
        module.fail_json(
            msg="discovery {} is partial: {} did not run it".format(request_id, ", ".join(failed)),
            code="DISCOVERY_PARTIAL",
            changed=bool(deltas),
            **result,
        )
    module.exit_json(changed=bool(deltas), **result)


def main():
    argument_spec = connection_argument_spec()
    argument_spec.update(
        region={"type": "str"},
        lc_ids={"type": "list", "elements": "str", "default": []},
        subnets={"type": "list", "elements": "str", "default": []},
        wait={"type": "bool", "default": True},
        wait_timeout={"type": "int", "default": 300},
        poll_interval={"type": "float", "default": 2},
        allow_partial={"type": "bool", "default": False},
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    client = client_from_module(module)
    try:
        run(module, client)
    except PdsnoApiError as exc:
        module.fail_json(**exc.as_result())


if __name__ == "__main__":
    main()
