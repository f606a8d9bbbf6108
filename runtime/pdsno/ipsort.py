"""IP addresses in numeric order, for every list a person reads (CLI tables, the dashboard).

As strings, 198.18.1.11 sorts before 198.18.1.2; by :func:`ip_key` it comes after. IPv4 before IPv6,
an address before the same address with a prefix (``198.18.1.2/24``), and anything that is not an
address (a name, ``-``, empty) last, in string order. Standard library only: ``pdsno discover``
imports it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

IpKey = tuple[int, int, int, int, str]


def ip_key(value: str | None) -> IpKey:
    """A sort key that orders addresses numerically and puts what is not an address after them."""
    text = (value or "").strip()
    try:
        address = ipaddress.ip_address(text)
        return 0, address.version, int(address), -1, ""
    except ValueError:
        pass
    try:
        interface = ipaddress.ip_interface(text)
        return 0, interface.version, int(interface.ip), interface.network.prefixlen, ""
    except ValueError:
        return 1, 0, 0, 0, text


def sort_ips(values: Iterable[str]) -> list[str]:
    """``values`` in numeric address order (see :func:`ip_key`)."""
    return sorted(values, key=ip_key)
