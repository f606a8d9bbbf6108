"""The engine's pure parts: the rate limit's pacing (a fake clock), and the order of commits and
rollbacks (an in-memory executor standing for devices). Against real agents: tests/runtime/test_executors.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from pdsno.changes.apply import ChangeStatus, DeviceOutcome, Pacer, apply_change, recover_change
from pdsno.changes.executors.base import DevicePlan, Executor, FieldChange
from pdsno.errors import PdsnoError, ReasonCode
from pdsno.nib.models import Device


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def _starts(pacer: Pacer, clock: FakeClock, count: int, work: float = 0.0) -> list[float]:
    times = []
    for _ in range(count):
        await pacer.start()
        times.append(clock.now - 1000.0)
        clock.now += work
    return times


async def test_at_most_n_starts_in_any_minute() -> None:
    clock = FakeClock()
    pacer = Pacer(3, clock=clock, sleep=clock.sleep)
    starts = await _starts(pacer, clock, 7, work=5.0)
    assert starts == [0.0, 5.0, 10.0, 60.0, 65.0, 70.0, 120.0]
    for i, t in enumerate(starts):
        assert sum(1 for u in starts if t <= u < t + 60.0) <= 3, i
    assert all(s <= 60.0 for s in clock.slept)


async def test_no_limit_never_waits_and_a_slow_change_needs_no_wait() -> None:
    clock = FakeClock()
    assert await _starts(Pacer(None, clock=clock, sleep=clock.sleep), clock, 50) == [0.0] * 50
    assert clock.slept == []
    slow = Pacer(2, clock=clock, sleep=clock.sleep)
    await _starts(slow, clock, 4, work=61.0)  # each device takes longer than the window
    assert clock.slept == []


def test_a_rate_below_one_is_refused() -> None:
    with pytest.raises(PdsnoError) as caught:
        Pacer(0)
    assert caught.value.code is ReasonCode.INVALID_REQUEST


class MemoryExecutor:
    """Devices as dicts in memory; ``refuse`` fails a commit, ``broken`` fails a rollback."""

    name = "memory"

    def __init__(self, refuse: frozenset[str] = frozenset(), broken: frozenset[str] = frozenset()) -> None:
        self.state: dict[str, dict[str, Any]] = {}
        self.refuse, self.broken = refuse, broken
        self.log: list[tuple[str, str]] = []

    def validate(self, payload: Mapping[str, Any]) -> None:
        if not isinstance(payload.get("set"), Mapping):
            raise PdsnoError("no set", code=ReasonCode.INVALID_REQUEST)

    async def plan(self, device: Device, payload: Mapping[str, Any]) -> DevicePlan:
        held = self.state.setdefault(device.device_id, {})
        wanted = dict(payload["set"])
        return DevicePlan(
            device.device_id,
            tuple(FieldChange(k, held.get(k), v) for k, v in wanted.items()),
            {"set": {k: held.get(k) for k in wanted}},
            {"set": wanted},
        )

    async def commit(self, device: Device, plan: DevicePlan) -> None:
        self.log.append(("commit", device.hostname or ""))
        if device.hostname in self.refuse:
            raise PdsnoError("refused", code=ReasonCode.DEVICE_WRITE_FAILED)
        self.state[device.device_id].update(plan.details["set"])

    async def verify(self, device: Device, plan: DevicePlan) -> bool:
        return all(self.state[device.device_id].get(k) == v for k, v in plan.details["set"].items())

    async def rollback(self, device: Device, plan: DevicePlan) -> None:
        self.log.append(("rollback", device.hostname or ""))
        if device.hostname in self.broken:
            raise PdsnoError("gone", code=ReasonCode.DEVICE_UNREACHABLE)
        self.state[device.device_id].update(plan.rollback_payload["set"])


def _devices(*names: str) -> list[Device]:
    return [Device(mac_address=f"02:00:00:00:00:{n:02x}", hostname=name) for n, name in enumerate(names, 1)]


def test_the_memory_executor_follows_the_protocol() -> None:
    assert isinstance(MemoryExecutor(), Executor)


async def test_rollback_runs_newest_first_and_skips_a_device_its_commit_left_alone() -> None:
    executor = MemoryExecutor(refuse=frozenset("c"))
    devices = _devices("a", "b", "c", "d")
    outcome = await apply_change(executor, devices, {"set": {"loc": "new"}})
    assert outcome.status is ChangeStatus.ROLLED_BACK
    assert executor.log == [
        ("commit", "a"),
        ("commit", "b"),
        ("commit", "c"),
        ("rollback", "b"),
        ("rollback", "a"),
    ]
    statuses = [outcome.devices[d.device_id].status for d in devices]
    assert statuses == [DeviceOutcome.ROLLED_BACK, DeviceOutcome.ROLLED_BACK, DeviceOutcome.FAILED,
                        DeviceOutcome.PLANNED]  # fmt: skip
    assert all(executor.state[d.device_id].get("loc") is None for d in devices)


async def test_one_broken_rollback_degrades_the_change_but_the_others_are_still_undone() -> None:
    executor = MemoryExecutor(refuse=frozenset("c"), broken=frozenset("b"))
    devices = _devices("a", "b", "c")
    outcome = await apply_change(executor, devices, {"set": {"loc": "new"}})
    assert outcome.status is ChangeStatus.DEGRADED
    assert outcome.degraded_devices == [devices[1].device_id]
    assert outcome.devices[devices[0].device_id].status is DeviceOutcome.ROLLED_BACK
    result = outcome.devices[devices[1].device_id].as_dict()
    assert result["rollback_error"] == {"code": "DEVICE_UNREACHABLE", "message": "gone"}


async def test_without_rollback_on_failure_the_committed_devices_stay_changed() -> None:
    executor = MemoryExecutor(refuse=frozenset("b"))
    devices = _devices("a", "b")
    outcome = await apply_change(executor, devices, {"set": {"loc": "new"}}, rollback_on_failure=False)
    assert outcome.status is ChangeStatus.DEGRADED
    assert executor.state[devices[0].device_id] == {"loc": "new"}
    with pytest.raises(PdsnoError) as caught:
        await apply_change(executor, devices, {"nothing": 1})
    assert caught.value.code is ReasonCode.INVALID_REQUEST
    with pytest.raises(PdsnoError, match="listed twice"):
        await apply_change(executor, [devices[0], devices[0]], {"set": {}})


async def test_commits_honour_the_rate_limit() -> None:
    clock = FakeClock()
    executor = MemoryExecutor()
    pacer = Pacer(2, clock=clock, sleep=clock.sleep)
    outcome = await asyncio.wait_for(
        apply_change(executor, _devices("a", "b", "c", "d", "e"), {"set": {"x": 1}}, pacer=pacer), 5
    )
    assert outcome.status is ChangeStatus.EXECUTED
    assert clock.slept == [60.0, 60.0]


async def test_the_plan_is_handed_over_before_the_first_device_is_written() -> None:
    executor = MemoryExecutor()
    devices = _devices("a", "b")
    kept: list[tuple[int, dict[str, Any]]] = []

    async def keep(rollbacks: dict[str, dict[str, Any]]) -> None:
        kept.append((len(executor.log), rollbacks))

    outcome = await apply_change(executor, devices, {"set": {"loc": "new"}}, keep_plan=keep)
    assert outcome.status is ChangeStatus.EXECUTED
    assert kept == [(0, {d.device_id: {"set": {"loc": None}} for d in devices})]


def _interrupted(
    held: dict[str, str], *, refuse: frozenset[str] = frozenset()
) -> tuple[MemoryExecutor, list[Device]]:
    """Devices named by ``held`` with the value of ``loc`` each holds when the run was cut off."""
    executor = MemoryExecutor(refuse=refuse)
    devices = _devices(*held)
    for device in devices:
        executor.state[device.device_id] = {"loc": held[device.hostname or ""]}
    return executor, devices


async def test_an_interrupted_change_every_device_holds_is_executed_without_a_write() -> None:
    executor, devices = _interrupted({"a": "new", "b": "new"})
    rollbacks = {d.device_id: {"set": {"loc": "old"}} for d in devices}
    outcome = await recover_change(executor, devices, {"set": {"loc": "new"}}, rollbacks)
    assert outcome.status is ChangeStatus.EXECUTED and outcome.error is None
    assert executor.log == []
    assert {r.status for r in outcome.devices.values()} == {DeviceOutcome.EXECUTED}


async def test_an_interrupted_change_half_done_is_put_back_whole() -> None:
    executor, devices = _interrupted({"a": "new", "b": "old"})
    rollbacks = {d.device_id: {"set": {"loc": "old"}} for d in devices}
    outcome = await recover_change(executor, devices, {"set": {"loc": "new"}}, rollbacks)
    assert outcome.status is ChangeStatus.ROLLED_BACK
    assert outcome.error is not None and outcome.error["code"] == "CHANGE_INTERRUPTED"
    assert executor.log == [("commit", "a")]  # b already held its former value: not written
    assert [executor.state[d.device_id]["loc"] for d in devices] == ["old", "old"]


async def test_an_interrupted_change_that_cannot_be_put_back_is_degraded() -> None:
    executor, devices = _interrupted({"a": "new", "b": "old"}, refuse=frozenset("a"))
    rollbacks = {d.device_id: {"set": {"loc": "old"}} for d in devices}
    outcome = await recover_change(executor, devices, {"set": {"loc": "new"}}, rollbacks)
    assert outcome.status is ChangeStatus.DEGRADED
    assert outcome.degraded_devices == [devices[0].device_id]
    assert outcome.error is not None and outcome.error["code"] == "DEVICE_WRITE_FAILED"
