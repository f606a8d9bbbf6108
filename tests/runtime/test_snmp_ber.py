"""The runtime's SNMPv2c codec (:mod:`pdsno.snmp.ber`, plain BER): it must read and write exactly what
pysnmp's own codec (:class:`tests.runtime.snmp_agents.PysnmpCodec`) reads and writes, on pysnmp-built
messages and on the wire."""

from __future__ import annotations

import random

import pytest
from pysnmp.proto.api import v2c

from pdsno.discovery.probes.base import RttEstimator
from pdsno.discovery.probes.snmp import collect
from pdsno.snmp import RequestKind, Special, V2cCodec, V2cSession, V2cTransport
from tests.runtime.snmp_agents import (
    COMMUNITY,
    FakeAgent,
    PysnmpCodec,
    device_mib,
    loopback_agent,
    pysnmp_message,
)

VARBINDS = [
    ((1, 3, 6, 1, 2, 1, 1, 1, 0), v2c.OctetString(b"Linux box")),
    ((1, 3, 6, 1, 2, 1, 1, 2, 0), v2c.ObjectIdentifier((1, 3, 6, 1, 4, 1, 30065, 1, 3011, 7048, 427))),
    ((1, 3, 6, 1, 2, 1, 1, 3, 0), v2c.TimeTicks(4_294_967_295)),
    ((1, 3, 6, 1, 2, 1, 1, 5, 0), v2c.OctetString(b"x" * 300)),  # long-form length
    ((1, 3, 6, 1, 2, 1, 1, 7, 0), v2c.Integer(-129)),
    ((1, 3, 6, 1, 2, 1, 1, 8, 0), v2c.Integer(0)),
    ((1, 3, 6, 1, 2, 1, 2, 2, 1, 5, 1), v2c.Gauge32(4_294_967_295)),
    ((1, 3, 6, 1, 2, 1, 2, 2, 1, 10, 1), v2c.Counter32(128)),
    ((1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 6, 1), v2c.Counter64(2**64 - 1)),
    ((1, 3, 6, 1, 2, 1, 4, 20, 1, 1, 10, 0, 0, 1), v2c.IpAddress("10.0.0.1")),
    ((1, 3, 6, 1, 2, 1, 2, 2, 1, 6, 1), v2c.OctetString(b"\x00\x11\x22\x33\x44\x55")),
    ((1, 3, 6, 1, 4, 1, 200_000, 1), v2c.Null("")),
    ((1, 3, 6, 1, 4, 1, 200_000, 2), v2c.Opaque(b"\x9f\x78\x04")),
    ((1, 3, 6, 1, 2, 1, 2, 2, 1, 2, 9), v2c.EndOfMibView()),
    ((2, 999, 3), v2c.NoSuchInstance()),
    ((0, 39), v2c.ObjectIdentifier((1, 39, 2**32 - 1))),
    ((1, 3, 6, 1, 2, 1, 1, 9, 0), v2c.NoSuchObject()),
]


def _messages() -> list[bytes]:
    return [
        pysnmp_message(VARBINDS, request_id=2**31 - 1),
        pysnmp_message(VARBINDS[:3], request_id=0),
        pysnmp_message([], pdu=v2c.ReportPDU()),
        pysnmp_message([((1, 3, 6, 1), v2c.Null(""))], error_status=5, error_index=1),
        pysnmp_message(VARBINDS[1:2], community=b""),
    ]


def test_answers_read_as_pysnmp_reads_them() -> None:
    ours, theirs = PysnmpCodec(), PysnmpCodec()
    for data in _messages():
        assert ours.decode_reply(data) == theirs.decode_reply(data) is not None
    reply = ours.decode_reply(_messages()[0])
    assert reply is not None and reply.varbinds[-1][1] is Special.NO_SUCH_OBJECT
    assert reply.varbinds[14][0] == (2, 999, 3) and reply.varbinds[15][1] == (1, 39, 2**32 - 1)


def test_what_is_not_an_answer_is_none() -> None:
    codec = V2cCodec()
    data = _messages()[0]
    for bad in (
        b"",
        b"\x30",
        data[:-1],
        data + b"\x00",  # bytes after the message: pysnmp ignores them, so do we (checked below)
        b"\x30\x03\x02\x01\x03",  # SNMPv3
        b"\x04\x00",
        b"GET / HTTP/1.0\r\n\r\n",
        b"\x30\x80\x02\x01\x01",  # indefinite length
        pysnmp_message([], pdu=v2c.GetRequestPDU()),
    ):
        if bad == data + b"\x00":
            assert codec.decode_reply(bad) == codec.decode_reply(data)
            continue
        assert codec.decode_reply(bad) is None, bad
    # a damaged datagram: never an exception, and what pysnmp reads as an answer is read the same
    rng = random.Random(7)
    theirs = PysnmpCodec()
    agreed = 0
    for _ in range(2000):
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        sample = bytes(damaged[: rng.randint(0, len(damaged))] if rng.random() < 0.3 else damaged)
        expected = theirs.decode_reply(sample)
        reply = codec.decode_reply(sample)
        if expected is not None:
            assert reply == expected
            agreed += 1
    assert agreed > 100


@pytest.mark.parametrize("request_id", [1, 127, 128, 65_535, 2**31 - 1])
def test_requests_are_the_bytes_pysnmp_sends(request_id: int) -> None:
    ours, theirs = PysnmpCodec(), PysnmpCodec()
    oids = [(1, 3, 6, 1, 2, 1, 1, 1), (1, 3, 6, 1, 4, 1, 2**32 - 1, 0), (2, 100, 7), (0, 0)]
    for kind, non_rep, max_rep in ((RequestKind.GET_BULK, 1, 300), (RequestKind.GET, 2, 9)):
        for _ in range(2):  # the second time from the cached template
            args = {"community": b"pub", "request_id": request_id, "oids": oids, "kind": kind}
            assert ours.encode_request(**args, non_repeaters=non_rep, max_repetitions=max_rep) == (
                theirs.encode_request(**args, non_repeaters=non_rep, max_repetitions=max_rep)
            )
    long = [(1, 3, 6, 1, 2, 1, 2, 2, 1, n) for n in range(1, 40)]
    assert ours.encode_request(community=b"c" * 200, request_id=3, oids=long) == theirs.encode_request(
        community=b"c" * 200, request_id=3, oids=long
    )


@pytest.mark.parametrize("truncate", [1000, 7])
async def test_walk_on_the_wire_with_this_codec(truncate: int) -> None:
    endpoint, agent, port = await loopback_agent(device_mib(60), max_varbinds=truncate)
    transport = V2cTransport(RttEstimator(0.05, 0.5), port=port, codec=V2cCodec())
    transport.open()
    try:
        facts = await collect(
            V2cSession(transport, "127.0.0.1", COMMUNITY.decode(), retries=0), max_requests=400
        )
        expected = await collect(FakeAgent(device_mib(60), max_varbinds=truncate), max_requests=400)
        assert facts == expected
        assert facts["requests"] == agent.requests == transport.sent > 1
        assert transport.stray == 0
    finally:
        await transport.close()
        endpoint.close()
