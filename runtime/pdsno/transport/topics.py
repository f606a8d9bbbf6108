"""The MQTT topics of decisions.md §4, built in one place so publishers, subscribers and the broker ACL agree.

=========================================  ============================  =====================================
topic                                      publisher                     content
=========================================  ============================  =====================================
``pdsno/discovery/{region}/{lc_id}``       that local controller         discovery reports, QoS 1 (C4)
``pdsno/discovery/{region}/{lc_id}/ack``   the region's RC               DISCOVERY_REPORT_ACK, QoS 1
``pdsno/policy/global``                    the global controller         policy, QoS 1, retained (C5)
``pdsno/policy/{region}``                  the region's RC               policy, QoS 1, retained (C5)
``pdsno/events/system``                    the global controller         system-wide events
``pdsno/events/{region}``                  the region's RC (and the GC)  regional events
``pdsno/status/{controller_id}``           that controller               heartbeat QoS 0; last will "offline"
=========================================  ============================  =====================================

Every id and region is one topic level: it must be non-empty and contain none of ``+``, ``#``, ``/`` (nor
NUL). A region must not be named ``global`` or ``system`` (any case): ``pdsno/policy/global`` and
``pdsno/events/system`` would then mean two things. Anything else raises :class:`ValueError`.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "PREFIX",
    "RESERVED_REGIONS",
    "discovery",
    "discovery_ack",
    "discovery_ack_filter",
    "discovery_filter",
    "events",
    "events_system",
    "policy",
    "policy_global",
    "status",
    "status_filter",
    "validate_level",
]

PREFIX: Final = "pdsno"
RESERVED_REGIONS: Final = frozenset({"global", "system"})
_FORBIDDEN: Final = frozenset("+#/\0")


def validate_level(value: str, what: str = "topic level") -> str:
    """Return ``value`` if it can stand as one topic level (no ``+ # /``, not empty); else raise ValueError."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    bad = sorted(_FORBIDDEN.intersection(value))
    if bad:
        raise ValueError(f"{what} {value!r} must not contain {' '.join(repr(c) for c in bad)}")
    return value


def _region(region: str) -> str:
    validate_level(region, "region")
    if region.lower() in RESERVED_REGIONS:
        raise ValueError(f"region {region!r} is reserved (pdsno/policy/global, pdsno/events/system)")
    return region


def discovery(region: str, lc_id: str) -> str:
    """Where local controller ``lc_id`` of ``region`` publishes its discovery reports."""
    return f"{PREFIX}/discovery/{_region(region)}/{validate_level(lc_id, 'controller id')}"


def discovery_ack(region: str, lc_id: str) -> str:
    """Where the RC of ``region`` acknowledges the reports of ``lc_id`` once it has stored them."""
    return f"{discovery(region, lc_id)}/ack"


def discovery_ack_filter(region: str) -> str:
    """Every acknowledgement topic of ``region`` (what the region's RC may publish on)."""
    return f"{discovery_filter(region)}/ack"


def discovery_filter(region: str) -> str:
    """Subscription filter for every discovery report of ``region`` (what the region's RC subscribes to)."""
    return f"{PREFIX}/discovery/{_region(region)}/+"


def policy_global() -> str:
    """The global policy, published (retained) by the GC."""
    return f"{PREFIX}/policy/global"


def policy(region: str) -> str:
    """The policy of ``region``, published (retained) by the region's RC."""
    return f"{PREFIX}/policy/{_region(region)}"


def events_system() -> str:
    """System-wide events."""
    return f"{PREFIX}/events/system"


def events(region: str) -> str:
    """Events of ``region``."""
    return f"{PREFIX}/events/{_region(region)}"


def status(controller_id: str) -> str:
    """Heartbeats of ``controller_id``; the broker publishes its last will ``offline`` here."""
    return f"{PREFIX}/status/{validate_level(controller_id, 'controller id')}"


def status_filter() -> str:
    """Subscription filter for every controller's status."""
    return f"{PREFIX}/status/+"
