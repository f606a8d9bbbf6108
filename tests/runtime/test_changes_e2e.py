"""Configuration changes end to end (issue 5 acceptance): the hierarchy of tests/runtime/hierarchy.py
on the default lab, operators on the GC's northbound API, real SNMP SETs on the lab's snmpd agents,
read back with net-snmp's snmpget inside the lab.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from pdsno.canonical import sha256_hex, utcnow
from pdsno.changes.proposals import to_wire
from pdsno.changes.tokens import issue_token
from pdsno.controller.changes_common import token_to_wire
from pdsno.messaging.envelope import Envelope, MessageType
from pdsno.messaging.messages import ExecutionInstruction
from pdsno.nib.models import ConfigProposal, LockType, PolicyScope, Sensitivity
from pdsno.security.keys import Ed25519Signer, load_or_create_private_key, public_key_b64
from tests.runtime.changes_api import (
    SYS_LOCATION,
    call,
    device_id,
    in_nib,
    propose,
    snmp_value,
    status_at_gc,
    wait_status,
)
from tests.runtime.hierarchy import (
    PARENT,
    PDSNO,
    World,
    devices,
    operator_token,
    post_from_parent,
    run_cycle,
    running_world,
    seal_from_parent,
    truth,
    wait_for,
    writable_lcs,
)

PREFIX = "pdsc-"
SYS_CONTACT = "1.3.6.1.2.1.1.4.0"
GC_TIMEOUT_S = 8


def extra_config(host: str, role: str, secrets_dir: Path) -> dict[str, Any]:
    if role == "global":
        return {"policy": {"gc_timeout_s": GC_TIMEOUT_S, "emergency_ack_timeout_s": 30}}
    if role == "local":
        changes = writable_lcs(host, role, secrets_dir)["changes"]
        return {"changes": {**changes, "snmp_timeout_s": 1.0}}
    return {}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with running_world(tmp_path_factory.mktemp("changes"), PREFIX, extra_config) as world:
        expected = truth(world)
        wait_for(lambda: len(devices(world, "gc-1")) >= len(expected), 90, "the GC inventory")
        yield world


@pytest.fixture(scope="module")
def tokens(world: World) -> dict[str, str]:
    roles = {"olga": "operator", "alice": "approver", "bob": "approver", "root": "admin"}
    return {name: operator_token(world, name, role) for name, role in roles.items()}


def lock_on(world: World, rc_host: str, device: str) -> Any:
    return in_nib(world, rc_host, lambda s: s.check_lock(device, LockType.CONFIG))


# --- UC-2 -------------------------------------------------------------------------------------


def test_uc2_a_low_change_is_executed_and_its_rollback_restores_the_old_value(
    world: World, tokens: dict[str, str]
) -> None:
    before = snmp_value(world, "acc-sw-a1-1")
    check = call(world, tokens["olga"], "POST", "/api/v1/proposals?check=true",
                 json={"executor": "snmp", "targets": [device_id(world, "acc-sw-a1-1")],
                       "payload": {"set": {SYS_LOCATION: "moved by uc-2"}}})  # fmt: skip
    assert check.status_code == 200, check.text
    assert check.json()["classification"]["tier"] == "LOW" and check.json()["human_approval"] is False
    # the diff as the LC planned it: the value read from the device now, beside the one wanted
    [diff] = check.json()["diff"].values()
    assert diff == [{"key": SYS_LOCATION, "before": before, "after": "moved by uc-2"}], check.json()
    assert not call(world, tokens["olga"], "GET", "/api/v1/proposals").json()["items"], "check stored nothing"

    made = propose(world, tokens["olga"], ["acc-sw-a1-1"], "moved by uc-2")
    assert made.status_code == 201, made.text
    proposal_id = made.json()["proposal_id"]
    done = wait_status(world, tokens["olga"], proposal_id, "EXECUTED", "FAILED", "ROLLED_BACK", "DEGRADED")
    assert done["status"] == "EXECUTED", done
    assert snmp_value(world, "acc-sw-a1-1") == "moved by uc-2"
    trail = [e["event_type"] for e in done["audit"]]
    assert trail[0] == "CONFIG_PROPOSED" and trail[-1] == "CONFIG_EXECUTED", trail
    assert lock_on(world, "rc-zone-a", done["target_devices"][0]) is None

    undo = call(world, tokens["olga"], "POST", f"/api/v1/proposals/{proposal_id}/rollback", json={})
    assert undo.status_code == 201, undo.text
    undone = wait_status(world, tokens["olga"], undo.json()["proposal_id"], "EXECUTED", "FAILED", "DEGRADED")
    assert undone["status"] == "EXECUTED", undone
    assert snmp_value(world, "acc-sw-a1-1") == before


MISSING_OID = "1.3.6.1.2.1.1.99.0"


def test_a_check_shows_what_the_device_holds_and_refuses_an_oid_it_lacks(
    world: World, tokens: dict[str, str]
) -> None:
    target = device_id(world, "srv-a2-2")

    def check(pairs: dict[str, str]) -> dict[str, Any]:
        answer = call(world, tokens["olga"], "POST", "/api/v1/proposals?check=true",
                      json={"executor": "snmp", "targets": [target], "payload": {"set": pairs}})  # fmt: skip
        assert answer.status_code == 200, answer.text
        view: dict[str, Any] = answer.json()
        return view

    both = check({SYS_LOCATION: "checked", SYS_CONTACT: "checked"})
    assert both["refused"] is None and both["diff_error"] is None, both
    held = {oid: snmp_value(world, "srv-a2-2", oid) for oid in (SYS_LOCATION, SYS_CONTACT)}
    assert {c["key"]: c["before"] for c in both["diff"][target]} == held

    missing = check({SYS_LOCATION: "checked", MISSING_OID: "x"})
    refused = missing["refused"]
    assert refused["code"] == "DEVICE_READ_FAILED", missing
    assert f"{target} (198.18.2.22) has no object {MISSING_OID} (noSuchObject)" in refused["message"]
    assert refused["devices"] == {target: {"code": "DEVICE_READ_FAILED", "message": refused["message"]}}
    cli = pdsno_cli(
        world, tokens["olga"], "propose", "--target", target, "--set", f"{MISSING_OID}=x", "--check"
    )
    assert cli.returncode == 1 and "refused: DEVICE_READ_FAILED" in cli.stderr, (cli.stdout, cli.stderr)
    stored = call(world, tokens["olga"], "GET", "/api/v1/proposals", params={"limit": 1000}).json()["items"]
    assert all(target not in p["target_devices"] for p in stored), "a check stores nothing"
    assert snmp_value(world, "srv-a2-2") == held[SYS_LOCATION]


def test_a_real_token_is_spent_once_and_the_gc_records_when(world: World, tokens: dict[str, str]) -> None:
    lc_host = "lc-a2"
    lc_id = world.procs[lc_host].controller_id
    made = propose(world, tokens["olga"], ["srv-a2-1"], "token spent once")
    assert made.status_code == 201, made.text
    proposal_id = made.json()["proposal_id"]
    done = wait_status(world, tokens["olga"], proposal_id, "EXECUTED", "FAILED", "ROLLED_BACK", "DEGRADED")
    assert done["status"] == "EXECUTED", done
    token = in_nib(world, lc_host, lambda s: s.get_token(done["execution_token_id"]))
    assert token is not None and token.consumed_by == lc_id and token.consumed_at is not None
    assert datetime.fromisoformat(done["token_consumed_at"]) == token.consumed_at
    audit = call(world, tokens["olga"], "GET", "/api/v1/audit",
                 params={"event_type": "EXECUTION_TOKEN_CONSUMED", "subject": proposal_id}).json()["items"]  # fmt: skip
    assert [(e["actor"], e["payload"]["token_id"]) for e in audit] == [(lc_id, token.token_id)], audit
    trail = [e["event_type"] for e in done["audit"]]
    assert trail.index("EXECUTION_TOKEN_CONSUMED") < trail.index("CONFIG_EXECUTING"), trail

    # The instruction again, with the spent token and the LC's own copy of the proposal, in a fresh
    # envelope from the RC: the LC refuses it before touching the device.
    stored = in_nib(world, lc_host, lambda s: s.get_proposal(proposal_id))
    rc_key, _ = load_or_create_private_key(world.procs[PARENT[lc_host]].data_dir / "identity.key")
    again = ExecutionInstruction(proposal_id=proposal_id, proposal=to_wire(stored), execution_token=token_to_wire(token),
                                 issuer_public_key=public_key_b64(rc_key))  # fmt: skip
    replayed = _send(
        world, lc_host, seal_from_parent(world, lc_host, MessageType.EXECUTION_INSTRUCTION, again)
    )
    assert replayed.status_code == 403 and replayed.json()["code"] == "TOKEN_ALREADY_CONSUMED", replayed.text
    aborted = [e for e in in_nib(world, lc_host, lambda s: s.events_about(proposal_id))
               if e.event_type == "EXECUTION_ABORTED"]  # fmt: skip
    assert [e.payload for e in aborted] == [{"reason": "TOKEN_ALREADY_CONSUMED", "token_id": token.token_id}]
    assert status_at_gc(world, tokens["olga"], proposal_id)["status"] == "EXECUTED"


# --- UC-3 -------------------------------------------------------------------------------------


def test_uc3_a_high_change_waits_for_the_gc_and_runs_once_approved(
    world: World, tokens: dict[str, str]
) -> None:
    made = propose(world, tokens["olga"], ["sw-a2-1"], "approved at the GC", suggested_tier="HIGH")
    assert made.status_code == 201, made.text
    proposal_id = made.json()["proposal_id"]
    waiting = status_at_gc(world, tokens["olga"], proposal_id)
    assert waiting["status"] == "PENDING" and "CONFIG_ESCALATED" in [
        e["event_type"] for e in waiting["audit"]
    ]
    assert lock_on(world, "rc-zone-a", waiting["target_devices"][0]) is not None
    approved = call(world, tokens["alice"], "POST", f"/api/v1/proposals/{proposal_id}/approve", json={})
    assert approved.status_code == 200, approved.text
    done = wait_status(world, tokens["olga"], proposal_id, "EXECUTED", "FAILED", "ROLLED_BACK", "DEGRADED")
    assert done["status"] == "EXECUTED" and done["approved_by"] == "alice", done
    assert snmp_value(world, "sw-a2-1") == "approved at the GC"
    assert lock_on(world, "rc-zone-a", done["target_devices"][0]) is None


def test_uc3_with_the_gc_stopped_the_rc_denies_gc_timeout_and_releases_the_locks(
    world: World, tokens: dict[str, str]
) -> None:
    made = propose(world, tokens["olga"], ["sw-a2-2"], "never approved", suggested_tier="HIGH")
    assert made.status_code == 201, made.text
    proposal_id, target = made.json()["proposal_id"], made.json()["target_devices"][0]
    assert lock_on(world, "rc-zone-a", target) is not None
    gc = world.procs["gc-1"]
    assert gc.popen is not None
    gc.popen.terminate()
    gc.popen.wait(timeout=30)
    try:
        at_rc = wait_for(
            lambda: (p := in_nib(world, "rc-zone-a", lambda s: s.get_proposal(proposal_id))).status.value == "DENIED"
            and p, GC_TIMEOUT_S + 20, "GC_TIMEOUT at the RC")  # fmt: skip
        assert at_rc.reason == "GC_TIMEOUT"
        assert lock_on(world, "rc-zone-a", target) is None
    finally:
        world.start("gc-1")
    denied = wait_status(world, tokens["olga"], proposal_id, "DENIED", timeout=30)
    assert denied["reason"] == "GC_TIMEOUT"


# --- four-eyes, queueing ------------------------------------------------------------------------


def test_a_proposer_cannot_approve_their_own_medium_change_and_a_second_change_queues(
    world: World, tokens: dict[str, str]
) -> None:
    made = propose(world, tokens["alice"], ["acc-sw-a1-2"], "medium by alice", oid=SYS_CONTACT,
                   suggested_tier="MEDIUM")  # fmt: skip
    assert made.status_code == 201, made.text
    first = made.json()["proposal_id"]
    assert made.json()["status"] == "PENDING"
    queued = propose(world, tokens["olga"], ["acc-sw-a1-2"], "low behind it")
    assert queued.status_code == 201, queued.text
    assert queued.json()["status"] == "QUEUED" and queued.json()["reason"] == "DENY_CONFLICT"

    own = call(world, tokens["alice"], "POST", f"/api/v1/proposals/{first}/approve", json={})
    assert own.status_code == 403 and own.json()["code"] == "FOUR_EYES_VIOLATION", own.text
    assert status_at_gc(world, tokens["olga"], first)["status"] == "PENDING"

    other = call(world, tokens["bob"], "POST", f"/api/v1/proposals/{first}/approve", json={"reason": "ok"})
    assert other.status_code == 200, other.text
    assert (
        wait_status(world, tokens["olga"], first, "EXECUTED", "FAILED", "ROLLED_BACK")["status"] == "EXECUTED"
    )
    second = wait_status(
        world, tokens["olga"], queued.json()["proposal_id"], "EXECUTED", "FAILED", "ROLLED_BACK"
    )
    assert second["status"] == "EXECUTED", second
    assert snmp_value(world, "acc-sw-a1-2", SYS_CONTACT) == "medium by alice"
    assert snmp_value(world, "acc-sw-a1-2") == "low behind it"


# --- all or nothing, DEGRADED ----------------------------------------------------------------------


def test_one_failing_device_of_three_rolls_back_all_three(world: World, tokens: dict[str, str]) -> None:
    world.lab.add_device(
        {"name": "ro-sw-a1", "ip": "198.18.1.88", "profile": "cisco-catalyst", "writable": False}
    )
    run_cycle(world, "lc-a1")
    wait_for(lambda: world.lab.device("ro-sw-a1").mac in devices(world, "gc-1"), 30, "the read-only switch")
    names = ["acc-sw-a1-3", "acc-sw-a1-4", "ro-sw-a1"]
    before = {n: snmp_value(world, n) for n in names}
    made = propose(world, tokens["olga"], names, "all or nothing")
    assert made.status_code == 201, made.text
    done = wait_status(
        world, tokens["olga"], made.json()["proposal_id"], "EXECUTED", "FAILED", "ROLLED_BACK", "DEGRADED"
    )
    assert done["status"] == "ROLLED_BACK", done
    assert {n: snmp_value(world, n) for n in names} == before
    # The GC's copy says why, per device, as the LC's executor reported it.
    read_only = device_id(world, "ro-sw-a1")
    results = done["device_results"]
    assert done["reason"] == "DEVICE_WRITE_FAILED", done
    assert results[read_only]["status"] == "failed", results
    assert results[read_only]["error"]["code"] == "DEVICE_WRITE_FAILED"
    assert f"{read_only} (198.18.1.88) SET refused" in results[read_only]["error"]["message"]
    # the others were either rolled back or never reached (the order is the devices' ids)
    others = [r for d, r in results.items() if d != read_only]
    assert len(others) == 2 and all(
        r["status"] in ("planned", "rolled_back") and r["error"] is None for r in others
    )
    final = next(e for e in reversed(done["audit"]) if e["event_type"] == "CONFIG_ROLLED_BACK")
    assert final["payload"]["message"] == results[read_only]["error"]["message"]

    shown = pdsno_cli(world, tokens["olga"], "show", done["proposal_id"])
    assert shown.returncode == 0, shown.stderr
    assert f"{read_only}  failed" in shown.stdout
    assert f"error: DEVICE_WRITE_FAILED: {results[read_only]['error']['message']}" in shown.stdout
    waited = pdsno_cli(world, tokens["olga"], "propose", "--target", read_only, "--set", f"{SYS_LOCATION}=refused",
                       "--wait", "--timeout", "60")  # fmt: skip
    assert waited.returncode == 1, (waited.stdout, waited.stderr)
    assert "is ROLLED_BACK (DEVICE_WRITE_FAILED)" in waited.stderr and "Traceback" not in waited.stderr
    assert f"{read_only}  failed" in waited.stdout and "error: DEVICE_WRITE_FAILED" in waited.stdout


def test_uc4_an_emergency_runs_at_once_and_a_gc_deny_rolls_it_back_a_failed_rollback_degrades(
    world: World, tokens: dict[str, str]
) -> None:
    before = snmp_value(world, "sw-b1-1")
    made = propose(
        world, tokens["olga"], ["sw-b1-1"], "quarantined", suggested_tier="EMERGENCY", intent="QUARANTINE"
    )
    assert made.status_code == 201, made.text
    proposal_id = made.json()["proposal_id"]
    done = wait_status(world, tokens["olga"], proposal_id, "EXECUTED", "FAILED", "ROLLED_BACK")
    assert done["status"] == "EXECUTED" and snmp_value(world, "sw-b1-1") == "quarantined"
    events = in_nib(world, "lc-b1", lambda s: s.events_about(proposal_id))
    emergency = next(e for e in events if e.event_type == "EMERGENCY_EXECUTION")
    assert emergency.payload["config_payload"]["set"] == {SYS_LOCATION: "quarantined"}
    assert emergency.payload["limiter"]["limit_per_hour"] == 5
    denied = call(
        world,
        tokens["alice"],
        "POST",
        f"/api/v1/proposals/{proposal_id}/deny",
        json={"reason": "not an incident"},
    )
    assert denied.status_code == 200, denied.text
    assert (
        wait_status(world, tokens["olga"], proposal_id, "ROLLED_BACK", "DEGRADED")["status"] == "ROLLED_BACK"
    )
    assert snmp_value(world, "sw-b1-1") == before

    # The same again, but the device is gone when the deny comes: its rollback fails.
    made = propose(world, tokens["olga"], ["sw-b1-2"], "quarantined again", suggested_tier="EMERGENCY",
                   intent="QUARANTINE")  # fmt: skip
    second = made.json()["proposal_id"]
    wait_status(world, tokens["olga"], second, "EXECUTED")
    world.lab.stop_device("sw-b1-2")
    try:
        call(world, tokens["alice"], "POST", f"/api/v1/proposals/{second}/deny", json={"reason": "drill"})
        assert wait_status(world, tokens["olga"], second, "ROLLED_BACK", "DEGRADED")["status"] == "DEGRADED"
    finally:
        world.lab.start_device("sw-b1-2")
    target = device_id(world, "sw-b1-2")
    wait_for(
        lambda: devices(world, "gc-1")[world.lab.device("sw-b1-2").mac].status.value == "degraded",
        20,
        "degraded",
    )
    blocked = propose(world, tokens["olga"], ["sw-b1-2"], "blocked")
    assert blocked.status_code == 409 and blocked.json()["code"] == "DEVICE_DEGRADED", blocked.text
    cleared = call(
        world, tokens["alice"], "POST", f"/api/v1/devices/{target}/clear", json={"reason": "checked"}
    )
    assert cleared.status_code == 204, cleared.text
    again = propose(world, tokens["olga"], ["sw-b1-2"], "after clearance")
    assert again.status_code == 201, again.text
    assert (
        wait_status(world, tokens["olga"], again.json()["proposal_id"], "EXECUTED", "FAILED")["status"]
        == "EXECUTED"
    )


# --- tokens at the executor -------------------------------------------------------------------------


def _instruction(world: World, lc_host: str, proposal: ConfigProposal, *, token_signer: Ed25519Signer,
                 ttl_s: int = 600, devices_override: list[str] | None = None) -> bytes:  # fmt: skip
    """What the RC sends, made here with the RC's own keys from its data directory; the token may be
    for other devices than the proposal's."""
    bound = (
        proposal
        if devices_override is None
        else proposal.model_copy(update={"target_devices": devices_override})
    )
    token = issue_token(token_signer, bound, ttl=timedelta(seconds=ttl_s))
    rc_key, _ = load_or_create_private_key(world.procs[PARENT[lc_host]].data_dir / "identity.key")
    instruction = ExecutionInstruction(proposal_id=proposal.proposal_id, proposal=to_wire(proposal),
                                       execution_token=token_to_wire(token),
                                       issuer_public_key=public_key_b64(rc_key))  # fmt: skip
    return seal_from_parent(world, lc_host, MessageType.EXECUTION_INSTRUCTION, instruction)


def _send(world: World, lc_host: str, body: bytes) -> httpx.Response:
    return post_from_parent(world, lc_host, body, timeout=30)


def test_replayed_expired_tampered_and_mistargeted_tokens_are_refused(world: World) -> None:
    lc_host, rc_host = "lc-a2", "rc-zone-a"
    rc_key, _ = load_or_create_private_key(world.procs[rc_host].data_dir / "identity.key")
    rc = Ed25519Signer(world.procs[rc_host].controller_id, rc_key)
    target = device_id(world, "sw-a2-3")

    def proposal(value: str) -> ConfigProposal:
        payload = {"executor": "snmp", "set": {SYS_LOCATION: value}}
        return ConfigProposal(proposal_id=f"chg-test-{uuid.uuid4().hex[:8]}", config_payload=payload,
                              config_hash=sha256_hex(payload), category=Sensitivity.LOW, origin="test",
                              proposed_by="test", target_devices=[target], proposed_at=utcnow())  # fmt: skip

    good = _instruction(world, lc_host, proposal("token once"), token_signer=rc)
    assert _send(world, lc_host, good).status_code == 202
    wait_for(lambda: snmp_value(world, "sw-a2-3") == "token once", 30, "the change")
    replayed = _send(world, lc_host, _reseal(world, lc_host, good))
    assert replayed.json()["code"] == "TOKEN_ALREADY_CONSUMED", replayed.text

    expired = _send(world, lc_host, _instruction(world, lc_host, proposal("late"), token_signer=rc, ttl_s=-1))
    assert expired.status_code == 403 and expired.json()["code"] == "TOKEN_EXPIRED", expired.text
    forged = Ed25519Signer(rc.signer_id, load_or_create_private_key(world.root / "forger.key")[0])
    bad = _send(world, lc_host, _instruction(world, lc_host, proposal("forged"), token_signer=forged))
    assert bad.json()["code"] == "INVALID_TOKEN", bad.text
    other = device_id(world, "sw-a2-4")
    aimed = _send(world, lc_host, _instruction(world, lc_host, proposal("elsewhere"), token_signer=rc,
                                               devices_override=[other]))  # fmt: skip
    assert aimed.json()["code"] in {"TOKEN_DEVICE_MISMATCH", "TOKEN_HASH_MISMATCH"}, aimed.text
    assert snmp_value(world, "sw-a2-3") == "token once"


def _reseal(world: World, lc_host: str, body: bytes) -> bytes:
    """The same instruction in a fresh envelope (a replayed envelope is refused earlier, as a replay)."""
    return seal_from_parent(world, lc_host, MessageType.EXECUTION_INSTRUCTION, Envelope.parse(body).payload)


# --- the command line ------------------------------------------------------------------------------


def pdsno_cli(world: World, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``pdsno change ARGS`` as an operator runs it, on the GC's host."""
    env = {**os.environ, "PDSNO_URL": world.url("gc-1"), "PDSNO_TOKEN": token,
           "PDSNO_CA_PATH": str(world.root / "pki" / "ca.crt")}  # fmt: skip
    return subprocess.run(["ip", "netns", "exec", world.ns("gc-1"), str(PDSNO), "change", *args], env=env,
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip


def test_the_cli_checks_proposes_and_shows_a_change(world: World, tokens: dict[str, str]) -> None:
    target = device_id(world, "srv-a1-mon")

    def pdsno(*args: str) -> subprocess.CompletedProcess[str]:
        return pdsno_cli(world, tokens["olga"], *args)

    check = pdsno("propose", "--target", target, "--set", f"{SYS_LOCATION}=via the cli", "--check")
    assert check.returncode == 0, check.stderr
    assert "tier:        LOW" in check.stdout and "-> via the cli" in check.stdout
    done = pdsno("propose", "--target", target, "--set", f"{SYS_LOCATION}=via the cli", "--wait", "--json")
    assert done.returncode == 0, done.stderr
    view = json.loads(done.stdout)
    assert view["status"] == "EXECUTED" and snmp_value(world, "srv-a1-mon") == "via the cli"
    shown = pdsno("show", view["proposal_id"])
    assert "CONFIG_EXECUTED" in shown.stdout
    late = pdsno("approve", view["proposal_id"])  # olga is an operator, not an approver
    assert late.returncode != 0 and "FORBIDDEN" in late.stderr and "Traceback" not in late.stderr


# --- UC-7, audit -------------------------------------------------------------------------------------


def test_uc7_a_new_policy_reaches_every_tier_and_old_version_proposals_are_refused(
    world: World, tokens: dict[str, str]
) -> None:
    current = call(world, tokens["olga"], "GET", "/api/v1/policy").json()
    content = {**current["content"], "discovery_interval_s": 180}
    forbidden = call(world, tokens["olga"], "PUT", "/api/v1/policy", json={"content": content})
    assert forbidden.status_code == 403
    put = call(world, tokens["root"], "PUT", "/api/v1/policy", json={"content": content})
    assert put.status_code == 200 and put.json()["changed"] is True, put.text
    version = put.json()["policy"]["policy_version"]
    assert (
        call(world, tokens["root"], "PUT", "/api/v1/policy", json={"content": content}).json()["changed"]
        is False
    )
    for host in ("rc-zone-a", "rc-zone-b", "lc-a1", "lc-a2", "lc-b1"):
        wait_for(lambda h=host: (p := in_nib(world, h, lambda s: s.get_active_policy(PolicyScope.GLOBAL)))
                 and p.policy_version == version and p.content["discovery_interval_s"] == 180, 30, f"policy at {host}")  # fmt: skip
    old = propose(
        world, tokens["olga"], ["srv-a1-dns"], "old policy", policy_version=current["policy_version"]
    )
    assert old.status_code == 409 and old.json()["code"] == "POLICY_VERSION_MISMATCH", old.text
    assert old.json()["current_version"] == version


def test_zz_every_controllers_audit_log_verifies(world: World, tokens: dict[str, str]) -> None:
    for host, proc in world.procs.items():
        done = subprocess.run([str(PDSNO), "audit", "verify", "--config", str(proc.config)],
                              capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
        assert done.returncode == 0, (host, done.stdout, done.stderr)
    over_api = call(world, tokens["olga"], "GET", "/api/v1/audit/verify").json()
    assert over_api["ok"] is True and over_api["checked"] > 0
    page = call(
        world, tokens["olga"], "GET", "/api/v1/audit", params={"event_type": "CONFIG_EXECUTED", "limit": 5}
    )
    assert page.status_code == 200 and page.json()["items"]
    assert all(e["event_type"] == "CONFIG_EXECUTED" for e in page.json()["items"])
