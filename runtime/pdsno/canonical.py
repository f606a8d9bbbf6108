r"""Canonical JSON and UTC timestamps: the exact bytes that get hashed and signed.

Signatures only hold if signer and verifier serialise identically, so every hash and HMAC in PDSNO
goes through :func:`canonical_json` and every timestamp through :func:`format_ts`.

The form is PDSNO's own, **not** RFC 8785 (JCS). It is Python's ``json.dumps(value, sort_keys=True,
separators=(",", ":"), ensure_ascii=False)``, encoded as UTF-8; precisely:

- no white space outside strings; members ``"key":value`` joined by ``,``;
- object members sorted by key, comparing keys code point by code point (RFC 8785 compares UTF-16 code
  units: the two differ only for keys mixing characters above U+FFFF with ones in U+E000..U+FFFF);
- strings: ``"`` and ``\`` escaped with a backslash; U+0008, U+0009, U+000A, U+000C, U+000D as ``\b``
  ``\t`` ``\n`` ``\f`` ``\r``; the other characters below U+0020 as ``\u00xx`` (lower-case hex);
  every other character, ``/`` and non-ASCII included, written as itself;
- integers in decimal, of any size; floats as Python's ``repr``, the shortest text that reads back
  as the same double (``1.0``, ``0.1``, ``1e+16``, ``1e-07``, where RFC 8785 writes ``1``, ``0.1``,
  ``10000000000000000``, ``1e-7``); NaN and infinities as ``NaN``, ``Infinity``, ``-Infinity`` (not JSON:
  never put them in a signed value);
- ``true``, ``false``, ``null``; tuples as arrays; datetimes as the string :func:`format_ts` makes
  (``2026-01-31T08:00:00.000000Z``); anything else is refused (``TypeError``).

For values without floats, with integers within +-(2**53 - 1) and without astral-plane keys this equals
RFC 8785, so a non-Python peer can verify such values with an RFC 8785 implementation; for anything
else it implements the rules above. Why PDSNO does not switch to RFC 8785 (the ``rfc8785`` package) is in
docs/architecture.md, "Trust and messages".
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any


def utcnow() -> datetime:
    return datetime.now(UTC)


def format_ts(ts: datetime) -> str:
    """Fixed-width UTC form, so that text comparison orders timestamps (SQLite relies on it)."""
    offset = ts.utcoffset()
    if offset is None:
        raise ValueError("timestamps must be timezone-aware")
    if offset:
        ts = ts.astimezone(UTC)
    # %-formatting, not strftime: a third of the time, on every message signed, verified and stored.
    return "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ" % (  # noqa: UP031
        ts.year, ts.month, ts.day, ts.hour, ts.minute, ts.second, ts.microsecond,
    )  # fmt: skip


def parse_ts(text: str) -> datetime:
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp without a timezone: {text!r}")
    return parsed.astimezone(UTC)


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_ts(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def canonical_json(value: Any) -> str:
    """The canonical form described at the top of this module."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_default)


def sha256_hex(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()
