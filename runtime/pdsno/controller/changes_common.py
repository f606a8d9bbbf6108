"""What the three tiers share when they carry a change: message shapes and the DEGRADED mark."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Literal

from pdsno.canonical import utcnow
from pdsno.changes.apply import DeviceOutcome
from pdsno.changes.tokens import CONSUMED_EVENT
from pdsno.controller.upward import Receipts
from pdsno.errors import PdsnoError, ReasonCode
from pdsno.messaging import messages as wire
from pdsno.messaging.envelope import Envelope
from pdsno.nib.models import (
    ConfigProposal,
    ConfigStatus,
    Decision,
    DeviceStatus,
    EventDraft,
    ExecutionToken,
    Sensitivity,
)
from pdsno.nib.retry import retry_on_conflict
from pdsno.nib.store import NIBResult, NIBStore

RESULT_STATUS: dict[str, ConfigStatus] = {
    "EXECUTED": ConfigStatus.EXECUTED,
    "FAILED": ConfigStatus.FAILED,
    "ROLLED_BACK": ConfigStatus.ROLLED_BACK,
    "DEGRADED": ConfigStatus.DEGRADED,
}

DecisionName = Literal["APPROVE", "DENY", "ESCALATE", "QUEUE"]


def approval(
    proposal_id: str,
    decision: DecisionName,
    *,
    responder: str,
    reason: str | None = None,
    category: Sensitivity | None = None,
    **extra: Any,
) -> wire.ApprovalResponse:
    return wire.ApprovalResponse(proposal_id=proposal_id, decision=decision, responder=responder,
                                 timestamp=utcnow(), reason=reason, category=category, **extra)  # fmt: skip


class Background:
    """Work started by a message handler that must outlive the request (running a change, waiting for
    acknowledgements); kept referenced until done, failures logged."""

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._log.error("a change task failed", exc_info=task.exception())


def degraded_in(result: wire.ExecutionResult) -> list[str]:
    """The devices an execution result reports left degraded by a failed rollback."""
    degraded = DeviceOutcome.DEGRADED.value
    return [
        d for d, r in result.device_results.items() if isinstance(r, dict) and r.get("status") == degraded
    ]


def result_id(result: wire.ExecutionResult) -> str:
    """What an execution result is kept and acknowledged under on its way up: one per proposal and outcome
    (an emergency change can end EXECUTED, then ROLLED_BACK)."""
    return f"{result.proposal_id}:{result.status}"


async def take_result(
    receipts: Receipts,
    envelope: Envelope,
    store: NIBStore,
    keep: Callable[[wire.ExecutionResult], Awaitable[None]],
) -> Envelope:
    """A child's execution result: ``keep`` it once, then acknowledge it (the child keeps it until then).

    A result this tier's copy cannot take (no such proposal, or one already ended otherwise) is refused in
    the ack, audited, and not sent again; any other failure raises, so the child sends it again."""
    result = envelope.payload_as(wire.ExecutionResult)

    async def kept() -> bool:
        try:
            await keep(result)
        except PdsnoError as refused:
            if refused.code not in (ReasonCode.NOT_FOUND, ReasonCode.INVALID_TRANSITION):
                raise
            await store.append_events([EventDraft(
                event_type="EXECUTION_RESULT_REFUSED", actor=envelope.sender_id, subject=result.proposal_id,
                decision=Decision.DENIED, payload={"status": result.status, "reason": refused.code.value,
                                                   "message": refused.message})])  # fmt: skip
            return False
        return True

    return await receipts.take(envelope, result_id(result), 0, kept)


def result_moves(result: wire.ExecutionResult) -> dict[str, Any]:
    """The keyword arguments of ``follow`` that mirror an execution result: the reason code, the devices'
    results written on this tier's copy, and both (with the failure in words) in its events."""
    told: dict[str, Any] = {"device_results": result.device_results}
    if result.message is not None:
        told["message"] = result.message
    return {"reason": result.reason, "fields": {"device_results": result.device_results}, **told}


async def note_token_spent(
    store: NIBStore, proposal: ConfigProposal, result: wire.ExecutionResult
) -> ConfigProposal:
    """The executor spent the token: this tier's copy names it and when, and its audit log says so
    (``EXECUTION_CONSUMED_EVENT``, once, whatever results follow)."""
    spent = result.token
    if spent is None or proposal.token_consumed_at is not None:
        return proposal
    written = await store.update_proposal(
        proposal.next_version(execution_token_id=spent.token_id, token_consumed_at=spent.consumed_at),
        events=[EventDraft(event_type=CONSUMED_EVENT, actor=spent.consumed_by, subject=proposal.proposal_id,
                           decision=Decision.APPROVED,
                           payload={"token_id": spent.token_id, "consumed_at": spent.consumed_at.isoformat()})],
    )  # fmt: skip
    return written.unwrap()


def token_to_wire(token: ExecutionToken) -> wire.ExecutionTokenData:
    return wire.ExecutionTokenData.model_validate(
        token.model_dump(mode="json", include=set(wire.ExecutionTokenData.model_fields))
    )


def token_from_wire(data: wire.ExecutionTokenData) -> ExecutionToken:
    fields = data.model_dump(mode="json")
    fields["constraints"] = {k: v for k, v in fields["constraints"].items() if v is not None}
    return ExecutionToken.model_validate(fields)


async def mark_degraded(
    store: NIBStore, degraded: Sequence[str], *, actor: str, cleared: Sequence[str] = ()
) -> None:
    """Devices a rollback could not restore become ``degraded`` (automation stays off them); an operator's
    clearance makes them ``active`` again. Both are events of the device's history."""
    for device_id, status, event in [
        *((d, DeviceStatus.DEGRADED, "DEVICE_DEGRADED") for d in degraded),
        *((d, DeviceStatus.ACTIVE, "DEVICE_CLEARED") for d in cleared),
    ]:

        async def write(
            device_id: str = device_id, status: DeviceStatus = status, event: str = event
        ) -> NIBResult[Any]:
            device = await store.get_device(device_id)
            if device is None or device.status is status:
                return NIBResult.ok(None)
            return await store.update_device_status(
                device_id, status, device.version,
                events=[EventDraft(event_type=event, actor=actor, subject=device_id,
                                   decision=Decision.NOT_APPLICABLE, payload={"from": device.status.value})],
            )  # fmt: skip

        await retry_on_conflict(write)
