#!/usr/bin/python
# Copyright: PDSNO maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)


DOCUMENTATION = r"""
module: policy
short_description: Keep the PDSNO global policy in a desired state
version_added: 0.1.0
description:
  - Reads the policy the Global controller distributes, compares it with the desired values and writes
    a new policy version only when they differ. The GC then distributes it to every controller.
  - Needs an operator token of role C(admin) to change the policy (C(viewer) is enough when nothing
    differs).
  - In check mode, when something differs, the GC checks the write with C(PUT /api/v1/policy?check=true).
    It authorises and validates it like the real one and writes nothing, so check mode fails, saying the
    real run would be refused, when the token is not C(admin), a key is unknown or O(expected_version) is
    not the current version.
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
    support: full
    details:
      - The policy content before and after.
options:
  content:
    description:
      - The desired policy values, for example C(discovery_interval_s), C(missed_cycles_before_inactive),
        C(auto_approve_low), C(human_approval_tiers), C(classification_rules).
      - Keys left out keep their current value. The GC refuses unknown keys (C(INVALID_REQUEST)).
    type: dict
    required: true
  expected_version:
    description:
      - Write only if the current policy version is this one; otherwise fail with
        C(POLICY_VERSION_MISMATCH). By default the version read just before writing is expected, so a
        concurrent change is never overwritten silently.
    type: str
"""

EXAMPLES = r"""
- name: Discover every two minutes and let LOW changes through
  pdsno.net.policy:
    url: https://gc.example.net:8443
    token: "{{ pdsno_admin_token }}"
    ca_path: /etc/pdsno/ca.crt
    content:
      discovery_interval_s: 120
      lc_report_timeout_s: 600
      auto_approve_low: true
  diff: true

- name: Preview a change of the approval rules
  pdsno.net.policy:
    content:
      human_approval_tiers: [MEDIUM, HIGH]
  check_mode: true
  diff: true
  register: preview
"""

RETURN = r"""
policy:
  description: The policy in force after the module ran (in check mode, the one in force now).
  returned: success
  type: dict
  sample:
    policy_id: 1c3e1f0a-7f57-4d3c-9a4f-2f8c8a0bb7b5
    policy_version: "7"
    content: {discovery_interval_s: 120, auto_approve_low: true}
differences:
  description: The keys whose value differs (or would differ) between the current and the desired policy.
  returned: success
  type: list
  elements: str
  sample: [discovery_interval_s]
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

from ansible_collections.pdsno.net.plugins.module_utils.pdsno_api import (  # noqa: E402
    PdsnoApiError,
    client_from_module,
    connection_argument_spec,
)


def desired_content(current, wanted):
    """The current policy with the wanted keys set (the GC always answers every key)."""
    return dict(current, **wanted)


def differing_keys(before, after):
    return sorted(key for key in set(before) | set(after) if before.get(key) != after.get(key))


def run(module, client):
    params = module.params
    current = client.get("/policy")
    before = current.get("content") or {}
    after = desired_content(before, params["content"])
    differences = differing_keys(before, after)
    result = {"changed": bool(differences), "policy": current, "differences": differences}
    if module._diff:
        result["diff"] = {"before": before, "after": after}
    if not differences:
        module.exit_json(**result)

    expected = params["expected_version"] or current.get("policy_version")
    body = {"content": after, "expected_version": expected}
    try:
        answer = client.put("/policy", body, query={"check": True} if module.check_mode else None)
    except PdsnoApiError as exc:
        if not module.check_mode:
            raise
        module.fail_json(**dict(exc.as_result(), msg=f"the real run would be refused: {exc.message}"))
    result.update(changed=bool(answer.get("changed")), policy=answer.get("policy"))
    module.exit_json(**result)


def main():
    argument_spec = connection_argument_spec()
    argument_spec.update(
        content={"type": "dict", "required": True},
        expected_version={"type": "str"},
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    client = client_from_module(module)
    try:
        run(module, client)
    except PdsnoApiError as exc:
        module.fail_json(**exc.as_result())


if __name__ == "__main__":
    main()
