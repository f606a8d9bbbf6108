"""``/api/v1``: the frame of the northbound API (health, controllers); later issues add the rest."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from pdsno import __version__
from pdsno.errors import PdsnoError, ReasonCode
from pdsno.nbi.auth import require
from pdsno.nib.models import (
    Controller,
    ControllerRole,
    Device,
    DeviceStatus,
    DeviceType,
    Event,
    Operator,
    OperatorRole,
)

router = APIRouter(prefix="/api/v1", tags=["northbound"])

Viewer = Annotated[Operator, Depends(require(OperatorRole.VIEWER))]
OperatorRequired = Annotated[Operator, Depends(require(OperatorRole.OPERATOR))]


class DiscoveryScope(BaseModel):
    """What to discover now; nothing set means every region."""

    model_config = ConfigDict(extra="forbid")

    region: str | None = None
    lc_ids: list[str] = Field(default_factory=list)
    subnets: list[str] = Field(default_factory=list)


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
        "clock_skew_limit_s": node.verifier.clock_skew_s,
        "peer_clocks": {peer: _clock(reading) for peer, reading in sorted(node.peer_clocks.items())},
    }


def _clock(reading: Any) -> dict[str, Any]:
    """A peer's clock minus ours, from its last signed heartbeat; past the limit its messages are refused."""
    return {"skew_s": reading.skew_s, "measured_at": reading.measured_at}


@router.get("/controllers")
async def controllers(
    request: Request, _: Viewer, role: ControllerRole | None = None, region: str | None = None
) -> list[dict[str, Any]]:
    """The controllers this one knows; ``clock`` is null until a signed heartbeat of theirs arrived."""
    return await known_controllers(request.app.state.node, role=role, region=region)


async def known_controllers(
    node: Any, *, role: ControllerRole | None = None, region: str | None = None
) -> list[dict[str, Any]]:
    """The controllers in this one's NIB with their clock and audit status (their last heartbeat's; ours
    for this one) and, as their heartbeats tell, the controllers below them (``children``: the GC holds
    no key of a local controller, its RC vouches for it)."""
    found: list[Controller] = await node.store.list_controllers(role=role, region=region)
    clocks, beats = node.peer_clocks, node.peer_heartbeats
    views = []
    for c in found:
        beat = beats[c.controller_id][0] if c.controller_id in beats else None
        own = c.controller_id == node.controller_id
        audit = node.audit_status if own else (beat.audit if beat is not None else None)
        views.append({
            **jsonable_encoder(c),
            "clock": _clock(clocks[c.controller_id]) if c.controller_id in clocks else None,
            "audit": jsonable_encoder(audit) if audit is not None else None,
            "children": [jsonable_encoder(child) for child in beat.children] if beat is not None else [],
        })  # fmt: skip
    return views


@router.get("/devices")
async def devices(
    request: Request,
    _: Viewer,
    region: str | None = None,
    status: DeviceStatus | None = None,
    vendor: str | None = None,
    device_type: Annotated[DeviceType | None, Query(alias="type")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """The global inventory, filtered and paged by device id."""
    store = request.app.state.node.store
    page: list[Device] = await store.list_devices(
        region=region, status=status, vendor=vendor, device_type=device_type, limit=limit, offset=offset
    )
    return {
        "items": page,
        "limit": limit,
        "offset": offset,
        "next_offset": offset + limit if len(page) == limit else None,
    }


@router.get("/devices/{device_id}")
async def device(request: Request, device_id: str, _: Viewer) -> Device:
    found: Device | None = await request.app.state.node.store.get_device(device_id)
    if found is None:
        raise PdsnoError(f"no device {device_id}", code=ReasonCode.NOT_FOUND)
    return found


@router.get("/devices/{device_id}/history")
async def device_history(request: Request, device_id: str, _: Viewer) -> list[Event]:
    """Every recorded change of the device, oldest first (discovery, updates, status changes)."""
    store = request.app.state.node.store
    if await store.get_device(device_id) is None:
        raise PdsnoError(f"no device {device_id}", code=ReasonCode.NOT_FOUND)
    return list(await store.events_about(device_id))


def _run_view(run: Any, deltas: list[Event] | None = None) -> dict[str, Any]:
    view = {
        "request_id": run.request_id,
        "status": run.status,
        "requested_by": run.requested_by,
        "scope": run.scope,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "targets": run.targets,
    }
    if deltas is not None:
        view["deltas"] = [
            {
                "event_type": e.event_type,
                "device_id": e.subject,
                "timestamp": e.timestamp,
                "payload": e.payload,
            }
            for e in deltas
        ]
    return view


def _discovery(request: Request) -> Any:
    duty = request.app.state.node.global_discovery
    if duty is None:
        raise PdsnoError("discovery is not available on this controller", code=ReasonCode.NOT_FOUND)
    return duty


@router.post("/discovery", status_code=202)
async def start_discovery(
    request: Request, scope: DiscoveryScope, operator: OperatorRequired
) -> JSONResponse:
    """Discover now (ON_DEMAND): the request goes to the regional controllers, which run it on their
    local controllers; follow it with GET /api/v1/discovery/{request_id}."""
    run = await _discovery(request).start(
        requested_by=operator.name, region=scope.region, lc_ids=scope.lc_ids, subnets=scope.subnets
    )
    return JSONResponse(jsonable_encoder(_run_view(run)), status_code=202)


@router.get("/discovery")
async def list_discovery(request: Request, _: Viewer) -> list[dict[str, Any]]:
    return [_run_view(run) for run in _discovery(request).runs.values()]


@router.get("/discovery/{request_id}")
async def follow_discovery(request: Request, request_id: str, _: Viewer) -> dict[str, Any]:
    """The request's state; once ``status`` is done, ``deltas`` holds every inventory change it caused."""
    duty = _discovery(request)
    run = duty.runs.get(request_id)
    if run is None:
        raise PdsnoError(f"no discovery request {request_id}", code=ReasonCode.NOT_FOUND)
    return _run_view(run, await duty.deltas(run))
