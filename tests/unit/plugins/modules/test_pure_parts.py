"""The modules' pure helpers: delta grouping, scope filtering, diffs, desired policy, decisions."""

import ipaddress

import pytest

from ansible_collections.pdsno.net.plugins.modules.config_approval import already
from ansible_collections.pdsno.net.plugins.modules.config_change import ansible_diff
from ansible_collections.pdsno.net.plugins.modules.discover import in_scope, split_deltas
from ansible_collections.pdsno.net.plugins.modules.policy import desired_content, differing_keys


def test_deltas_are_grouped_by_what_happened_to_the_device():
    deltas = [
        {"event_type": "DEVICE_DISCOVERED", "device_id": "a"},
        {"event_type": "DEVICE_UPDATED", "device_id": "b"},
        {"event_type": "DEVICE_LC_REASSIGNED", "device_id": "c"},
        {"event_type": "DEVICE_INACTIVE", "device_id": "d"},
        {"event_type": "SOMETHING_NEW", "device_id": "e"},
    ]
    kinds = split_deltas(deltas)
    assert {kind: [d["device_id"] for d in found] for kind, found in kinds.items()} == {
        "new": ["a"],
        "updated": ["b", "c"],
        "inactive": ["d"],
    }


DEVICE = {
    "local_controller": "local_cntl_zone-a_1",
    "ip_address": "198.18.3.7",
    "addresses": ["198.18.3.7", "10.9.0.1"],
}


@pytest.mark.parametrize(
    ("lc_ids", "subnets", "expected"),
    [
        ([], [], True),
        (["local_cntl_zone-a_1"], [], True),
        (["local_cntl_zone-a_2"], [], False),
        ([], ["10.9.0.0/24"], True),
        ([], ["198.18.4.0/24"], False),
        (["local_cntl_zone-a_1"], ["198.18.3.0/24"], True),
    ],
)
def test_scope_filters_by_local_controller_and_any_address(lc_ids, subnets, expected):
    networks = [ipaddress.ip_network(s) for s in subnets]
    assert in_scope(DEVICE, lc_ids, networks) is expected


def test_a_device_without_addresses_is_outside_every_subnet():
    assert in_scope({"ip_address": None, "addresses": []}, [], [ipaddress.ip_network("0.0.0.0/0")]) is False


def test_the_gcs_change_list_becomes_before_and_after():
    changes = {
        "dev-b": [{"key": "1.3.6.1.2.1.1.6.0", "before": "old", "after": "new"}],
        "dev-a": [{"key": "1.3.6.1.2.1.1.4.0", "before": None, "after": "noc"}],
    }
    assert ansible_diff(changes) == {
        "before": {"dev-a": {"1.3.6.1.2.1.1.4.0": None}, "dev-b": {"1.3.6.1.2.1.1.6.0": "old"}},
        "after": {"dev-a": {"1.3.6.1.2.1.1.4.0": "noc"}, "dev-b": {"1.3.6.1.2.1.1.6.0": "new"}},
    }
    assert ansible_diff(None) == {"before": {}, "after": {}}


def test_desired_policy_sets_the_given_keys_and_keeps_the_others():
    current = {"discovery_interval_s": 300, "auto_approve_low": True}
    assert desired_content(current, {"discovery_interval_s": 120}) == {
        "discovery_interval_s": 120,
        "auto_approve_low": True,
    }
    assert current == {"discovery_interval_s": 300, "auto_approve_low": True}


def test_differing_keys_include_added_and_removed_ones():
    assert differing_keys({"a": 1, "b": 2}, {"a": 1, "b": 3, "c": 4}) == ["b", "c"]
    assert differing_keys({"a": 1}, {}) == ["a"]
    assert differing_keys({"a": [1, 2]}, {"a": [1, 2]}) == []


@pytest.mark.parametrize(
    ("decision", "status", "approved_by", "expected"),
    [
        ("approve", "APPROVED", "alice", True),
        ("approve", "EXECUTED", "alice", True),
        ("approve", "EXECUTING", None, False),  # a LOW change that ran without approval
        ("approve", "PENDING", None, False),
        ("deny", "DENIED", "alice", True),
        ("deny", "APPROVED", "alice", False),
    ],
)
def test_a_decision_already_taken_is_recognised(decision, status, approved_by, expected):
    assert already(decision, {"status": status, "approved_by": approved_by}) is expected
