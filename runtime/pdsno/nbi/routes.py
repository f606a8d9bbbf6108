"""``/api/v1``: the frame of the northbound API (health, controllers); later issues add the rest."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from pdsno import __version__
from pdsno.nbi.auth import require
from pdsno.nib.models import Controller, ControllerRole, Operator, OperatorRole

router = APIRouter(prefix="/api/v1", tags=["northbound"])

Viewer = Annotated[Operator, Depends(require(OperatorRole.VIEWER))]


@router.get("/health")
async def health(request: Request, _: Viewer) -> dict[str, Any]:
    node = request.app.state.node
    head = await node.store.audit_head()
    return {
        "status": "ok",
        "controller_id": node.controller_id,
        "version": __version__,
        "nib": {"backend": node.store.backend, "schema_version": await node.store.schema_version()},
        "audit_head": {"seq": head.seq, "hash": head.hash},
        "mqtt_connected": node.mqtt_connected,
    }


@router.get("/controllers")
async def controllers(
    request: Request, _: Viewer, role: ControllerRole | None = None, region: str | None = None
) -> list[Controller]:
    return list(await request.app.state.node.store.list_controllers(role=role, region=region))
