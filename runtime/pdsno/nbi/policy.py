"""``/api/v1/policy`` and ``/api/v1/audit``: the rules in force, and the record of what was done."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict

from pdsno.audit.verify import signer_keys, verify_log
from pdsno.nbi.auth import require
from pdsno.nib.models import Operator, OperatorRole

router = APIRouter(prefix="/api/v1", tags=["policy and audit"])

Viewer = Annotated[Operator, Depends(require(OperatorRole.VIEWER))]
Admin = Annotated[Operator, Depends(require(OperatorRole.ADMIN))]


class PolicyChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content: dict[str, Any]
    expected_version: str | None = None


@router.get("/policy")
async def get_policy(request: Request, _: Viewer) -> dict[str, Any]:
    view: dict[str, Any] = request.app.state.node.policy.holder.view()
    return view


@router.put("/policy")
async def put_policy(
    request: Request, body: PolicyChange, admin: Admin, check: bool = False
) -> dict[str, Any]:
    """Make ``content`` the next version (keys left out keep their defaults) and distribute it down the
    tree; the same content again changes nothing. ``?check=true`` authorises and validates the request
    as a real one and answers whether it would change the policy, writing nothing (``policy`` is the
    one in force)."""
    policy = request.app.state.node.policy
    changed = await policy.put(
        body.content, actor=admin.name, expected_version=body.expected_version, check=check
    )
    return {"changed": changed, "check": check, "policy": policy.holder.view()}


@router.get("/audit")
async def audit(
    request: Request,
    _: Viewer,
    actor: str | None = None,
    event_type: str | None = None,
    subject: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after_seq: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Events in order, filtered (in the database); page on with ``after_seq`` = the answer's
    ``next_after_seq`` (null on the last page)."""
    page = await request.app.state.node.store.read_events(
        after_seq=after_seq, limit=limit + 1, actor=actor, event_type=event_type, subject=subject,
        since=since, until=until,
    )  # fmt: skip
    items = page[:limit]
    return {
        "items": [event.model_dump(mode="json") for event in items],
        "next_after_seq": items[-1].seq if len(page) > limit else None,
    }


@router.get("/audit/verify")
async def audit_verify(request: Request, _: Viewer) -> dict[str, Any]:
    """Walk the whole hash chain and check every signature (as ``pdsno audit verify`` does)."""
    node = request.app.state.node
    own = node.own_public_keys()
    report = await verify_log(node.store, await signer_keys(node.store, own))
    return report.as_dict()
