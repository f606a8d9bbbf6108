"""Apply one change to its devices: plan all, commit one by one (rate-limited), verify, all or nothing.

Reference-design §5 "LC: execute" and "Rollback". :func:`apply_change` plans every device first (reads
only: a device that cannot be planned fails the change before anything is touched), then commits device
by device, at most ``max_devices_per_minute`` in any minute, verifying each. The first device that fails
(commit raises, or verify says the device does not hold the change) stops the run: that device and every
device already committed are rolled back, newest first. A device whose rollback fails, or whose state
after the rollback is not the one ``plan`` saw, is DEGRADED, and so is the change.

A rollback is the executor's ``rollback``, checked by planning the rollback payload again: it must
change nothing. The failing device is checked first, so one whose commit changed nothing (an SNMP SET
is all or nothing) is not written to again. :func:`undo_change` applies stored rollback payloads (an
operator's rollback, a retroactive deny of an emergency change) the same way.

This module only touches devices: the caller records states, events and the device's ``degraded``
status in the NIB, and reports the outcome.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pdsno.changes.executors.base import DevicePlan, Executor
from pdsno.errors import PdsnoError, ReasonCode
from pdsno.faults import FaultPoint, fault_point
from pdsno.nib.models import Device

log = logging.getLogger(__name__)

PLAN_CONCURRENCY = 8
"""Devices planned at once (plans only read; a playbook's check run is a process of its own)."""
WINDOW_S = 60.0


class ChangeStatus(StrEnum):
    """How a change ended (the ``status`` of ``EXECUTION_RESULT``)."""

    EXECUTED = "EXECUTED"
    ROLLED_BACK = "ROLLED_BACK"
    DEGRADED = "DEGRADED"
    FAILED = "FAILED"
    """Nothing was committed: a device could not be planned."""


class DeviceOutcome(StrEnum):
    EXECUTED = "executed"
    """Committed and verified (and left so)."""
    PLANNED = "planned"
    """Planned, never committed: the change failed before its turn."""
    FAILED = "failed"
    """Its plan or commit failed and the device holds what it held before (checked)."""
    ROLLED_BACK = "rolled_back"
    DEGRADED = "degraded"
    """The rollback failed or could not be checked: the device's state is unknown."""


@dataclass(slots=True)
class DeviceResult:
    device_id: str
    status: DeviceOutcome
    diff: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, Any] | None = None
    """``{code, message}`` of what failed on this device (plan, commit or verify)."""
    rollback_error: dict[str, Any] | None = None
    """``{code, message}`` of its failed rollback (the device is DEGRADED)."""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": str(self.status), "diff": self.diff, "error": self.error}
        if self.rollback_error is not None:
            out["rollback_error"] = self.rollback_error
        return out


@dataclass(slots=True)
class ChangeOutcome:
    status: ChangeStatus
    devices: dict[str, DeviceResult]
    rollback_payloads: dict[str, dict[str, Any]]
    """Per device, the payload that undoes what was planned (kept for a later :func:`undo_change`)."""
    error: dict[str, Any] | None = None
    """The failure that decided the outcome: ``{device_id, code, message}``."""

    def device_results(self) -> dict[str, dict[str, Any]]:
        """``EXECUTION_RESULT.device_results``."""
        return {device_id: result.as_dict() for device_id, result in self.devices.items()}

    @property
    def degraded_devices(self) -> list[str]:
        return [d for d, r in self.devices.items() if r.status is DeviceOutcome.DEGRADED]


# ------------------------------------------------------------------------------------------ pacing


class Pacer:
    """At most ``per_minute`` starts in any 60 s window: the first ``per_minute`` go at once, each
    later one waits until the start ``per_minute`` places before it is a window old."""

    def __init__(
        self,
        per_minute: int | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        window: float = WINDOW_S,
    ) -> None:
        if per_minute is not None and per_minute < 1:
            raise PdsnoError(
                f"max_devices_per_minute must be at least 1 (got {per_minute})",
                code=ReasonCode.INVALID_REQUEST,
            )
        self.per_minute = per_minute
        self.window = window
        self._clock = clock
        self._sleep = sleep
        self._starts: list[float] = []

    def delay(self) -> float:
        """Seconds until the next start is allowed (0 when it may start now)."""
        if self.per_minute is None or len(self._starts) < self.per_minute:
            return 0.0
        return max(0.0, self._starts[-self.per_minute] + self.window - self._clock())

    async def start(self) -> None:
        """Wait for the next slot (one bounded sleep: never longer than the window) and take it."""
        wait = min(self.delay(), self.window)
        if wait > 0:
            await self._sleep(wait)
        self._starts.append(self._clock())


# ---------------------------------------------------------------------------------------- the engine


def _error(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, PdsnoError):
        return {"code": str(exc.code), "message": exc.message}
    return {"code": str(ReasonCode.INTERNAL_ERROR), "message": f"{exc.__class__.__name__}: {exc}"}


@dataclass(slots=True)
class ChangePlan:
    """What planning found on every device (the ``--check`` diff, and the engine's first step)."""

    plans: dict[str, DevicePlan]
    """The devices that could be planned."""
    results: dict[str, DeviceResult]
    """Every device: PLANNED with its diff, or FAILED with why it cannot be changed."""
    failure: dict[str, Any] | None
    """``{device_id, code, message}`` of the first device that could not be planned."""


async def plan_change(
    executor: Executor, devices: Sequence[Device], payload: Mapping[str, Any]
) -> ChangePlan:
    """Plan every device (reads only); an invalid payload raises ``PdsnoError`` before any is read."""
    executor.validate(payload)
    planned = await _plan_all(executor, devices, payload)
    found = ChangePlan({}, {}, None)
    for device, plan in zip(devices, planned, strict=True):
        if isinstance(plan, BaseException):
            error = _error(plan)
            found.results[device.device_id] = DeviceResult(
                device.device_id, DeviceOutcome.FAILED, error=error
            )
            found.failure = found.failure or {"device_id": device.device_id, **error}
        else:
            found.plans[device.device_id] = plan
            found.results[device.device_id] = DeviceResult(
                device.device_id, DeviceOutcome.PLANNED, diff=plan.diff()
            )
    return found


async def _plan_all(
    executor: Executor, devices: Sequence[Device], payload: Mapping[str, Any]
) -> list[DevicePlan | BaseException]:
    semaphore = asyncio.Semaphore(PLAN_CONCURRENCY)

    async def one(device: Device) -> DevicePlan:
        async with semaphore:
            return await executor.plan(device, payload)

    return await asyncio.gather(*(one(d) for d in devices), return_exceptions=True)


async def apply_change(
    executor: Executor,
    devices: Sequence[Device],
    payload: Mapping[str, Any],
    *,
    max_devices_per_minute: int | None = None,
    rollback_on_failure: bool = True,
    pacer: Pacer | None = None,
    keep_plan: Callable[[dict[str, dict[str, Any]]], Awaitable[None]] | None = None,
) -> ChangeOutcome:
    """Apply ``payload`` to ``devices`` (see the module docstring). An invalid payload raises
    ``PdsnoError`` ``INVALID_REQUEST`` before any device is read; device failures are in the outcome.

    ``rollback_on_failure=False`` (a token's constraint) leaves committed devices as they are: the
    change is then DEGRADED, since its devices hold part of it.

    ``keep_plan`` gets every device's rollback payload once all are planned, before the first device is
    written: the caller makes them durable, so that a restart after a crash can put the devices back."""
    _distinct(devices)
    pacer = pacer or Pacer(max_devices_per_minute)
    planned = await plan_change(executor, devices, payload)
    results, plans, failure = planned.results, planned.plans, planned.failure
    rollbacks = {d: dict(p.rollback_payload) for d, p in plans.items()}
    if failure is not None:
        log.warning("change not applied: a device could not be planned", extra={"failure": failure})
        return ChangeOutcome(ChangeStatus.FAILED, results, rollbacks, failure)
    if keep_plan is not None:
        await keep_plan(rollbacks)

    committed: list[Device] = []
    for device in devices:
        plan = plans[device.device_id]
        await pacer.start()
        try:
            await executor.commit(device, plan)
            fault_point(FaultPoint.DEVICE_COMMITTED)
            if not await executor.verify(device, plan):
                raise PdsnoError(
                    f"{device.device_id}: after the commit the device does not hold the change",
                    code=ReasonCode.CHANGE_VERIFY_FAILED,
                )
        except Exception as exc:  # any failure of this device decides the change: it is reported, not raised
            failure = {"device_id": device.device_id, **_error(exc)}
            results[device.device_id].status = DeviceOutcome.FAILED
            results[device.device_id].error = _error(exc)
            log.warning("device failed during the change", extra={"failure": failure})
            break
        committed.append(device)
        results[device.device_id].status = DeviceOutcome.EXECUTED
        log.info("device changed", extra={"device_id": device.device_id, "executor": executor.name})

    if failure is None:
        return ChangeOutcome(ChangeStatus.EXECUTED, results, rollbacks)
    if not rollback_on_failure:
        status = ChangeStatus.DEGRADED if committed else ChangeStatus.FAILED
        return ChangeOutcome(status, results, rollbacks, failure)

    failing = next(d for d in devices if d.device_id == failure["device_id"])
    degraded = False
    for device, check_first in [(failing, True), *((d, False) for d in reversed(committed))]:
        result = results[device.device_id]
        try:
            touched = await _undo(executor, device, plans[device.device_id], check_first=check_first)
        except Exception as exc:  # the device is left in an unknown state: DEGRADED, and go on with the rest
            _rollback_failed(result, exc)
            degraded = True
            continue
        if touched:
            result.status = DeviceOutcome.ROLLED_BACK
    status = ChangeStatus.DEGRADED if degraded else ChangeStatus.ROLLED_BACK
    return ChangeOutcome(status, results, rollbacks, failure)


def _rollback_failed(result: DeviceResult, exc: BaseException) -> None:
    result.status = DeviceOutcome.DEGRADED
    result.rollback_error = _error(exc)
    log.error("rollback failed: device degraded",
              extra={"device_id": result.device_id, "code": str(ReasonCode.DEVICE_DEGRADED), "error": _error(exc)})  # fmt: skip


async def _holds(executor: Executor, device: Device, payload: Mapping[str, Any]) -> bool:
    """The device already holds what ``payload`` sets (its plan changes nothing)."""
    check = await executor.plan(device, payload)
    return not any(change.changes for change in check.changes)


async def _undo(executor: Executor, device: Device, plan: DevicePlan, *, check_first: bool) -> bool:
    """Roll one device back and check it; False when ``check_first`` found nothing to undo."""
    if check_first:
        try:
            if await _holds(executor, device, plan.rollback_payload):
                return False
        except PdsnoError:
            pass  # cannot tell: roll back anyway
    await executor.rollback(device, plan)
    if not await _holds(executor, device, plan.rollback_payload):
        raise PdsnoError(
            f"{device.device_id}: after the rollback the device does not hold its former state",
            code=ReasonCode.CHANGE_VERIFY_FAILED,
        )
    return True


async def undo_change(
    executor: Executor, devices: Sequence[Device], rollback_payloads: Mapping[str, Mapping[str, Any]]
) -> ChangeOutcome:
    """Apply each device's stored rollback payload: plan, commit, verify, newest device first and without
    a rate limit (this undoes). A device that already holds that state is not written to. ROLLED_BACK,
    or DEGRADED when a device could not be brought back (the others are still undone)."""
    _distinct(devices)
    missing = [d.device_id for d in devices if d.device_id not in rollback_payloads]
    if missing:
        raise PdsnoError(f"no rollback payload for {', '.join(missing)}", code=ReasonCode.INVALID_REQUEST)
    for device in devices:
        executor.validate(rollback_payloads[device.device_id])
    results: dict[str, DeviceResult] = {}
    failure: dict[str, Any] | None = None
    for device in reversed(devices):
        payload = rollback_payloads[device.device_id]
        result = DeviceResult(device.device_id, DeviceOutcome.ROLLED_BACK)
        results[device.device_id] = result
        try:
            plan = await executor.plan(device, payload)
            result.diff = plan.diff()
            if any(change.changes for change in plan.changes):
                await executor.commit(device, plan)
                if not await executor.verify(device, plan):
                    raise PdsnoError(
                        f"{device.device_id}: after the rollback the device does not hold its former state",
                        code=ReasonCode.CHANGE_VERIFY_FAILED,
                    )
        except Exception as exc:  # this device stays unknown; the others are still undone
            _rollback_failed(result, exc)
            failure = failure or {"device_id": device.device_id, **_error(exc)}
    ordered = {d.device_id: results[d.device_id] for d in devices}
    status = ChangeStatus.DEGRADED if failure else ChangeStatus.ROLLED_BACK
    return ChangeOutcome(status, ordered, {d: dict(p) for d, p in rollback_payloads.items()}, failure)


async def recover_change(
    executor: Executor,
    devices: Sequence[Device],
    payload: Mapping[str, Any],
    rollback_payloads: Mapping[str, Mapping[str, Any]],
) -> ChangeOutcome:
    """Settle a change whose run was cut off (the controller died after planning): every device is read,
    since none can be trusted to be where the run left it. If every one holds the change, it is EXECUTED
    (verified now); otherwise, all or nothing, each is put back to what the plan read (:func:`undo_change`:
    a device already there is not written) and the change is ROLLED_BACK, or DEGRADED."""
    _distinct(devices)
    read = await _plan_all(executor, devices, payload)
    if all(not isinstance(p, BaseException) and not any(c.changes for c in p.changes) for p in read):
        results = {d.device_id: DeviceResult(d.device_id, DeviceOutcome.EXECUTED) for d in devices}
        return ChangeOutcome(
            ChangeStatus.EXECUTED, results, {d: dict(p) for d, p in rollback_payloads.items()}
        )
    outcome = await undo_change(executor, devices, rollback_payloads)
    if outcome.error is None:
        outcome.error = {"code": str(ReasonCode.CHANGE_INTERRUPTED),
                         "message": "the run was interrupted before every device held the change; all were put back"}  # fmt: skip
    return outcome


def _distinct(devices: Sequence[Device]) -> None:
    ids = [d.device_id for d in devices]
    if len(set(ids)) != len(ids):
        raise PdsnoError("a device is listed twice in the change", code=ReasonCode.INVALID_REQUEST)
