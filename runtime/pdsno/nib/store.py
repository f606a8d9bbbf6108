"""The ``NIBStore`` protocol: the only way any part of PDSNO reads or writes controller state.

Mutations return a :class:`NIBResult` instead of raising on the expected outcomes (a stale version,
a lock held by someone else, a token already used), because callers are meant to handle those. Every
mutation takes ``events``: audit events appended in the same transaction, so a state change and its
record commit together or not at all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, Protocol, TypeVar

from pdsno.errors import ReasonCode
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
    Lock,
    LockType,
    MessageKey,
    Operator,
    Policy,
    PolicyScope,
)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class NIBResult(Generic[T]):
    """Outcome of one mutation: ``data`` on success, else ``error`` (and ``conflict`` for stale writes)."""

    success: bool
    data: T | None = None
    conflict: bool = False
    error: ReasonCode | None = None
    message: str = ""

    @classmethod
    def ok(cls, data: T) -> NIBResult[T]:
        return cls(success=True, data=data)

    @classmethod
    def stale(cls, message: str) -> NIBResult[T]:
        return cls(success=False, conflict=True, error=ReasonCode.CONFLICT, message=message)

    @classmethod
    def fail(cls, error: ReasonCode, message: str) -> NIBResult[T]:
        return cls(success=False, error=error, message=message)

    def unwrap(self) -> T:
        """The data, or a :class:`~pdsno.errors.NIBError` carrying the reason."""
        if not self.success or self.data is None:
            from pdsno.errors import NIBError

            raise NIBError(self.message or "NIB write failed", code=self.error or ReasonCode.INTERNAL_ERROR)
        return self.data


@dataclass(slots=True)
class BatchResult(Generic[T]):
    """Outcome of a batched write: what was written and what was refused, per item."""

    written: list[T] = field(default_factory=list)
    refused: dict[str, NIBResult[T]] = field(default_factory=dict)

    @property
    def conflicts(self) -> list[str]:
        return [key for key, result in self.refused.items() if result.conflict]


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """reference-design §4 "Retention"; events are never deleted."""

    device_inactive_after: timedelta = timedelta(days=90)
    device_purge_after: timedelta = timedelta(days=365)
    proposal_purge_after: timedelta = timedelta(days=180)
    policy_purge_after: timedelta = timedelta(days=30)
    report_purge_after: timedelta = timedelta(days=7)
    lock_purge_after: timedelta = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class AuditHead:
    seq: int
    hash: str


class NIBStore(Protocol):
    """Contract shared by every backend; ``tests/runtime/test_nib_contract.py`` holds each to it."""

    @property
    def backend(self) -> str: ...

    async def close(self) -> None: ...

    async def schema_version(self) -> int: ...

    async def stats(self) -> dict[str, Any]: ...

    # devices -------------------------------------------------------------------------------
    async def get_device(self, device_id: str) -> Device | None: ...

    async def get_device_by_mac(self, mac_address: str) -> Device | None: ...

    async def get_devices(self, device_ids: Iterable[str]) -> dict[str, Device]:
        """The stored ones among ``device_ids``, by id; a few queries for a whole report."""
        ...

    async def get_devices_by_mac(self, mac_addresses: Iterable[str]) -> dict[str, Device]:
        """The stored ones among ``mac_addresses``, by normalised MAC; a few queries for a whole report."""
        ...

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
    ) -> list[Device]: ...

    async def count_devices(
        self, *, region: str | None = None, status: DeviceStatus | None = None
    ) -> int: ...

    async def put_device(self, device: Device, *, events: Sequence[EventDraft] = ()) -> NIBResult[Device]: ...

    async def write_devices(
        self,
        devices: Sequence[Device],
        *,
        events: Sequence[EventDraft] = (),
        events_for_written: Callable[[Sequence[Device]], Sequence[EventDraft]] | None = None,
    ) -> BatchResult[Device]:
        """Write all ``devices`` in one transaction; per-device refusals do not stop the others.

        ``events_for_written`` derives audit events from the devices that were actually written, so
        a refused device leaves no event claiming it changed.
        """
        ...

    async def update_device_status(
        self,
        device_id: str,
        status: DeviceStatus,
        expected_version: int,
        *,
        events: Sequence[EventDraft] = (),
    ) -> NIBResult[Device]: ...

    # controllers ---------------------------------------------------------------------------
    async def register_controller(
        self,
        controller: Controller,
        *,
        keys: Sequence[MessageKey] = (),
        events: Sequence[EventDraft] = (),
    ) -> NIBResult[Controller]: ...

    async def update_controller(
        self, controller: Controller, *, events: Sequence[EventDraft] = ()
    ) -> NIBResult[Controller]: ...

    async def get_controller(self, controller_id: str) -> Controller | None: ...

    async def list_controllers(
        self, *, role: ControllerRole | None = None, region: str | None = None
    ) -> list[Controller]: ...

    # configuration changes -----------------------------------------------------------------
    async def create_proposal(
        self, proposal: ConfigProposal, *, events: Sequence[EventDraft] = ()
    ) -> NIBResult[ConfigProposal]: ...

    async def update_proposal(
        self, proposal: ConfigProposal, *, events: Sequence[EventDraft] = ()
    ) -> NIBResult[ConfigProposal]: ...

    async def get_proposal(self, proposal_id: str) -> ConfigProposal | None: ...

    async def list_proposals(
        self,
        *,
        status: ConfigStatus | None = None,
        config_hash: str | None = None,
        limit: int | None = None,
        offset: int = 0,
        newest_first: bool = False,
    ) -> list[ConfigProposal]:
        """Oldest first (or newest, for a screen); ``limit``/``offset`` page in the database."""
        ...

    async def count_proposals(self, *, status: ConfigStatus | None = None) -> int: ...

    async def store_token(
        self, token: ExecutionToken, *, events: Sequence[EventDraft] = ()
    ) -> NIBResult[ExecutionToken]: ...

    async def get_token(self, token_id: str) -> ExecutionToken | None: ...

    async def consume_token(
        self, token_id: str, consumer: str, *, events: Sequence[EventDraft] = ()
    ) -> NIBResult[ExecutionToken]: ...

    # policy --------------------------------------------------------------------------------
    async def distribute_policy(
        self, policy: Policy, *, events: Sequence[EventDraft] = ()
    ) -> NIBResult[Policy]: ...

    async def get_active_policy(self, scope: PolicyScope, region: str | None = None) -> Policy | None: ...

    # audit log -----------------------------------------------------------------------------
    async def append_events(self, drafts: Sequence[EventDraft]) -> list[Event]: ...

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
        """Events after ``after_seq`` in order, at most ``limit``, filtered in the database."""
        ...

    async def last_events(self, count: int) -> list[Event]: ...

    async def events_about(self, subject: str, *, limit: int = 1000) -> list[Event]: ...

    async def audit_head(self) -> AuditHead: ...

    # locks ---------------------------------------------------------------------------------
    async def acquire_lock(
        self,
        subject_id: str,
        lock_type: LockType,
        holder: str,
        ttl: timedelta,
        *,
        associated_request: str | None = None,
    ) -> NIBResult[Lock]: ...

    async def release_lock(self, lock_id: str, holder: str) -> NIBResult[Lock]: ...

    async def check_lock(self, subject_id: str, lock_type: LockType) -> Lock | None: ...

    async def sweep_locks(self, now: datetime | None = None) -> int: ...

    # discovery reports (transient) ---------------------------------------------------------
    async def save_discovery_report(self, report: DiscoveryReport) -> NIBResult[DiscoveryReport]: ...

    async def list_discovery_reports(
        self, *, lc_id: str | None = None, limit: int = 100
    ) -> list[DiscoveryReport]: ...

    # secure messaging ----------------------------------------------------------------------
    async def put_message_key(
        self, key: MessageKey, *, events: Sequence[EventDraft] = ()
    ) -> NIBResult[MessageKey]: ...

    async def list_message_keys(self, *, owner_id: str | None = None) -> list[MessageKey]: ...

    async def put_operator(
        self, operator: Operator, *, events: Sequence[EventDraft] = ()
    ) -> NIBResult[Operator]: ...

    async def get_operator_by_token_hash(self, token_hash: str) -> Operator | None: ...

    async def list_operators(self) -> list[Operator]: ...

    # housekeeping --------------------------------------------------------------------------
    async def sweep_retention(
        self, policy: RetentionPolicy | None = None, now: datetime | None = None
    ) -> dict[str, int]: ...
