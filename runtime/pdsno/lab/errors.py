"""The lab's errors: one line each, with a reason code, printed by the CLI without a traceback."""

from __future__ import annotations

from pdsno.errors import ConfigError, PdsnoError, ReasonCode


class LabError(PdsnoError):
    """The lab could not do what was asked (a command failed, a daemon did not start, not root...)."""

    code = ReasonCode.INTERNAL_ERROR


class LabNotUp(LabError):
    """There is no lab in the state directory (or the named device or host is not part of it)."""

    code = ReasonCode.NOT_FOUND


class LabAlreadyUp(LabError):
    """``lab up`` found a lab (or leftovers of one) with the same name prefix."""

    code = ReasonCode.ALREADY_EXISTS


class TopologyError(ConfigError):
    """A topology file (or a device added later) is missing or invalid."""
