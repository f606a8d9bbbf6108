"""HTTPS client for controller-to-controller calls: TLS against the deployment CA, timeouts, retries.

Retries (reference-design §7): after 1, 2 and 4 s, each ±20 % jitter, on connection failures and
5xx answers only; a 4xx is the peer's considered refusal and is returned at once.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from pdsno.errors import PdsnoError, ReasonCode
from pdsno.transport.rest_tls import MIN_TLS_VERSION

log = logging.getLogger(__name__)

BACKOFF_S: tuple[float, ...] = (1.0, 2.0, 4.0)
JITTER = 0.2


class PeerError(PdsnoError):
    """A peer refused a call (its reason code is kept) or could not be reached."""

    def __init__(self, message: str, *, code: ReasonCode, status: int | None = None) -> None:
        super().__init__(message, code=code)
        self.status = status


def tls_context(ca_file: Path | None, client_cert: tuple[Path, Path] | None = None) -> ssl.SSLContext | bool:
    """Verify peers against the deployment CA and show them ``client_cert`` (certificate, key): East/West
    and admission take no peer without one. Without a CA, plain HTTP is all that is allowed."""
    if ca_file is None:
        return True
    context = ssl.create_default_context(cafile=str(ca_file))
    context.minimum_version = MIN_TLS_VERSION
    if client_cert is not None:
        context.load_cert_chain(str(client_cert[0]), str(client_cert[1]))
    return context


class PeerClient:
    def __init__(
        self,
        *,
        ca_file: Path | None,
        client_cert: tuple[Path, Path] | None = None,
        timeout_s: float = 30.0,
        backoff_s: Sequence[float] = BACKOFF_S,
    ) -> None:
        self._client = httpx.AsyncClient(verify=tls_context(ca_file, client_cert), timeout=timeout_s)
        self._backoff = tuple(backoff_s)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def post(self, url: str, body: bytes | Callable[[], Awaitable[bytes]]) -> Any:
        """POST ``body`` (JSON bytes) and return the decoded JSON answer, retrying what may heal.

        Pass a signed message as a callable that seals it: each attempt then carries a fresh envelope,
        since a receiver that failed after recording the first one would refuse it again as a replay."""
        attempts = len(self._backoff) + 1
        answered_none = False  # an attempt went out and got no answer: the peer may have acted on it
        for attempt in range(attempts):
            content = body if isinstance(body, bytes) else await body()
            try:
                response = await self._client.post(
                    url, content=content, headers={"content-type": "application/json"}
                )
            except httpx.TransportError as exc:
                answered_none = answered_none or not isinstance(exc, _NEVER_SENT)
                code = ReasonCode.PEER_NO_ANSWER if answered_none else ReasonCode.PARENT_UNREACHABLE
                failure: PeerError = PeerError(f"{url}: {exc.__class__.__name__}: {exc}", code=code)
            else:
                if response.status_code < 400:
                    return response.json()
                failure = _refusal(url, response)
                if response.status_code < 500:
                    raise failure
            if attempt + 1 < attempts:
                delay = self._backoff[attempt] * random.uniform(1 - JITTER, 1 + JITTER)  # noqa: S311
                log.warning(
                    "peer call failed, retrying",
                    extra={"url": url, "error": failure.message, "retry_in_s": round(delay, 2)},
                )
                await asyncio.sleep(delay)
        raise failure


# Failures before the request left this host: the peer cannot have seen it.
_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def _refusal(url: str, response: httpx.Response) -> PeerError:
    try:
        body = response.json()
        code = ReasonCode(body["code"])
        message = str(body.get("message", ""))
    except (ValueError, KeyError, TypeError):
        code, message = ReasonCode.INTERNAL_ERROR, response.text[:200]
    return PeerError(f"{url}: {code}: {message}", code=code, status=response.status_code)
