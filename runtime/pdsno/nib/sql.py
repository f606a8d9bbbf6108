"""The NIB written once in SQL; a backend supplies only connections, transactions and its DDL.

SQL here uses ``:name`` parameters and the subset that SQLite and PostgreSQL share (``ON CONFLICT DO
NOTHING``, partial unique indexes, ``COALESCE``). Backends translate parameters and value types.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from types import UnionType
from typing import Any, Generic, Protocol, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel

from pdsno.audit.chain import EventSigner, seal
from pdsno.canonical import canonical_json, utcnow
from pdsno.errors import AuditError, NIBError, ReasonCode
from pdsno.metrics import nib_write_histogram
from pdsno.nib.migrations import MigrationSet
from pdsno.nib.models import (
    ConfigProposal,
    ConfigStatus,
    Controller,
    ControllerRole,
    Device,
    DeviceStatus,
    DeviceType,
    DiscoveryReport,
    Event,
    EventDraft,
    ExecutionToken,
    Interface,
    Lock,
    LockStatus,
    LockType,
    MessageKey,
    Operator,
    Policy,
    PolicyScope,
    _Entity,
    normalise_mac,
)
from pdsno.nib.store import AuditHead, BatchResult, NIBResult, RetentionPolicy

Row = dict[str, Any]
R = TypeVar("R")
E = TypeVar("E", bound=_Entity)


@dataclass(frozen=True, slots=True)
class JsonParam:
    """Marks a parameter bound for a JSON column; each backend encodes it its own way."""

    value: Any


class Tx(Protocol):
    """One open transaction."""

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> int: ...

    def one(self, sql: str, params: Mapping[str, Any] | None = None) -> Row | None: ...

    def all(self, sql: str, params: Mapping[str, Any] | None = None) -> list[Row]: ...

    def many(self, sql: str, rows: Sequence[Mapping[str, Any]]) -> None: ...

    def script(self, sql: str) -> None: ...


class Database(Protocol):
    """A backend's connections. ``run`` executes ``work`` in one transaction off the event loop."""

    backend: str
    row_lock: str
    """Suffix that locks selected rows until commit (PostgreSQL ``FOR UPDATE``; SQLite locks the file)."""

    migrations: MigrationSet

    durability_gaps: Mapping[str, str]
    """Server settings an operator chose that acknowledge a commit before it is durable: a crash of the
    server loses the last ones (PostgreSQL ``synchronous_commit``/``fsync`` off). Empty: none."""

    async def run(self, work: Callable[[Tx], R], *, write: bool) -> R: ...

    def close(self) -> None: ...


class ThreadedDatabase:
    """Runs each transaction on the backend's own worker threads: drivers block, the event loop must not."""

    _executor: ThreadPoolExecutor

    def _transaction(self, work: Callable[[Any], R], write: bool) -> R:
        raise NotImplementedError

    async def run(self, work: Callable[[Any], R], *, write: bool) -> R:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._transaction, work, write)


# --- tables --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Table(Generic[E]):
    name: str
    key: str
    model: type[E]
    exclude: frozenset[str] = frozenset()

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(f for f in self.model.model_fields if f not in self.exclude)

    @property
    def json_columns(self) -> frozenset[str]:
        return frozenset(
            name for name, info in self.model.model_fields.items() if _is_container(info.annotation)
        )

    def encode(self, entity: E) -> Row:
        json_columns = self.json_columns
        row: Row = {}
        for column in self.columns:
            value = getattr(entity, column)
            if column in json_columns:
                value = JsonParam(_jsonable(value))
            elif isinstance(value, Enum):
                value = value.value
            row[column] = value
        return row

    def decode(self, row: Row) -> E:
        return self.model.model_validate(row)

    def insert_sql(self) -> str:
        cols = self.columns
        return (
            f"INSERT INTO {self.name} ({', '.join(cols)}) VALUES ({', '.join(':' + c for c in cols)}) "
            "ON CONFLICT DO NOTHING"
        )

    def update_sql(self) -> str:
        settable = [c for c in self.columns if c not in (self.key, "version", "created_at")]
        assignments = ", ".join(f"{c} = :{c}" for c in settable)
        return (
            f"UPDATE {self.name} SET {assignments}, version = version + 1 "
            f"WHERE {self.key} = :{self.key} AND version = :version"
        )

    def select_sql(self, where: str = "", suffix: str = "") -> str:
        return (
            f"SELECT {', '.join(self.columns)} FROM {self.name}"
            + (f" WHERE {where}" if where else "")
            + suffix
        )


def _is_container(annotation: Any) -> bool:
    """``dict[...]``/``list[...]``, optional or not: what is stored in a JSON column."""
    origin = get_origin(annotation)
    if origin in (dict, list):
        return True
    return origin in (Union, UnionType) and any(_is_container(arg) for arg in get_args(annotation))


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


DEVICES = Table("devices", "device_id", Device, frozenset({"addresses", "interfaces"}))
CONTROLLERS = Table("controllers", "controller_id", Controller)
PROPOSALS = Table("config_proposals", "proposal_id", ConfigProposal)
TOKENS = Table("execution_tokens", "token_id", ExecutionToken)
POLICIES = Table("policies", "policy_id", Policy)
LOCKS = Table("locks", "lock_id", Lock)
REPORTS = Table("discovery_reports", "report_id", DiscoveryReport)
MESSAGE_KEYS = Table("message_keys", "key_id", MessageKey)
OPERATORS = Table("operators", "operator_id", Operator)

_EVENT_COLUMNS = (
    "seq, event_id, event_type, actor, subject, action, decision, timestamp, payload, notes, "
    "prev_hash, hash, signer_id, signature"
)
_IN_LIST_MAX = 500
"""Ids in one ``IN (...)`` list: far below SQLite's limit of bound parameters."""
_COUNTED_TABLES = (
    "devices", "controllers", "config_proposals", "execution_tokens", "policies", "locks",
    "discovery_reports", "events", "message_keys", "operators",
)  # fmt: skip
_TERMINAL_PROPOSAL_STATES = (
    ConfigStatus.DENIED, ConfigStatus.EXPIRED, ConfigStatus.EXECUTED, ConfigStatus.FAILED,
    ConfigStatus.ROLLED_BACK,
)  # fmt: skip


def _event_from_row(row: Row) -> Event:
    return Event.model_validate({**row, "payload": json.loads(row["payload"])})


class SqlNIBStore:
    """:class:`~pdsno.nib.store.NIBStore` over any :class:`Database`."""

    def __init__(self, db: Database, signer: EventSigner | None = None) -> None:
        self._db = db
        self._signer = signer
        self.write_seconds = nib_write_histogram()  # served by the controller's /metrics

    @property
    def backend(self) -> str:
        return self._db.backend

    @property
    def durability_gaps(self) -> Mapping[str, str]:
        return self._db.durability_gaps

    def use_signer(self, signer: EventSigner) -> None:
        """Sign from now on as ``signer`` (a controller takes its assigned id once admitted)."""
        self._signer = signer

    async def close(self) -> None:
        self._db.close()

    async def _write(self, work: Callable[[Tx], R]) -> R:
        """``work`` in one write transaction, its latency observed."""
        started = time.monotonic()
        try:
            return await self._db.run(work, write=True)
        finally:
            self.write_seconds.observe(time.monotonic() - started)

    async def schema_version(self) -> int:
        return await self._db.run(self._db.migrations.current, write=False)

    async def check_schema(self) -> None:
        """Refuse to work on a NIB that was never initialised or whose schema this code does not know."""
        current = await self.schema_version()
        latest = self._db.migrations.latest
        if current == 0:
            raise NIBError(
                "the NIB is not initialised (run 'pdsno nib init')", code=ReasonCode.NIB_NOT_INITIALISED
            )
        if current < latest:
            raise NIBError(
                f"the NIB schema is at version {current}, this pdsno needs {latest} (run 'pdsno nib migrate')",
                code=ReasonCode.NIB_SCHEMA_MISMATCH,
            )
        if current > latest:
            raise NIBError(
                f"the NIB schema is at version {current}, newer than this pdsno knows ({latest}): upgrade pdsno",
                code=ReasonCode.NIB_SCHEMA_MISMATCH,
            )

    async def migrate(self) -> list[int]:
        return await self._write(self._db.migrations.apply)

    async def stats(self) -> dict[str, Any]:
        def work(tx: Tx) -> dict[str, Any]:
            counts = {
                t: int((tx.one(f"SELECT COUNT(*) AS n FROM {t}") or {"n": 0})["n"]) for t in _COUNTED_TABLES
            }
            by_status = {
                str(r["status"]): int(r["n"])
                for r in tx.all("SELECT status, COUNT(*) AS n FROM devices GROUP BY status")
            }
            head = tx.one("SELECT seq, hash FROM audit_head WHERE id = 1") or {"seq": 0, "hash": ""}
            return {
                "backend": self.backend,
                "schema_version": self._db.migrations.current(tx),
                "tables": counts,
                "devices_by_status": by_status,
                "audit_head": {"seq": int(head["seq"]), "hash": str(head["hash"])},
            }

        return await self._db.run(work, write=False)

    # --- generic entity plumbing ------------------------------------------------------------

    def _insert(self, tx: Tx, table: Table[E], entity: E, now: datetime) -> NIBResult[E]:
        stored = entity.model_copy(update={"version": 1, "created_at": now, "updated_at": now})
        if tx.execute(table.insert_sql(), table.encode(stored)) == 0:
            return NIBResult.fail(
                ReasonCode.ALREADY_EXISTS, f"{table.name}: {getattr(entity, table.key)} already exists"
            )
        return NIBResult.ok(stored)

    def _update(self, tx: Tx, table: Table[E], entity: E, now: datetime) -> NIBResult[E]:
        """Write ``entity`` only if the stored row still has the version it was read at."""
        key = getattr(entity, table.key)
        if tx.execute(table.update_sql(), table.encode(entity.model_copy(update={"updated_at": now}))) == 1:
            return NIBResult.ok(entity.model_copy(update={"version": entity.version + 1, "updated_at": now}))
        current = tx.one(f"SELECT version FROM {table.name} WHERE {table.key} = :k", {"k": key})
        if current is None:
            return NIBResult.fail(ReasonCode.NOT_FOUND, f"{table.name}: {key} does not exist")
        return NIBResult.stale(
            f"{table.name}: {key} is at version {current['version']}, the write expected {entity.version}"
        )

    def _put(self, tx: Tx, table: Table[E], entity: E, now: datetime) -> NIBResult[E]:
        return (
            self._insert(tx, table, entity, now)
            if entity.version == 0
            else self._update(tx, table, entity, now)
        )

    async def _mutate(
        self, work: Callable[[Tx, datetime], NIBResult[E]], events: Sequence[EventDraft]
    ) -> NIBResult[E]:
        """Run ``work`` and, only if it succeeded, append ``events`` in the same transaction."""

        def tx_work(tx: Tx) -> NIBResult[E]:
            now = utcnow()
            result = work(tx, now)
            if result.success and events:
                self._append(tx, events, now)
            return result

        if events:
            self._require_signer()
        return await self._write(tx_work)

    async def _get(self, table: Table[E], key: str) -> E | None:
        def work(tx: Tx) -> E | None:
            row = tx.one(table.select_sql(f"{table.key} = :k"), {"k": key})
            return table.decode(row) if row else None

        return await self._db.run(work, write=False)

    async def _list(self, table: Table[E], filters: Mapping[str, Any], suffix: str = "") -> list[E]:
        present = {k: (v.value if isinstance(v, Enum) else v) for k, v in filters.items() if v is not None}
        where = " AND ".join(f"{k} = :{k}" for k in present)

        def work(tx: Tx) -> list[E]:
            return [table.decode(r) for r in tx.all(table.select_sql(where, suffix), present)]

        return await self._db.run(work, write=False)

    # --- devices ----------------------------------------------------------------------------

    def _load_devices(self, tx: Tx, where: str, params: Mapping[str, Any]) -> list[Device]:
        rows = tx.all(DEVICES.select_sql(where, " ORDER BY device_id"), params)
        if not rows:
            return []
        subset = f"device_id IN (SELECT device_id FROM devices WHERE {where})" if where else "1 = 1"
        addresses: dict[str, list[str]] = {}
        for r in tx.all(
            f"SELECT device_id, ip_address FROM device_addresses WHERE {subset} ORDER BY ip_address", params
        ):
            addresses.setdefault(r["device_id"], []).append(r["ip_address"])
        interfaces: dict[str, list[Interface]] = {}
        for r in tx.all(
            "SELECT device_id, if_index, name, mac_address, admin_up, oper_up, speed_bps FROM device_interfaces "
            f"WHERE {subset} ORDER BY if_index",
            params,
        ):
            device_id = r.pop("device_id")
            interfaces.setdefault(device_id, []).append(Interface.model_validate(r))
        return [
            Device.model_validate(
                {
                    **r,
                    "addresses": addresses.get(r["device_id"], []),
                    "interfaces": interfaces.get(r["device_id"], []),
                }
            )
            for r in rows
        ]

    @staticmethod
    def _write_device_children(tx: Tx, devices: Sequence[Device], replaced: Sequence[str]) -> None:
        """The addresses and interfaces of ``devices``, those of ``replaced`` (device ids) first removed:
        a few statements for a whole batch, not three per device (at the GC of 100k devices, one round
        trip per device to PostgreSQL each)."""
        for start in range(0, len(replaced), _IN_LIST_MAX):
            ids = {f"d{n}": d for n, d in enumerate(replaced[start : start + _IN_LIST_MAX])}
            in_list = ", ".join(f":{name}" for name in ids)
            tx.execute(f"DELETE FROM device_addresses WHERE device_id IN ({in_list})", ids)
            tx.execute(f"DELETE FROM device_interfaces WHERE device_id IN ({in_list})", ids)
        addresses = [{"device_id": d.device_id, "ip_address": a} for d in devices for a in d.addresses]
        if addresses:
            tx.many(
                "INSERT INTO device_addresses (device_id, ip_address) VALUES (:device_id, :ip_address)",
                addresses,
            )
        interfaces = [{"device_id": d.device_id, **i.model_dump()} for d in devices for i in d.interfaces]
        if interfaces:
            tx.many(
                "INSERT INTO device_interfaces (device_id, if_index, name, mac_address, admin_up, oper_up, speed_bps) "
                "VALUES (:device_id, :if_index, :name, :mac_address, :admin_up, :oper_up, :speed_bps)",
                interfaces,
            )

    def _put_device(self, tx: Tx, device: Device, now: datetime) -> tuple[NIBResult[Device], Device]:
        """The device row written (children not yet), and the device as stored, children included."""
        addresses = set(device.addresses) | ({device.ip_address} if device.ip_address else set())
        stamped = device.model_copy(
            update={
                "first_seen": device.first_seen or now,
                "last_seen": device.last_seen or now,
                "addresses": sorted(addresses),
            }
        )
        return self._put(tx, DEVICES, stamped, now), stamped

    def _write_device(self, tx: Tx, device: Device, now: datetime) -> NIBResult[Device]:
        result, stamped = self._put_device(tx, device, now)
        if result.success:
            self._write_device_children(tx, [stamped], [device.device_id] if device.version != 0 else [])
        return result

    async def get_device(self, device_id: str) -> Device | None:
        found = await self._db.run(
            lambda tx: self._load_devices(tx, "device_id = :k", {"k": device_id}), write=False
        )
        return found[0] if found else None

    async def get_device_by_mac(self, mac_address: str) -> Device | None:
        mac = normalise_mac(mac_address)
        found = await self._db.run(
            lambda tx: self._load_devices(tx, "mac_address = :m", {"m": mac}), write=False
        )
        return found[0] if found else None

    async def get_devices(self, device_ids: Iterable[str]) -> dict[str, Device]:
        return {d.device_id: d for d in await self._load_devices_where_in("device_id", device_ids)}

    async def get_devices_by_mac(self, mac_addresses: Iterable[str]) -> dict[str, Device]:
        macs = (normalise_mac(m) for m in mac_addresses)
        return {d.mac_address: d for d in await self._load_devices_where_in("mac_address", macs)}

    async def _load_devices_where_in(self, column: str, values: Iterable[str]) -> list[Device]:
        wanted = list(dict.fromkeys(values))

        def work(tx: Tx) -> list[Device]:
            found: list[Device] = []
            for start in range(0, len(wanted), _IN_LIST_MAX):
                names = {f"v{n}": v for n, v in enumerate(wanted[start : start + _IN_LIST_MAX])}
                in_list = ", ".join(f":{name}" for name in names)
                found += self._load_devices(tx, f"{column} IN ({in_list})", names)
            return found

        return await self._db.run(work, write=False) if wanted else []

    async def list_devices(
        self,
        *,
        region: str | None = None,
        local_controller: str | None = None,
        status: DeviceStatus | None = None,
        vendor: str | None = None,
        device_type: DeviceType | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Device]:
        filters = {
            "region": region,
            "local_controller": local_controller,
            "status": status and status.value,
            "vendor": vendor,
            "device_type": device_type and device_type.value,
        }
        present = {k: v for k, v in filters.items() if v is not None}
        where = " AND ".join(f"{k} = :{k}" for k in present)
        if limit is not None:
            # Page by device id; the children of the page come with it.
            page = "device_id IN (SELECT device_id FROM devices"
            page += f" WHERE {where}" if where else ""
            page += f" ORDER BY device_id LIMIT {int(limit)} OFFSET {int(offset)})"
            where = page
        return await self._db.run(lambda tx: self._load_devices(tx, where, present), write=False)

    async def count_devices(self, *, region: str | None = None, status: DeviceStatus | None = None) -> int:
        filters = {"region": region, "status": status and status.value}
        present = {k: v for k, v in filters.items() if v is not None}
        where = (" WHERE " + " AND ".join(f"{k} = :{k}" for k in present)) if present else ""
        row = await self._db.run(
            lambda tx: tx.one(f"SELECT COUNT(*) AS n FROM devices{where}", present), write=False
        )
        return int(row["n"]) if row else 0

    async def put_device(self, device: Device, *, events: Sequence[EventDraft] = ()) -> NIBResult[Device]:
        return await self._mutate(lambda tx, now: self._write_device(tx, device, now), events)

    async def write_devices(
        self,
        devices: Sequence[Device],
        *,
        events: Sequence[EventDraft] = (),
        events_for_written: Callable[[Sequence[Device]], Sequence[EventDraft]] | None = None,
    ) -> BatchResult[Device]:
        if events or events_for_written:
            self._require_signer()

        def work(tx: Tx) -> BatchResult[Device]:
            now = utcnow()
            batch: BatchResult[Device] = BatchResult()
            stored: list[Device] = []
            replaced: list[str] = []
            for device in devices:
                result, stamped = self._put_device(tx, device, now)
                if result.success:
                    batch.written.append(result.unwrap())
                    stored.append(stamped)
                    if device.version != 0:
                        replaced.append(device.device_id)
                else:
                    batch.refused[device.device_id] = result
            self._write_device_children(tx, stored, replaced)
            drafts = [*events, *(events_for_written(batch.written) if events_for_written else ())]
            if drafts:
                self._append(tx, drafts, now)
            return batch

        return await self._write(work)

    async def update_device_status(
        self,
        device_id: str,
        status: DeviceStatus,
        expected_version: int,
        *,
        events: Sequence[EventDraft] = (),
    ) -> NIBResult[Device]:
        def work(tx: Tx, now: datetime) -> NIBResult[Device]:
            changed = tx.execute(
                "UPDATE devices SET status = :s, updated_at = :now, version = version + 1 "
                "WHERE device_id = :d AND version = :v",
                {"s": status.value, "now": now, "d": device_id, "v": expected_version},
            )
            current = self._load_devices(tx, "device_id = :k", {"k": device_id})
            if not current:
                return NIBResult.fail(ReasonCode.NOT_FOUND, f"devices: {device_id} does not exist")
            if changed == 0:
                return NIBResult.stale(
                    f"devices: {device_id} is at version {current[0].version}, the write expected {expected_version}"
                )
            return NIBResult.ok(current[0])

        return await self._mutate(work, events)

    # --- controllers ------------------------------------------------------------------------

    async def register_controller(
        self,
        controller: Controller,
        *,
        keys: Sequence[MessageKey] = (),
        events: Sequence[EventDraft] = (),
    ) -> NIBResult[Controller]:
        """Admission's atomic step: the identity, its message keys and the audit event, or nothing."""

        def work(tx: Tx, now: datetime) -> NIBResult[Controller]:
            result = self._insert(tx, CONTROLLERS, controller, now)
            if not result.success:
                return result
            for key in keys:
                stored = self._insert(tx, MESSAGE_KEYS, key, now)
                if not stored.success:
                    raise NIBError(stored.message, code=ReasonCode.NIB_INTEGRITY)
            return result

        return await self._mutate(work, events)

    async def update_controller(
        self, controller: Controller, *, events: Sequence[EventDraft] = ()
    ) -> NIBResult[Controller]:
        return await self._mutate(lambda tx, now: self._update(tx, CONTROLLERS, controller, now), events)

    async def get_controller(self, controller_id: str) -> Controller | None:
        return await self._get(CONTROLLERS, controller_id)

    async def list_controllers(
        self, *, role: ControllerRole | None = None, region: str | None = None
    ) -> list[Controller]:
        return await self._list(CONTROLLERS, {"role": role, "region": region}, " ORDER BY controller_id")

    # --- configuration changes --------------------------------------------------------------

    async def create_proposal(
        self, proposal: ConfigProposal, *, events: Sequence[EventDraft] = ()
    ) -> NIBResult[ConfigProposal]:
        return await self._mutate(lambda tx, now: self._insert(tx, PROPOSALS, proposal, now), events)

    async def update_proposal(
        self, proposal: ConfigProposal, *, events: Sequence[EventDraft] = ()
    ) -> NIBResult[ConfigProposal]:
        return await self._mutate(lambda tx, now: self._update(tx, PROPOSALS, proposal, now), events)

    async def get_proposal(self, proposal_id: str) -> ConfigProposal | None:
        return await self._get(PROPOSALS, proposal_id)

    async def list_proposals(
        self,
        *,
        status: ConfigStatus | None = None,
        config_hash: str | None = None,
        limit: int | None = None,
        offset: int = 0,
        newest_first: bool = False,
    ) -> list[ConfigProposal]:
        page = f" LIMIT {int(limit)} OFFSET {int(offset)}" if limit is not None else ""
        order = (
            " ORDER BY created_at DESC, proposal_id DESC"
            if newest_first
            else " ORDER BY created_at, proposal_id"
        )
        return await self._list(PROPOSALS, {"status": status, "config_hash": config_hash}, order + page)

    async def count_proposals(self, *, status: ConfigStatus | None = None) -> int:
        where, params = (" WHERE status = :status", {"status": status.value}) if status else ("", {})
        row = await self._db.run(
            lambda tx: tx.one(f"SELECT COUNT(*) AS n FROM config_proposals{where}", params), write=False
        )
        return int(row["n"]) if row else 0

    async def store_token(
        self, token: ExecutionToken, *, events: Sequence[EventDraft] = ()
    ) -> NIBResult[ExecutionToken]:
        return await self._mutate(lambda tx, now: self._insert(tx, TOKENS, token, now), events)

    async def get_token(self, token_id: str) -> ExecutionToken | None:
        return await self._get(TOKENS, token_id)

    async def consume_token(
        self, token_id: str, consumer: str, *, events: Sequence[EventDraft] = ()
    ) -> NIBResult[ExecutionToken]:
        """Single use, enforced by the database: only the first redemption finds ``consumed_at`` empty."""

        def work(tx: Tx, now: datetime) -> NIBResult[ExecutionToken]:
            redeemed = tx.execute(
                "UPDATE execution_tokens SET consumed_at = :now, consumed_by = :who, updated_at = :now, "
                "version = version + 1 WHERE token_id = :t AND consumed_at IS NULL",
                {"now": now, "who": consumer, "t": token_id},
            )
            row = tx.one(TOKENS.select_sql("token_id = :t"), {"t": token_id})
            if row is None:
                return NIBResult.fail(ReasonCode.NOT_FOUND, f"execution token {token_id} does not exist")
            token = TOKENS.decode(row)
            if redeemed == 0:
                return NIBResult.fail(
                    ReasonCode.TOKEN_ALREADY_CONSUMED,
                    f"execution token {token_id} was already used by {token.consumed_by} at {token.consumed_at}",
                )
            return NIBResult.ok(token)

        return await self._mutate(work, events)

    # --- policy -----------------------------------------------------------------------------

    async def distribute_policy(
        self, policy: Policy, *, events: Sequence[EventDraft] = ()
    ) -> NIBResult[Policy]:
        """Store ``policy`` as the active one for its scope; the same version again changes nothing."""
        region = policy.target_region or ""

        def work(tx: Tx, now: datetime) -> NIBResult[Policy]:
            same = tx.one(
                POLICIES.select_sql(
                    "scope = :s AND COALESCE(target_region, '') = :r AND policy_version = :pv"
                    + self._db.row_lock
                ),
                {"s": policy.scope.value, "r": region, "pv": policy.policy_version},
            )
            if same is not None:
                return NIBResult.ok(POLICIES.decode(same))
            tx.execute(
                "UPDATE policies SET is_active = :no, updated_at = :now, version = version + 1 "
                "WHERE scope = :s AND COALESCE(target_region, '') = :r AND is_active = :yes",
                {"no": False, "yes": True, "now": now, "s": policy.scope.value, "r": region},
            )
            fresh = policy.model_copy(
                update={"is_active": True, "distributed_at": policy.distributed_at or now}
            )
            return self._insert(tx, POLICIES, fresh, now)

        return await self._mutate(work, events)

    async def get_active_policy(self, scope: PolicyScope, region: str | None = None) -> Policy | None:
        def work(tx: Tx) -> Policy | None:
            row = tx.one(
                POLICIES.select_sql("scope = :s AND COALESCE(target_region, '') = :r AND is_active = :yes"),
                {"s": scope.value, "r": region or "", "yes": True},
            )
            return POLICIES.decode(row) if row else None

        return await self._db.run(work, write=False)

    # --- audit log --------------------------------------------------------------------------

    def _require_signer(self) -> EventSigner:
        if self._signer is None:
            raise AuditError(
                "this NIB was opened without a signing key, so it cannot write audit events",
                code=ReasonCode.AUDIT_KEY_MISSING,
            )
        return self._signer

    def _append(self, tx: Tx, drafts: Sequence[EventDraft], now: datetime) -> list[Event]:
        signer = self._require_signer()
        head = tx.one("SELECT seq, hash FROM audit_head WHERE id = 1" + self._db.row_lock)
        if head is None:
            raise NIBError("the audit head row is missing", code=ReasonCode.NIB_INTEGRITY)
        seq, prev_hash = int(head["seq"]), str(head["hash"])
        sealed: list[Event] = []
        for draft in drafts:
            seq += 1
            event = seal(
                draft, seq=seq, event_id=str(uuid.uuid4()), timestamp=now, prev_hash=prev_hash, signer=signer
            )
            sealed.append(event)
            prev_hash = event.hash
        tx.many(
            f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES (:seq, :event_id, :event_type, :actor, :subject, "
            ":action, :decision, :timestamp, :payload, :notes, :prev_hash, :hash, :signer_id, :signature)",
            [
                {**e.model_dump(), "decision": e.decision.value, "payload": canonical_json(e.payload)}
                for e in sealed
            ],
        )
        tx.execute(
            "UPDATE audit_head SET seq = :seq, hash = :hash WHERE id = 1", {"seq": seq, "hash": prev_hash}
        )
        return sealed

    async def append_events(self, drafts: Sequence[EventDraft]) -> list[Event]:
        self._require_signer()
        return await self._write(lambda tx: self._append(tx, drafts, utcnow()))

    async def read_events(
        self,
        *,
        after_seq: int = 0,
        limit: int = 1000,
        actor: str | None = None,
        event_type: str | None = None,
        subject: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[Event]:
        params: dict[str, Any] = {"after": after_seq, "limit": limit}
        where = ["seq > :after"]
        for column, text in (("actor", actor), ("event_type", event_type), ("subject", subject)):
            if text is not None:
                where.append(f"{column} = :{column}")
                params[column] = text
        for bound, op, moment in (("since", ">=", since), ("until", "<=", until)):
            if moment is not None:
                where.append(f"timestamp {op} :{bound}")
                params[bound] = moment

        def work(tx: Tx) -> list[Event]:
            rows = tx.all(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE {' AND '.join(where)} ORDER BY seq LIMIT :limit",
                params,
            )
            return [_event_from_row(r) for r in rows]

        return await self._db.run(work, write=False)

    async def last_events(self, count: int) -> list[Event]:
        def work(tx: Tx) -> list[Event]:
            rows = tx.all(f"SELECT {_EVENT_COLUMNS} FROM events ORDER BY seq DESC LIMIT :n", {"n": count})
            return [_event_from_row(r) for r in reversed(rows)]

        return await self._db.run(work, write=False)

    async def events_about(self, subject: str, *, limit: int = 1000) -> list[Event]:
        """A subject's events, oldest first: a device's history, a controller's admission."""

        def work(tx: Tx) -> list[Event]:
            rows = tx.all(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE subject = :s ORDER BY seq LIMIT :limit",
                {"s": subject, "limit": limit},
            )
            return [_event_from_row(r) for r in rows]

        return await self._db.run(work, write=False)

    async def audit_head(self) -> AuditHead:
        row = await self._db.run(
            lambda tx: tx.one("SELECT seq, hash FROM audit_head WHERE id = 1"), write=False
        )
        if row is None:
            raise NIBError("the audit head row is missing", code=ReasonCode.NIB_INTEGRITY)
        return AuditHead(seq=int(row["seq"]), hash=str(row["hash"]))

    # --- locks ------------------------------------------------------------------------------

    @staticmethod
    def _expire_locks(tx: Tx, now: datetime, only: tuple[LockType, str] | None = None) -> int:
        """Mark active locks past their expiry EXPIRED: all of them, or one (type, subject)'s."""
        params: dict[str, Any] = {
            "expired": LockStatus.EXPIRED.value,
            "active": LockStatus.ACTIVE.value,
            "now": now,
        }
        subject = ""
        if only is not None:
            subject = " AND lock_type = :t AND subject_id = :s"
            params.update(t=only[0].value, s=only[1])
        return tx.execute(
            "UPDATE locks SET status = :expired, updated_at = :now, version = version + 1 "
            f"WHERE status = :active AND expires_at <= :now{subject}",
            params,
        )

    async def acquire_lock(
        self,
        subject_id: str,
        lock_type: LockType,
        holder: str,
        ttl: timedelta,
        *,
        associated_request: str | None = None,
    ) -> NIBResult[Lock]:
        """Compare-and-set on the unique index of active locks; an expired holder loses its claim first."""

        def work(tx: Tx, now: datetime) -> NIBResult[Lock]:
            self._expire_locks(tx, now, (lock_type, subject_id))
            lock = Lock(
                lock_id=str(uuid.uuid4()), lock_type=lock_type, subject_id=subject_id, held_by=holder,
                acquired_at=now, expires_at=now + ttl, associated_request=associated_request,
            )  # fmt: skip
            result = self._insert(tx, LOCKS, lock, now)
            if result.success:
                return result
            held = tx.one(
                LOCKS.select_sql("lock_type = :t AND subject_id = :s AND status = :active"),
                {"t": lock_type.value, "s": subject_id, "active": LockStatus.ACTIVE.value},
            )
            holder_text = f" by {held['held_by']} until {held['expires_at']}" if held else ""
            return NIBResult.fail(
                ReasonCode.LOCK_HELD, f"{lock_type.value} on {subject_id} is held{holder_text}"
            )

        return await self._mutate(work, ())

    async def release_lock(self, lock_id: str, holder: str) -> NIBResult[Lock]:
        def work(tx: Tx, now: datetime) -> NIBResult[Lock]:
            released = tx.execute(
                "UPDATE locks SET status = :released, updated_at = :now, version = version + 1 "
                "WHERE lock_id = :id AND held_by = :holder AND status = :active",
                {"released": LockStatus.RELEASED.value, "active": LockStatus.ACTIVE.value, "now": now,
                 "id": lock_id, "holder": holder},
            )  # fmt: skip
            row = tx.one(LOCKS.select_sql("lock_id = :id"), {"id": lock_id})
            if released == 0 or row is None:
                return NIBResult.fail(ReasonCode.LOCK_NOT_HELD, f"{holder} holds no active lock {lock_id}")
            return NIBResult.ok(LOCKS.decode(row))

        return await self._mutate(work, ())

    async def check_lock(self, subject_id: str, lock_type: LockType) -> Lock | None:
        def work(tx: Tx) -> Lock | None:
            row = tx.one(
                LOCKS.select_sql(
                    "lock_type = :t AND subject_id = :s AND status = :active AND expires_at > :now"
                ),
                {"t": lock_type.value, "s": subject_id, "active": LockStatus.ACTIVE.value, "now": utcnow()},
            )
            return LOCKS.decode(row) if row else None

        return await self._db.run(work, write=False)

    async def sweep_locks(self, now: datetime | None = None) -> int:
        return await self._write(lambda tx: self._expire_locks(tx, now or utcnow()))

    # --- discovery reports ------------------------------------------------------------------

    async def save_discovery_report(self, report: DiscoveryReport) -> NIBResult[DiscoveryReport]:
        def work(tx: Tx, now: datetime) -> NIBResult[DiscoveryReport]:
            return self._insert(
                tx, REPORTS, report.model_copy(update={"received_at": report.received_at or now}), now
            )

        return await self._mutate(work, ())

    async def list_discovery_reports(
        self, *, lc_id: str | None = None, limit: int = 100
    ) -> list[DiscoveryReport]:
        return await self._list(REPORTS, {"lc_id": lc_id}, f" ORDER BY scan_end DESC LIMIT {int(limit)}")

    # --- secure messaging -------------------------------------------------------------------

    async def put_message_key(
        self, key: MessageKey, *, events: Sequence[EventDraft] = ()
    ) -> NIBResult[MessageKey]:
        return await self._mutate(lambda tx, now: self._put(tx, MESSAGE_KEYS, key, now), events)

    async def list_message_keys(self, *, owner_id: str | None = None) -> list[MessageKey]:
        return await self._list(MESSAGE_KEYS, {"owner_id": owner_id}, " ORDER BY owner_id, not_before")

    async def put_operator(
        self, operator: Operator, *, events: Sequence[EventDraft] = ()
    ) -> NIBResult[Operator]:
        return await self._mutate(lambda tx, now: self._put(tx, OPERATORS, operator, now), events)

    async def get_operator_by_token_hash(self, token_hash: str) -> Operator | None:
        found = await self._list(OPERATORS, {"token_hash": token_hash})
        return found[0] if found else None

    async def list_operators(self) -> list[Operator]:
        return await self._list(OPERATORS, {}, " ORDER BY name")

    # --- housekeeping -----------------------------------------------------------------------

    async def sweep_retention(
        self, policy: RetentionPolicy | None = None, now: datetime | None = None
    ) -> dict[str, int]:
        policy = policy or RetentionPolicy()

        def work(tx: Tx) -> dict[str, int]:
            at = now or utcnow()
            terminal = {f"t{i}": s.value for i, s in enumerate(_TERMINAL_PROPOSAL_STATES)}
            return {
                # Purge first, so a device about to go is not also counted as aged.
                "devices_purged": tx.execute(
                    "DELETE FROM devices WHERE last_seen < :cutoff",
                    {"cutoff": at - policy.device_purge_after},
                ),
                # Quarantined and degraded devices wait for an operator, whatever their age.
                "devices_marked_inactive": tx.execute(
                    "UPDATE devices SET status = :inactive, updated_at = :now, version = version + 1 "
                    "WHERE last_seen < :cutoff AND status NOT IN ('inactive', 'quarantined', 'degraded')",
                    {
                        "inactive": DeviceStatus.INACTIVE.value,
                        "now": at,
                        "cutoff": at - policy.device_inactive_after,
                    },
                ),
                "proposals_purged": tx.execute(
                    f"DELETE FROM config_proposals WHERE updated_at < :cutoff AND status IN "
                    f"({', '.join(':' + k for k in terminal)})",
                    {"cutoff": at - policy.proposal_purge_after, **terminal},
                ),
                "policies_purged": tx.execute(
                    "DELETE FROM policies WHERE is_active = :no AND updated_at < :cutoff",
                    {"no": False, "cutoff": at - policy.policy_purge_after},
                ),
                "reports_purged": tx.execute(
                    "DELETE FROM discovery_reports WHERE received_at < :cutoff",
                    {"cutoff": at - policy.report_purge_after},
                ),
                "locks_expired": self._expire_locks(tx, at),
                "locks_purged": tx.execute(
                    "DELETE FROM locks WHERE status <> :active AND updated_at < :cutoff",
                    {"active": LockStatus.ACTIVE.value, "cutoff": at - policy.lock_purge_after},
                ),
            }

        return await self._write(work)
