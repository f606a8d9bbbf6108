"""``/api/v1/proposals``: configuration changes as operators see them (reference-design §5, UC-2..4)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from pdsno.changes.proposals import ProposalRequest
from pdsno.errors import PdsnoError, ReasonCode
from pdsno.nbi.auth import require
from pdsno.nib.models import ConfigStatus, Operator, OperatorRole

router = APIRouter(prefix="/api/v1", tags=["changes"])

Viewer = Annotated[Operator, Depends(require(OperatorRole.VIEWER))]
OperatorRequired = Annotated[Operator, Depends(require(OperatorRole.OPERATOR))]
Approver = Annotated[Operator, Depends(require(OperatorRole.APPROVER))]


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=500)


class Denial(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=500)


def _changes(request: Request) -> Any:
    changes = request.app.state.node.changes
    if changes is None:
        raise PdsnoError("changes are not available on this controller", code=ReasonCode.NOT_FOUND)
    return changes


@router.post("/proposals", status_code=201)
async def propose(
    request: Request, body: ProposalRequest, operator: OperatorRequired, check: bool = False
) -> JSONResponse:
    """Propose a change; ``?check=true`` answers its classification, approver, blast radius and diff
    without storing or sending anything."""
    view = await _changes(request).propose(body, operator=operator.name, check=check)
    return JSONResponse(jsonable_encoder(view), status_code=200 if check else 201)


@router.get("/proposals")
async def proposals(
    request: Request,
    _: Viewer,
    status: ConfigStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    found = await request.app.state.node.store.list_proposals(status=status, limit=limit + 1, offset=offset)
    return {
        "items": [p.model_dump(mode="json") for p in found[:limit]],
        "limit": limit,
        "offset": offset,
        "next_offset": offset + limit if len(found) > limit else None,
    }


@router.get("/proposals/{proposal_id}")
async def proposal(request: Request, proposal_id: str, _: Viewer) -> dict[str, Any]:
    """The proposal and its audit trail (every event about it, oldest first)."""
    result: dict[str, Any] = await _changes(request).view(proposal_id, audit=True)
    return result


@router.post("/proposals/{proposal_id}/approve")
async def approve(request: Request, proposal_id: str, body: Decision, approver: Approver) -> dict[str, Any]:
    result: dict[str, Any] = await _changes(request).approve(
        proposal_id, operator=approver.name, reason=body.reason
    )
    return result


@router.post("/proposals/{proposal_id}/rollback", status_code=201)
async def rollback(
    request: Request, proposal_id: str, body: Decision, operator: OperatorRequired
) -> dict[str, Any]:
    """Propose undoing an executed change (a new proposal, approved like the original)."""
    result: dict[str, Any] = await _changes(request).rollback(
        proposal_id, operator=operator.name, reason=body.reason
    )
    return result


@router.post("/proposals/{proposal_id}/deny")
async def deny(request: Request, proposal_id: str, body: Denial, approver: Approver) -> dict[str, Any]:
    """Deny a waiting change; an EMERGENCY change already executed is undone."""
    result: dict[str, Any] = await _changes(request).deny(
        proposal_id, operator=approver.name, reason=body.reason
    )
    return result


@router.post("/devices/{device_id}/clear", status_code=204)
async def clear_device(request: Request, device_id: str, body: Decision, approver: Approver) -> None:
    """Clear a device left DEGRADED by a failed rollback (after checking it by hand)."""
    await _changes(request).clear_device(device_id, operator=approver.name, reason=body.reason)
