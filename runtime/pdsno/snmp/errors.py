"""How one exchange with an SNMP agent fails: one exception class per cause."""

from __future__ import annotations


class SnmpFailure(Exception):
    """One host's SNMP exchange failed; ``kind`` is the short reason a discovery observation records."""

    kind = "error"


class SnmpTimeout(SnmpFailure):
    kind = "timeout"


class SnmpNoAgent(SnmpFailure):
    """ICMP said nobody listens (port unreachable) or the host is unreachable."""

    kind = "no-agent"


class SnmpAuthFailure(SnmpFailure):
    kind = "auth-failed"


class SnmpPduError(SnmpFailure):
    """The agent answered with a non-zero error-status."""

    kind = "pdu-error"

    def __init__(self, status: int, index: int = 0) -> None:
        super().__init__(f"error-status {status} at index {index}")
        self.status = status
