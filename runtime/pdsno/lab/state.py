"""The lab's state directory: ``state.json`` (every name, port, MAC and PID of the lab), the paths of the
files beside it, and the lock that makes lab commands on one directory take turns."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pdsno.lab.errors import LabError, TopologyError
from pdsno.lab.topology import LabController, LabDevice
from pdsno.security.keys import write_file_atomically

DEFAULT_PREFIX = "pdsno-"
STATE_FILE = "state.json"
GROUND_TRUTH_FILE = "ground_truth.json"
INVENTORY_FILE = "inventory.yml"
OUR_FILES = (
    STATE_FILE,
    GROUND_TRUTH_FILE,
    INVENTORY_FILE,
    "devices",
    "hosts",
    "ssh",
    "snmp-client",
    "deploy",  # what playbooks/deploy.yml put into the lab hosts (inventory/lab)
    ".lock",
)
_PREFIX_RE = re.compile(r"[a-z][a-z0-9-]{0,8}")


def default_state_dir() -> Path:
    """``$PDSNO_LAB_DIR``, else ``.lab`` at the root of the source tree we run in, else ``./.lab``."""
    env = os.environ.get("PDSNO_LAB_DIR")
    if env:
        return Path(env).resolve()
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents):
        if (candidate / "pyproject.toml").is_file() and (candidate / "runtime" / "pdsno").is_dir():
            return candidate / ".lab"
    return here / ".lab"


def ssh_key_path(state_dir: Path) -> Path:
    return state_dir / "ssh" / "id_ed25519"


def known_hosts_path(state_dir: Path) -> Path:
    return state_dir / "ssh" / "known_hosts"


def check_prefix(prefix: str) -> str:
    if _PREFIX_RE.fullmatch(prefix) is None:
        raise TopologyError(
            f"prefix {prefix!r}: must be 1 to 9 characters, lower-case letters, digits or '-', starting "
            "with a letter (interface names are limited to 15 characters)"
        )
    return prefix


def nib_cluster_name(prefix: str) -> str:
    """The PostgreSQL cluster (Debian's postgresql-common) of the lab's NIB host: named after the prefix,
    as its configuration and data live outside the state directory, in /etc/postgresql and
    /var/lib/postgresql, beside those of every other lab on the machine (``-`` would trouble systemd)."""
    return check_prefix(prefix).replace("-", "_") + "nib"


def own_netns_re(prefix: str) -> re.Pattern[str]:
    return re.compile(re.escape(prefix) + r"(?:sw|mgmt|[dc]-[a-z0-9-]+)")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeviceState(_Model):
    device: LabDevice
    netns: str
    port: str
    up: bool = True
    pid: int | None = None


class HostState(_Model):
    host: LabController
    netns: str
    ports: list[str]
    macs: dict[str, str]
    pid: int | None = None


class SubnetState(_Model):
    zone: str
    lc: str
    bridge: str


class LabState(_Model):
    """Everything ``down`` and ``status`` need, and what the API reads: written to ``state.json``."""

    version: Literal[1] = 1
    status: Literal["building", "up"] = "building"
    prefix: str
    state_dir: str
    topology: str
    topology_source: str
    block: str
    route_metric: int
    management: str
    management_bridge: str
    operator_ip: str
    operator_mac: str = ""
    switch_netns: str
    operator_netns: str
    extra_link_type: str = "dummy"
    subnets: dict[str, SubnetState]
    devices: dict[str, DeviceState] = Field(default_factory=dict)
    hosts: dict[str, HostState] = Field(default_factory=dict)
    next_port: int = 0
    created_at: str = Field(default_factory=_now)
    build_seconds: float | None = None

    def allocate_port(self, kind: str) -> str:
        """A new switch-side veth name: ``<prefix><kind><n>`` (at most 15 characters)."""
        self.next_port += 1
        return f"{self.prefix}{kind}{self.next_port - 1}"

    def macs(self) -> set[str]:
        """Every MAC in the lab (devices, hosts, the operator)."""
        macs = {i.mac for d in self.devices.values() for i in d.device.interfaces}
        macs |= {m for h in self.hosts.values() for m in h.macs.values()}
        return macs | ({self.operator_mac} if self.operator_mac else set())

    def namespaces(self) -> list[str]:
        return [
            self.switch_netns,
            self.operator_netns,
            *(h.netns for h in self.hosts.values()),
            *(d.netns for d in self.devices.values()),
        ]


def read_state(state_dir: Path) -> LabState | None:
    path = state_dir / STATE_FILE
    try:
        return LabState.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValidationError, ValueError) as exc:
        raise LabError(
            f"{path}: unreadable lab state ({exc.__class__.__name__}); `pdsno lab down --prefix P` cleans up by prefix"
        ) from None


def write_state(state_dir: Path, state: LabState) -> None:
    write_file_atomically(
        state_dir / STATE_FILE,
        state.model_dump_json(indent=2).encode(),
        mode=0o600,
        dir_mode=0o700,
    )


@contextlib.contextmanager
def locked(state_dir: Path) -> Iterator[None]:
    """One lab command at a time per state directory (``up``, ``down`` and every change)."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(state_dir / ".lock", "a+") as handle:
        deadline = time.monotonic() + 120
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LabError(f"{state_dir}: another lab command holds the lock for 120 s") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
