"""SNMP agents for tests, without a network: :class:`FakeAgent` answers a session's GET and GETBULK from a
MIB dict in memory, :class:`LoopbackAgent` serves such a MIB as a v2c agent on 127.0.0.1 (requests read
and answers built with pysnmp). The loopback agent only ever talks to the transport of the same test.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, cast

from pyasn1.codec.ber import decoder, encoder
from pysnmp.proto.api import v2c

from pdsno.snmp import Oid, Reply, RequestKind, Special, Value
from pdsno.snmp.values import from_pysnmp


class FakeAgent:
    """A GET/GETBULK-speaking agent over a sorted MIB dict; truncates answers to ``max_varbinds``."""

    version = "v2c"

    def __init__(self, mib: dict[tuple[int, ...], Value], max_varbinds: int = 1000) -> None:
        self.mib = dict(sorted(mib.items()))
        self.keys = list(self.mib)
        self.max_varbinds = max_varbinds
        self.requests = 0

    def _next(self, oid: tuple[int, ...]) -> tuple[tuple[int, ...], Value]:
        for key in self.keys:
            if key > oid:
                return key, self.mib[key]
        return oid, Special.END_OF_MIB_VIEW

    def answer_get(self, oids: Sequence[Oid]) -> list[tuple[Oid, Value]]:
        return [(oid, self.mib.get(oid, Special.NO_SUCH_OBJECT)) for oid in oids]

    def answer_bulk(
        self, non_repeaters: Sequence[Oid], repeaters: Sequence[Oid], max_repetitions: int
    ) -> list[tuple[Oid, Value]]:
        out = [self._next(oid) for oid in non_repeaters]
        current = list(repeaters)
        for _ in range(max_repetitions if repeaters else 0):
            row = [self._next(oid) for oid in current]
            out += row
            current = [oid for oid, _ in row]
        return out[: self.max_varbinds]

    async def get(self, oids: Sequence[Oid]) -> list[tuple[Oid, Value]]:
        self.requests += 1
        return self.answer_get(oids)

    async def bulk(
        self, non_repeaters: Sequence[Oid], repeaters: Sequence[Oid], max_repetitions: int
    ) -> list[tuple[Oid, Value]]:
        self.requests += 1
        return self.answer_bulk(non_repeaters, repeaters, max_repetitions)


def device_mib(interfaces: int, *, ip_mib: str = "old") -> dict[tuple[int, ...], Value]:
    """A router's MIB: system group, ``interfaces`` rows of ifTable/ifXTable, three own addresses (in
    ipAddrTable, or with ``ip_mib="new"`` in ipAddressTable only)."""
    mib: dict[tuple[int, ...], Value] = {
        (1, 3, 6, 1, 2, 1, 1, 1, 0): b"Cisco IOS Software, Version 15.2(4)M7",
        (1, 3, 6, 1, 2, 1, 1, 2, 0): (1, 3, 6, 1, 4, 1, 9, 1, 1208),
        (1, 3, 6, 1, 2, 1, 1, 3, 0): 123_456,
        (1, 3, 6, 1, 2, 1, 1, 5, 0): b"core-1\x00",
        (1, 3, 6, 1, 2, 1, 1, 7, 0): 78,
        (1, 3, 6, 1, 2, 1, 2, 1, 0): interfaces,
        (1, 3, 6, 1, 2, 1, 4, 1, 0): 1,  # something after the tables, as real agents have
    }
    for i in range(1, interfaces + 1):
        mib[(1, 3, 6, 1, 2, 1, 2, 2, 1, 1, i)] = i
        mib[(1, 3, 6, 1, 2, 1, 2, 2, 1, 2, i)] = f"GigabitEthernet0/{i}".encode()
        mib[(1, 3, 6, 1, 2, 1, 2, 2, 1, 5, i)] = 4_294_967_295 if i == 1 else 1_000_000_000
        mib[(1, 3, 6, 1, 2, 1, 2, 2, 1, 6, i)] = bytes([0x00, 0x1B, 0x54, 0x00, 0x00, i])
        mib[(1, 3, 6, 1, 2, 1, 2, 2, 1, 7, i)] = 1
        mib[(1, 3, 6, 1, 2, 1, 2, 2, 1, 8, i)] = 1 if i % 2 else 2
        mib[(1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 1, i)] = f"Gi0/{i}".encode()
        mib[(1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 15, i)] = 10_000 if i == 1 else 1_000
    addresses = [(10, 0, 0, 1, 1), (10, 0, 1, 1, 2), (127, 0, 0, 1, 99)]
    for *octets, if_index in addresses:
        if ip_mib == "old":
            mib[(1, 3, 6, 1, 2, 1, 4, 20, 1, 1, *octets)] = bytes(octets)
            mib[(1, 3, 6, 1, 2, 1, 4, 20, 1, 2, *octets)] = if_index
        else:
            mib[(1, 3, 6, 1, 2, 1, 4, 34, 1, 3, 1, 4, *octets)] = if_index
    return mib


COMMUNITY = b"s3cret"


def pysnmp_value(value: Value) -> Any:
    if isinstance(value, Special):
        return {
            Special.NO_SUCH_OBJECT: v2c.NoSuchObject,
            Special.NO_SUCH_INSTANCE: v2c.NoSuchInstance,
            Special.END_OF_MIB_VIEW: v2c.EndOfMibView,
        }[value]("")
    if isinstance(value, bytes):
        return v2c.OctetString(value)
    if isinstance(value, tuple):
        return v2c.ObjectIdentifier(value)
    if isinstance(value, int):
        return v2c.Integer(value) if -(2**31) <= value < 2**31 else v2c.Counter64(value)
    return v2c.Null("")


def pysnmp_message(
    varbinds: Sequence[tuple[Oid, Any]],
    *,
    request_id: int = 7,
    community: bytes = COMMUNITY,
    pdu: Any = None,
    error_status: int = 0,
    error_index: int = 0,
) -> bytes:
    """A v2c message built with pysnmp (a Response PDU unless ``pdu`` is given)."""
    msg = v2c.Message()
    v2c.apiMessage.set_defaults(msg)
    v2c.apiMessage.set_community(msg, community)
    pdu = v2c.ResponsePDU() if pdu is None else pdu
    v2c.apiPDU.set_defaults(pdu)
    v2c.apiPDU.set_request_id(pdu, request_id)
    v2c.apiPDU.set_error_status(pdu, error_status)
    v2c.apiPDU.set_error_index(pdu, error_index)
    v2c.apiPDU.set_varbinds(pdu, list(varbinds))
    v2c.apiMessage.set_pdu(msg, pdu)
    return bytes(encoder.encode(msg))


class PysnmpCodec:
    """pysnmp's own v2c codec (its message API and pyasn1's BER): the oracle the runtime's plain-BER
    :class:`~pdsno.snmp.V2cCodec` is held to, byte for byte."""

    def encode_request(
        self,
        *,
        community: bytes,
        request_id: int,
        oids: Sequence[Oid],
        kind: RequestKind = RequestKind.GET,
        non_repeaters: int = 0,
        max_repetitions: int = 0,
    ) -> bytes:
        if kind is RequestKind.GET_BULK:
            pdu = v2c.GetBulkRequestPDU()
            v2c.apiBulkPDU.set_defaults(pdu)
            v2c.apiBulkPDU.set_non_repeaters(pdu, non_repeaters)
            v2c.apiBulkPDU.set_max_repetitions(pdu, max_repetitions)
        else:
            pdu = v2c.GetRequestPDU()
            v2c.apiPDU.set_defaults(pdu)
        v2c.apiPDU.set_request_id(pdu, request_id)
        v2c.apiPDU.set_varbinds(pdu, [(oid, v2c.null) for oid in oids])
        message = v2c.Message()
        v2c.apiMessage.set_defaults(message)
        v2c.apiMessage.set_community(message, community)
        v2c.apiMessage.set_pdu(message, pdu)
        return bytes(encoder.encode(message))

    def decode_reply(self, data: bytes) -> Reply | None:
        try:
            message, _rest = decoder.decode(data, asn1Spec=v2c.Message())
            if int(v2c.apiMessage.get_version(message)) not in (0, 1):
                return None
            pdu = v2c.apiMessage.get_pdu(message)
            report = isinstance(pdu, v2c.ReportPDU)
            if not report and not isinstance(pdu, v2c.ResponsePDU):
                return None
            return Reply(
                community=bytes(v2c.apiMessage.get_community(message).asOctets()),
                report=report,
                request_id=int(v2c.apiPDU.get_request_id(pdu)),
                error_status=int(v2c.apiPDU.get_error_status(pdu)),
                error_index=int(v2c.apiPDU.get_error_index(pdu, muteErrors=True)),
                varbinds=[(tuple(oid), from_pysnmp(value)) for oid, value in v2c.apiPDU.get_varbinds(pdu)],
            )
        except Exception:  # whatever pyasn1 raises on a damaged datagram: not an answer
            return None


class LoopbackAgent(asyncio.DatagramProtocol):
    """A v2c agent on 127.0.0.1 serving a :class:`FakeAgent`'s MIB, requests read and answers built with
    pysnmp. Like net-snmp it ignores a wrong community. ``mode``: ``report`` (answers a Report PDU),
    ``error`` (error-status genErr), ``strays`` (first a wrong request-id and a wrong community), ``mute``.
    """

    def __init__(self, mib: dict[Oid, Value], *, max_varbinds: int = 1000, mode: str = "") -> None:
        self.fake = FakeAgent(mib, max_varbinds)
        self.mode = mode
        self.requests = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        msg, _ = decoder.decode(data, asn1Spec=v2c.Message())
        self.requests += 1
        if bytes(v2c.apiMessage.get_community(msg)) != COMMUNITY or self.mode == "mute":
            return
        pdu = v2c.apiMessage.get_pdu(msg)
        rid = int(v2c.apiPDU.get_request_id(pdu))
        oids: list[Oid] = [tuple(o) for o, _ in v2c.apiPDU.get_varbinds(pdu)]
        if isinstance(pdu, v2c.GetBulkRequestPDU):
            n = int(v2c.apiBulkPDU.get_non_repeaters(pdu))
            r = int(v2c.apiBulkPDU.get_max_repetitions(pdu))
            answer = self.fake.answer_bulk(oids[:n], oids[n:], r)
        else:
            answer = self.fake.answer_get(oids)
        varbinds = [(oid, pysnmp_value(value)) for oid, value in answer]
        if self.mode == "strays":
            self.transport.sendto(pysnmp_message(varbinds, request_id=rid ^ 1), addr)
            self.transport.sendto(pysnmp_message(varbinds, request_id=rid, community=b"other"), addr)
        if self.mode == "report":
            self.transport.sendto(pysnmp_message([], request_id=rid, pdu=v2c.ReportPDU()), addr)
        elif self.mode == "error":
            self.transport.sendto(
                pysnmp_message(varbinds, request_id=rid, error_status=5, error_index=1), addr
            )
        else:
            self.transport.sendto(pysnmp_message(varbinds, request_id=rid), addr)


async def loopback_agent(
    mib: dict[Oid, Value], **kwargs: Any
) -> tuple[asyncio.DatagramTransport, LoopbackAgent, int]:
    loop = asyncio.get_running_loop()
    transport, agent = await loop.create_datagram_endpoint(
        lambda: LoopbackAgent(mib, **kwargs), local_addr=("127.0.0.1", 0)
    )
    return transport, agent, transport.get_extra_info("sockname")[1]
