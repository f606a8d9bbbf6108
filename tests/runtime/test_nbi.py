"""The northbound API on a real NIB (both backends), served in-process by the real app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from pdsno.controller.app import build_app
from pdsno.inventory.merge import merge_reported
from pdsno.messaging.keys import KeyRing
from pdsno.messaging.replay import ReplayLog
from pdsno.messaging.verify import Verifier
from pdsno.nbi.auth import add_operator
from pdsno.nib.models import ControllerRole, Device, DeviceStatus, DeviceType, OperatorRole
from pdsno.nib.sql import SqlNIBStore

GC = "global_cntl_1"


@dataclass
class GlobalNode:
    """The parts of a running GC the app reads; the store is real."""

    store: SqlNIBStore
    replay: ReplayLog
    controller_id: str = GC
    role: ControllerRole = ControllerRole.GLOBAL
    region: str | None = None
    public_key: str = ""
    validator: Any = None
    handlers: dict[Any, Any] = field(default_factory=dict)
    mqtt_connected: bool = False

    @property
    def verifier(self) -> Verifier:
        return Verifier(GC, KeyRing(), self.store, self.replay)


@pytest.fixture
async def api(nib: SqlNIBStore, replay: ReplayLog) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    (_, token) = await add_operator(nib, name="olga", role=OperatorRole.VIEWER, actor=GC)
    devices = [
        Device(mac_address=f"02:00:00:00:03:{n:02x}", ip_address=f"198.18.3.{n}", hostname=f"d{n}",
               region="zone-a" if n % 2 else "zone-b", vendor="Cisco" if n < 3 else "Juniper",
               device_type=DeviceType.ROUTER if n < 2 else DeviceType.SWITCH)
        for n in range(6)
    ]  # fmt: skip
    await merge_reported(nib, actor=GC, reporter="rc", owner_field="region", owner_value="zone-a",
                         new_or_updated=devices, inactive_ids=[])  # fmt: skip
    transport = httpx.ASGITransport(app=build_app(GlobalNode(nib, replay)))
    async with httpx.AsyncClient(transport=transport, base_url="http://gc") as client:
        yield client, token


async def test_the_inventory_needs_a_token(api: tuple[httpx.AsyncClient, str]) -> None:
    client, _ = api
    response = await client.get("/api/v1/devices")
    assert response.status_code == 401 and response.json()["code"] == "UNAUTHENTICATED"


async def test_devices_filter_and_page(api: tuple[httpx.AsyncClient, str]) -> None:
    client, token = api
    auth = {"Authorization": f"Bearer {token}"}

    async def ids(**params: Any) -> list[str]:
        body = (await client.get("/api/v1/devices", params=params, headers=auth)).json()
        return [d["hostname"] for d in body["items"]]

    assert sorted(await ids()) == [f"d{n}" for n in range(6)]
    assert sorted(await ids(region="zone-a")) == ["d1", "d3", "d5"]
    assert sorted(await ids(vendor="Cisco", type="router")) == ["d0", "d1"]
    assert await ids(status="inactive") == []
    first = (await client.get("/api/v1/devices", params={"limit": 4}, headers=auth)).json()
    second = (await client.get("/api/v1/devices", params={"limit": 4, "offset": 4}, headers=auth)).json()
    assert first["next_offset"] == 4 and second["next_offset"] is None
    assert len({d["device_id"] for d in first["items"] + second["items"]}) == 6
    bad = await client.get("/api/v1/devices", params={"status": "sleepy"}, headers=auth)
    assert bad.status_code == 422 and bad.json()["code"] == "INVALID_REQUEST"


async def test_a_device_and_its_history(api: tuple[httpx.AsyncClient, str], nib: SqlNIBStore) -> None:
    client, token = api
    auth = {"Authorization": f"Bearer {token}"}
    device = (await nib.list_devices(region="zone-a"))[0]
    (await nib.update_device_status(device.device_id, DeviceStatus.INACTIVE, device.version,
                                    events=[])).unwrap()  # fmt: skip
    one = await client.get(f"/api/v1/devices/{device.device_id}", headers=auth)
    assert one.status_code == 200 and one.json()["status"] == "inactive"
    history = (await client.get(f"/api/v1/devices/{device.device_id}/history", headers=auth)).json()
    assert [e["event_type"] for e in history] == ["DEVICE_DISCOVERED"]
    missing = await client.get("/api/v1/devices/nib-dev-nope", headers=auth)
    assert missing.status_code == 404 and missing.json()["code"] == "NOT_FOUND"


async def test_the_audit_log_filters_and_pages(api: tuple[httpx.AsyncClient, str]) -> None:
    client, token = api
    auth = {"Authorization": f"Bearer {token}"}

    async def page(**params: Any) -> dict[str, Any]:
        response = await client.get("/api/v1/audit", params=params, headers=auth)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    discovered = await page(event_type="DEVICE_DISCOVERED", limit=4)
    assert [e["event_type"] for e in discovered["items"]] == ["DEVICE_DISCOVERED"] * 4
    rest = await page(event_type="DEVICE_DISCOVERED", limit=4, after_seq=discovered["next_after_seq"])
    assert len(rest["items"]) == 2 and rest["next_after_seq"] is None
    seen = {e["subject"] for e in discovered["items"] + rest["items"]}
    assert len(seen) == 6
    one = next(iter(seen))
    assert [e["subject"] for e in (await page(subject=one))["items"]] == [one]
    assert (await page(actor="nobody"))["items"] == []
