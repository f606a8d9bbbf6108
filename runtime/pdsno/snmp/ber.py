"""SNMPv2c messages in plain BER (X.690): what :class:`~pdsno.snmp.V2cTransport` writes and reads.

GetRequest and GetBulkRequest go out; Response and Report come in, with the value types of RFC 2578/3416.
Anything else, or malformed BER, is "not an answer" (``None``). pysnmp's own codec (pyasn1) decodes at
~0.1 ms a varbind: a /24 with interface tables walked is ~200 GETBULK answers of ~40 varbinds, over a second
of CPU on the event loop that also times ARP and ICMP; this codec takes a few microseconds a varbind and
imports nothing of pysnmp. The tests hold it to byte-for-byte agreement with pysnmp's codec.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from pdsno.snmp.values import Oid, Special, Value

_INTEGER = 0x02
_OCTET_STRING = 0x04
_NULL = 0x05
_OID = 0x06
_SEQUENCE = 0x30
_GET = 0xA0
_RESPONSE = 0xA2
_GET_BULK = 0xA5
_REPORT = 0xA8
_UNSIGNED = frozenset((0x41, 0x42, 0x43, 0x46))  # Counter32, Gauge32/Unsigned32, TimeTicks, Counter64
_OCTETS = frozenset((_OCTET_STRING, 0x40, 0x44))  # OCTET STRING (and BITS), IpAddress, Opaque
_SPECIALS = {
    0x80: Special.NO_SUCH_OBJECT,
    0x81: Special.NO_SUCH_INSTANCE,
    0x82: Special.END_OF_MIB_VIEW,
}


class RequestKind(Enum):
    GET = "get"
    GET_BULK = "getbulk"


@dataclass(frozen=True, slots=True)
class Reply:
    """A community Response (or Report) PDU, its values made plain."""

    community: bytes
    report: bool
    """A Report PDU: the agent refused the message rather than answering it."""
    request_id: int
    error_status: int
    error_index: int
    varbinds: list[tuple[Oid, Value]]


class BerError(ValueError):
    """Not well-formed BER (or not what an SNMP answer holds)."""


# ------------------------------------------------------------------------------------------- encoding


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def _tlv(tag: int, body: bytes) -> bytes:
    return bytes((tag,)) + _length(len(body)) + body


def _integer(value: int) -> bytes:
    size = (value if value >= 0 else ~value).bit_length() // 8 + 1
    return _tlv(_INTEGER, value.to_bytes(size, "big", signed=True))


def _oid(oid: Oid) -> bytes:
    if len(oid) < 2 or oid[0] > 2 or (oid[0] < 2 and oid[1] >= 40) or min(oid) < 0:
        raise BerError(f"not an encodable OID: {oid}")
    out = bytearray()
    for arc in (oid[0] * 40 + oid[1], *oid[2:]):
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return _tlv(_OID, bytes(out))


# ------------------------------------------------------------------------------------------- decoding


def _header(data: bytes, at: int, end: int) -> tuple[int, int, int]:
    """(tag, start of the contents, end of the contents) of the TLV at ``at``."""
    if at + 2 > end:
        raise BerError("truncated")
    tag, first = data[at], data[at + 1]
    if tag & 0x1F == 0x1F:
        raise BerError("high tag number")
    if first < 0x80:
        start, size = at + 2, first
    else:
        n = first & 0x7F
        if n == 0 or n > 4:
            raise BerError("indefinite or oversized length")
        start = at + 2 + n
        size = int.from_bytes(data[at + 2 : start], "big")
    stop = start + size
    if start > end or stop > end:
        raise BerError("truncated")
    return tag, start, stop


def _int_at(data: bytes, at: int, end: int) -> tuple[int, int]:
    tag, start, stop = _header(data, at, end)
    if tag != _INTEGER or start == stop:
        raise BerError("INTEGER expected")
    return int.from_bytes(data[start:stop], "big", signed=True), stop


def _decode_oid(data: bytes, start: int, stop: int) -> Oid:
    if start == stop:
        raise BerError("empty OID")
    arcs: list[int] = []
    arc = 0
    for byte in data[start:stop]:
        arc = (arc << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(arc)
            arc = 0
    if data[stop - 1] & 0x80:
        raise BerError("OID ends inside an arc")
    first = arcs[0]
    head = (0, first) if first < 40 else (1, first - 40) if first < 80 else (2, first - 80)
    return (*head, *arcs[1:])


def _value(tag: int, data: bytes, start: int, stop: int) -> Value:
    if tag == _INTEGER:
        if start == stop:
            raise BerError("empty INTEGER")
        return int.from_bytes(data[start:stop], "big", signed=True)
    if tag in _OCTETS:
        return data[start:stop]
    if tag in _UNSIGNED:
        # signed as BER says; an agent that leaves out the leading zero of a big counter meant it unsigned
        if start == stop:
            raise BerError("empty number")
        number = int.from_bytes(data[start:stop], "big", signed=True)
        return number if number >= 0 else number + (1 << (8 * (stop - start)))
    if tag == _OID:
        return _decode_oid(data, start, stop)
    if tag == _NULL:
        return None
    if tag in _SPECIALS:
        return _SPECIALS[tag]
    raise BerError(f"value tag {tag:#x}")


class V2cCodec:
    """Community messages: requests out, Response and Report PDUs in. A request's bytes but its
    request-id are kept per distinct (community, PDU, OIDs): the system GET and the first GETBULK are the
    same for every host of a community."""

    TEMPLATES = 256
    """Requests kept for re-use (table continuations differ per host and are not worth keeping)."""

    def __init__(self) -> None:
        self._templates: dict[tuple[object, ...], tuple[bytes, bytes]] = {}

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
        if kind is RequestKind.GET:
            non_repeaters = max_repetitions = 0
        key = (community, kind, tuple(oids), non_repeaters, max_repetitions)
        parts = self._templates.get(key)
        if parts is None:
            null = _tlv(_NULL, b"")
            varbinds = _tlv(_SEQUENCE, b"".join(_tlv(_SEQUENCE, _oid(oid) + null) for oid in oids))
            parts = (_integer(1) + _tlv(_OCTET_STRING, community), _integer(non_repeaters)
                     + _integer(max_repetitions) + varbinds)  # fmt: skip
            if len(self._templates) >= self.TEMPLATES:
                del self._templates[next(iter(self._templates))]
            self._templates[key] = parts
        head, tail = parts
        pdu = _tlv(_GET_BULK if kind is RequestKind.GET_BULK else _GET, _integer(request_id) + tail)
        return _tlv(_SEQUENCE, head + pdu)

    def decode_reply(self, data: bytes) -> Reply | None:
        try:
            return self._decode(data)
        except (BerError, IndexError):
            return None

    @staticmethod
    def _decode(data: bytes) -> Reply | None:
        tag, start, end = _header(data, 0, len(data))
        if tag != _SEQUENCE:
            return None
        version, at = _int_at(data, start, end)
        if version not in (0, 1):
            return None
        tag, cstart, cstop = _header(data, at, end)
        if tag != _OCTET_STRING:
            return None
        community = data[cstart:cstop]
        tag, at, pdu_end = _header(data, cstop, end)
        if tag not in (_RESPONSE, _REPORT):
            return None
        request_id, at = _int_at(data, at, pdu_end)
        error_status, at = _int_at(data, at, pdu_end)
        error_index, at = _int_at(data, at, pdu_end)
        tag, at, list_end = _header(data, at, pdu_end)
        if tag != _SEQUENCE:
            return None
        varbinds: list[tuple[Oid, Value]] = []
        while at < list_end:
            tag, vstart, vstop = _header(data, at, list_end)
            if tag != _SEQUENCE:
                raise BerError("varbind expected")
            tag, ostart, ostop = _header(data, vstart, vstop)
            if tag != _OID:
                raise BerError("varbind name expected")
            tag, start, stop = _header(data, ostop, vstop)
            varbinds.append((_decode_oid(data, ostart, ostop), _value(tag, data, start, stop)))
            at = vstop
        return Reply(
            community=bytes(community),
            report=data[cstop] == _REPORT,
            request_id=request_id,
            error_status=error_status,
            error_index=error_index,
            varbinds=varbinds,
        )
