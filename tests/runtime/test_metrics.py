"""Prometheus metrics end to end (issue 13): the hierarchy of tests/runtime/hierarchy.py, each controller's
``/metrics`` scraped over mutual TLS with a certificate from the deployment CA, parsed with
prometheus_client's own parser; the numbers must move when discovery, a refusal or a change happens.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from pdsno.nib.models import DeviceStatus
from tests.runtime.hierarchy import (
    PARENT,
    TREE,
    World,
    devices,
    gc_api,
    operator_token,
    post_from_parent,
    run_cycle,
    running_world,
    truth,
    wait_for,
    writable_lcs,
)

PREFIX = "pdsm-"
SYS_LOCATION = "1.3.6.1.2.1.1.6.0"
Families = dict[str, Metric]

# name -> type, as prometheus_client's parser reports the family (counters without ``_total``)
EXPECTED = {
    "pdsno_devices": "gauge",
    "pdsno_device_deltas": "counter",
    "pdsno_discovery_reports": "counter",
    "pdsno_discovery_duration_seconds": "histogram",
    "pdsno_messages_signed": "counter",
    "pdsno_messages_verified": "counter",
    "pdsno_messages_refused": "counter",
    "pdsno_messages_refused_unaudited": "counter",
    "pdsno_mqtt_connected": "gauge",
    "pdsno_mqtt_outbox_depth": "gauge",
    "pdsno_mqtt_redeliveries": "counter",
    "pdsno_proposals": "gauge",
    "pdsno_change_outcomes": "counter",
    "pdsno_change_latency_seconds": "histogram",
    "pdsno_nib_write_seconds": "histogram",
    "pdsno_heartbeat_age_seconds": "gauge",
    "pdsno_metrics_collect_seconds": "gauge",
}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with running_world(tmp_path_factory.mktemp("metrics"), PREFIX, writable_lcs) as world:
        expected = truth(world)
        wait_for(lambda: len(devices(world, "gc-1")) >= len(expected), 60, "the GC inventory")
        yield world


def _tls(world: World, host: str | None) -> ssl.SSLContext:
    pki = world.root / "pki"
    tls = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    if host is not None:
        tls.load_cert_chain(pki / f"{host}.crt", pki / f"{host}.key")
    return tls


def scrape(world: World, host: str) -> Families:
    """``/metrics`` of ``host``'s controller, from inside its host, showing the host's certificate."""
    with world.lab.inside(world.ns(host)):
        response = httpx.get(world.url(host) + "/metrics", verify=_tls(world, host), timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {family.name: family for family in text_string_to_metric_families(response.text)}


def value(families: Families, sample: str, **labels: str) -> float:
    """The sum of the samples named ``sample`` whose labels include ``labels`` (0 when there are none)."""
    family = families[sample.removesuffix("_total").removesuffix("_count").removesuffix("_sum")]
    return sum(
        s.value
        for s in family.samples
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
    )


def by_label(families: Families, sample: str, label: str) -> dict[str, float]:
    family = families[sample.removesuffix("_total").removesuffix("_count")]
    return {s.labels[label]: s.value for s in family.samples if s.name == sample}


def test_every_controller_serves_every_metric_to_a_scraper_with_a_certificate(world: World) -> None:
    for host in TREE:
        families = scrape(world, host)
        assert {name: families[name].type for name in EXPECTED if name in families} == EXPECTED, host
        assert value(families, "pdsno_mqtt_connected") == 1, host
        assert value(families, "pdsno_mqtt_outbox_depth") >= 0, host
        # every controller signs (heartbeats at least) and has written its NIB
        assert value(families, "pdsno_messages_signed_total", type="HEARTBEAT") >= 1, host
        assert value(families, "pdsno_nib_write_seconds_count") > 0, host
        assert value(families, "pdsno_nib_write_seconds_sum") > 0, host
        assert value(families, "pdsno_metrics_collect_seconds") > 0, host
    # a scraper without a client certificate gets nothing
    with world.lab.inside(world.ns("gc-1")):
        refused = httpx.get(world.url("lc-a1") + "/metrics", verify=_tls(world, None), timeout=30)
    assert refused.status_code == 401 and refused.json()["code"] == "CLIENT_CERTIFICATE_REQUIRED"


def test_devices_and_deltas_match_the_nib_and_a_discovery_cycle_moves_the_counters(world: World) -> None:
    for host in ("lc-a1", "rc-zone-a", "gc-1"):
        families = scrape(world, host)
        active = [d for d in devices(world, host).values() if d.status is DeviceStatus.ACTIVE]
        assert active and value(families, "pdsno_devices", status="active") == len(active), host
        assert value(families, "pdsno_device_deltas_total", kind="new") >= len(active), host
    rc = scrape(world, "rc-zone-a")
    assert value(rc, "pdsno_discovery_reports_total", direction="received") >= 2  # lc-a1 and lc-a2
    assert value(rc, "pdsno_messages_verified_total", transport="mqtt") > 0

    before = scrape(world, "lc-a1")
    assert value(before, "pdsno_discovery_duration_seconds_count") >= 1  # the cycle at start
    assert value(before, "pdsno_discovery_duration_seconds_sum") > 0
    run_cycle(world, "lc-a1")  # a DISCOVERY_REQUEST over REST, signed by the RC

    def moved() -> Families | None:
        now = scrape(world, "lc-a1")
        sent = value(now, "pdsno_discovery_reports_total", direction="sent")
        return now if sent > value(before, "pdsno_discovery_reports_total", direction="sent") else None

    after = wait_for(moved, 30, "the second report of lc-a1 acknowledged")
    count = "pdsno_discovery_duration_seconds_count"
    assert value(after, count) == value(before, count) + 1
    verified = "pdsno_messages_verified_total"
    assert value(after, verified, transport="rest") >= value(before, verified, transport="rest") + 1
    assert value(after, "pdsno_messages_signed_total", type="DISCOVERY_REPORT") > value(
        before, "pdsno_messages_signed_total", type="DISCOVERY_REPORT"
    )


def test_a_refused_message_is_counted_by_its_reason_code(world: World) -> None:
    before = by_label(scrape(world, "lc-a1"), "pdsno_messages_refused_total", "reason")
    response = post_from_parent(world, "lc-a1", b'{"not": "an envelope"}')
    assert response.status_code >= 400, response.text
    code = response.json()["code"]
    after = by_label(scrape(world, "lc-a1"), "pdsno_messages_refused_total", "reason")
    moved = {r: n - before.get(r, 0) for r, n in after.items() if n != before.get(r, 0)}
    assert moved == {code: 1}


def test_heartbeat_age_is_reported_for_each_child_and_stays_fresh(world: World) -> None:
    for parent in ("gc-1", "rc-zone-a", "rc-zone-b"):
        children = {TREE[h][0] for h, p in PARENT.items() if p == parent}
        ages = by_label(scrape(world, parent), "pdsno_heartbeat_age_seconds", "child")
        assert set(ages) == children, parent
        # heartbeats every 5 s: an age past three intervals would be a missed heartbeat
        assert all(0 <= age < 15 for age in ages.values()), ages


def test_a_change_moves_the_proposal_gauges_outcomes_and_latency(world: World) -> None:
    token = operator_token(world, "olga", "operator")
    lab_device = world.lab.device("acc-sw-a1-1")
    target = devices(world, "gc-1")[lab_device.mac].device_id
    lc_host = lab_device.lc
    hosts = ("gc-1", PARENT[lc_host], lc_host)
    before = {host: scrape(world, host) for host in hosts}
    body: dict[str, Any] = {
        "executor": "snmp",
        "targets": [target],
        "payload": {"set": {SYS_LOCATION: "metrics"}},
    }
    with gc_api(world, token) as api:
        made = api.post("/api/v1/proposals", json=body)
        assert made.status_code == 201, made.text
        proposal_id = made.json()["proposal_id"]

        def ended() -> str | None:
            status: str = api.get(f"/api/v1/proposals/{proposal_id}").json()["status"]
            return status if status in ("EXECUTED", "FAILED", "DENIED", "EXPIRED") else None

        assert wait_for(ended, 40, f"{proposal_id} at an end state") == "EXECUTED"
    for host in hosts:

        def counted(host: str = host) -> Families | None:
            now = scrape(world, host)
            return now if value(now, "pdsno_change_outcomes_total", tier="LOW", outcome="EXECUTED") else None

        after = wait_for(counted, 20, f"the outcome counted on {host}")
        was = before[host]
        outcome = {"tier": "LOW", "outcome": "EXECUTED"}
        assert (
            value(after, "pdsno_change_outcomes_total", **outcome)
            == value(was, "pdsno_change_outcomes_total", **outcome) + 1
        ), host
        latency = "pdsno_change_latency_seconds_count"
        assert value(after, latency, tier="LOW") == value(was, latency, tier="LOW") + 1, host
        assert 0 < value(after, "pdsno_change_latency_seconds_sum", tier="LOW") < 40, host
        proposals = {"tier": "LOW", "status": "EXECUTED"}
        assert value(after, "pdsno_proposals", **proposals) == value(was, "pdsno_proposals", **proposals) + 1
