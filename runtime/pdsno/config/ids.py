"""Controller roles and controller ids (decisions C10)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Final

__all__ = [
    "SLUG_RE",
    "Role",
    "assigned_controller_id",
    "controller_id_matches",
    "id_form",
    "is_temp_id",
]


class Role(StrEnum):
    """The controller's tier in the hierarchy (reference-design §1)."""

    GLOBAL = "global"
    REGIONAL = "regional"
    LOCAL = "local"


SLUG_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
_SERIAL: Final = r"[1-9][0-9]*"
_TEMP_ID_RE: Final = re.compile(r"temp-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_ID_PREFIX: Final[Mapping[Role, str]] = {
    Role.GLOBAL: "global_cntl",
    Role.REGIONAL: "regional_cntl",
    Role.LOCAL: "local_cntl",
}


def id_form(role: Role, region: str | None) -> str:
    if role is Role.GLOBAL:
        return "global_cntl_<n>"
    return f"{_ID_PREFIX[role]}_{region}_<n>"


def is_temp_id(controller_id: str) -> bool:
    return _TEMP_ID_RE.fullmatch(controller_id) is not None


def controller_id_matches(
    controller_id: str, role: Role, region: str | None, *, allow_temp: bool = True
) -> bool:
    """True if ``controller_id`` is a valid id for a controller of ``role`` in ``region``.

    Assigned ids are ``global_cntl_<n>``, ``regional_cntl_<region>_<n>`` and ``local_cntl_<region>_<n>``
    (``n`` >= 1, no leading zero); a controller that has not been admitted yet uses ``temp-<uuid4>``.
    """
    if allow_temp and is_temp_id(controller_id):
        return True
    if role is Role.GLOBAL:
        pattern = f"global_cntl_{_SERIAL}"
    else:
        if region is None:
            return False
        pattern = f"{_ID_PREFIX[role]}_{re.escape(region)}_{_SERIAL}"
    return re.fullmatch(pattern, controller_id) is not None


def assigned_controller_id(role: Role, region: str | None, n: int) -> str:
    """The id a validator assigns to the ``n``-th controller of ``role`` in ``region`` (decisions C10)."""
    if n < 1:
        raise ValueError("controller serial numbers start at 1")
    if role is Role.GLOBAL:
        return f"global_cntl_{n}"
    if region is None or SLUG_RE.fullmatch(region) is None:
        raise ValueError(f"a {role} controller id needs a valid region slug, got {region!r}")
    return f"{_ID_PREFIX[role]}_{region}_{n}"
