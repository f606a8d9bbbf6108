"""Change executors, one per way of touching a device (reference-design §5 "LC: execute").

:func:`build_executor` makes one by the name a payload gives in ``executor``, from
:class:`ExecutorSettings` (the ``changes`` section of a controller's configuration). Executors import
their protocol libraries (pysnmp) only when they speak.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from pdsno.changes.executors.base import DevicePlan, Executor, FieldChange
from pdsno.errors import PdsnoError, ReasonCode

if TYPE_CHECKING:
    from pdsno.snmp import V3Client

__all__ = [
    "EXECUTORS",
    "DevicePlan",
    "Executor",
    "ExecutorSettings",
    "FieldChange",
    "build_executor",
    "snmp_client_for",
]

EXECUTORS = ("snmp", "ansible")


class ExecutorSettings(BaseModel):
    """What the executors need from configuration; secrets live in files of their own (0600)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    snmp_write_communities_file: Path | None = None
    """One v2c write community a line, tried in order (``#`` comments and blank lines skipped)."""
    snmp_v3_file: Path | None = None
    """One SNMPv3 user a line: ``USER:AUTHPASS:PRIVPASS[:AUTHPROTO:PRIVPROTO]`` (as ``pdsno discover``)."""
    snmp_port: int = Field(161, ge=1, le=65535)
    snmp_timeout_s: float = Field(2.0, gt=0, le=60)
    snmp_retries: int = Field(1, ge=0, le=5)
    ansible_playbook_dir: Path | None = None
    """Where a payload's ``playbook`` is looked up (and must stay)."""
    ansible_inventory_vars: Path | None = None
    """YAML: ``{all: {VAR: VALUE}, devices: {DEVICE_ID|HOSTNAME|IP: {VAR: VALUE}}}``, the targets'
    connection variables (``ansible_user``, ``ansible_connection``, ``ansible_network_os``...)."""
    ansible_playbook: str | None = None
    """The ``ansible-playbook`` program (default: beside this Python, else on PATH)."""
    timeout_s: float = Field(300.0, gt=0, le=3600)
    """One ``ansible-playbook`` run, at most."""


def snmp_client_for(settings: ExecutorSettings) -> V3Client:
    """The SNMP client a controller keeps for its snmp executors (its engine is built on first use)."""
    from pdsno.snmp import V3Client

    return V3Client(port=settings.snmp_port, timeout=settings.snmp_timeout_s, retries=settings.snmp_retries)


def _inventory_vars(path: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise PdsnoError(f"ansible_inventory_vars {path}: {exc}", code=ReasonCode.CONFIG_INVALID) from None
    if not isinstance(data, dict) or set(data) - {"all", "devices"}:
        data = None
    common = data.get("all", {}) if data is not None else None
    devices = data.get("devices", {}) if data is not None else None
    if (
        not isinstance(common, dict)
        or not isinstance(devices, dict)
        or not all(isinstance(v, dict) for v in devices.values())
    ):
        raise PdsnoError(
            f"ansible_inventory_vars {path}: expected {{all: {{VAR: VALUE}}, devices: {{DEVICE: {{VAR: VALUE}}}}}}",
            code=ReasonCode.CONFIG_INVALID,
        )
    return common, {str(k): v for k, v in devices.items()}


def build_executor(name: str, settings: ExecutorSettings, *, snmp_client: V3Client | None = None) -> Executor:
    """The executor a payload names (``PdsnoError`` ``INVALID_REQUEST`` for an unknown one).

    ``snmp_client``: a v3 engine the caller keeps for the snmp executor (see :func:`snmp_client_for`)."""
    if name == "snmp":
        from pdsno.changes.executors.snmp import SnmpExecutor
        from pdsno.snmp import SnmpCredentials, SnmpV3Credential, read_secret_lines

        communities = (
            read_secret_lines(settings.snmp_write_communities_file, "snmp_write_communities_file")
            if settings.snmp_write_communities_file
            else []
        )
        users = (
            [
                SnmpV3Credential.parse(line)
                for line in read_secret_lines(settings.snmp_v3_file, "snmp_v3_file")
            ]
            if settings.snmp_v3_file
            else []
        )
        return SnmpExecutor(
            SnmpCredentials(tuple(communities), tuple(users)),
            port=settings.snmp_port,
            timeout=settings.snmp_timeout_s,
            retries=settings.snmp_retries,
            client=snmp_client,
        )
    if name == "ansible":
        from pdsno.changes.executors.ansible import AnsibleExecutor

        common, per_device = (
            _inventory_vars(settings.ansible_inventory_vars) if settings.ansible_inventory_vars else ({}, {})
        )
        return AnsibleExecutor(
            playbook_dir=settings.ansible_playbook_dir,
            host_vars=common,
            device_vars=per_device,
            timeout_s=settings.timeout_s,
            ansible_playbook=settings.ansible_playbook,
        )
    raise PdsnoError(
        f"unknown executor {name!r} (known: {', '.join(EXECUTORS)})", code=ReasonCode.INVALID_REQUEST
    )
