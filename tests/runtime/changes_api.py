"""Changes through the GC's northbound API on a running hierarchy (tests/runtime/hierarchy.py), and the
values a device holds, read with net-snmp's snmpget from its Local controller's namespace."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.runtime.hierarchy import World, devices, gc_api, nib_of, wait_for

SYS_LOCATION = "1.3.6.1.2.1.1.6.0"


def snmp_value(world: World, name: str, oid: str = SYS_LOCATION) -> str:
    d = world.lab.device(name)
    done = world.lab.exec_in(d.lc, ["snmpget", "-Oqv", "-t", "1", "-r", "1", "-v2c", "-c", str(d.community),
                                    d.addresses[0], oid], timeout=15)  # fmt: skip
    return done.stdout.strip().strip('"')


def device_id(world: World, name: str) -> str:
    mac = world.lab.device(name).mac
    return devices(world, "gc-1")[mac].device_id


def call(world: World, token: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    with gc_api(world, token) as api:
        return api.request(method, path, **kwargs)


def propose(world: World, token: str, names: list[str], value: str, *, oid: str = SYS_LOCATION,
            **extra: Any) -> httpx.Response:  # fmt: skip
    body = {"executor": "snmp", "targets": [device_id(world, n) for n in names], "payload": {"set": {oid: value}},
            **extra}  # fmt: skip
    return call(world, token, "POST", "/api/v1/proposals", json=body)


def status_at_gc(world: World, token: str, proposal_id: str) -> dict[str, Any]:
    response = call(world, token, "GET", f"/api/v1/proposals/{proposal_id}")
    assert response.status_code == 200, response.text
    view: dict[str, Any] = response.json()
    return view


def wait_status(
    world: World, token: str, proposal_id: str, *wanted: str, timeout: float = 40
) -> dict[str, Any]:
    return wait_for(lambda: (v := status_at_gc(world, token, proposal_id))["status"] in wanted and v, timeout,
                    f"{proposal_id} {wanted}")  # fmt: skip


async def _in_nib(world: World, host: str, work: Any) -> Any:
    store = await nib_of(world.procs[host])
    try:
        return await work(store)
    finally:
        await store.close()


def in_nib(world: World, host: str, work: Any) -> Any:
    return asyncio.run(_in_nib(world, host, work))
