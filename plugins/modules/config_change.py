#!/usr/bin/python
# Copyright: PDSNO maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)


DOCUMENTATION = r"""
module: config_change
short_description: Propose a configuration change to PDSNO devices
version_added: 0.1.0
description:
  - Submits a configuration proposal to the Global controller. The GC classifies it (LOW, MEDIUM, HIGH
    or EMERGENCY), picks the approver (the local controller itself, a regional controller, the GC or a
    human) and records it; the approved change is then carried out by the local controllers' executor.
  - Idempotent - when an open proposal (pending, queued, approved or executing) with the same content
    already exists, it is returned and nothing new is submitted.
  - Optionally waits until the proposal is approved or executed.
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
      - The GC classifies the change and computes its diff (C(?check=true)) without storing or sending
        anything.
  diff_mode:
    support: full
    details:
      - The per-device before and after values the GC expects the change to make.
options:
  executor:
    description:
      - How the local controllers apply the change.
    type: str
    required: true
    choices: [snmp, ansible]
  targets:
    description:
      - The device ids to change (see C(pdsno.net.nib_info)).
    type: list
    elements: str
    required: true
  payload:
    description:
      - The change itself.
      - 'For V(snmp), C({"set": {"<numeric OID>": <value>}}).'
      - 'For V(ansible), C({"tasks": [...]}) or C({"playbook": "<path on the local controller host>"}).'
    type: dict
    required: true
  suggested_tier:
    description:
      - The tier you think the change has. The GC's own classification wins; a suggestion below it is
        flagged as under-labelled.
    type: str
    choices: [LOW, MEDIUM, HIGH, EMERGENCY]
  intent:
    description:
      - Why the change is made, in a word the policy knows (for example V(security_patch)).
    type: str
  impact_scope:
    description:
      - How far the change reaches.
    type: str
    choices: [local, regional, global]
  estimated_downtime_s:
    description:
      - Expected downtime in seconds; above the policy's threshold the change is escalated.
    type: int
  requires_maintenance_window:
    description:
      - The change may only run inside a maintenance window.
    type: bool
  rollback:
    description:
      - 'How to undo the change, for example C({"tasks": [...]}) for the V(ansible) executor.'
    type: dict
  policy_version:
    description:
      - The policy version the change was written against.
    type: str
  reason:
    description:
      - Free text recorded with the proposal.
    type: str
  wait:
    description:
      - V(none) returns once the proposal is stored.
      - V(approved) waits until it is approved (or running, or executed).
      - V(executed) waits until the devices have been changed.
      - Fails when the proposal is denied, expires, fails or is rolled back meanwhile; the message, RV(reason)
        and RV(device_results) then say why, per device, as its executor reported it.
    type: str
    choices: [none, approved, executed]
    default: none
  wait_timeout:
    description:
      - Seconds to wait for O(wait) before failing.
    type: int
    default: 600
  poll_interval:
    description:
      - Seconds between two looks at the proposal.
    type: float
    default: 2
notes:
  - C(changed) is true when a proposal was created (in check mode, when one would be).
  - A change the GC would refuse (an immutable rule, too many regions, devices of more than one local
    controller) fails with the GC's reason code, in check mode too; so does one a device refuses to plan,
    for example an OID it does not have (C(DEVICE_READ_FAILED)).
  - When a device does not answer the plan, the diff lacks its current values (V(null)) and a warning
    says why.
"""

EXAMPLES = r"""
- name: Set sysLocation on two switches and wait until they carry it
  pdsno.net.config_change:
    url: https://gc.example.net:8443
    token: "{{ pdsno_operator_token }}"
    ca_path: /etc/pdsno/ca.crt
    executor: snmp
    targets: [nib-dev-0200000003010, nib-dev-0200000003011]
    payload:
      set:
        1.3.6.1.2.1.1.6.0: "rack 12, room B"
    suggested_tier: LOW
    reason: inventory clean-up
    wait: executed
  register: change

- name: Preview the classification and approver of a change (nothing is submitted)
  pdsno.net.config_change:
    executor: ansible
    targets: "{{ core_routers }}"
    payload:
      tasks:
        - name: NTP server
          cisco.ios.ios_ntp_global:
            config:
              servers:
                - server: 198.51.100.1
    rollback:
      tasks: []
    intent: maintenance
  check_mode: true
  register: preview
"""

RETURN = r"""
proposal:
  description: The proposal as the GC holds it (absent in check mode unless an identical one is open).
  returned: when a proposal exists
  type: dict
  sample:
    proposal_id: 5d1c5a0e-3f0b-4e8e-8a57-8f0f2b8d0c41
    status: PENDING
    category: MEDIUM
    config_hash: 9f2c...
    target_devices: [nib-dev-0200000003010]
    proposed_by: olga
proposal_id:
  description: The proposal's id.
  returned: when a proposal exists
  type: str
status:
  description: The proposal's status (PENDING, APPROVED, EXECUTED, ...).
  returned: when a proposal exists
  type: str
classification:
  description: The GC's classification - C(tier), the C(rule) that decided it, C(escalated_by), C(under_labelled).
  returned: always
  type: dict
  sample: {tier: MEDIUM, rule: ansible-executor, escalated_by: [], under_labelled: false}
approver:
  description: Who approves it - a controller id, V(local) (the local controller itself) or a human.
  returned: always
  type: str
human_approval:
  description: Whether an operator of role approver must approve it.
  returned: always
  type: bool
blast_radius:
  description: The number of devices, the regions, local controllers and critical devices it touches.
  returned: always
  type: dict
config_hash:
  description: The hash that identifies the change's content.
  returned: always
  type: str
changes:
  description: Device id -> list of C({key, before, after}) the change is expected to make; C(before) is
    the value the local controller read from the device.
  returned: always
  type: dict
reason:
  description: Why the proposal ended as it did - the reason code that decided it (for example
    C(DEVICE_WRITE_FAILED)) or a denial's reason.
  returned: when O(wait) fails because the proposal ended otherwise
  type: str
device_results:
  description: Device id -> C({status, diff, error}) as the executing local controller reported it;
    C(error) is C({code, message}) of what failed on that device (C(rollback_error) too when its
    rollback failed).
  returned: when O(wait) fails because the proposal ended otherwise
  type: dict
  sample:
    nib-dev-0200000003010:
      status: failed
      diff: [{key: 1.3.6.1.2.1.1.6.0, before: lab, after: rack 12}]
      error: {code: DEVICE_WRITE_FAILED, message: "nib-dev-0200000003010 (198.18.1.88) SET refused: notWritable at 1.3.6.1.2.1.1.6.0"}
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

from ansible_collections.pdsno.net.plugins.module_utils.pdsno_api import (  # noqa: E402
    TIERS,
    PdsnoApiError,
    client_from_module,
    connection_argument_spec,
    quote_id,
    wait_for,
)

OPEN = ("PENDING", "QUEUED", "APPROVED", "EXECUTING")
GONE_WRONG = ("DENIED", "EXPIRED", "FAILED", "ROLLING_BACK", "ROLLED_BACK", "DEGRADED")
REACHED = {
    "approved": ("APPROVED", "EXECUTING", "EXECUTED"),
    "executed": ("EXECUTED",),
}
BODY_KEYS = (
    "executor",
    "targets",
    "payload",
    "suggested_tier",
    "intent",
    "impact_scope",
    "estimated_downtime_s",
    "requires_maintenance_window",
    "rollback",
    "policy_version",
    "reason",
)


def ansible_diff(changes):
    """The GC's per-device ``[{key, before, after}]`` as Ansible's before/after pair."""
    before, after = {}, {}
    for device_id in sorted(changes or {}):
        before[device_id] = {c["key"]: c.get("before") for c in changes[device_id]}
        after[device_id] = {c["key"]: c.get("after") for c in changes[device_id]}
    return {"before": before, "after": after}


def find_open(client, config_hash):
    """An open proposal with this content, if any (the GC refuses a duplicate of one)."""
    for status in OPEN:
        for proposal in client.get_all("/proposals", {"status": status}):
            if proposal.get("config_hash") == config_hash:
                return proposal
    return None


class ProposalEnded(PdsnoApiError):
    """The proposal ended otherwise than waited for; ``view`` is the GC's copy."""

    def __init__(self, view):
        super().__init__(why(view), code="PROPOSAL_{}".format(view["status"]))
        self.view = view


def why(view):
    """The proposal's status and reason, then each device's error as its executor reported it."""
    text = "proposal {} is {}".format(view["proposal_id"], view["status"])
    if view.get("reason"):
        text += " ({})".format(view["reason"])
    for device_id, outcome in sorted((view.get("device_results") or {}).items()):
        for key, label in (("error", ""), ("rollback_error", "rollback: ")):
            error = outcome.get(key)
            if error:
                text += "; {}: {}{}: {}".format(device_id, label, error.get("code"), error.get("message"))
    return text


def wait_until(client, proposal, wanted, timeout, interval):
    path = "/proposals/" + quote_id(proposal["proposal_id"])

    def reached(view):
        if view["status"] in REACHED[wanted]:
            return True
        if view["status"] in GONE_WRONG:
            raise ProposalEnded(view)
        return False

    return wait_for(lambda: client.get(path), reached, timeout, interval, f"proposal to be {wanted}")


def run(module, client):
    params = module.params
    body = {key: params[key] for key in BODY_KEYS if params[key] is not None}
    preview = client.post("/proposals", body, query={"check": True})
    result = {
        "classification": preview.get("classification"),
        "approver": preview.get("approver"),
        "human_approval": preview.get("human_approval"),
        "blast_radius": preview.get("blast_radius"),
        "config_hash": preview.get("config_hash"),
        "changes": preview.get("diff") or {},
    }
    if module._diff:
        result["diff"] = ansible_diff(result["changes"])
    unknown = preview.get("diff_error")
    if unknown and not preview.get("refused"):
        module.warn(
            "the diff lacks the current values ({}: {})".format(unknown.get("code"), unknown.get("message"))
        )
    refused = preview.get("refused")
    if refused:
        # The GC would refuse the proposal itself (immutable rule, too many regions, ...): say so now,
        # in check mode too, instead of predicting a change that cannot happen.
        result.pop("diff", None)
        module.fail_json(msg=refused.get("message"), code=refused.get("code"), **result)

    proposal = find_open(client, result["config_hash"])
    changed = proposal is None
    if module.check_mode:
        if proposal is not None:
            result.update(proposal=proposal, proposal_id=proposal["proposal_id"], status=proposal["status"])
        module.exit_json(changed=changed, **result)

    if proposal is None:
        try:
            proposal = client.post("/proposals", body)
        except PdsnoApiError as exc:
            # Another run submitted the same change between our look and our post.
            if exc.code != "DUPLICATE_PROPOSAL":
                raise
            proposal = find_open(client, result["config_hash"])
            if proposal is None:
                raise
            changed = False

    if params["wait"] != "none":
        try:
            proposal = wait_until(
                client, proposal, params["wait"], params["wait_timeout"], params["poll_interval"]
            )
        except ProposalEnded as ended:
            view = ended.view
            module.fail_json(changed=changed, proposal_id=view["proposal_id"], status=view["status"],
                             reason=view.get("reason"), device_results=view.get("device_results") or {},
                             **dict(result, **ended.as_result()))  # fmt: skip
        except PdsnoApiError as exc:
            module.fail_json(
                changed=changed, proposal_id=proposal["proposal_id"], **dict(result, **exc.as_result())
            )
    proposal.pop("audit", None)
    result.update(proposal=proposal, proposal_id=proposal["proposal_id"], status=proposal["status"])
    module.exit_json(changed=changed, **result)


def main():
    argument_spec = connection_argument_spec()
    argument_spec.update(
        executor={"type": "str", "required": True, "choices": ["snmp", "ansible"]},
        targets={"type": "list", "elements": "str", "required": True},
        payload={"type": "dict", "required": True},
        suggested_tier={"type": "str", "choices": TIERS},
        intent={"type": "str"},
        impact_scope={"type": "str", "choices": ["local", "regional", "global"]},
        estimated_downtime_s={"type": "int"},
        requires_maintenance_window={"type": "bool"},
        rollback={"type": "dict"},
        policy_version={"type": "str"},
        reason={"type": "str"},
        wait={"type": "str", "choices": ["none", "approved", "executed"], "default": "none"},
        wait_timeout={"type": "int", "default": 600},
        poll_interval={"type": "float", "default": 2},
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    client = client_from_module(module)
    try:
        run(module, client)
    except PdsnoApiError as exc:
        module.fail_json(**exc.as_result())


if __name__ == "__main__":
    main()
