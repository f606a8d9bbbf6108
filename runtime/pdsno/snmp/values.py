"""What SNMP answers carry, made plain: OIDs as tuples and values as Python ints, bytes and tuples."""

from __future__ import annotations

from enum import Enum

Oid = tuple[int, ...]


class Special(Enum):
    """The SNMPv2 exception values a varbind can carry instead of a value (RFC 3416)."""

    NO_SUCH_OBJECT = "noSuchObject"
    NO_SUCH_INSTANCE = "noSuchInstance"
    END_OF_MIB_VIEW = "endOfMibView"


Value = int | bytes | Oid | Special | None
"""INTEGER and the unsigned types → int; OCTET STRING, IpAddress, Opaque, BITS → bytes; OID → tuple;
NULL → None."""
