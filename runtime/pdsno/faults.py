"""Named fault points: where the fault-injection suite (``tests/faults/``) makes a controller die.

A controller started with ``PDSNO_FAULT=<point>`` ends itself with ``os._exit`` the first time it reaches
that point, as a power cut or SIGKILL would end it there: no ``finally``, no goodbye to its peers (only its
log is flushed, so the test can tell where it died). Without the variable a point costs one lookup. The points are the moments where a crash could leave
work half-done; recovery from each is what the suite proves.
"""

from __future__ import annotations

import logging
import os
from enum import StrEnum
from typing import Final

log = logging.getLogger(__name__)

FAULT_ENV: Final = "PDSNO_FAULT"
FAULT_EXIT_CODE: Final = 86
"""The exit status of a controller ended at a fault point (told apart from a crash)."""


class FaultPoint(StrEnum):
    TOKEN_CONSUMED = "after-token-consumed"  # noqa: S105 - a fault point, not a secret
    """LC: the execution token is spent, the change EXECUTING and the RC told so; no device read yet."""
    DEVICE_COMMITTED = "after-device-commit"
    """LC: a device has been written, not verified yet."""
    DECISION_RECORDED = "after-decision"
    """RC: a change approved and its token kept in the NIB; the instruction not sent to the LC yet."""
    OUTBOX_FLUSH = "mid-outbox-flush"
    """A sender has taken a message from its durable outbox to send it, and not sent it yet."""


def fault_point(point: FaultPoint) -> None:
    """End the process here if ``PDSNO_FAULT`` names ``point``."""
    if os.environ.get(FAULT_ENV) == point.value:
        log.critical("fault injected: exiting", extra={"fault_point": point.value})
        logging.shutdown()
        os._exit(FAULT_EXIT_CODE)
