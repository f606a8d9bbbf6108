"""Sessions: one credential towards one agent, able to GET and GETBULK (what discovery walks tables with);
v2c over the shared transport, SNMPv3 through pysnmp's engine."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from pdsno.snmp.ber import Reply, RequestKind
from pdsno.snmp.credentials import SnmpV3Credential
from pdsno.snmp.errors import SnmpAuthFailure, SnmpPduError, SnmpTimeout
from pdsno.snmp.v2c import V2cTransport
from pdsno.snmp.v3 import V3Client, hlapi, timed_out, usm_user
from pdsno.snmp.values import Oid, Value, from_pysnmp


class BulkSession(Protocol):
    """One credential towards one agent, able to do a GET and a GETBULK."""

    version: str
    requests: int

    async def get(self, oids: Sequence[Oid]) -> list[tuple[Oid, Value]]: ...

    async def bulk(
        self, non_repeaters: Sequence[Oid], repeaters: Sequence[Oid], max_repetitions: int
    ) -> list[tuple[Oid, Value]]: ...


class V2cSession:
    version = "v2c"

    def __init__(self, transport: V2cTransport, ip: str, community: str, retries: int) -> None:
        self.transport = transport
        self.ip = ip
        self.community = community.encode()
        self.retries = retries
        self.requests = 0

    async def _ask(self, oids: Sequence[Oid], kind: RequestKind, non_rep: int, max_rep: int) -> Reply:
        for attempt in range(self.retries + 1):
            self.requests += 1
            try:
                reply = await self.transport.request(
                    self.ip,
                    self.community,
                    oids,
                    kind=kind,
                    non_repeaters=non_rep,
                    max_repetitions=max_rep,
                )
            except SnmpTimeout:
                if attempt == self.retries:
                    raise
                continue
            if reply.report:
                raise SnmpAuthFailure("report PDU")
            if reply.error_status:
                raise SnmpPduError(reply.error_status, reply.error_index)
            return reply
        raise SnmpTimeout("timeout")  # pragma: no cover - the loop returns or raises

    async def get(self, oids: Sequence[Oid]) -> list[tuple[Oid, Value]]:
        return (await self._ask(oids, RequestKind.GET, 0, 0)).varbinds

    async def bulk(
        self, non_repeaters: Sequence[Oid], repeaters: Sequence[Oid], max_repetitions: int
    ) -> list[tuple[Oid, Value]]:
        oids = [*non_repeaters, *repeaters]
        reply = await self._ask(oids, RequestKind.GET_BULK, len(non_repeaters), max_repetitions)
        return reply.varbinds


class V3Session:
    version = "v3"

    def __init__(self, engine: Any, target: Any, credential: SnmpV3Credential) -> None:
        self.engine = engine
        self.target = target
        self.credential = credential
        self.user = usm_user(credential)
        self.requests = 0

    @classmethod
    async def open(cls, client: V3Client, ip: str, credential: SnmpV3Credential) -> V3Session:
        engine = await client.engine()
        return cls(engine, await client.target(ip), credential)

    def _check(self, error_indication: Any, error_status: Any, error_index: Any) -> None:
        if error_indication:
            if timed_out(error_indication):
                raise SnmpTimeout("timeout")
            raise SnmpAuthFailure(str(error_indication))
        if error_status and int(error_status):
            raise SnmpPduError(int(error_status), int(error_index or 0))

    async def get(self, oids: Sequence[Oid]) -> list[tuple[Oid, Value]]:
        hl = hlapi()

        self.requests += 1
        objects = [hl.ObjectType(hl.ObjectIdentity(oid)) for oid in oids]
        result = await hl.get_cmd(
            self.engine, self.user, self.target, hl.ContextData(), *objects, lookupMib=False
        )
        return self._varbinds(result)

    async def bulk(
        self, non_repeaters: Sequence[Oid], repeaters: Sequence[Oid], max_repetitions: int
    ) -> list[tuple[Oid, Value]]:
        hl = hlapi()

        self.requests += 1
        objects = [hl.ObjectType(hl.ObjectIdentity(oid)) for oid in (*non_repeaters, *repeaters)]
        result = await hl.bulk_cmd(
            self.engine,
            self.user,
            self.target,
            hl.ContextData(),
            len(non_repeaters),
            max_repetitions,
            *objects,
            lookupMib=False,
        )
        return self._varbinds(result)

    def _varbinds(self, result: Any) -> list[tuple[Oid, Value]]:
        self._check(*result[:3])
        return [(tuple(int(arc) for arc in vb[0]), from_pysnmp(vb[1])) for vb in result[3]]
