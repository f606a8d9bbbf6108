"""``/api/v1``: the frame of the northbound API (health, controllers); later issues add the rest."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

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
