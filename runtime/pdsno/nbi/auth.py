"""Operator bearer tokens: 256-bit random, shown once, stored only as SHA-256, checked per role."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Awaitable, Callable

from fastapi import Request

from pdsno.errors import PdsnoError, ReasonCode
from pdsno.nib.models import Decision, EventDraft, Operator, OperatorRole
from pdsno.nib.store import NIBResult, NIBStore

TOKEN_PREFIX = "pdsno_"  # noqa: S105 (a prefix that marks tokens in logs and scanners)


class AuthError(PdsnoError):
    @property
    def http_status(self) -> int:
        return 403 if self.code is ReasonCode.FORBIDDEN else 401


def hash_token(token: str) -> str:
    # The tokens are uniformly random, so a fast hash is as good as a slow one here.
    return hashlib.sha256(token.encode()).hexdigest()


async def add_operator(
    store: NIBStore, *, name: str, role: OperatorRole, actor: str
) -> tuple[NIBResult[Operator], str]:
    """Create an operator; returns the result and the bearer token, which is never stored in clear."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    operator = Operator(operator_id=str(uuid.uuid4()), name=name, role=role, token_hash=hash_token(token))
    result = await store.put_operator(
        operator,
        events=[
            EventDraft(
                event_type="OPERATOR_ADDED",
                actor=actor,
                subject=name,
                action="operator add",
                decision=Decision.APPROVED,
                payload={"role": role.value, "operator_id": operator.operator_id},
            )
        ],
    )
    return result, token


async def authorise(store: NIBStore, token_hash: str, role: OperatorRole) -> Operator:
    """The operator whose token hashes to ``token_hash``, if enabled and their role is high enough; the
    dashboard's sessions are checked here too, so both faces of the GC apply one rule."""
    operator = await store.get_operator_by_token_hash(token_hash)
    if operator is None or operator.disabled:
        raise AuthError("unknown or disabled token", code=ReasonCode.UNAUTHENTICATED)
    if operator.role.rank < role.rank:
        raise AuthError(
            f"{operator.name} is {operator.role.value}; this needs {role.value}",
            code=ReasonCode.FORBIDDEN,
        )
    return operator


def require(role: OperatorRole) -> Callable[[Request], Awaitable[Operator]]:
    """FastAPI dependency: the calling operator, if their token is valid and their role high enough."""

    async def dependency(request: Request) -> Operator:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise AuthError("send 'Authorization: Bearer <token>'", code=ReasonCode.UNAUTHENTICATED)
        return await authorise(request.app.state.node.store, hash_token(token.strip()), role)

    return dependency
