"""The CLI's client of the GC's northbound API (``/api/v1``) and the options that say where it is.

``--url``/``--token``/``--ca`` come from ``PDSNO_URL``, ``PDSNO_TOKEN`` and ``PDSNO_CA_PATH`` when not
given: the same variables the collection's modules read. ``PDSNO_CA``, which older releases of the CLI
read, is still honoured with a warning.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import httpx
from click.core import ParameterSource

from pdsno.errors import PdsnoError, ReasonCode

API_PREFIX = "/api/v1"
CA_ENV = "PDSNO_CA_PATH"
DEPRECATED_CA_ENV = "PDSNO_CA"

F = TypeVar("F", bound=Callable[..., Any])


def base_url(url: str) -> str:
    """The GC's base address: the API's own prefix is accepted too, since that is the URL people see
    in the docs and in ``/openapi.json``."""
    url = url.rstrip("/")
    return url.removesuffix(API_PREFIX).rstrip("/")


def _tls_failure(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error under an httpx connection error, if that is what it was (httpx wraps it)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


class Api:
    """Bearer-authenticated JSON calls to one GC; every failure is a :class:`PdsnoError` with its code."""

    def __init__(self, url: str, token: str, ca: Path | None, timeout: float = 30.0) -> None:
        verify: Any = str(ca) if ca else True
        self.url = base_url(url)
        self._client = httpx.Client(base_url=self.url, verify=verify, timeout=timeout,
                                    headers={"Authorization": f"Bearer {token}"})  # fmt: skip

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        where = self.url
        try:
            response = self._client.request(method, API_PREFIX + path, **kwargs)
        except httpx.HTTPError as exc:
            tls = _tls_failure(exc)
            if isinstance(tls, ssl.SSLCertVerificationError):
                raise PdsnoError(
                    f"{where}: the GC's TLS certificate is not trusted ({tls.verify_message}): give the "
                    f"deployment CA with --ca or {CA_ENV}",
                    code=ReasonCode.TLS_ERROR,
                ) from None
            if tls is not None:
                raise PdsnoError(
                    f"{where}: TLS handshake failed ({tls.reason or tls}): is this the GC's HTTPS port?",
                    code=ReasonCode.TLS_ERROR,
                ) from None
            raise PdsnoError(f"{where}: {exc}", code=ReasonCode.PARENT_UNREACHABLE) from None
        if response.status_code >= 400:
            raise self._refusal(method, path, response)
        return response.json() if response.content else None

    def _refusal(self, method: str, path: str, response: httpx.Response) -> PdsnoError:
        try:
            body = response.json()
            return PdsnoError(body["message"], code=ReasonCode(body["code"]))
        except (ValueError, KeyError, TypeError):
            pass
        # Not an answer of the GC's API: the address points somewhere else on the server, or at
        # another server.
        code = ReasonCode.NOT_FOUND if response.status_code == 404 else ReasonCode.INTERNAL_ERROR
        return PdsnoError(
            f"{method} {response.url}: HTTP {response.status_code} {response.text[:200]}: not an answer of "
            f"the PDSNO API; --url/PDSNO_URL must be the GC's address, e.g. https://gc:8443",
            code=code,
        )


def _ca_source(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    if (
        value is not None
        and param.name is not None
        and ctx.get_parameter_source(param.name) is ParameterSource.ENVIRONMENT
        and not os.environ.get(CA_ENV)
    ):
        click.echo(f"pdsno: warning: {DEPRECATED_CA_ENV} is deprecated, set {CA_ENV} instead", err=True)
    return value


def connection_options(command: F) -> F:
    """``--url``, ``--token`` and ``--ca`` (with their environment variables) on a command."""
    for option in reversed([
        click.option("--url", envvar="PDSNO_URL", required=True, show_envvar=True,
                     help="The GC's address, e.g. https://gc:8443 (a trailing /api/v1 is fine)."),
        click.option("--token", envvar="PDSNO_TOKEN", required=True, show_envvar=True, help="Your bearer token."),
        click.option("--ca", "--ca-path", "ca", envvar=[CA_ENV, DEPRECATED_CA_ENV], callback=_ca_source,
                     type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help=f"The deployment CA certificate (PEM).  [env var: {CA_ENV}]"),
    ]):  # fmt: skip
        command = option(command)
    return command
