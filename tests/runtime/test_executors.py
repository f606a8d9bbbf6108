"""Change executors and the engine against real snmpd agents in a lab (prefix ``pdsx-``).

The executors' sockets (and ansible-playbook's processes) live inside the LC host's namespace: each
test's asyncio code runs in a thread that entered it (:meth:`Lab.inside`). What a device holds is read
back with ``snmpget`` inside the namespace too. Pure parts (value typing, the callback's output) need no
lab.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from pdsno.changes.apply import ChangeStatus, DeviceOutcome, apply_change, plan_change, undo_change
from pdsno.changes.executors import ExecutorSettings, build_executor
from pdsno.changes.executors.ansible import AnsibleExecutor, field_changes, parse_output
from pdsno.changes.executors.base import DevicePlan
from pdsno.changes.executors.snmp import SnmpExecutor, canonical_value, normalise_oid
from pdsno.errors import PdsnoError, ReasonCode
from pdsno.lab import Lab
from pdsno.lab.services import snmpd_conf
from pdsno.lab.topology import parse_topology
from pdsno.nib.models import Device
from pdsno.snmp import SnmpCredentials, SnmpV3Credential

PREFIX = "pdsx-"
LC = "lc-x"
SYS_DESCR = "1.3.6.1.2.1.1.1.0"
SYS_CONTACT = "1.3.6.1.2.1.1.4.0"
SYS_NAME = "1.3.6.1.2.1.1.5.0"
SYS_LOCATION = "1.3.6.1.2.1.1.6.0"
V3 = {"user": "pdsx-rw", "auth_password": "pdsx-auth-1", "priv_password": "pdsx-priv-1", "write": True}
TOPOLOGY = {
    "name": "pdsx",
    "management": "198.19.254.0/24",
    "zones": [
        {
            "name": "zx",
            "subnets": [{"cidr": "198.18.70.0/24", "lc": LC}],
            "devices": [
                {"name": "sw-1", "ip": "198.18.70.11"},
                {"name": "sw-2", "ip": "198.18.70.12"},
                {"name": "sw-3", "ip": "198.18.70.13", "writable": False},
                {"name": "sw-4", "ip": "198.18.70.14", "write_community": "sw4-rw"},
                {"name": "rtr-v3", "ip": "198.18.70.20", "kind": "snmpv3", "snmpv3": V3},
                {"name": "ans-1", "ip": "198.18.70.31"},
                {"name": "ans-2", "ip": "198.18.70.32"},
            ],
        }
    ],
    "controllers": {"lcs": [{"name": LC, "zone": "zx", "mgmt_ip": "198.19.254.31"}]},
}
T = TypeVar("T")


# --------------------------------------------------------------------------------------------------
# pure parts


def test_values_are_typed_and_kept_in_one_canonical_form() -> None:
    assert normalise_oid(".1.3.6.1.2.1.1.6.0") == SYS_LOCATION
    assert canonical_value("x", "Room 4") == "Room 4"
    assert canonical_value("x", 72) == 72
    assert canonical_value("x", {"type": "s", "value": "a"}) == "a"
    assert canonical_value("x", {"type": "i", "value": -3}) == -3
    assert canonical_value("x", {"type": "u", "value": 7}) == {"type": "u", "value": 7}
    assert canonical_value("x", {"type": "x", "value": "61:62"}) == "ab"  # printable hex is text
    assert canonical_value("x", {"type": "x", "value": "00ff"}) == {"type": "x", "value": "00ff"}
    assert canonical_value("x", {"type": "a", "value": "10.0.0.1"}) == {"type": "a", "value": "10.0.0.1"}
    assert canonical_value("x", {"type": "o", "value": ".1.3.6"}) == {"type": "o", "value": "1.3.6"}
    for bad in (True, 2**31, 1.5, None, {"type": "q", "value": 1}, {"type": "u", "value": -1},
                {"type": "a", "value": "300.1.1.1"}, {"type": "x", "value": "zz"}, {"value": 1}):  # fmt: skip
        with pytest.raises(PdsnoError) as caught:
            canonical_value("1.3.6", bad)
        assert caught.value.code is ReasonCode.INVALID_REQUEST
    for oid in ("1", "sysLocation.0", "1.3.6.01", ""):
        with pytest.raises(PdsnoError):
            normalise_oid(oid)


def test_snmp_payloads_are_checked_before_any_device() -> None:
    executor = SnmpExecutor(SnmpCredentials(("private",)))
    executor.validate({"executor": "snmp", "set": {SYS_LOCATION: "x"}})
    for payload in (
        {"executor": "ansible", "set": {SYS_LOCATION: "x"}},
        {"executor": "snmp", "set": {}},
        {"executor": "snmp", "set": {SYS_LOCATION: "x", "." + SYS_LOCATION: "y"}},
        {"executor": "snmp", "set": {SYS_LOCATION: "x"}, "colour": "blue"},
        {"executor": "snmp", "set": {f"1.3.6.1.2.1.1.9.1.3.{n}": "x" for n in range(65)}},
    ):
        with pytest.raises(PdsnoError) as caught:
            executor.validate(payload)
        assert caught.value.code is ReasonCode.INVALID_REQUEST
    without_credentials = SnmpExecutor(SnmpCredentials())  # what a GC or RC validates payloads with
    without_credentials.validate({"executor": "snmp", "set": {SYS_LOCATION: "x"}})
    nowhere = Device(mac_address="02:00:00:00:00:97", ip_address="127.0.0.1")
    with pytest.raises(PdsnoError) as caught:
        asyncio.run(without_credentials.plan(nowhere, {"set": {SYS_LOCATION: "x"}}))
    assert caught.value.code is ReasonCode.CONFIG_INVALID


def test_the_callback_output_becomes_the_diff() -> None:
    line = json.dumps(
        {
            "results": [
                {"host": "d", "task": "read", "status": "ok", "changed": False, "diff": [], "msg": ""},
                {
                    "host": "d",
                    "task": "file",
                    "status": "changed",
                    "changed": True,
                    "diff": [{"before": "a\n", "after": "b\n"}],
                    "msg": "",
                },
                {
                    "host": "d",
                    "task": "set",
                    "status": "changed",
                    "changed": True,
                    "diff": [],
                    "msg": "Command would have run if not in check mode",
                },
            ],
            "stats": {},
        }
    )
    results = parse_output("[WARNING]: noise\n" + line + "\n")
    changes = field_changes(results)
    assert [(c.key, c.before, c.after) for c in changes] == [
        ("2: file", "a\n", "b\n"),
        ("3: set", None, "Command would have run if not in check mode"),
    ]
    assert all(c.changes for c in changes)
    with pytest.raises(PdsnoError) as caught:
        parse_output("ERROR! the playbook could not be found\n")
    assert caught.value.code is ReasonCode.EXECUTOR_UNAVAILABLE


def test_ansible_payloads_stay_in_the_playbook_directory(tmp_path: Path) -> None:
    (tmp_path / "ok.yml").write_text("- hosts: all\n  tasks: []\n")
    executor = AnsibleExecutor(playbook_dir=tmp_path)
    executor.validate({"executor": "ansible", "playbook": "ok.yml", "rollback": {"tasks": [{"debug": {}}]}})
    for payload in (
        {"executor": "ansible", "playbook": "../etc/passwd"},
        {"executor": "ansible", "playbook": "missing.yml"},
        {"executor": "ansible", "tasks": [], "playbook": "ok.yml"},
        {"executor": "ansible", "tasks": "debug"},
        {
            "executor": "ansible",
            "tasks": [{"debug": {}}],
            "rollback": {"tasks": [{"debug": {}}], "rollback": {}},
        },
    ):
        with pytest.raises(PdsnoError) as caught:
            executor.validate(payload)
        assert caught.value.code is ReasonCode.INVALID_REQUEST, payload
    # The GC and the RCs hold no playbook directory: they judge the name, the LC also the file.
    elsewhere = AnsibleExecutor()
    elsewhere.validate({"executor": "ansible", "playbook": "ok.yml"})
    for name in ("../etc/passwd", "/etc/passwd", "sub/../../x.yml", ""):
        with pytest.raises(PdsnoError, match=r"outside the playbook directory|is a file name"):
            elsewhere.validate({"executor": "ansible", "playbook": name})
    with pytest.raises(PdsnoError, match="no playbook directory"):
        elsewhere._playbook_path("ok.yml", what="payload")


def test_build_executor_reads_its_settings(tmp_path: Path) -> None:
    (tmp_path / "communities").write_text("# write communities\nprivate\n\nsecond\n")
    (tmp_path / "v3").write_text("admin:auth-pass-1:priv-pass-1\n")
    (tmp_path / "vars.yml").write_text(
        yaml.safe_dump({"all": {"ansible_user": "netops"}, "devices": {"sw-1": {"ansible_port": 2222}}})
    )
    settings = ExecutorSettings(
        snmp_write_communities_file=tmp_path / "communities",
        snmp_v3_file=tmp_path / "v3",
        ansible_inventory_vars=tmp_path / "vars.yml",
        timeout_s=30,
    )
    snmp = build_executor("snmp", settings)
    assert isinstance(snmp, SnmpExecutor)
    assert snmp.credentials.communities == ("private", "second")
    assert [u.user for u in snmp.credentials.v3] == ["admin"]
    ansible = build_executor("ansible", settings)
    assert isinstance(ansible, AnsibleExecutor)
    device = Device(mac_address="02:00:00:00:00:01", ip_address="10.0.0.1", hostname="sw-1")
    host = ansible.inventory(device)["all"]["hosts"][device.device_id]
    assert host == {
        "ansible_user": "netops",
        "ansible_port": 2222,
        "ansible_host": "10.0.0.1",
        "pdsno_device_id": device.device_id,
        "pdsno_hostname": "sw-1",
    }
    with pytest.raises(PdsnoError) as caught:
        build_executor("netconf", settings)
    assert caught.value.code is ReasonCode.INVALID_REQUEST


# --------------------------------------------------------------------------------------------------
# the lab


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root (network namespaces)")
    state_dir = tmp_path_factory.mktemp("pdsx-lab")
    try:
        yield Lab.up(parse_topology(TOPOLOGY, source="pdsx"), state_dir, prefix=PREFIX)
    finally:
        Lab.down(state_dir, prefix=PREFIX)


def inside(lab: Lab, work: Callable[[], Awaitable[T]], timeout: float = 180.0) -> T:
    """Run ``work()`` on an event loop of its own, in a thread inside the LC host's namespace."""

    def run() -> T:
        with lab.inside(LC):
            return asyncio.run(asyncio.wait_for(work(), timeout))

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result(timeout=timeout + 10)


def device(lab: Lab, name: str) -> Device:
    d = lab.device(name)
    return Device(mac_address=d.mac, ip_address=d.addresses[0], hostname=d.name)


def snmp_value(lab: Lab, name: str, oid: str = SYS_LOCATION) -> str:
    """What the device answers, read with net-snmp's snmpget through its read-only community."""
    d = lab.device(name)
    if d.snmpv3 is not None:
        v3 = d.snmpv3
        auth = ["-v3", "-l", "authPriv", "-u", v3.user, "-a", "SHA", "-A", v3.auth_password, "-x", "AES",
                "-X", v3.priv_password]  # fmt: skip
    else:
        auth = ["-v2c", "-c", str(d.community)]
    done = lab.exec_in(LC, ["snmpget", "-Oqv", "-t", "1", "-r", "1", *auth, d.addresses[0], oid], timeout=15)
    return done.stdout.strip().strip('"')


def snmp_executor(*communities: str, v3: tuple[SnmpV3Credential, ...] = ()) -> SnmpExecutor:
    return SnmpExecutor(SnmpCredentials(communities or ("private",), v3), timeout=0.5, retries=0)


def test_the_lab_makes_the_system_group_writable_with_the_write_community_only(lab: Lab) -> None:
    truth = {d["name"]: d for d in lab.ground_truth()["devices"]}
    assert truth["sw-1"]["snmp"] == {"version": "2c", "community": "public", "write_community": "private",
                                     "writable": True}  # fmt: skip
    assert truth["sw-4"]["snmp"]["write_community"] == "sw4-rw"
    assert truth["sw-3"]["snmp"]["writable"] is False
    assert truth["sw-1"]["sysLocation"] == "pdsno lab, zx" == snmp_value(lab, "sw-1")
    assert snmp_value(lab, "sw-1", SYS_NAME) == "sw-1"
    ip = lab.device("sw-2").addresses[0]
    set_ = ["snmpset", "-t", "1", "-r", "0", "-v2c"]
    refused = lab.exec_in(LC, [*set_, "-c", "public", ip, SYS_LOCATION, "s", "x"], check=False)
    assert "noAccess" in refused.stderr
    refused = lab.exec_in(LC, [*set_, "-c", "private", ip, SYS_DESCR, "s", "x"], check=False)
    assert "notWritable" in refused.stderr
    written = lab.exec_in(LC, [*set_, "-c", "private", ip, SYS_CONTACT, "s", "ops@lab"], check=False)
    assert written.returncode == 0, written.stderr
    assert snmp_value(lab, "sw-2", SYS_CONTACT) == "ops@lab"
    lab.exec_in(LC, [*set_, "-c", "private", ip, SYS_CONTACT, "s", "noc@lab.pdsno.invalid"])
    assert "psyslocation" not in snmpd_conf(lab.device("sw-3"), Path("/p"))


def test_uc2_snmp_set_is_visible_and_the_rollback_restores_it(lab: Lab) -> None:
    executor = snmp_executor("public", "private")  # the read-only one first: the SET moves on to the next
    sw1 = device(lab, "sw-1")
    payload = {"executor": "snmp", "set": {"." + SYS_LOCATION: "Rack 7, room 2", SYS_NAME: "sw-1"}}

    async def plan_and_commit() -> tuple[DevicePlan, bool]:
        plan = await executor.plan(sw1, payload)
        await executor.commit(sw1, plan)
        return plan, await executor.verify(sw1, plan)

    plan, verified = inside(lab, plan_and_commit)
    assert plan.diff() == [
        {"key": SYS_LOCATION, "before": "pdsno lab, zx", "after": "Rack 7, room 2"},
        {"key": SYS_NAME, "before": "sw-1", "after": "sw-1"},
    ]
    assert plan.rollback_payload == {
        "executor": "snmp",
        "set": {SYS_LOCATION: "pdsno lab, zx", SYS_NAME: "sw-1"},
    }
    assert verified
    assert snmp_value(lab, "sw-1") == "Rack 7, room 2"

    async def roll_back() -> bool:
        await executor.rollback(sw1, plan)
        return await executor.verify(sw1, plan)

    assert inside(lab, roll_back) is False  # verify: the device no longer holds the change
    assert snmp_value(lab, "sw-1") == "pdsno lab, zx"


def test_snmpv3_write_user(lab: Lab) -> None:
    v3 = SnmpV3Credential(str(V3["user"]), str(V3["auth_password"]), str(V3["priv_password"]))
    executor = SnmpExecutor(SnmpCredentials((), (v3,)), timeout=1.0, retries=0)
    rtr = device(lab, "rtr-v3")

    async def change() -> DevicePlan:
        plan = await executor.plan(rtr, {"executor": "snmp", "set": {SYS_CONTACT: "noc-v3@lab"}})
        await executor.commit(rtr, plan)
        assert await executor.verify(rtr, plan)
        return plan

    plan = inside(lab, change)
    assert snmp_value(lab, "rtr-v3", SYS_CONTACT) == "noc-v3@lab"
    inside(lab, lambda: executor.rollback(rtr, plan))
    assert snmp_value(lab, "rtr-v3", SYS_CONTACT) == "noc@lab.pdsno.invalid"


def _refusal(lab: Lab, executor: SnmpExecutor, target: Device, payload: Mapping[str, Any]) -> PdsnoError:
    async def attempt() -> PdsnoError:
        try:
            await executor.commit(target, await executor.plan(target, payload))
        except PdsnoError as exc:
            return exc
        raise AssertionError("the change went through")

    return inside(lab, attempt)


def test_snmp_refusals_carry_their_reason(lab: Lab) -> None:
    executor = snmp_executor()
    sw2 = device(lab, "sw-2")
    error = _refusal(lab, executor, sw2, {"set": {SYS_DESCR: "renamed"}})
    assert error.code is ReasonCode.DEVICE_WRITE_FAILED
    assert error.details["snmp_status"] == "notWritable"
    assert error.details["oid"] == SYS_DESCR
    error = _refusal(lab, executor, sw2, {"set": {"1.3.6.1.2.1.1.99.0": "x"}})
    assert error.code is ReasonCode.DEVICE_READ_FAILED
    assert error.details["snmp_status"] == "noSuchObject"
    error = _refusal(lab, snmp_executor("public"), sw2, {"set": {SYS_LOCATION: "x"}})
    assert (error.code, error.details["snmp_status"]) == (ReasonCode.DEVICE_WRITE_FAILED, "noAccess")
    nobody = Device(mac_address="02:00:00:00:00:99", ip_address="198.18.70.99")
    error = _refusal(lab, executor, nobody, {"set": {SYS_LOCATION: "x"}})
    assert error.code is ReasonCode.DEVICE_UNREACHABLE
    error = _refusal(lab, executor, device(lab, "sw-4"), {"set": {SYS_LOCATION: "x"}})
    assert error.code is ReasonCode.DEVICE_UNREACHABLE  # a wrong v2c community is not answered at all
    assert snmp_value(lab, "sw-2") == "pdsno lab, zx"
    # with its own write community in the list, sw-4 is written
    sw4 = device(lab, "sw-4")
    planned = inside(
        lab, lambda: plan_change(snmp_executor("private", "sw4-rw"), [sw4], {"set": {SYS_LOCATION: "x"}})
    )
    assert planned.plans[sw4.device_id].details["credential"] == 1


# --------------------------------------------------------------------------------------------------
# the engine on the lab


LOCATION_CHANGE = {"executor": "snmp", "set": {SYS_LOCATION: "moved by pdsno", SYS_CONTACT: "change@lab"}}


def test_one_of_three_refuses_so_all_three_are_rolled_back(lab: Lab) -> None:
    executor = snmp_executor()
    targets = [device(lab, n) for n in ("sw-1", "sw-2", "sw-3")]  # sw-3 pins its system group
    outcome = inside(lab, lambda: apply_change(executor, targets, LOCATION_CHANGE, max_devices_per_minute=10))
    assert outcome.status is ChangeStatus.ROLLED_BACK
    sw1, sw2, sw3 = (outcome.devices[t.device_id] for t in targets)
    assert (sw1.status, sw2.status) == (DeviceOutcome.ROLLED_BACK, DeviceOutcome.ROLLED_BACK)
    assert sw3.status is DeviceOutcome.FAILED  # its SET changed nothing (all or none), so no rollback
    assert sw3.error is not None
    assert sw3.error["code"] == "DEVICE_WRITE_FAILED"
    assert "notWritable" in sw3.error["message"]
    assert outcome.error is not None
    assert outcome.error["device_id"] == targets[2].device_id
    assert sw1.diff[0] == {"key": SYS_LOCATION, "before": "pdsno lab, zx", "after": "moved by pdsno"}
    for name in ("sw-1", "sw-2", "sw-3"):
        assert snmp_value(lab, name) == "pdsno lab, zx"
        assert snmp_value(lab, name, SYS_CONTACT) == "noc@lab.pdsno.invalid"
    report = outcome.device_results()
    assert report[targets[0].device_id]["status"] == "rolled_back"
    assert json.loads(json.dumps(report)) == report


class StopsADeviceOnCommit(SnmpExecutor):
    """The real executor; committing to ``trigger`` first takes ``victim`` off the network, so the
    rollback of ``victim`` (already committed) finds no agent."""

    def __init__(self, lab: Lab, trigger: str, victim: str) -> None:
        super().__init__(SnmpCredentials(("private",)), timeout=0.3, retries=0)
        self.lab, self.trigger, self.victim = lab, trigger, victim

    async def commit(self, device: Device, plan: DevicePlan) -> None:
        if device.hostname == self.trigger:
            await asyncio.to_thread(self.lab.stop_device, self.victim)
        await super().commit(device, plan)


def test_a_failed_rollback_leaves_the_device_and_the_change_degraded(lab: Lab) -> None:
    targets = [device(lab, n) for n in ("sw-1", "sw-2", "sw-3")]
    executor = StopsADeviceOnCommit(lab, trigger="sw-3", victim="sw-1")
    try:
        outcome = inside(lab, lambda: apply_change(executor, targets, LOCATION_CHANGE))
    finally:
        lab.start_device("sw-1")  # comes back with its configured values
    assert outcome.status is ChangeStatus.DEGRADED
    assert outcome.degraded_devices == [targets[0].device_id]
    sw1 = outcome.devices[targets[0].device_id]
    assert sw1.rollback_error is not None
    assert sw1.rollback_error["code"] == "DEVICE_UNREACHABLE"
    assert outcome.devices[targets[1].device_id].status is DeviceOutcome.ROLLED_BACK
    assert snmp_value(lab, "sw-2") == "pdsno lab, zx"
    assert outcome.rollback_payloads[targets[0].device_id] == {
        "executor": "snmp",
        "set": {SYS_LOCATION: "pdsno lab, zx", SYS_CONTACT: "noc@lab.pdsno.invalid"},
    }


def test_executed_then_undone_from_the_stored_rollback_payloads(lab: Lab) -> None:
    executor = snmp_executor()
    targets = [device(lab, n) for n in ("sw-1", "sw-2")]
    outcome = inside(
        lab, lambda: apply_change(executor, targets, LOCATION_CHANGE, max_devices_per_minute=1000)
    )
    assert outcome.status is ChangeStatus.EXECUTED
    assert {r.status for r in outcome.devices.values()} == {DeviceOutcome.EXECUTED}
    assert [snmp_value(lab, n) for n in ("sw-1", "sw-2")] == ["moved by pdsno"] * 2
    stored = json.loads(json.dumps(outcome.rollback_payloads))  # as the NIB would keep them
    undone = inside(lab, lambda: undo_change(executor, targets, stored))
    assert undone.status is ChangeStatus.ROLLED_BACK
    assert [snmp_value(lab, n) for n in ("sw-1", "sw-2")] == ["pdsno lab, zx"] * 2
    assert [snmp_value(lab, n, SYS_CONTACT) for n in ("sw-1", "sw-2")] == ["noc@lab.pdsno.invalid"] * 2
    again = inside(lab, lambda: undo_change(executor, targets, stored))  # nothing left to undo: not written
    assert again.status is ChangeStatus.ROLLED_BACK
    assert all(not any(d["before"] != d["after"] for d in r.diff) for r in again.devices.values())


def test_a_device_that_cannot_be_planned_fails_the_change_untouched(lab: Lab) -> None:
    executor = snmp_executor()
    targets = [device(lab, "sw-1"), Device(mac_address="02:00:00:00:00:98", ip_address="198.18.70.98")]
    outcome = inside(lab, lambda: apply_change(executor, targets, LOCATION_CHANGE))
    assert outcome.status is ChangeStatus.FAILED
    assert outcome.devices[targets[0].device_id].status is DeviceOutcome.PLANNED
    failed = outcome.devices[targets[1].device_id]
    assert failed.status is DeviceOutcome.FAILED
    assert failed.error is not None
    assert failed.error["code"] == "DEVICE_UNREACHABLE"
    assert snmp_value(lab, "sw-1") == "pdsno lab, zx"


# --------------------------------------------------------------------------------------------------
# ansible on the lab


def _snmp_tasks(location: str, state_dir: str) -> list[dict[str, Any]]:
    """A device's sysLocation through snmpget/snmpset on the controller (``delegate_to: localhost``),
    and the intended configuration kept in a file (whose diff the check run shows)."""
    snmp = "snmp{op} -v2c -c private -Oqv -t 1 -r 1 {{{{ ansible_host }}}} " + SYS_LOCATION
    return [
        {
            "name": "write the intended configuration",
            "ansible.builtin.copy": {
                "dest": f"{state_dir}/{{{{ pdsno_hostname }}}}.conf",
                "content": f"location {location}\n",
            },
            "delegate_to": "localhost",
        },
        {
            "name": "read sysLocation",
            "ansible.builtin.command": snmp.format(op="get"),
            "register": "current",
            "check_mode": False,
            "changed_when": False,
            "delegate_to": "localhost",
            "environment": {"MIBS": ""},
        },
        {
            "name": "set sysLocation",
            # `removes` on a path that exists makes a check run report the command as a change
            "ansible.builtin.command": {"cmd": snmp.format(op="set") + f" s '{location}'", "removes": "/"},
            "when": f"current.stdout | trim('\"') != '{location}'",
            "delegate_to": "localhost",
            "environment": {"MIBS": ""},
        },
    ]


def test_ansible_plans_commits_verifies_and_rolls_back_on_lab_devices(lab: Lab, tmp_path: Path) -> None:
    executor = AnsibleExecutor(timeout_s=120, host_vars={"ansible_connection": "local"})
    targets = [device(lab, "ans-1"), device(lab, "ans-2")]
    payload = {
        "executor": "ansible",
        "tasks": _snmp_tasks("Rack A1", str(tmp_path)),
        "rollback": {"tasks": _snmp_tasks("pdsno lab, zx", str(tmp_path))},
    }
    plans = list(inside(lab, lambda: plan_change(executor, targets, payload)).plans.values())
    assert [c.key for c in plans[0].changes] == ["1: write the intended configuration", "3: set sysLocation"]
    assert plans[0].changes[0].after == "location Rack A1\n"
    assert plans[0].rollback_payload == {
        "executor": "ansible",
        "tasks": _snmp_tasks("pdsno lab, zx", str(tmp_path)),
    }
    assert not (tmp_path / "ans-1.conf").exists()  # a check run changes nothing
    assert snmp_value(lab, "ans-1") == "pdsno lab, zx"

    outcome = inside(lab, lambda: apply_change(executor, targets, payload))
    assert outcome.status is ChangeStatus.EXECUTED, outcome.error
    assert [snmp_value(lab, n) for n in ("ans-1", "ans-2")] == ["Rack A1"] * 2
    assert (tmp_path / "ans-2.conf").read_text() == "location Rack A1\n"

    undone = inside(lab, lambda: undo_change(executor, targets, outcome.rollback_payloads))
    assert undone.status is ChangeStatus.ROLLED_BACK, undone.error
    assert [snmp_value(lab, n) for n in ("ans-1", "ans-2")] == ["pdsno lab, zx"] * 2
    assert (tmp_path / "ans-1.conf").read_text() == "location pdsno lab, zx\n"


def test_a_failing_ansible_task_rolls_the_change_back(lab: Lab, tmp_path: Path) -> None:
    executor = AnsibleExecutor(timeout_s=120, host_vars={"ansible_connection": "local"})
    targets = [device(lab, "ans-1"), device(lab, "ans-2")]
    tasks = _snmp_tasks("Rack B2", str(tmp_path))
    failing = {"name": "refuse on ans-2", "ansible.builtin.fail": {"msg": "no"},
               "when": "pdsno_hostname == 'ans-2' and not ansible_check_mode"}  # fmt: skip
    payload = {
        "executor": "ansible",
        "tasks": [*tasks, failing],
        "rollback": {"tasks": _snmp_tasks("pdsno lab, zx", str(tmp_path))},
    }
    outcome = inside(lab, lambda: apply_change(executor, targets, payload))
    assert outcome.status is ChangeStatus.ROLLED_BACK, outcome.error
    ans2 = outcome.devices[targets[1].device_id]
    assert ans2.error is not None
    assert ans2.error["code"] == "DEVICE_WRITE_FAILED"
    assert "refuse on ans-2" in ans2.error["message"]
    assert ans2.status is DeviceOutcome.ROLLED_BACK  # its first tasks ran: they were undone
    assert [snmp_value(lab, n) for n in ("ans-1", "ans-2")] == ["pdsno lab, zx"] * 2


SHIPPED_PLAYBOOKS = Path(__file__).resolve().parents[2] / "roles/controller/files/change_playbooks"


def test_the_shipped_system_group_playbook_reads_sets_and_undoes(lab: Lab, tmp_path: Path) -> None:
    """What the roles deploy to every LC (roles/controller/files/change_playbooks): the plan's before
    side is read from the device, the write goes through the write community, the rollback restores."""
    (tmp_path / "communities").write_text("# the first is wrong: the next one answers\nnot-it\nprivate\n")
    executor = AnsibleExecutor(
        playbook_dir=SHIPPED_PLAYBOOKS,
        timeout_s=120,
        host_vars={
            "ansible_connection": "local",
            "pdsno_snmp_write_communities_file": str(tmp_path / "communities"),
        },
    )
    targets = [device(lab, "ans-1")]
    job = {"playbook": "system_group.yml", "vars": {"pdsno_system": {"sysLocation": "Rack C3"}}}
    undo = {"playbook": "system_group.yml", "vars": {"pdsno_system": {"sysLocation": "pdsno lab, zx"}}}
    payload = {"executor": "ansible", **job, "rollback": undo}

    planned = inside(lab, lambda: plan_change(executor, targets, payload))
    assert planned.failure is None, planned.failure
    plan = planned.plans[targets[0].device_id]
    assert [(c.before, c.after) for c in plan.changes] == [
        ("sysLocation: pdsno lab, zx\n", "sysLocation: Rack C3\n")
    ]
    assert snmp_value(lab, "ans-1") == "pdsno lab, zx"

    outcome = inside(lab, lambda: apply_change(executor, targets, payload))
    assert outcome.status is ChangeStatus.EXECUTED, outcome.error
    assert snmp_value(lab, "ans-1") == "Rack C3"
    undone = inside(lab, lambda: undo_change(executor, targets, outcome.rollback_payloads))
    assert undone.status is ChangeStatus.ROLLED_BACK, undone.error
    assert snmp_value(lab, "ans-1") == "pdsno lab, zx"

    (tmp_path / "communities").write_text("not-it\n")
    refused = inside(lab, lambda: apply_change(executor, targets, payload))
    assert refused.status is ChangeStatus.FAILED
    error = refused.devices[targets[0].device_id].error
    assert error is not None
    assert "did not answer snmpget with any write community" in error["message"]
    assert snmp_value(lab, "ans-1") == "pdsno lab, zx"
