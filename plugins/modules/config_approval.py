#!/usr/bin/python
# Copyright: PDSNO maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)


DOCUMENTATION = r"""
module: config_approval
short_description: Approve or deny a PDSNO configuration proposal
version_added: 0.1.0
description:
  - Records an operator's decision on a configuration proposal at the Global controller.
  - Idempotent - approving a proposal that is already approved (or already running or executed after its
    approval), or denying one that is already denied, changes nothing.
  - Needs an operator token of role C(approver) or higher. For MEDIUM and HIGH changes the approver must
    not be the operator who proposed the change (four-eyes rule); the GC refuses that with
    C(FOUR_EYES_VIOLATION).
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
      - The proposal is read and the decision is checked against its status; nothing is recorded. The
        four-eyes rule is only checked by the GC, so a check run cannot predict that refusal.
  diff_mode:
    support: full
    details:
      - The proposal's status before and after.
options:
  proposal_id:
    description:
      - The proposal to decide on (see C(pdsno.net.config_change) and C(pdsno.net.nib_info)).
    type: str
    required: true
  decision:
    description:
      - V(approve) or V(deny).
    type: str
    required: true
    choices: [approve, deny]
  reason:
    description:
      - Why; recorded in the audit log. Required to deny.
    type: str
"""

EXAMPLES = r"""
- name: Approve a change after review
  pdsno.net.config_approval:
    url: https://gc.example.net:8443
    token: "{{ pdsno_approver_token }}"
    ca_path: /etc/pdsno/ca.crt
    proposal_id: "{{ change.proposal_id }}"
    decision: approve
    reason: reviewed in CAB-1234

- name: Deny it
  pdsno.net.config_approval:
    proposal_id: "{{ change.proposal_id }}"
    decision: deny
    reason: outside the maintenance window
"""

RETURN = r"""
proposal:
  description: The proposal after the decision (or as it was, when nothing changed).
  returned: success
  type: dict
  sample:
    proposal_id: 5d1c5a0e-3f0b-4e8e-8a57-8f0f2b8d0c41
    status: APPROVED
    category: MEDIUM
    approved_by: alice
status:
  description: The proposal's status after the module ran.
  returned: success
  type: str
  sample: APPROVED
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

from ansible_collections.pdsno.net.plugins.module_utils.pdsno_api import (  # noqa: E402
    PdsnoApiError,
    client_from_module,
    connection_argument_spec,
    quote_id,
)

# Where each decision can still be taken (the GC's life cycle, decisions C6). A QUEUED change waits for
# another one on the same devices; it can be denied, and approved once it is PENDING again.
DECIDABLE = {
    "approve": ("PENDING",),
    "deny": ("PENDING", "QUEUED", "APPROVED"),
}
RESULTING = {"approve": "APPROVED", "deny": "DENIED"}
# Statuses a proposal only reaches after somebody approved it; with approved_by set, approving is done.
AFTER_APPROVAL = ("APPROVED", "EXECUTING", "EXECUTED", "FAILED", "ROLLING_BACK", "ROLLED_BACK", "DEGRADED")


def already(decision, proposal):
    """Whether the proposal already carries this decision."""
    if decision == "deny":
        return proposal["status"] == "DENIED"
    return proposal["status"] in AFTER_APPROVAL and bool(proposal.get("approved_by"))


def run(module, client):
    params = module.params
    decision = params["decision"]
    path = "/proposals/" + quote_id(params["proposal_id"])
    current = client.get(path)
    current.pop("audit", None)
    if already(decision, current):
        module.exit_json(changed=False, proposal=current, status=current["status"])
    if current["status"] not in DECIDABLE[decision]:
        module.fail_json(
            msg="cannot {} proposal {}: it is {}".format(decision, params["proposal_id"], current["status"]),
            code="INVALID_TRANSITION",
            proposal=current,
            status=current["status"],
        )

    after = dict(current, status=RESULTING[decision])
    if not module.check_mode:
        body = {"reason": params["reason"]} if params["reason"] is not None else {}
        after = client.post(path + "/" + decision, body)
    result = {"changed": True, "proposal": after, "status": after["status"]}
    if module._diff:
        result["diff"] = {"before": {"status": current["status"]}, "after": {"status": after["status"]}}
    module.exit_json(**result)


def main():
    argument_spec = connection_argument_spec()
    argument_spec.update(
        proposal_id={"type": "str", "required": True},
        decision={"type": "str", "required": True, "choices": ["approve", "deny"]},
        reason={"type": "str"},
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        required_if=[("decision", "deny", ("reason",))],
    )
    client = client_from_module(module)
    try:
        run(module, client)
    except PdsnoApiError as exc:
        module.fail_json(**exc.as_result())


if __name__ == "__main__":
    main()
