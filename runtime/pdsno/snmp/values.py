"""What SNMP answers carry, made plain: OIDs as tuples and values as Python ints, bytes and tuples."""

from __future__ import annotations

import functools
import importlib
from enum import Enum
from typing import Any

Oid = tuple[int, ...]


class Special(Enum):
    """The SNMPv2 exception values a varbind can carry instead of a value (RFC 3416)."""

    NO_SUCH_OBJECT = "noSuchObject"
    NO_SUCH_INSTANCE = "noSuchInstance"
    END_OF_MIB_VIEW = "endOfMibView"


Value = int | bytes | Oid | Special | None
"""INTEGER and the unsigned types → int; OCTET STRING, IpAddress, Opaque, BITS → bytes; OID → tuple;
NULL → None."""


@functools.cache
def _pyasn1_types() -> tuple[Any, Any, Any, Any, dict[type, Special]]:
    univ = importlib.import_module("pyasn1.type.univ")
    rfc1905 = importlib.import_module("pysnmp.proto.rfc1905")
    specials = {
        rfc1905.NoSuchObject: Special.NO_SUCH_OBJECT,
        rfc1905.NoSuchInstance: Special.NO_SUCH_INSTANCE,
        rfc1905.EndOfMibView: Special.END_OF_MIB_VIEW,
    }
    return univ.Null, univ.OctetString, univ.Integer, univ.ObjectIdentifier, specials


def from_pysnmp(value: Any) -> Value:
    """A value pysnmp's engine returned (a pyasn1 object) in its plain form (the v3 sessions' answers)."""
    null, octets, integer, oid, specials = _pyasn1_types()
    if isinstance(value, null):  # before OctetString: pyasn1's Null is one
        return specials.get(type(value))  # noSuchObject and the others; NULL itself is None
    if isinstance(value, octets):  # OctetString, IpAddress, Opaque, Bits
        return bytes(value.asOctets())
    if isinstance(value, integer):  # Integer32, Counter32/64, Gauge32, TimeTicks, Unsigned32
        return int(value)
    if isinstance(value, oid):
        return tuple(value.asTuple())
    return None
