"""One hierarchy (tests/runtime/hierarchy.py: Mosquitto, GC, two RCs, three LCs as real processes on the
default lab) for the whole fault suite, its LCs able to write to the lab's agents. Each test leaves every
controller running when it ends, whatever it stopped or killed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.runtime.hierarchy import (
    World,
    devices,
    operator_token,
    running_world,
    truth,
    wait_for,
    writable_lcs,
)

PREFIX = "pdsk-"


def extra_config(host: str, role: str, secrets_dir: Path) -> dict[str, Any]:
    if role != "local":
        return {}
    return {"changes": {**writable_lcs(host, role, secrets_dir)["changes"], "snmp_timeout_s": 1.0}}


@pytest.fixture(scope="package")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with running_world(tmp_path_factory.mktemp("faults"), PREFIX, extra_config) as world:
        expected = truth(world)
        wait_for(lambda: len(devices(world, "gc-1")) >= len(expected), 90, "the GC inventory")
        yield world


@pytest.fixture(scope="package")
def operator(world: World) -> str:
    return operator_token(world, "olga", "operator")
