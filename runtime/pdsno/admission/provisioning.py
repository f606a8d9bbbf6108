"""Bootstrap tokens: the one-time ticket a new controller shows before it is challenged.

token = HMAC-SHA256(provisioning_secret[region, type], "temp_id:region:type") (decisions C9). The
store lives beside the NIB, not in it (reference-design §2): it holds the provisioning secrets and
what was issued and redeemed. Redemption is a compare-and-set, so a token works exactly once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import sqlite3
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from pdsno.canonical import format_ts, parse_ts, utcnow
from pdsno.errors import ReasonCode

_SCHEMA = """
CREATE TABLE IF NOT EXISTS provisioning_secrets (
    region TEXT NOT NULL, controller_type TEXT NOT NULL, secret TEXT NOT NULL,
    PRIMARY KEY (region, controller_type)
);
CREATE TABLE IF NOT EXISTS bootstrap_tokens (
    temp_id TEXT PRIMARY KEY, region TEXT NOT NULL, controller_type TEXT NOT NULL,
    issued_by TEXT NOT NULL, issued_at TEXT NOT NULL, expires_at TEXT NOT NULL,
    redeemed_at TEXT, redeemed_from TEXT
);
CREATE TABLE IF NOT EXISTS blocklist (
    subject TEXT PRIMARY KEY, reason TEXT NOT NULL, added_at TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class BootstrapTicket:
    """What ``pdsno token issue`` hands to the operator for one new controller."""

    temp_id: str
    region: str
    controller_type: str
    token: str
    issued_by: str
    expires_at: datetime

    def as_dict(self) -> dict[str, str]:
        return {
            "temp_id": self.temp_id,
            "region": self.region,
            "controller_type": self.controller_type,
            "token": self.token,
            "issued_by": self.issued_by,
            "expires_at": format_ts(self.expires_at),
        }


def token_mac(secret: bytes, temp_id: str, region: str, controller_type: str) -> str:
    digest = hmac.new(secret, f"{temp_id}:{region}:{controller_type}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


class ProvisioningStore:
    """A small SQLite file (mode 0600) under the validator's data directory."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        self._path = path
        with self._connect() as conn:
            conn.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, timeout=5, isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        return conn

    def _secret(self, conn: sqlite3.Connection, region: str, controller_type: str) -> bytes:
        conn.execute(
            "INSERT INTO provisioning_secrets (region, controller_type, secret) VALUES (?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            (region, controller_type, secrets.token_urlsafe(32)),
        )
        row = conn.execute(
            "SELECT secret FROM provisioning_secrets WHERE region = ? AND controller_type = ?",
            (region, controller_type),
        ).fetchone()
        return str(row[0]).encode()

    def issue(self, *, region: str, controller_type: str, issued_by: str, ttl: timedelta) -> BootstrapTicket:
        now = utcnow()
        temp_id = f"temp-{uuid.uuid4()}"
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            token = token_mac(self._secret(conn, region, controller_type), temp_id, region, controller_type)
            conn.execute(
                "INSERT INTO bootstrap_tokens (temp_id, region, controller_type, issued_by, issued_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (temp_id, region, controller_type, issued_by, format_ts(now), format_ts(now + ttl)),
            )
            conn.execute("COMMIT")
        return BootstrapTicket(temp_id, region, controller_type, token, issued_by, now + ttl)

    def redeem(
        self, *, temp_id: str, region: str, controller_type: str, token: str, source: str | None
    ) -> ReasonCode | None:
        """Consume the token; None when it was valid, else why it is refused. Constant-time MAC check."""
        now = utcnow()
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                expected = token_mac(
                    self._secret(conn, region, controller_type), temp_id, region, controller_type
                )
                record = conn.execute(
                    "SELECT region, controller_type, expires_at, redeemed_at FROM bootstrap_tokens WHERE temp_id = ?",
                    (temp_id,),
                ).fetchone()
                if (
                    not hmac.compare_digest(expected, token)
                    or record is None
                    or tuple(record[:2])
                    != (
                        region,
                        controller_type,
                    )
                ):
                    return ReasonCode.INVALID_BOOTSTRAP_TOKEN
                if record[3] is not None:
                    return ReasonCode.BOOTSTRAP_TOKEN_REUSED
                if parse_ts(record[2]) < now:
                    return ReasonCode.BOOTSTRAP_TOKEN_EXPIRED
                conn.execute(
                    "UPDATE bootstrap_tokens SET redeemed_at = ?, redeemed_from = ? WHERE temp_id = ?",
                    (format_ts(now), source, temp_id),
                )
                return None
            finally:
                conn.execute("COMMIT")

    def block(self, subject: str, reason: str) -> None:
        with self._connect() as conn:
            conn.execute(
                "INSERT INTO blocklist (subject, reason, added_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                (subject, reason, format_ts(utcnow())),
            )

    def is_blocked(self, *subjects: str | None) -> bool:
        wanted = [s for s in subjects if s]
        if not wanted:
            return False
        with self._connect() as conn:
            marks = ", ".join("?" for _ in wanted)
            return (
                conn.execute(f"SELECT 1 FROM blocklist WHERE subject IN ({marks})", wanted).fetchone()
                is not None
            )
