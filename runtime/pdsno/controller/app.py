"""The controller's REST face: East/West endpoints for peers, ``/healthz``, ``/info``, and on the GC
the northbound API. Every error is JSON ``{"code", "message"}`` with a stable reason code.

East/West and admission take only peers that showed a certificate from the deployment CA in the TLS
handshake (mutual TLS); the northbound API on the same port authenticates operators by bearer token.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.requests import ClientDisconnect

from pdsno import __version__
from pdsno.admission.validator import AdmissionRefused, Validator
from pdsno.errors import PdsnoError, ReasonCode
from pdsno.messaging.envelope import Envelope, MessageRejected, MessageType
from pdsno.messaging.messages import ChallengeResponse
from pdsno.messaging.verify import Verifier
from pdsno.metrics import CONTENT_TYPE, ControllerMetrics
from pdsno.nbi.auth import AuthError
from pdsno.nbi.changes import router as changes_router
from pdsno.nbi.policy import router as policy_router
from pdsno.nbi.routes import router as nbi_router
from pdsno.nib.models import ControllerRole
from pdsno.transport.rest_tls import client_certificate
from pdsno.ui.routes import router as ui_router

if TYPE_CHECKING:
    from pdsno.nib.sql import SqlNIBStore

Handler = Callable[[Envelope], Awaitable[Envelope | None]]

MESSAGES_PATH = "/ew/v1/messages"
ADMISSION_REQUEST_PATH = "/ew/v1/admission/request"
ADMISSION_RESPONSE_PATH = "/ew/v1/admission/response"

_STATUS = {
    ReasonCode.NOT_FOUND: 404,
    ReasonCode.INVALID_REQUEST: 422,
    ReasonCode.UNSUPPORTED_MESSAGE_TYPE: 422,
    ReasonCode.NIB_UNAVAILABLE: 503,
    **dict.fromkeys(
        (ReasonCode.FOUR_EYES_VIOLATION, ReasonCode.IMMUTABLE_RULE, ReasonCode.EMERGENCY_TYPE_NOT_PERMITTED,
         ReasonCode.INVALID_TOKEN, ReasonCode.TOKEN_EXPIRED, ReasonCode.TOKEN_HASH_MISMATCH,
         ReasonCode.TOKEN_DEVICE_MISMATCH, ReasonCode.TOKEN_ALREADY_CONSUMED), 403),
    **dict.fromkeys(
        (ReasonCode.CONFLICT, ReasonCode.INVALID_TRANSITION, ReasonCode.DUPLICATE_PROPOSAL,
         ReasonCode.POLICY_VERSION_MISMATCH, ReasonCode.LOCK_RACE, ReasonCode.DENY_CONFLICT,
         ReasonCode.DEVICE_STATE_CHANGED, ReasonCode.DEVICE_DEGRADED, ReasonCode.DEVICE_NOT_AVAILABLE,
         ReasonCode.EMERGENCY_RATE_LIMITED, ReasonCode.TOO_MANY_REGIONS), 409),
    # A device or an executor failed: the request was fine, asking again at once will not help.
    **dict.fromkeys(
        (ReasonCode.DEVICE_UNREACHABLE, ReasonCode.DEVICE_READ_FAILED, ReasonCode.DEVICE_WRITE_FAILED,
         ReasonCode.CHANGE_VERIFY_FAILED, ReasonCode.EXECUTOR_UNAVAILABLE, ReasonCode.EXECUTOR_TIMEOUT,
         ReasonCode.CONFIG_INVALID), 424),
}  # fmt: skip


class Node(Protocol):
    """What the app needs of a running controller."""

    @property
    def controller_id(self) -> str: ...

    @property
    def role(self) -> ControllerRole: ...

    @property
    def region(self) -> str | None: ...

    @property
    def public_key(self) -> str: ...

    @property
    def store(self) -> SqlNIBStore: ...

    @property
    def verifier(self) -> Verifier: ...

    @property
    def validator(self) -> Validator | None: ...

    @property
    def handlers(self) -> Mapping[MessageType, Handler]: ...

    @property
    def mqtt_connected(self) -> bool: ...

    @property
    def mqtt_outbox_depth(self) -> int: ...


def _error(code: ReasonCode, message: str, status: int) -> JSONResponse:
    return JSONResponse({"code": code.value, "message": message}, status_code=status)


async def read_body(request: Request, limit: int) -> bytes:
    """At most ``limit`` bytes of the body: enough to tell an oversized message, never all of it."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return b"\0" * limit
    # The ASGI messages themselves, not request.stream(): an async generator per request costs ~15 µs
    # of asyncio's bookkeeping, a twentieth of a signed message's whole price.
    body = bytearray()
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        body += message.get("body", b"")
        if len(body) >= limit:
            return bytes(body[:limit])
        if not message.get("more_body", False):
            return bytes(body)


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None


def build_app(node: Node, *, require_client_certificate: bool = False) -> FastAPI:
    """``require_client_certificate``: refuse East/West and admission requests that came without a
    verified TLS client certificate (the listener's handshake checked it against the deployment CA)."""
    app = FastAPI(
        title=f"PDSNO {node.role.value} controller",
        version=__version__,
        docs_url=None,
        redoc_url=None,
    )
    app.state.node = node

    @app.exception_handler(MessageRejected)
    async def rejected(_: Request, exc: MessageRejected) -> JSONResponse:
        return _error(exc.code, exc.message, exc.http_status)

    @app.exception_handler(AdmissionRefused)
    async def refused(_: Request, exc: AdmissionRefused) -> JSONResponse:
        return _error(exc.code, exc.message, exc.http_status)

    @app.exception_handler(AuthError)
    async def unauthorised(_: Request, exc: AuthError) -> JSONResponse:
        response = _error(exc.code, exc.message, exc.http_status)
        if exc.http_status == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(PdsnoError)
    async def pdsno_error(_: Request, exc: PdsnoError) -> JSONResponse:
        response = _error(exc.code, exc.message, _STATUS.get(exc.code, 500))
        if exc.details:
            response = JSONResponse(jsonable_encoder(exc.as_dict()), status_code=response.status_code)
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error(ReasonCode.INVALID_REQUEST, f"{where}: {first.get('msg')}", 422)

    @app.get("/healthz", tags=["east-west"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/info", tags=["east-west"])
    async def info() -> dict[str, Any]:
        return {
            "controller_id": node.controller_id,
            "role": node.role.value,
            "region": node.region,
            "version": __version__,
            "public_key": node.public_key,
            "admits": node.validator.admits.value if node.validator else None,
        }

    async def peer_authenticated(request: Request) -> None:
        if require_client_certificate and client_certificate(request.scope) is None:
            code = ReasonCode.CLIENT_CERTIFICATE_REQUIRED
            await node.verifier.record(code, None, transport="rest", source=_client(request),
                                       details={"path": request.url.path})  # fmt: skip
            raise MessageRejected(
                f"{request.url.path} takes only controllers with a TLS client certificate from the "
                "deployment CA",
                code=code,
            )

    metrics = ControllerMetrics()

    @app.get("/metrics", tags=["monitoring"])
    async def prometheus(request: Request) -> Response:
        """Prometheus metrics, for a scraper that shows a certificate from the deployment CA: the same
        mutual TLS as East/West, so every controller (not only the GC with its operators) can be scraped."""
        if client_certificate(request.scope) is None:
            raise MessageRejected(
                "/metrics takes only scrapers with a TLS client certificate from the deployment CA",
                code=ReasonCode.CLIENT_CERTIFICATE_REQUIRED,
            )
        return Response(await metrics.render(node), media_type=CONTENT_TYPE)

    @app.post(MESSAGES_PATH, tags=["east-west"])
    async def receive(request: Request) -> Response:
        """A signed envelope from a peer; the reply, if any, is a signed envelope too."""
        await peer_authenticated(request)
        raw = await read_body(request, node.verifier.max_bytes + 1)
        envelope = await node.verifier.verify(raw, transport="rest", source=_client(request))
        handler = node.handlers.get(envelope.message_type)
        if handler is None:
            code = ReasonCode.UNSUPPORTED_MESSAGE_TYPE
            await node.verifier.record(code, envelope, transport="rest", source=_client(request))
            return _error(
                code, f"{envelope.message_type} is not handled by a {node.role.value} controller", 422
            )
        with node.verifier.handling(envelope):
            reply = await handler(envelope)
        if reply is None:
            return JSONResponse({"status": "accepted", "message_id": envelope.message_id}, status_code=202)
        return Response(reply.to_bytes(), media_type="application/json")

    @app.post(ADMISSION_REQUEST_PATH, tags=["admission"])
    async def admission_request(request: Request) -> dict[str, Any]:
        """Steps 1-3: an unsigned VALIDATION_REQUEST (the newcomer has no key yet) → a CHALLENGE."""
        await peer_authenticated(request)
        validator = _validator(node)
        raw = await read_body(request, node.verifier.max_bytes + 1)
        if len(raw) > node.verifier.max_bytes:
            raise MessageRejected("admission request too large", code=ReasonCode.MESSAGE_TOO_LARGE)
        envelope = Envelope.parse(raw)
        if envelope.message_type is not MessageType.VALIDATION_REQUEST:
            raise MessageRejected(f"expected VALIDATION_REQUEST, got {envelope.message_type}")
        challenge = await validator.request(envelope, source=_client(request))
        return challenge.model_dump(mode="json")

    @app.post(ADMISSION_RESPONSE_PATH, tags=["admission"])
    async def admission_response(request: Request) -> dict[str, Any]:
        """Steps 4-6: the signed nonce → a VALIDATION_RESULT with identity, certificate and keys."""
        await peer_authenticated(request)
        validator = _validator(node)
        raw = await read_body(request, node.verifier.max_bytes + 1)
        try:
            answer = ChallengeResponse.model_validate_json(raw)
        except ValidationError as exc:
            raise MessageRejected(f"not a CHALLENGE_RESPONSE: {exc.errors()[0]['msg']}") from None
        result = await validator.respond(answer, source=_client(request))
        return result.model_dump(mode="json")

    if node.role is ControllerRole.GLOBAL:
        app.include_router(nbi_router)
        app.include_router(changes_router)
        app.include_router(policy_router)
        app.include_router(ui_router)
    return app


def _validator(node: Node) -> Validator:
    if node.validator is None:
        raise PdsnoError(
            f"a {node.role.value} controller admits no one", code=ReasonCode.CONTROLLER_TYPE_NOT_PERMITTED
        )
    return node.validator
