"""What every change executor shares: the :class:`Executor` protocol and the plan it works from.

An executor applies one kind of change (SNMP SET, an Ansible playbook...) to one device at a time,
in NAPALM's order: ``plan`` reads what is there now and says what would change (the diff, and the
rollback that would undo it); ``commit`` applies the plan; ``verify`` reads back and says whether
the device now holds what was planned; ``rollback`` puts back what ``plan`` saw. The engine in
:mod:`pdsno.changes.apply` drives them across the devices of a change (rate limit, all-or-nothing).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from pdsno.nib.models import Device


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One value the change sets on a device: ``before`` as read by ``plan``, ``after`` as wanted."""

    key: str
    before: Any
    after: Any

    @property
    def changes(self) -> bool:
        return bool(self.before != self.after)


@dataclass(frozen=True, slots=True)
class DevicePlan:
    """What a change will do to one device, and the payload that undoes it."""

    device_id: str
    changes: tuple[FieldChange, ...]
    rollback_payload: Mapping[str, Any]
    details: Mapping[str, Any] = field(default_factory=dict)

    def diff(self) -> list[dict[str, Any]]:
        return [{"key": c.key, "before": c.before, "after": c.after} for c in self.changes]


@runtime_checkable
class Executor(Protocol):
    """A change executor plugin; ``name`` is what a proposal's payload names in ``executor``."""

    name: str

    def validate(self, payload: Mapping[str, Any]) -> None:
        """Refuse (``PdsnoError`` with ``INVALID_REQUEST``) a payload this executor cannot apply."""
        ...

    async def plan(self, device: Device, payload: Mapping[str, Any]) -> DevicePlan: ...

    async def commit(self, device: Device, plan: DevicePlan) -> None: ...

    async def verify(self, device: Device, plan: DevicePlan) -> bool: ...

    async def rollback(self, device: Device, plan: DevicePlan) -> None: ...
