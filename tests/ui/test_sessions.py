"""Dashboard sessions on their own: expiry when idle, a lifetime however busy, a bound on their number."""

from __future__ import annotations

import time

import pytest

from pdsno.nbi.auth import AuthError
from pdsno.ui.sessions import Sessions, check_csrf


def test_a_session_ends_when_idle_and_after_its_lifetime_even_when_busy() -> None:
    sessions = Sessions(idle_s=0.5, lifetime_s=1.2)
    idle, _ = sessions.open("hash-a")
    busy, _ = sessions.open("hash-b")
    for _ in range(4):
        time.sleep(0.25)
        assert sessions.get(busy) is not None
    assert sessions.get(idle) is None, "idle for longer than idle_s"
    time.sleep(0.3)
    assert sessions.get(busy) is None, "past its lifetime although used all along"


def test_the_oldest_session_makes_room_and_a_closed_one_is_gone() -> None:
    sessions = Sessions(most=2)
    first, _ = sessions.open("hash-a")
    second, _ = sessions.open("hash-b")
    third, session = sessions.open("hash-c")
    assert sessions.get(first) is None and sessions.get(second) is not None
    assert sessions.get(third) is session and session.token_hash == "hash-c"
    sessions.close(third)
    assert sessions.get(third) is None and sessions.get(None) is None


@pytest.mark.parametrize(
    ("expected", "sent"), [("token", None), ("token", "other"), (None, "token"), ("token", 1)]
)
def test_a_missing_or_foreign_csrf_token_is_refused(expected: str | None, sent: object) -> None:
    with pytest.raises(AuthError, match="CSRF"):
        check_csrf(expected, sent)


def test_the_sessions_own_csrf_token_passes() -> None:
    check_csrf("token", "token")
