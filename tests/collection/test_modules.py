"""The pdsno.net modules, run by the real ``ansible`` from the installed collection against a real GC."""

from __future__ import annotations

from tests.collection.conftest import GC, GHOST_RC, RC, SEEDED, Ansible, Call, RunningGC, seeded_devices

MODULES = ("discover", "config_change", "config_approval", "nib_info", "policy")
EDGE_1, EDGE_2 = (d.device_id for d in seeded_devices()[:2])
ZONE_A = sorted(d.device_id for d in seeded_devices() if d.region == "zone-a")
ZONE_B = sorted(d.device_id for d in seeded_devices() if d.region == "zone-b")


def test_ansible_doc_renders_each_module(ansible: Ansible) -> None:
    done = ansible.run("ansible-doc", *(f"pdsno.net.{name}" for name in MODULES))
    assert done.returncode == 0, done.stderr
    assert "[WARNING]" not in done.stderr and "ERROR" not in done.stderr
    pages = done.stdout.split("> MODULE ")[1:]
    assert [page.split()[0] for page in pages] == [f"pdsno.net.{name}" for name in MODULES]
    for page in pages:
        assert "EXAMPLES:" in page and "RETURN VALUES:" in page
        # The shared connection options come from the doc fragment, and the page names the installed copy.
        assert "validate_certs" in page and "PDSNO_TOKEN" in page
        assert str(ansible.collections) in page


def test_ansible_doc_renders_the_inventory_plugin(ansible: Ansible) -> None:
    done = ansible.run("ansible-doc", "-t", "inventory", "pdsno.net.nib")
    assert done.returncode == 0, done.stderr
    assert "keyed_groups" in done.stdout and "cache_plugin" in done.stdout and "PDSNO_URL" in done.stdout


# --- nib_info ---------------------------------------------------------------------------------


def test_nib_info_reads_devices_and_controllers(ansible: Ansible) -> None:
    everything, routers_a, one, tree, regional = ansible.modules(
        Call("nib_info", {}),
        Call("nib_info", {"region": "zone-a", "device_type": "router", "vendor": "Cisco"}),
        Call("nib_info", {"device_id": EDGE_1}, check=True),
        Call("nib_info", {"gather": ["controllers"]}),
        Call("nib_info", {"gather": ["controllers"], "controller_role": "regional"}),
    )
    assert not everything["failed"] and everything["changed"] is False
    assert sorted(d["hostname"] for d in everything["devices"]) == sorted(h for h, *_ in SEEDED)
    assert sorted(d["hostname"] for d in routers_a["devices"]) == ["edge-1", "edge-2"]
    assert [d["ip_address"] for d in one["devices"]] == ["127.0.5.10"] and one["changed"] is False
    assert "devices" not in tree
    ids = {c["controller_id"]: c for c in tree["controllers"]}
    assert ids[RC]["role"] == "regional" and ids[RC]["region"] == "zone-a"
    assert sorted(c["controller_id"] for c in regional["controllers"]) == [RC, GHOST_RC]


def test_refusals_fail_with_the_gcs_reason(ansible: Ansible, gc: RunningGC) -> None:
    gc.tokens["forged"] = "pdsno_" + "x" * 43
    missing, forged, viewer_discovers = ansible.modules(
        Call("nib_info", {"device_id": "nib-dev-nope"}),
        Call("nib_info", {}, role="forged"),
        Call("discover", {"region": "zone-a"}, role="viewer"),
    )
    assert missing["failed"] is True
    assert (missing["code"], missing["http_status"]) == ("NOT_FOUND", 404)
    assert (forged["code"], forged["http_status"]) == ("UNAUTHENTICATED", 401)
    assert gc.tokens["forged"] not in forged["msg"]
    assert (viewer_discovers["code"], viewer_discovers["http_status"]) == ("FORBIDDEN", 403)


def test_the_client_pages_through_the_devices(gc: RunningGC) -> None:
    """The module_utils client (the same file the modules use) follows next_offset to the end."""
    from ansible_collections.pdsno.net.plugins.module_utils.pdsno_api import PdsnoClient

    client = PdsnoClient(gc.url, gc.tokens["viewer"], ca_path=str(gc.ca))
    paged = client.get_all("/devices", limit=2)
    assert sorted(d["device_id"] for d in paged) == sorted(d.device_id for d in seeded_devices())
    assert len(client.get_all("/devices", limit=2, max_items=3)) == 3


# --- discover ---------------------------------------------------------------------------------


def test_discover_in_check_mode_names_the_regional_controllers_it_would_ask(ansible: Ansible) -> None:
    preview, nobody = ansible.modules(
        Call("discover", {"region": "zone-a", "subnets": ["127.0.5.0/24"]}, role="operator", check=True),
        Call("discover", {"region": "zone-c"}, role="operator", check=True),
    )
    assert not preview["failed"] and preview["changed"] is False
    assert preview["targets"] == {RC: "pending"}
    assert preview["scope"] == {"region": "zone-a", "lc_ids": [], "subnets": ["127.0.5.0/24"]}
    assert "request_id" not in preview
    assert nobody["failed"] is True and nobody["code"] == "NOT_FOUND"


def test_discover_runs_through_the_tree(ansible: Ansible) -> None:
    """zone-a's RC runs the request on its LC, which finds nothing new in its subnet; zone-b's regional
    controller cannot be asked (the GC holds no key for it), so that run is partial."""
    done, lc_only, partial, allowed = ansible.modules(
        Call("discover", {"region": "zone-a", "wait_timeout": 60, "poll_interval": 0.2}, role="operator"),
        Call("discover", {"region": "zone-a", "lc_ids": ["local_cntl_zone-a_2"], "poll_interval": 0.2},
             role="operator"),
        Call("discover", {"region": "zone-b", "wait_timeout": 60, "poll_interval": 0.2}, role="operator"),
        Call("discover", {"region": "zone-b", "allow_partial": True, "poll_interval": 0.2}, role="operator"),
    )  # fmt: skip
    assert not done["failed"], done
    assert done["status"] == "done" and done["targets"] == {RC: "done"}
    assert done["new"] == [] and done["changed"] is bool(done["deltas"])
    assert sorted(d["device_id"] for d in done["devices"]) == ZONE_A
    assert [d["hostname"] for d in lc_only["devices"]] == ["access-1"]
    assert lc_only["request_id"] != done["request_id"]

    assert partial["failed"] is True and partial["code"] == "DISCOVERY_PARTIAL"
    assert partial["status"] == "partial" and partial["targets"][GHOST_RC].startswith("failed")
    assert partial["changed"] is False and partial["deltas"] == []
    assert not allowed["failed"] and allowed["changed"] is False
    assert sorted(d["device_id"] for d in allowed["devices"]) == ZONE_B


# --- policy -----------------------------------------------------------------------------------


def test_policy_is_idempotent_with_check_mode_and_diff(ansible: Ansible, gc: RunningGC) -> None:
    current = ansible.module("policy", {"content": {}}, role="admin")
    assert not current["failed"] and current["changed"] is False, current
    interval = (current["policy"].get("content") or {}).get("discovery_interval_s", 300) + 60
    wanted = {"content": {"discovery_interval_s": interval}}

    preview, checked_viewer, checked_operator, checked_unknown, refused, unknown, applied, again = (
        ansible.modules(
            Call("policy", wanted, role="admin", check=True, diff=True),
            Call("policy", wanted, role="viewer", check=True),
            Call("policy", wanted, role="operator", check=True),
            Call("policy", {"content": {"no_such_key": 1}}, role="admin", check=True),
            Call("policy", wanted, role="operator"),
            Call("policy", {"content": {"no_such_key": 1}}, role="admin"),
            Call("policy", wanted, role="admin", diff=True),
            Call("policy", wanted, role="admin"),
        )
    )
    assert preview["changed"] is True and preview["differences"] == ["discovery_interval_s"]
    assert preview["diff"]["after"]["discovery_interval_s"] == interval
    assert preview["diff"]["before"].get("discovery_interval_s") != interval
    assert preview["policy"]["policy_version"] == current["policy"]["policy_version"], (
        "check mode wrote nothing"
    )
    # Check mode asks the GC whether it would take the write: a token without the admin role is told now,
    # not at the real run.
    for checked, role in ((checked_viewer, "viewer"), (checked_operator, "operator")):
        assert checked["failed"] and (checked["code"], checked["http_status"]) == ("FORBIDDEN", 403), checked
        assert checked["msg"].startswith("the real run would be refused: PUT /api/v1/policy?check=true"), (
            checked
        )
        assert f"{role}-1 is {role}; this needs admin" in checked["msg"]
    assert checked_unknown["failed"] and checked_unknown["code"] == "INVALID_REQUEST", checked_unknown
    assert "no_such_key" in checked_unknown["msg"]
    assert (refused["code"], refused["http_status"]) == ("FORBIDDEN", 403)
    assert not refused["msg"].startswith("the real run")
    assert (unknown["code"], unknown["http_status"]) == ("INVALID_REQUEST", 422)

    assert not applied["failed"] and applied["changed"] is True
    assert applied["diff"]["after"]["discovery_interval_s"] == interval
    assert applied["policy"]["content"]["discovery_interval_s"] == interval
    # the next version: none of the checks wrote one
    assert int(applied["policy"]["policy_version"]) == int(current["policy"]["policy_version"]) + 1
    assert again["changed"] is False and again["differences"] == []
    assert again["policy"]["policy_version"] == applied["policy"]["policy_version"]
    with gc.http() as client:
        assert client.get("/api/v1/policy").json()["policy_version"] == applied["policy"]["policy_version"]


# --- config_change and config_approval --------------------------------------------------------


def low_change(location: str) -> dict[str, object]:
    return {"executor": "snmp", "targets": [EDGE_1], "payload": {"set": {"1.3.6.1.2.1.1.6.0": location}},
            "reason": "collection test"}  # fmt: skip


def high_change(message: str, device: str = EDGE_1) -> dict[str, object]:
    return {"executor": "ansible", "targets": [device], "suggested_tier": "HIGH",
            "payload": {"tasks": [{"ansible.builtin.debug": {"msg": message}}]},
            "rollback": {"tasks": [{"ansible.builtin.debug": {"msg": "undo"}}]}}  # fmt: skip


def test_config_change_in_check_mode_classifies_without_submitting(ansible: Ansible, gc: RunningGC) -> None:
    preview, split = ansible.modules(
        Call("config_change", low_change("rack 7"), role="operator", check=True, diff=True),
        Call("config_change", dict(low_change("rack 7"), targets=ZONE_A), role="operator", check=True),
    )
    assert not preview["failed"] and preview["changed"] is True, preview
    assert preview["classification"]["tier"] == "LOW" and preview["approver"] and preview["config_hash"]
    assert preview["blast_radius"]["devices"] == 1
    assert preview["diff"]["after"][EDGE_1]["1.3.6.1.2.1.1.6.0"] == "rack 7"
    # Nothing answers SNMP on the device's address: its current value is unknown, and the task says why.
    assert preview["diff"]["before"][EDGE_1]["1.3.6.1.2.1.1.6.0"] is None
    assert any("the diff lacks the current values (DEVICE_UNREACHABLE" in w for w in preview["warnings"]), (
        preview
    )
    assert "proposal_id" not in preview
    # Devices of two local controllers: the GC would refuse it, so check mode fails too.
    assert split["failed"] is True and split["code"] == "INVALID_REQUEST", split
    assert split["blast_radius"]["devices"] == len(ZONE_A)
    with gc.http() as client:
        stored = client.get("/api/v1/proposals").json()["items"]
    assert preview["config_hash"] not in {p["config_hash"] for p in stored}


def test_config_change_submits_and_waits(ansible: Ansible, gc: RunningGC) -> None:
    """A LOW change: the RC approves it at once and the LC carries it out, which fails (nothing answers
    SNMP on the device's loopback address); waiting for its execution reports that."""
    first = ansible.module(
        "config_change", dict(low_change("rack 8"), wait="executed", wait_timeout=120, poll_interval=0.5),
        role="operator",
    )  # fmt: skip
    assert first["failed"] is True and first["changed"] is True, first
    assert first["classification"]["tier"] == "LOW"
    with gc.http() as client:
        stored = client.get(f"/api/v1/proposals/{first['proposal_id']}").json()
    assert stored["config_hash"] == first["config_hash"]
    assert stored["target_devices"] == [EDGE_1] and stored["proposed_by"] == "operator-1"
    assert stored["status"] in ("FAILED", "ROLLING_BACK", "ROLLED_BACK", "DEGRADED"), stored["status"]
    # Why, per device, as the LC's executor reported it (the message is not only in the audit log).
    assert first["code"] == f"PROPOSAL_{stored['status']}" and first["status"] == stored["status"]
    assert first["reason"] == stored["reason"] == "DEVICE_UNREACHABLE"
    error = first["device_results"][EDGE_1]["error"]
    assert error == stored["device_results"][EDGE_1]["error"] and error["code"] == "DEVICE_UNREACHABLE"
    assert f"{EDGE_1}: DEVICE_UNREACHABLE: {error['message']}" in first["msg"]
    assert [e["event_type"] for e in stored["audit"]][:1] == ["CONFIG_PROPOSED"]


def test_an_open_proposal_is_not_submitted_twice(ansible: Ansible) -> None:
    """A HIGH change waits for a human (or, QUEUED, for an earlier change of the same device)."""
    first, again, preview = ansible.modules(
        Call("config_change", high_change("only once"), role="operator"),
        Call("config_change", high_change("only once"), role="operator"),
        Call("config_change", high_change("only once"), role="operator", check=True),
    )
    assert not first["failed"] and first["changed"] is True, first
    assert first["status"] in ("PENDING", "QUEUED")
    assert not again["failed"] and again["changed"] is False, again
    assert again["proposal_id"] == first["proposal_id"]
    assert preview["changed"] is False and preview["proposal_id"] == first["proposal_id"]


def test_config_approval_approves_once(ansible: Ansible, gc: RunningGC) -> None:
    proposed = ansible.module("config_change", high_change("approve me", EDGE_2), role="operator")
    assert proposed["status"] == "PENDING" and proposed["approver"] == GC and proposed["human_approval"], (
        proposed
    )
    args = {"proposal_id": proposed["proposal_id"], "decision": "approve", "reason": "reviewed"}
    preview, approved, again = ansible.modules(
        Call("config_approval", args, role="approver", check=True, diff=True),
        Call("config_approval", args, role="approver"),
        Call("config_approval", args, role="approver"),
    )
    assert preview["changed"] is True and preview["diff"] == {
        "before": {"status": "PENDING"},
        "after": {"status": "APPROVED"},
    }
    assert not approved["failed"] and approved["changed"] is True, approved
    assert approved["proposal"]["approved_by"] == "approver-1"
    assert not again["failed"] and again["changed"] is False
    with gc.http() as client:
        trail = client.get(f"/api/v1/proposals/{proposed['proposal_id']}").json()["audit"]
    approvals = [e for e in trail if e["actor"] == "approver-1"]
    assert len(approvals) == 1, "check mode and the repeated approval recorded nothing"


def test_config_approval_denies_once_and_needs_an_approver(ansible: Ansible) -> None:
    proposed = ansible.module("config_change", high_change("deny me"), role="operator")
    assert proposed["status"] in ("PENDING", "QUEUED"), proposed
    args = {"proposal_id": proposed["proposal_id"], "decision": "deny", "reason": "not today"}
    refused, denied, again, approve, no_reason = ansible.modules(
        Call("config_approval", args, role="operator-2"),
        Call("config_approval", args, role="approver"),
        Call("config_approval", args, role="approver"),
        Call("config_approval", dict(args, decision="approve"), role="approver"),
        Call(
            "config_approval", {"proposal_id": proposed["proposal_id"], "decision": "deny"}, role="approver"
        ),
    )
    assert (refused["code"], refused["http_status"]) == ("FORBIDDEN", 403)
    assert not denied["failed"] and denied["changed"] is True and denied["status"] == "DENIED"
    assert again["changed"] is False and again["status"] == "DENIED"
    assert approve["failed"] is True and approve["code"] == "INVALID_TRANSITION"
    assert no_reason["failed"] is True and "reason" in no_reason["msg"]


def test_nib_info_reads_proposals_and_audit(ansible: Ansible) -> None:
    about_edge, capped, proposals = ansible.modules(
        Call("nib_info", {"gather": ["audit"], "audit": {"subject": EDGE_1}}),
        Call("nib_info", {"gather": ["audit"], "audit": {"max_events": 2}}),
        Call("nib_info", {"gather": ["proposals"]}),
    )
    assert not about_edge["failed"], about_edge
    assert [e["event_type"] for e in about_edge["audit"]][:1] == ["DEVICE_DISCOVERED"]
    assert all(e["subject"] == EDGE_1 for e in about_edge["audit"])
    assert len(capped["audit"]) == 2 and capped["audit"][0]["seq"] < capped["audit"][1]["seq"]
    assert capped["audit"][0]["actor"] == GC  # NIB_INITIALISED, written at the GC's first start
    assert all(p["proposal_id"].startswith("chg-") for p in proposals["proposals"])
