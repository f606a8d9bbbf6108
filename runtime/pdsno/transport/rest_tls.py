"""TLS of the controllers' REST listener: the protocol floor, and the peer's certificate for the app.

The listener asks every client for a certificate (``CERT_OPTIONAL``) and OpenSSL verifies one that is
sent against the deployment CA: a certificate from another CA, or one without the clientAuth usage,
ends the handshake. Whether a request must come with one is the route's business, because the
northbound API (operators with bearer tokens) shares the port with East/West and admission.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from typing import Any, Final

from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MIN_TLS_VERSION: Final = ssl.TLSVersion.TLSv1_2
"""As the broker's ``tls_version tlsv1.2``; set, not left to the Python and OpenSSL build's default."""


class PeerCertificateProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol, handing each request the connection's verified client certificate in
    ``scope["extensions"]["tls"]["client_cert_chain"]`` (PEM), as the ASGI TLS extension names it; uvicorn
    does not fill that extension itself."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        tls = transport.get_extra_info("ssl_object")
        if tls is None:
            return  # a plain listener: no TLS extension, as the ASGI spec has it
        der = tls.getpeercert(binary_form=True)
        chain = [ssl.DER_cert_to_PEM_cert(der)] if der else []
        app = self.app

        async def with_certificate(scope: Scope, receive: Receive, send: Send) -> None:
            scope.setdefault("extensions", {})["tls"] = {"client_cert_chain": chain}
            await app(scope, receive, send)

        self.app = with_certificate


def client_certificate(scope: Mapping[str, Any]) -> str | None:
    """The PEM client certificate the TLS handshake verified for this request, if there was one."""
    chain = ((scope.get("extensions") or {}).get("tls") or {}).get("client_cert_chain") or []
    return str(chain[0]) if chain else None
