"""The SNMP probe with both communities and SNMPv3 users: v3 starts once the first request of every community
has gone unanswered (beside their retries), not after the retries too; a community's answer wins."""

from __future__ import annotations

import time
from ipaddress import IPv4Address
from typing import Any

import pytest

from pdsno.discovery.probes.base import Observation, ProbeStats, TargetStream
from pdsno.discovery.probes.snmp import SnmpProbe
from pdsno.snmp import SnmpCredentials, SnmpV3Credential, V3Client
from tests.runtime.snmp_agents import COMMUNITY, device_mib, loopback_agent

V3 = SnmpV3Credential.parse("bench-ro:auth-pass-1:priv-pass-1")


class _Sink:
    def __init__(self) -> None:
        self.seen: list[Observation] = []

    def emit(self, observation: Observation) -> None:
        self.seen.append(observation)


def _fake_v3(monkeypatch: pytest.MonkeyPatch, calls: list[float], *, answers: bool) -> None:
    async def v3(self: SnmpProbe, ip: str, client: V3Client, stats: ProbeStats) -> tuple[Any, str]:
        calls.append(time.monotonic())
        if not answers:
            return None, "timeout"
        return {"sys_name": "v3-only", "credential": f"user {V3.user}"}, "no credential tried"

    monkeypatch.setattr(SnmpProbe, "_v3", v3)
    monkeypatch.setattr(V3Client, "warm_up", lambda self: None)  # no pysnmp engine for a fake


@pytest.mark.parametrize("communities", [1, 2])
async def test_v3_starts_after_the_first_unanswered_request(
    monkeypatch: pytest.MonkeyPatch, communities: int
) -> None:
    calls: list[float] = []
    _fake_v3(monkeypatch, calls, answers=True)
    endpoint, agent, port = await loopback_agent(device_mib(1), mode="mute")
    try:
        timeout = 0.3
        probe = SnmpProbe(
            SnmpCredentials(("a", "b")[:communities], (V3,)), port=port, timeout=timeout, retries=2
        )
        sink = _Sink()
        started = time.monotonic()
        stats = await probe.run(TargetStream([IPv4Address("127.0.0.1")], closed=True), sink)
        (obs,) = sink.seen
        assert obs.fields["reachable"] is True and obs.fields["version"] == "v3"
        assert obs.fields["sys_name"] == "v3-only"
        (called,) = calls
        # after one timeout (no RTT known yet: the ceiling), well before the retries' two more
        assert timeout * 0.9 <= called - started < timeout * 1.9
        assert stats.details["versions"] == {"v3": 1}
        assert agent.requests == 2 * communities  # one retry each went out, the second was dropped
    finally:
        endpoint.close()


async def test_a_community_answer_wins_and_v3_is_not_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[float] = []
    _fake_v3(monkeypatch, calls, answers=True)
    endpoint, _agent, port = await loopback_agent(device_mib(2))
    try:
        probe = SnmpProbe(SnmpCredentials((COMMUNITY.decode(),), (V3,)), port=port, timeout=0.3)
        sink = _Sink()
        await probe.run(TargetStream([IPv4Address("127.0.0.1")], closed=True), sink)
        (obs,) = sink.seen
        assert obs.fields["version"] == "v2c" and obs.fields["sys_name"] == "core-1"
        assert calls == []
    finally:
        endpoint.close()


async def test_v2c_retries_go_on_while_v3_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[float] = []
    _fake_v3(monkeypatch, calls, answers=False)
    endpoint, agent, port = await loopback_agent(device_mib(1), mode="mute")
    try:
        probe = SnmpProbe(SnmpCredentials(("a",), (V3,)), port=port, timeout=0.1, retries=2)
        sink = _Sink()
        stats = await probe.run(TargetStream([IPv4Address("127.0.0.1")], closed=True), sink)
        (obs,) = sink.seen
        assert obs.fields["reachable"] is False and obs.fields["error"] == "timeout"
        assert len(calls) == 1
        assert agent.requests == 3  # the first request and its two retries
        assert stats.errors == {"timeout": 1}
    finally:
        endpoint.close()
