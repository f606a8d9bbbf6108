"""DISCOVERY_REPORT: the deltas an LC sends its RC after a cycle (deltas only; chunked when large)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pdsno.inventory.delta import AppliedDelta
from pdsno.messaging.messages import DiscoveryReport, WriteSummary
from pdsno.nib.models import Device

CHUNK_DEVICES = 250
"""Devices per report chunk: keeps one signed message well under the 1 MiB message limit."""

_LOCAL_ONLY = {"version", "created_at", "updated_at", "missed_cycles"}


def device_wire(device: Device) -> dict[str, Any]:
    return device.model_dump(mode="json", exclude=_LOCAL_ONLY)


def build_reports(
    applied: AppliedDelta,
    *,
    lc_id: str,
    region: str,
    scan_start: datetime,
    scan_end: datetime,
    total_seen: int,
    policy_version: str | None,
    request_id: str | None = None,
    chunk_devices: int = CHUNK_DEVICES,
) -> list[DiscoveryReport]:
    """The report of one cycle: only what was written, in as many chunks as it takes (at least one)."""
    written = {d.device_id for d in applied.written}
    new = [device_wire(d) for d in applied.delta.new if d.device_id in written]
    updated = [device_wire(d) for d, _ in applied.delta.updated if d.device_id in written]
    inactive = [d.device_id for d in applied.delta.inactive if d.device_id in written]
    summary = WriteSummary(
        new=len(new), updated=len(updated), inactive=len(inactive), conflicts=len(applied.conflicts)
    )
    items: list[tuple[str, Any]] = [("new", d) for d in new] + [("updated", d) for d in updated]
    items += [("inactive", i) for i in inactive]
    chunks = [items[i : i + chunk_devices] for i in range(0, len(items), chunk_devices)] or [[]]
    report_id = str(uuid.uuid4())
    return [
        DiscoveryReport(
            report_id=report_id,
            lc_id=lc_id,
            region=region,
            scan_start=scan_start,
            scan_end=scan_end,
            new_devices=[d for kind, d in chunk if kind == "new"],
            updated_devices=[d for kind, d in chunk if kind == "updated"],
            inactive_devices=[d for kind, d in chunk if kind == "inactive"],
            total_devices_seen=total_seen,
            write_summary=summary,
            policy_version=policy_version,
            chunk_index=index,
            chunk_count=len(chunks),
            request_id=request_id,
        )
        for index, chunk in enumerate(chunks)
    ]


def reported_devices(report: DiscoveryReport) -> list[Device]:
    return [Device.model_validate(d) for d in (*report.new_devices, *report.updated_devices)]
