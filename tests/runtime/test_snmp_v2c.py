"""The SNMPv2c transport (:mod:`pdsno.snmp.v2c`): its codec against messages pysnmp builds and reads, and
one socket pipelining sessions against a pysnmp-built agent on 127.0.0.1 (:mod:`tests.runtime.snmp_agents`).
"""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from pyasn1.codec.ber import decoder
from pysnmp.proto.api import v2c

from pdsno.discovery.probes.base import RttEstimator
from pdsno.discovery.probes.snmp import collect
from pdsno.snmp import (
    RequestKind,
    SnmpAuthFailure,
    SnmpNoAgent,
    SnmpPduError,
    SnmpTimeout,
    Special,
    V2cCodec,
    V2cSession,
    V2cTransport,
)
from tests.runtime.snmp_agents import COMMUNITY, FakeAgent, device_mib, loopback_agent, pysnmp_message

# --------------------------------------------------------------------------------- pysnmp's message API


def test_codec_reads_answers_as_plain_values() -> None:
    codec = V2cCodec()
    data = pysnmp_message(
        [
            ((1, 3, 6, 1, 2, 1, 1, 1, 0), v2c.OctetString(b"Linux box")),
            (
                (1, 3, 6, 1, 2, 1, 1, 2, 0),
                v2c.ObjectIdentifier((1, 3, 6, 1, 4, 1, 30065, 1, 3011, 7048, 427)),
            ),
            ((1, 3, 6, 1, 2, 1, 1, 3, 0), v2c.TimeTicks(4_294_967_295)),
            ((1, 3, 6, 1, 2, 1, 1, 7, 0), v2c.Integer(-129)),
            ((1, 3, 6, 1, 2, 1, 2, 2, 1, 5, 1), v2c.Gauge32(4_294_967_295)),
            ((1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 6, 1), v2c.Counter64(2**64 - 1)),
            ((1, 3, 6, 1, 2, 1, 4, 20, 1, 1, 10, 0, 0, 1), v2c.IpAddress("10.0.0.1")),
            ((1, 3, 6, 1, 4, 1, 200_000, 1), v2c.Null("")),
            ((1, 3, 6, 1, 2, 1, 2, 2, 1, 2, 9), v2c.EndOfMibView()),
            ((2, 999, 3), v2c.NoSuchInstance()),
            ((1, 3, 6, 1, 2, 1, 1, 9, 0), v2c.NoSuchObject()),
        ],
        request_id=2**31 - 1,
    )
    reply = codec.decode_reply(data)
    assert reply is not None
    assert (reply.community, reply.report, reply.request_id) == (COMMUNITY, False, 2**31 - 1)
    assert (reply.error_status, reply.error_index) == (0, 0)
    assert [value for _, value in reply.varbinds] == [
        b"Linux box",
        (1, 3, 6, 1, 4, 1, 30065, 1, 3011, 7048, 427),
        4_294_967_295,
        -129,
        4_294_967_295,
        2**64 - 1,
        b"\x0a\x00\x00\x01",
        None,
        Special.END_OF_MIB_VIEW,
        Special.NO_SUCH_INSTANCE,
        Special.NO_SUCH_OBJECT,
    ]
    assert reply.varbinds[9][0] == (2, 999, 3)
    report = codec.decode_reply(pysnmp_message([], pdu=v2c.ReportPDU()))
    assert report is not None and report.report
    failed = codec.decode_reply(pysnmp_message([((1, 3, 6, 1), v2c.Null(""))], error_status=5, error_index=1))
    assert failed is not None and (failed.error_status, failed.error_index) == (5, 1)
    # not an answer: requests, truncated or foreign datagrams, an SNMPv3 message
    assert codec.decode_reply(pysnmp_message([], pdu=v2c.GetRequestPDU())) is None
    for bad in (b"", b"\x30", data[:-1], b"\x30\x03\x02\x01\x03", b"\x04\x00", b"GET / HTTP/1.0\r\n\r\n"):
        assert codec.decode_reply(bad) is None


@pytest.mark.parametrize("request_id", [1, 127, 128, 65_535, 2**31 - 1])
def test_codec_requests_are_pysnmp_messages(request_id: int) -> None:
    codec = V2cCodec()
    oids = [(1, 3, 6, 1, 2, 1, 1, 1), (1, 3, 6, 1, 4, 1, 2**32 - 1, 0), (2, 100, 7)]
    for _ in range(2):  # the second time from the cached message, with a new request-id
        data = codec.encode_request(
            community=b"pub",
            request_id=request_id,
            oids=oids,
            kind=RequestKind.GET_BULK,
            non_repeaters=1,
            max_repetitions=300,
        )
        msg, rest = decoder.decode(data, asn1Spec=v2c.Message())
        assert not rest
        assert bytes(v2c.apiMessage.get_community(msg)) == b"pub"
        pdu = v2c.apiMessage.get_pdu(msg)
        assert isinstance(pdu, v2c.GetBulkRequestPDU)
        assert int(v2c.apiPDU.get_request_id(pdu)) == request_id
        assert int(v2c.apiBulkPDU.get_non_repeaters(pdu)) == 1
        assert int(v2c.apiBulkPDU.get_max_repetitions(pdu)) == 300
        assert [tuple(o) for o, _ in v2c.apiPDU.get_varbinds(pdu)] == oids
        request_id = request_id - 1 or 2
    data = codec.encode_request(community=b"c", request_id=9, oids=oids[:1], kind=RequestKind.GET)
    pdu = v2c.apiMessage.get_pdu(decoder.decode(data, asn1Spec=v2c.Message())[0])
    assert isinstance(pdu, v2c.GetRequestPDU)
    assert int(v2c.apiPDU.get_request_id(pdu)) == 9


# ------------------------------------------------------------------------- one socket for every session


async def _v2c(port: int, *, ceiling: float = 0.5) -> V2cTransport:
    transport = V2cTransport(RttEstimator(0.05, ceiling), port=port, codec=V2cCodec())
    transport.open()
    return transport


@pytest.mark.parametrize("truncate", [1000, 7])
async def test_v2c_walk_over_one_socket_matches_the_agent(truncate: int) -> None:
    endpoint, agent, port = await loopback_agent(device_mib(60), max_varbinds=truncate)
    transport = await _v2c(port)
    try:
        session = V2cSession(transport, "127.0.0.1", COMMUNITY.decode(), retries=0)
        facts = await collect(session, max_requests=400)
        expected = await collect(FakeAgent(device_mib(60), max_varbinds=truncate), max_requests=400)
        assert facts == expected
        assert [i["if_index"] for i in facts["interfaces"]] == list(range(1, 61))
        assert facts["requests"] == agent.requests == transport.sent > 1
        system = await collect(
            V2cSession(transport, "127.0.0.1", COMMUNITY.decode(), retries=0), tables=False
        )
        assert system["sys_name"] == "core-1" and system["requests"] == 1
        assert "interfaces" not in system
        assert transport.stray == 0
        assert transport.estimator.samples == transport.received
        assert transport.decode_seconds > 0
    finally:
        await transport.close()
        endpoint.close()


async def test_v2c_many_sessions_pipelined_on_one_socket() -> None:
    endpoint, agent, port = await loopback_agent(device_mib(3))
    transport = await _v2c(port)
    try:
        sessions = [V2cSession(transport, "127.0.0.1", COMMUNITY.decode(), retries=0) for _ in range(50)]
        results = await asyncio.gather(*(collect(s, tables=n % 2 == 0) for n, s in enumerate(sessions)))
        assert all(r["sys_name"] == "core-1" for r in results)
        assert all(len(r["interfaces"]) == 3 for r in results[::2])
        assert transport.stray == 0
        assert agent.requests == transport.sent == sum(r["requests"] for r in results)
    finally:
        await transport.close()
        endpoint.close()


async def test_v2c_stray_answers_are_not_taken() -> None:
    endpoint, _agent, port = await loopback_agent(device_mib(1), mode="strays")
    transport = await _v2c(port)
    try:
        facts = await collect(V2cSession(transport, "127.0.0.1", COMMUNITY.decode(), retries=0), tables=False)
        assert facts["sys_name"] == "core-1"
        await asyncio.sleep(0.05)
        assert transport.stray == 2  # another request-id, another community
    finally:
        await transport.close()
        endpoint.close()


async def test_v2c_failures() -> None:
    mib = device_mib(1)
    for mode, error in (("report", SnmpAuthFailure), ("error", SnmpPduError), ("mute", SnmpTimeout)):
        endpoint, agent, port = await loopback_agent(mib, mode=mode)
        transport = await _v2c(port, ceiling=0.2)
        try:
            session = V2cSession(transport, "127.0.0.1", COMMUNITY.decode(), retries=1)
            started = time.monotonic()
            with pytest.raises(error):
                await collect(session)
            if mode == "mute":  # one retry, each within the adaptive timeout's ceiling
                assert agent.requests == session.requests == 2
                assert time.monotonic() - started < 1.0
        finally:
            await transport.close()
            endpoint.close()
    # a wrong community is ignored by the agent: a timeout, not an answer
    endpoint, agent, port = await loopback_agent(mib)
    transport = await _v2c(port, ceiling=0.2)
    try:
        with pytest.raises(SnmpTimeout):
            await collect(V2cSession(transport, "127.0.0.1", "wrong", retries=0))
        assert agent.requests == 1
    finally:
        await transport.close()
        endpoint.close()


async def test_v2c_port_unreachable_is_no_agent() -> None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nobody listens there now: the kernel answers ICMP port unreachable
    transport = await _v2c(port, ceiling=2.0)
    try:
        started = time.monotonic()
        with pytest.raises(SnmpNoAgent, match="port unreachable"):
            await collect(V2cSession(transport, "127.0.0.1", COMMUNITY.decode(), retries=3))
        assert time.monotonic() - started < 1.0  # not a timeout
        with pytest.raises(SnmpNoAgent):  # remembered for the rest of the scan
            await transport.request("127.0.0.1", COMMUNITY, [(1, 3, 6, 1)])
    finally:
        await transport.close()
