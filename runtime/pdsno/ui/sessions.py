"""Dashboard sessions: a random id in an HttpOnly, Secure, SameSite=Strict cookie, everything else kept
in the GC's memory with an expiry, and a CSRF token per session that every form sends back.

A session holds the hash of the operator's bearer token, never the token; each request looks the
operator up again (``pdsno.nbi.auth.authorise``), so a disabled operator or a changed role counts at
once. Sessions live in the process: a restarted GC asks everyone to log in again.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass, field

from fastapi import Request
from fastapi.responses import Response

from pdsno.errors import ReasonCode
from pdsno.nbi.auth import AuthError

COOKIE = "pdsno_session"
LOGIN_COOKIE = "pdsno_login"
COOKIE_PATH = "/ui"
IDLE_S = 30 * 60
LIFETIME_S = 8 * 3600
MAX_SESSIONS = 1000


@dataclass
class Session:
    token_hash: str
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    created: float = field(default_factory=time.monotonic)
    seen: float = field(default_factory=time.monotonic)


class Sessions:
    def __init__(
        self, *, idle_s: float = IDLE_S, lifetime_s: float = LIFETIME_S, most: int = MAX_SESSIONS
    ) -> None:
        self._idle_s, self._lifetime_s, self._most = idle_s, lifetime_s, most
        self._by_id: dict[str, Session] = {}

    def _expired(self, session: Session, now: float) -> bool:
        return now - session.seen > self._idle_s or now - session.created > self._lifetime_s

    def open(self, token_hash: str) -> tuple[str, Session]:
        now = time.monotonic()
        self._by_id = {k: s for k, s in self._by_id.items() if not self._expired(s, now)}
        # Bounded: logins cannot grow the GC's memory without end; the oldest session goes first.
        while len(self._by_id) >= self._most:
            del self._by_id[min(self._by_id, key=lambda k: self._by_id[k].created)]
        session_id = secrets.token_urlsafe(32)
        self._by_id[session_id] = Session(token_hash)
        return session_id, self._by_id[session_id]

    def get(self, session_id: str | None) -> Session | None:
        session = self._by_id.get(session_id or "")
        now = time.monotonic()
        if session is None or self._expired(session, now):
            self._by_id.pop(session_id or "", None)
            return None
        session.seen = now
        return session

    def close(self, session_id: str | None) -> None:
        self._by_id.pop(session_id or "", None)


def sessions_of(request: Request) -> Sessions:
    """The app's sessions, made on first use (the dashboard is one router; the app knows nothing of it)."""
    state = request.app.state
    if not hasattr(state, "ui_sessions"):
        state.ui_sessions = Sessions()
    found: Sessions = state.ui_sessions
    return found


def set_cookie(response: Response, name: str, value: str, *, path: str, max_age: int) -> None:
    response.set_cookie(
        name, value, max_age=max_age, path=path, secure=True, httponly=True, samesite="strict"
    )


def check_csrf(expected: str | None, sent: object) -> None:
    """Refuse a form whose token is missing or not this session's (compared in constant time)."""
    if not expected or not isinstance(sent, str) or not hmac.compare_digest(expected, sent):
        raise AuthError(
            "the form's CSRF token is missing or stale; reload the page", code=ReasonCode.FORBIDDEN
        )
