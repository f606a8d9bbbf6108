"""The ``snmp`` executor: SNMP SET of OID/value pairs, the values read first so the rollback is automatic.

Payload: ``{"executor": "snmp", "set": {"1.3.6.1.2.1.1.6.0": "Room 4", "1.3.6.1.2.1.1.7.0": 72}}``. A
``str`` is an OCTET STRING, an ``int`` an Integer32; other SNMP types take the typed form
``{"type": T, "value": V}`` with net-snmp's type letters (``snmpset``): ``i`` Integer32, ``u`` Unsigned32
(Gauge32), ``t`` TimeTicks, ``a`` IpAddress, ``o`` OBJECT IDENTIFIER, ``s`` OCTET STRING, ``x`` OCTET STRING
given in hex. Values are kept in one canonical form (plain ``str`` and ``int`` where that says it all), so
a diff compares like with like and a rollback payload sets back exactly the type that was read.

``plan`` GETs every OID (an OID the device does not hold is refused: a SET could not be undone);
``commit`` sends one SET PDU with every varbind, so the agent applies all or none (RFC 3416 4.2.5);
``verify`` GETs again. Write credentials (v2c communities, SNMPv3 users) are tried in order; pysnmp's
v3arch engine (:class:`pdsno.snmp.V3Client`) carries both. Building one costs ~70 ms off the event loop,
so a controller hands its executors one client it keeps (plan, commit and verify then pay for no engine);
without one, each device operation builds and closes its own.
"""

from __future__ import annotations

import importlib
import ipaddress
import logging
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, TypeVar

from pdsno.changes.executors.base import DevicePlan, FieldChange
from pdsno.errors import PdsnoError, ReasonCode
from pdsno.nib.models import Device
from pdsno.snmp import SnmpCredentials, V3Client, hlapi, timed_out, usm_user

log = logging.getLogger(__name__)

_OID_RE = re.compile(r"\.?(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*)){1,127}")
MAX_VARBINDS = 64
"""One SET PDU per device: beyond this many OIDs it may not fit an agent's message size (484 octets
minimum, RFC 3417); a change that big belongs in a playbook."""
TYPES = ("i", "u", "t", "a", "o", "s", "x")
_INT32 = (-(2**31), 2**31 - 1)
_UINT32 = (0, 2**32 - 1)
_EXCEPTION_VALUES = {
    "NoSuchObject": "noSuchObject",
    "NoSuchInstance": "noSuchInstance",
    "EndOfMibView": "endOfMibView",
}
_MISSING = frozenset({"noSuchName", "noSuchObject", "noSuchInstance"})
"""What an agent says of an OID it does not hold (SNMPv1 error-status; v2c exception values)."""
_RETRYABLE = frozenset(
    {"noAccess", "authorizationError", "noSuchName", "readOnly", "noSuchObject", "noSuchInstance"}
)
"""What another credential may do better: a refusal, or no such object (VACM hides what is outside a
view). Other error-statuses are about the value itself. An OID no credential can read is refused: a SET
of it could not be undone."""

T = TypeVar("T")
Canonical = str | int | dict[str, Any]
"""A value as payloads, diffs and rollbacks carry it: ``str``/``int`` for OCTET STRING/Integer32 (the
string printable UTF-8), else ``{"type": letter, "value": ...}``."""


def normalise_oid(oid: str) -> str:
    """``.1.3.6...`` and ``1.3.6...`` are one OID; the plain dotted form without the leading dot."""
    if not isinstance(oid, str) or _OID_RE.fullmatch(oid) is None:
        raise PdsnoError(
            f"{oid!r} is not a numeric OID like 1.3.6.1.2.1.1.6.0", code=ReasonCode.INVALID_REQUEST
        )
    return oid.lstrip(".")


def _bounded(value: Any, low: int, high: int, oid: str, kind: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise PdsnoError(f"{oid}: {value!r} is not a {kind} ({low}..{high})", code=ReasonCode.INVALID_REQUEST)
    return value


def canonical_value(oid: str, value: Any) -> Canonical:
    """A payload value checked and put in canonical form (``PdsnoError`` ``INVALID_REQUEST`` if unusable)."""
    if isinstance(value, bool):
        raise PdsnoError(
            f"{oid}: a boolean is no SNMP value (give 1 or 2, or a string)", code=ReasonCode.INVALID_REQUEST
        )
    if isinstance(value, int):
        return _bounded(value, *_INT32, oid, "Integer32")
    if isinstance(value, str):
        return value
    if not isinstance(value, Mapping) or set(value) != {"type", "value"} or value["type"] not in TYPES:
        raise PdsnoError(
            f"{oid}: a value is a string, an integer or {{type: {'|'.join(TYPES)}, value: ...}}",
            code=ReasonCode.INVALID_REQUEST,
        )
    kind, raw = value["type"], value["value"]
    if kind == "s":
        if not isinstance(raw, str):
            raise PdsnoError(f"{oid}: type s needs a string", code=ReasonCode.INVALID_REQUEST)
        return raw
    if kind == "i":
        return _bounded(raw, *_INT32, oid, "Integer32")
    if kind in ("u", "t"):
        return {"type": kind, "value": _bounded(raw, *_UINT32, oid, "32-bit unsigned value")}
    if kind == "x":
        try:
            octets = bytes.fromhex(str(raw).replace(":", "").replace(" ", ""))
        except ValueError:
            raise PdsnoError(f"{oid}: {raw!r} is not hex octets", code=ReasonCode.INVALID_REQUEST) from None
        return _octets(octets)
    if kind == "a":
        try:
            return {"type": "a", "value": str(ipaddress.IPv4Address(str(raw)))}
        except ValueError:
            raise PdsnoError(
                f"{oid}: {raw!r} is not an IPv4 address", code=ReasonCode.INVALID_REQUEST
            ) from None
    return {"type": "o", "value": normalise_oid(str(raw))}


def _octets(octets: bytes) -> Canonical:
    """An OCTET STRING as text when it is printable UTF-8 (what an operator typed), else as hex."""
    try:
        text = octets.decode("utf-8")
    except UnicodeDecodeError:
        return {"type": "x", "value": octets.hex()}
    if text.isprintable():
        return text
    return {"type": "x", "value": octets.hex()}


class _Types:
    """pysnmp's SMI types, loaded on first use (pysnmp is imported only when SNMP is spoken)."""

    def __init__(self) -> None:
        self.rfc1902: Any = importlib.import_module("pysnmp.proto.rfc1902")
        self.rfc1905: Any = importlib.import_module("pysnmp.proto.rfc1905")
        self.univ: Any = importlib.import_module("pyasn1.type.univ")

    def to_snmp(self, value: Canonical) -> Any:
        t = self.rfc1902
        if isinstance(value, str):
            return t.OctetString(value.encode("utf-8"))
        if isinstance(value, int):
            return t.Integer32(value)
        kind, raw = value["type"], value["value"]
        if kind == "x":
            return t.OctetString(bytes.fromhex(raw))
        return {"u": t.Unsigned32, "t": t.TimeTicks, "a": t.IpAddress, "o": t.ObjectIdentifier}[kind](raw)

    def from_snmp(self, oid: str, value: Any) -> Canonical:
        """What a GET returned, canonical; an exception value (noSuchObject...) fails the read."""
        t, univ = self.rfc1902, self.univ
        if isinstance(
            value, self.rfc1905.NoSuchObject | self.rfc1905.NoSuchInstance | self.rfc1905.EndOfMibView
        ):
            raise SnmpFailure(_EXCEPTION_VALUES[value.__class__.__name__], oid)
        # the application types first: each is also one of the universal types below
        if isinstance(value, t.IpAddress):
            return {"type": "a", "value": str(ipaddress.IPv4Address(bytes(value.asOctets())))}
        if isinstance(value, t.TimeTicks):
            return {"type": "t", "value": int(value)}
        if isinstance(value, t.Unsigned32 | t.Gauge32):
            return {"type": "u", "value": int(value)}
        if isinstance(value, t.Counter32 | t.Counter64 | t.Opaque | t.Bits):
            raise SnmpFailure(f"{value.__class__.__name__} (a type a rollback cannot set back)", oid)
        if isinstance(value, univ.OctetString):
            return _octets(bytes(value.asOctets()))
        if isinstance(value, univ.ObjectIdentifier):
            return {"type": "o", "value": ".".join(str(arc) for arc in value.asTuple())}
        if isinstance(value, univ.Integer):
            return int(value)
        raise SnmpFailure(f"unexpected {value.__class__.__name__}", oid)


_types: _Types | None = None


def _smi() -> _Types:
    global _types
    if _types is None:
        _types = _Types()
    return _types


class SnmpFailure(Exception):
    """One SNMP exchange failed; ``status`` is the error-status name, or ``timeout``/``auth``."""

    def __init__(self, status: str, oid: str | None = None) -> None:
        super().__init__(status if oid is None else f"{status} at {oid}")
        self.status = status
        self.oid = oid

    @property
    def retryable(self) -> bool:
        return self.status in _RETRYABLE or self.status in ("timeout", "auth")


class SnmpExecutor:
    """SNMP SET with the values read first; see the module docstring."""

    name = "snmp"

    def __init__(
        self,
        credentials: SnmpCredentials,
        *,
        port: int = 161,
        timeout: float = 2.0,
        retries: int = 1,
        client: V3Client | None = None,
    ) -> None:
        """``client``: an engine kept by the caller (built with the same port, timeout and retries)."""
        self.credentials = credentials
        self.port = port
        self.timeout = timeout
        self.retries = max(0, retries)
        self._client = client

    # -- the protocol -------------------------------------------------------------------------------

    def validate(self, payload: Mapping[str, Any]) -> None:
        self._wanted(payload)

    async def plan(self, device: Device, payload: Mapping[str, Any]) -> DevicePlan:
        wanted = self._wanted(payload)
        before, credential = await self._read(device, list(wanted))
        return DevicePlan(
            device_id=device.device_id,
            changes=tuple(FieldChange(oid, before[oid], after) for oid, after in wanted.items()),
            rollback_payload={"executor": self.name, "set": before},
            details={"set": wanted, "credential": credential},
        )

    async def commit(self, device: Device, plan: DevicePlan) -> None:
        await self._write(device, _planned(plan), first=int(plan.details.get("credential", 0)))

    async def verify(self, device: Device, plan: DevicePlan) -> bool:
        wanted = _planned(plan)
        now, _ = await self._read(device, list(wanted), first=int(plan.details.get("credential", 0)))
        wrong = {oid: now[oid] for oid in wanted if now[oid] != wanted[oid]}
        if wrong:
            log.warning("%s: after the SET the device holds %s", device.device_id, wrong)
        return not wrong

    async def rollback(self, device: Device, plan: DevicePlan) -> None:
        before = self._wanted(plan.rollback_payload)
        await self._write(device, before, first=int(plan.details.get("credential", 0)))

    # -- internals ----------------------------------------------------------------------------------

    def _wanted(self, payload: Mapping[str, Any]) -> dict[str, Canonical]:
        if payload.get("executor", self.name) != self.name:
            raise PdsnoError(
                f"payload is for executor {payload.get('executor')!r}, not snmp",
                code=ReasonCode.INVALID_REQUEST,
            )
        unknown = set(payload) - {"executor", "set", "rollback", "intent"}
        if unknown:
            raise PdsnoError(
                f"snmp payload: unknown key(s) {', '.join(sorted(unknown))}", code=ReasonCode.INVALID_REQUEST
            )
        pairs = payload.get("set")
        if not isinstance(pairs, Mapping) or not pairs:
            raise PdsnoError("snmp payload: 'set' maps OIDs to values", code=ReasonCode.INVALID_REQUEST)
        if len(pairs) > MAX_VARBINDS:
            raise PdsnoError(
                f"snmp payload: {len(pairs)} OIDs, at most {MAX_VARBINDS} per change",
                code=ReasonCode.INVALID_REQUEST,
            )
        wanted: dict[str, Canonical] = {}
        for raw_oid, value in pairs.items():
            oid = normalise_oid(raw_oid)
            if oid in wanted:
                raise PdsnoError(f"snmp payload: {oid} is given twice", code=ReasonCode.INVALID_REQUEST)
            wanted[oid] = canonical_value(oid, value)
        return wanted

    def _order(self, first: int) -> Iterator[tuple[int, Any]]:
        """(index, pysnmp auth data) of every credential, ``first`` first (the one that worked in plan)."""
        hl = hlapi()
        auth: list[Any] = [hl.CommunityData(c, mpModel=1) for c in self.credentials.communities]
        auth += [usm_user(v3) for v3 in self.credentials.v3]
        order = list(range(len(auth)))
        if 0 <= first < len(order):
            order.remove(first)
            order.insert(0, first)
        for i in order:
            yield i, auth[i]

    async def _read(
        self, device: Device, oids: list[str], *, first: int = 0
    ) -> tuple[dict[str, Canonical], int]:
        """The current values of ``oids`` and the index of the credential that read them."""

        async def get(engine: Any, target: Any, auth: Any) -> dict[str, Canonical]:
            hl = hlapi()
            objects = [hl.ObjectType(hl.ObjectIdentity(oid)) for oid in oids]
            result = await hl.get_cmd(engine, auth, target, hl.ContextData(), *objects, lookupMib=False)
            varbinds = _check(result, oids)
            types = _smi()
            return {oid: types.from_snmp(oid, value) for oid, (_, value) in zip(oids, varbinds, strict=True)}

        return await self._with_credentials(device, get, first=first, code=ReasonCode.DEVICE_READ_FAILED)

    async def _write(self, device: Device, values: Mapping[str, Canonical], *, first: int) -> None:
        oids = list(values)

        async def set_(engine: Any, target: Any, auth: Any) -> None:
            hl = hlapi()
            types = _smi()
            objects = [hl.ObjectType(hl.ObjectIdentity(oid), types.to_snmp(values[oid])) for oid in oids]
            result = await hl.set_cmd(engine, auth, target, hl.ContextData(), *objects, lookupMib=False)
            _check(result, oids)

        await self._with_credentials(device, set_, first=first, code=ReasonCode.DEVICE_WRITE_FAILED)

    async def _with_credentials(
        self,
        device: Device,
        operation: Callable[[Any, Any, Any], Awaitable[T]],
        *,
        first: int,
        code: ReasonCode,
    ) -> tuple[T, int]:
        """``operation(engine, target, auth)`` with each credential until one is not refused; its result
        and the credential's index."""
        # checked here, not at construction: a GC or RC validates payloads without holding credentials
        if self.credentials.empty:
            raise PdsnoError(
                "the snmp executor needs a write community or an SNMPv3 user", code=ReasonCode.CONFIG_INVALID
            )
        ip = device.ip_address
        if not ip:
            raise PdsnoError(
                f"{device.device_id}: no IP address to reach it by", code=ReasonCode.DEVICE_UNREACHABLE
            )
        client = self._client or V3Client(port=self.port, timeout=self.timeout, retries=self.retries)
        failures: list[SnmpFailure] = []
        try:
            engine = await client.engine()
            target = await client.target(ip)
            for index, auth in self._order(first):
                try:
                    result = await operation(engine, target, auth)
                except SnmpFailure as failure:
                    failures.append(failure)
                    if failure.retryable:
                        continue
                    break
                return result, index
        finally:
            if client is not self._client:
                await client.close()
        # what the agent said about the request beats a credential it did not know (or did not answer)
        last = next((f for f in failures if f.status not in ("timeout", "auth")), failures[-1])
        if all(f.status == "timeout" for f in failures):
            raise PdsnoError(
                f"{device.device_id} ({ip}): no SNMP answer with any of {len(failures)} credential(s)",
                code=ReasonCode.DEVICE_UNREACHABLE,
                device_id=device.device_id,
            )
        where = f" at {last.oid}" if last.oid else ""
        if last.status in _MISSING and last.oid:
            what = f"has no object {last.oid} ({last.status}): it cannot be set, nor set back"
        else:
            what = (
                f"{'SET' if code is ReasonCode.DEVICE_WRITE_FAILED else 'GET'} refused: {last.status}{where}"
            )
        raise PdsnoError(
            f"{device.device_id} ({ip}) {what}",
            code=code,
            device_id=device.device_id,
            snmp_status=last.status,
            oid=last.oid,
        )


def _planned(plan: DevicePlan) -> dict[str, Canonical]:
    wanted = plan.details.get("set")
    if not isinstance(wanted, Mapping):
        raise PdsnoError(
            f"{plan.device_id}: not a plan of the snmp executor", code=ReasonCode.INVALID_REQUEST
        )
    return dict(wanted)


def _check(result: Any, oids: list[str]) -> list[Any]:
    """pysnmp's (errorIndication, errorStatus, errorIndex, varbinds) → the varbinds, or SnmpFailure."""
    error_indication, error_status, error_index, varbinds = result
    if error_indication:
        raise SnmpFailure("timeout" if timed_out(error_indication) else "auth")
    if error_status and int(error_status):
        index = int(error_index or 0)
        status = str(error_status.prettyPrint())
        raise SnmpFailure(status, oids[index - 1] if 0 < index <= len(oids) else None)
    return list(varbinds)


__all__ = [
    "SnmpExecutor",
    "SnmpFailure",
    "canonical_value",
    "normalise_oid",
]
