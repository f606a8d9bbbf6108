"""Ending a controller of the fault suite's hierarchy at a named fault point (runtime/pdsno/faults.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from pdsno.faults import FAULT_ENV, FAULT_EXIT_CODE, FaultPoint
from tests.runtime.hierarchy import World

T = TypeVar("T")


def kill_at(world: World, host: str, point: FaultPoint, trigger: Callable[[], T], timeout: float = 60) -> T:
    """Restart ``host``'s controller with ``PDSNO_FAULT=point``, run ``trigger`` and wait until the
    controller has ended itself at that point (it stays down); what ``trigger`` returned."""
    world.stop(host)
    world.start(host, env={FAULT_ENV: point.value})
    triggered = trigger()
    proc = world.procs[host]
    assert proc.popen is not None
    assert proc.popen.wait(timeout=timeout) == FAULT_EXIT_CODE, proc.log.read_text(errors="replace")[-3000:]
    return triggered
