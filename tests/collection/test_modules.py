"""The pdsno.net modules, run by the real ``ansible`` from the installed collection against a real GC."""

from __future__ import annotations

import pytest

from tests.collection.conftest import GC, GHOST_RC, RC, SEEDED, Ansible, RunningGC, seeded_devices

MODULES = ("discover", "config_change", "config_approval", "nib_info", "policy")
EDGE_1, EDGE_2 = (d.device_id for d in seeded_devices()[:2])
ZONE_A = sorted(d.device_id for d in seeded_devices() if d.region == "zone-a")
ZONE_B = sorted(d.device_id for d in seeded_devices() if d.region == "zone-b")


@pytest.mark.parametrize("name", MODULES)
def test_ansible_doc_renders_each_module(ansible: Ansible, name: str) -> None:
    done = ansible.run("ansible-doc", f"pdsno.net.{name}")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert f"pdsno.net.{name}" in text and "EXAMPLES:" in text and "RETURN VALUES:" in text
    # The shared connection options come from the doc fragment, and the page names the installed copy.
    assert "validate_certs" in text and "PDSNO_TOKEN" in text
    assert str(ansible.collections) in text
    assert "[WARNING]" not in done.stderr and "ERROR" not in done.stderr


def test_ansible_doc_renders_the_inventory_plugin(ansible: Ansible) -> None:
    done = ansible.run("ansible-doc", "-t", "inventory", "pdsno.net.nib")
    assert done.returncode == 0, done.stderr
    assert "keyed_groups" in done.stdout and "cache_plugin" in done.stdout and "PDSNO_URL" in done.stdout


# --- nib_info ---------------------------------------------------------------------------------


def test_nib_info_reads_every_device_and_filters(ansible: Ansible) -> None:
    everything = ansible.module("nib_info", {})
    assert everything["_rc"] == 0 and everything["changed"] is False
    assert sorted(d["hostname"] for d in everything["devices"]) == sorted(h for h, *_ in SEEDED)
    routers_a = ansible.module("nib_info", {"region": "zone-a", "device_type": "router", "vendor": "Cisco"})
    assert sorted(d["hostname"] for d in routers_a["devices"]) == ["edge-1", "edge-2"]
    one = ansible.module("nib_info", {"device_id": EDGE_1}, check=True)
    assert [d["ip_address"] for d in one["devices"]] == ["127.0.5.10"] and one["changed"] is False


def test_nib_info_reads_controllers(ansible: Ansible) -> None:
    found = ansible.module("nib_info", {"gather": ["controllers"]})
    assert found["_rc"] == 0 and "devices" not in found
    ids = {c["controller_id"]: c for c in found["controllers"]}
    assert ids[RC]["role"] == "regional" and ids[RC]["region"] == "zone-a"
    regional = ansible.module("nib_info", {"gather": ["controllers"], "controller_role": "regional"})
    assert sorted(c["controller_id"] for c in regional["controllers"]) == [RC, GHOST_RC]


def test_a_missing_device_and_a_bad_token_fail_with_the_gcs_reason(ansible: Ansible, gc: RunningGC) -> None:
    missing = ansible.module("nib_info", {"device_id": "nib-dev-nope"})
    assert missing["failed"] is True and missing["_rc"] != 0
    assert (missing["code"], missing["http_status"]) == ("NOT_FOUND", 404)
    gc.tokens["forged"] = "pdsno_" + "x" * 43
    forged = ansible.module("nib_info", {}, role="forged")
    assert (forged["code"], forged["http_status"]) == ("UNAUTHENTICATED", 401)
    assert gc.tokens["forged"] not in forged["msg"]


def test_the_client_pages_through_the_devices(gc: RunningGC) -> None:
    """The module_utils client (the same file the modules use) follows next_offset to the end."""
    from ansible_collections.pdsno.net.plugins.module_utils.pdsno_api import PdsnoClient

    client = PdsnoClient(gc.url, gc.tokens["viewer"], ca_path=str(gc.ca))
    paged = client.get_all("/devices", limit=2)
    assert sorted(d["device_id"] for d in paged) == sorted(d.device_id for d in seeded_devices())
    assert len(client.get_all("/devices", limit=2, max_items=3)) == 3


# --- discover ---------------------------------------------------------------------------------


def test_discover_in_check_mode_names_the_regional_controllers_it_would_ask(ansible: Ansible) -> None:
    preview = ansible.module("discover", {"region": "zone-a", "subnets": ["127.0.5.0/24"]}, role="operator",
                             check=True)  # fmt: skip
    assert preview["_rc"] == 0 and preview["changed"] is False
    assert preview["targets"] == {RC: "pending"}
    assert preview["scope"] == {"region": "zone-a", "lc_ids": [], "subnets": ["127.0.5.0/24"]}
    assert "request_id" not in preview
    nobody = ansible.module("discover", {"region": "zone-c"}, role="operator", check=True)
    assert nobody["failed"] is True and nobody["code"] == "NOT_FOUND"


def test_discover_runs_through_the_tree(ansible: Ansible) -> None:
    """zone-a's RC runs the request on its LC, which finds nothing new in its subnet."""
    done = ansible.module("discover", {"region": "zone-a", "wait_timeout": 60, "poll_interval": 0.2},
                          role="operator")  # fmt: skip
    assert done["_rc"] == 0, done
    assert done["status"] == "done" and done["targets"] == {RC: "done"}
    assert done["new"] == [] and done["changed"] is bool(done["deltas"])
    assert sorted(d["device_id"] for d in done["devices"]) == ZONE_A
    lc_only = ansible.module("discover", {"region": "zone-a", "lc_ids": ["local_cntl_zone-a_2"],
                                          "poll_interval": 0.2}, role="operator")  # fmt: skip
    assert [d["hostname"] for d in lc_only["devices"]] == ["access-1"]
    assert lc_only["request_id"] != done["request_id"]


def test_discover_reports_a_partial_run(ansible: Ansible) -> None:
    """zone-b's regional controller cannot be asked (the GC holds no key for it): the run is partial."""
    failed = ansible.module("discover", {"region": "zone-b", "wait_timeout": 60, "poll_interval": 0.2},
                            role="operator")  # fmt: skip
    assert failed["failed"] is True and failed["code"] == "DISCOVERY_PARTIAL"
    assert failed["status"] == "partial" and failed["targets"][GHOST_RC].startswith("failed")
    assert failed["changed"] is False and failed["deltas"] == []
    allowed = ansible.module("discover", {"region": "zone-b", "allow_partial": True, "poll_interval": 0.2},
                             role="operator")  # fmt: skip
    assert allowed["_rc"] == 0 and allowed["changed"] is False
    assert sorted(d["device_id"] for d in allowed["devices"]) == ZONE_B


def test_discover_needs_an_operator(ansible: Ansible) -> None:
    refused = ansible.module("discover", {"region": "zone-a"}, role="viewer")
    assert (refused["code"], refused["http_status"]) == ("FORBIDDEN", 403)


# --- policy -----------------------------------------------------------------------------------


def test_policy_is_idempotent_with_check_mode_and_diff(ansible: Ansible, gc: RunningGC) -> None:
    gc.require("PUT", "/api/v1/policy")
    current = ansible.module("policy", {"content": {}}, role="admin")
    assert current["_rc"] == 0 and current["changed"] is False, current
    interval = (current["policy"].get("content") or {}).get("discovery_interval_s", 300) + 60
    wanted = {"content": {"discovery_interval_s": interval}}

    preview = ansible.module("policy", wanted, role="admin", check=True, diff=True)
    assert preview["changed"] is True and preview["differences"] == ["discovery_interval_s"]
    assert preview["diff"]["after"]["discovery_interval_s"] == interval
    assert preview["diff"]["before"].get("discovery_interval_s") != interval
    with gc.http() as client:
        assert client.get("/api/v1/policy").json()["policy_version"] == current["policy"]["policy_version"]

    applied = ansible.module("policy", wanted, role="admin", diff=True)
    assert applied["_rc"] == 0 and applied["changed"] is True
    assert applied["policy"]["content"]["discovery_interval_s"] == interval
    assert applied["policy"]["policy_version"] != current["policy"]["policy_version"]

    again = ansible.module("policy", wanted, role="admin")
    assert again["changed"] is False and again["differences"] == []
    assert again["policy"]["policy_version"] == applied["policy"]["policy_version"]


def test_policy_changes_need_an_admin_and_known_keys(ansible: Ansible, gc: RunningGC) -> None:
    gc.require("PUT", "/api/v1/policy")
    current = ansible.module("policy", {"content": {}}, role="viewer")
    interval = (current["policy"].get("content") or {}).get("discovery_interval_s", 300) + 120
    refused = ansible.module("policy", {"content": {"discovery_interval_s": interval}}, role="operator")
    assert (refused["code"], refused["http_status"]) == ("FORBIDDEN", 403)
    unknown = ansible.module("policy", {"content": {"no_such_key": 1}}, role="admin")
    assert (unknown["code"], unknown["http_status"]) == ("INVALID_REQUEST", 422)


# --- config_change and config_approval --------------------------------------------------------


def change(location: str, **extra: object) -> dict[str, object]:
    return {"executor": "snmp", "targets": [EDGE_1], "payload": {"set": {"1.3.6.1.2.1.1.6.0": location}},
            "reason": "collection test", **extra}  # fmt: skip


def test_config_change_in_check_mode_classifies_without_submitting(ansible: Ansible, gc: RunningGC) -> None:
    gc.require("POST", "/api/v1/proposals")
    preview = ansible.module("config_change", change("rack 7"), role="operator", check=True, diff=True)
    assert preview["_rc"] == 0 and preview["changed"] is True, preview
    assert preview["classification"]["tier"] in ("LOW", "MEDIUM", "HIGH", "EMERGENCY")
    assert preview["approver"] and preview["config_hash"]
    assert preview["blast_radius"]["devices"] == 1
    assert preview["diff"]["after"][EDGE_1]["1.3.6.1.2.1.1.6.0"] == "rack 7"
    assert "proposal_id" not in preview
    with gc.http() as client:
        stored = client.get("/api/v1/proposals").json()["items"]
    assert preview["config_hash"] not in {p["config_hash"] for p in stored}


def test_config_change_submits(ansible: Ansible, gc: RunningGC) -> None:
    """A LOW change: the RC approves it at once and the LC carries it out (nothing answers SNMP there)."""
    gc.require("POST", "/api/v1/proposals")
    first = ansible.module("config_change", change("rack 8"), role="operator")
    assert first["_rc"] == 0 and first["changed"] is True, first
    assert first["classification"]["tier"] == "LOW"
    assert (
        first["proposal"]["target_devices"] == [EDGE_1] and first["proposal"]["proposed_by"] == "operator-1"
    )
    with gc.http() as client:
        stored = client.get(f"/api/v1/proposals/{first['proposal_id']}").json()
    assert stored["config_hash"] == first["config_hash"]
    assert [e["event_type"] for e in stored["audit"]][:1] == ["CONFIG_PROPOSED"]


def high_change(message: str, device: str = EDGE_1) -> dict[str, object]:
    return {"executor": "ansible", "targets": [device], "suggested_tier": "HIGH",
            "payload": {"tasks": [{"ansible.builtin.debug": {"msg": message}}]}, "rollback": {"tasks": [{"ansible.builtin.debug": {"msg": "undo"}}]}}  # fmt: skip


def pending_proposal(ansible: Ansible, message: str, device: str = EDGE_1) -> dict[str, object]:
    """A proposal that waits for a human (an ansible-executor change suggested as HIGH), or for an earlier
    change of the same device (QUEUED)."""
    proposed = ansible.module("config_change", high_change(message, device), role="operator")
    assert proposed["_rc"] == 0 and proposed["changed"] is True, proposed
    if proposed["status"] not in ("PENDING", "QUEUED"):
        pytest.fail(f"a HIGH change should wait for approval, it is {proposed['status']}")
    return proposed


def test_an_open_proposal_is_not_submitted_twice(ansible: Ansible, gc: RunningGC) -> None:
    gc.require("POST", "/api/v1/proposals")
    first = pending_proposal(ansible, "only once")
    again = ansible.module("config_change", high_change("only once"), role="operator")
    assert again["_rc"] == 0 and again["changed"] is False, again
    assert again["proposal_id"] == first["proposal_id"]
    preview = ansible.module("config_change", high_change("only once"), role="operator", check=True)
    assert preview["changed"] is False and preview["proposal_id"] == first["proposal_id"]


def test_config_approval_approves_once(ansible: Ansible, gc: RunningGC) -> None:
    gc.require("POST", "/api/v1/proposals/{proposal_id}/approve")
    proposed = pending_proposal(ansible, "approve me", EDGE_2)
    assert proposed["status"] == "PENDING" and proposed["approver"] == GC and proposed["human_approval"]
    args = {"proposal_id": proposed["proposal_id"], "decision": "approve", "reason": "reviewed"}
    preview = ansible.module("config_approval", args, role="approver", check=True, diff=True)
    assert preview["changed"] is True and preview["diff"]["after"] == {"status": "APPROVED"}
    with gc.http() as client:
        assert (
            client.get(f"/api/v1/proposals/{proposed['proposal_id']}").json()["status"] == proposed["status"]
        )

    approved = ansible.module("config_approval", args, role="approver")
    assert approved["_rc"] == 0 and approved["changed"] is True, approved
    assert approved["proposal"]["approved_by"] == "approver-1"
    again = ansible.module("config_approval", args, role="approver")
    assert again["_rc"] == 0 and again["changed"] is False
    denied_late = ansible.module("config_approval", dict(args, decision="deny"), role="approver")
    if approved["status"] != "APPROVED":  # already running or done: too late to deny
        assert denied_late["failed"] is True and denied_late["code"] == "INVALID_TRANSITION"


def test_config_approval_denies_once_and_needs_an_approver(ansible: Ansible, gc: RunningGC) -> None:
    gc.require("POST", "/api/v1/proposals/{proposal_id}/deny")
    proposed = pending_proposal(ansible, "deny me")
    args = {"proposal_id": proposed["proposal_id"], "decision": "deny", "reason": "not today"}
    refused = ansible.module("config_approval", args, role="operator-2")
    assert (refused["code"], refused["http_status"]) == ("FORBIDDEN", 403)
    denied = ansible.module("config_approval", args, role="approver")
    assert denied["_rc"] == 0 and denied["changed"] is True and denied["status"] == "DENIED"
    again = ansible.module("config_approval", args, role="approver")
    assert again["changed"] is False and again["status"] == "DENIED"
    approve = ansible.module("config_approval", dict(args, decision="approve"), role="approver")
    assert approve["failed"] is True and approve["code"] == "INVALID_TRANSITION"
    no_reason = ansible.module("config_approval", {"proposal_id": proposed["proposal_id"], "decision": "deny"},
                               role="approver")  # fmt: skip
    assert no_reason["failed"] is True and "reason" in no_reason["msg"]


def test_nib_info_reads_proposals_and_audit(ansible: Ansible, gc: RunningGC) -> None:
    gc.require("GET", "/api/v1/audit")
    gc.require("GET", "/api/v1/proposals")
    found = ansible.module("nib_info", {"gather": ["audit"], "audit": {"subject": EDGE_1}})
    assert found["_rc"] == 0, found
    assert [e["event_type"] for e in found["audit"]][:1] == ["DEVICE_DISCOVERED"]
    assert all(e["subject"] == EDGE_1 for e in found["audit"])
    capped = ansible.module("nib_info", {"gather": ["audit"], "audit": {"max_events": 2}})
    assert len(capped["audit"]) == 2 and capped["audit"][0]["seq"] < capped["audit"][1]["seq"]
    proposals = ansible.module("nib_info", {"gather": ["proposals"]})
    assert isinstance(proposals["proposals"], list)
    assert capped["audit"][0]["actor"] == GC  # NIB_INITIALISED, written by `pdsno nib init`
