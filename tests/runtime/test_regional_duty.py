"""An RC's watch over its LCs (real NIB, both backends): a silent LC is flagged once per timeout and
asked to scan; one that reports is left alone."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from pdsno.canonical import utcnow
from pdsno.controller.discovery_duty import RegionalDiscovery
from pdsno.controller.uplink import Peers, Uplink
from pdsno.controller.upward import Receipts, Upward
from pdsno.messaging.keys import KeyRing
from pdsno.messaging.replay import ReplayLog
from pdsno.messaging.verify import Verifier
from pdsno.nib.models import Controller, ControllerRole
from pdsno.nib.sql import SqlNIBStore
from pdsno.transport.rest_client import PeerClient
from pdsno.transport.upward import UpwardStore
from tests.runtime.ports import free_port

RC = "regional_cntl_zone-a_1"


async def test_a_silent_lc_is_flagged_once_and_asked_to_scan(
    nib: SqlNIBStore, tmp_path: Path, replay: ReplayLog
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for n in (1, 2):
        lc = Controller(
            controller_id=f"local_cntl_zone-a_{n}", role=ControllerRole.LOCAL, region="zone-a", rest_url=url
        )
        (await nib.register_controller(lc)).unwrap()
    client = PeerClient(ca_file=None, timeout_s=2, backoff_s=())
    peers = Peers(nib, me=RC, client=client)
    verifier = Verifier(RC, KeyRing(), nib, replay)
    upward = UpwardStore(tmp_path / "upward.sqlite3")
    duty = RegionalDiscovery(
        nib, me=RC, region="zone-a", spike_threshold=50, peers=peers, verifier=verifier,
        upward=Upward(upward, Uplink(peers, parent_id="global_cntl_1", parent_url=url), verifier=verifier),
        receipts=Receipts(upward, peers),
    )  # fmt: skip
    since = utcnow() - timedelta(seconds=700)
    duty._last_report["local_cntl_zone-a_2"] = utcnow()  # this one reported just now
    try:
        assert await duty.check_overdue(600, since=since) == ["local_cntl_zone-a_1"]
        assert await duty.check_overdue(600, since=since) == [], "flagged once per timeout"
        await asyncio.wait_for(asyncio.gather(*duty._tasks), 10)
    finally:
        await client.aclose()
        upward.close()
    events = await nib.read_events()
    assert [(e.event_type, e.subject) for e in events if e.event_type == "LC_DISCOVERY_OVERDUE"] == [
        ("LC_DISCOVERY_OVERDUE", "local_cntl_zone-a_1")
    ]
    failed = [e for e in events if e.event_type == "DISCOVERY_REQUEST_FAILED"]
    assert [e.subject for e in failed] == [
        "local_cntl_zone-a_1"
    ]  # the request was made, and its failure kept
