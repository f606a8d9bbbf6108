"""``/ui``: the GC's dashboard, server-rendered pages over the same calls as ``/api/v1``.

Every read goes to the NIB's own queries, every decision to the GC's changes object and every role
check to ``pdsno.nbi.auth.authorise``, so four-eyes, tiers and roles hold here exactly as in the API.
A refused request answers with the API's status and reason code, rendered as a page.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, RedirectResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from pydantic import BeforeValidator

from pdsno import __version__
from pdsno.audit.verify import signer_keys, verify_log
from pdsno.canonical import utcnow
from pdsno.changes.proposals import blast_radius
from pdsno.errors import PdsnoError, ReasonCode
from pdsno.ipsort import ip_key, sort_ips
from pdsno.nbi.auth import AuthError, authorise, hash_token
from pdsno.nbi.routes import known_controllers
from pdsno.nib.models import ConfigStatus, Device, DeviceStatus, DeviceType, Event, Operator, OperatorRole
from pdsno.ui.sessions import (
    COOKIE,
    COOKIE_PATH,
    LIFETIME_S,
    LOGIN_COOKIE,
    Session,
    check_csrf,
    sessions_of,
    set_cookie,
)

T = TypeVar("T")
HERE = Path(__file__).parent
STATIC = {p.name: p for p in (HERE / "static").iterdir() if p.is_file()}
SEARCH_SCAN = 10_000
"""A search reads at most this many devices (the NIB has no text index); the page says when it stopped."""
PAGE = 200
FEED_BACKLOG = 15
STREAM_S = 25
"""One event stream lasts this long; the browser reconnects from its last event id, so a GC that stops
never waits on an open dashboard."""
POLL_S = 1.0
# Pages are never cached (they carry the CSRF token); nothing is loaded from anywhere but the GC.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
    "form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def _when(value: datetime | str | None) -> str:
    if value is None:
        return "—"
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _seconds(value: float | None) -> str:
    if value is None:
        return "—"
    if abs(value) < 1:
        return f"{value * 1000:.0f} ms"
    return f"{value:.0f} s" if abs(value) < 120 else f"{value / 60:.0f} min"


templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters.update(
    when=_when, seconds=_seconds, pretty=lambda v: json.dumps(v, indent=2, default=str), sort_ips=sort_ips
)


class _PageRoute(APIRoute):
    """Refusals become pages (or the login form) with the status the API would give, and every answer
    carries the dashboard's security headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                response = await handle(request)
            except PdsnoError as refused:
                response = await _refusal(request, refused)
            response.headers.update(HEADERS)
            response.headers.setdefault("Cache-Control", "no-store")
            return response

        return guarded


router = APIRouter(prefix=COOKIE_PATH, include_in_schema=False, route_class=_PageRoute)


@dataclass
class Visitor:
    operator: Operator
    session: Session


def _visitor(role: OperatorRole) -> Callable[[Request], Awaitable[Visitor]]:
    async def dependency(request: Request) -> Visitor:
        session = sessions_of(request).get(request.cookies.get(COOKIE))
        if session is None:
            raise AuthError("log in first", code=ReasonCode.UNAUTHENTICATED)
        operator = await authorise(request.app.state.node.store, session.token_hash, role)
        return Visitor(operator, session)

    return dependency


Viewer = Annotated[Visitor, Depends(_visitor(OperatorRole.VIEWER))]
Approver = Annotated[Visitor, Depends(_visitor(OperatorRole.APPROVER))]
# A form sends a <select> left at "every …" as an empty value: no filter.
Blank = Annotated[T | None, BeforeValidator(lambda v: v or None)]


async def _refusal(request: Request, refused: PdsnoError) -> Response:
    if refused.code is ReasonCode.UNAUTHENTICATED and request.method == "GET":
        return RedirectResponse(f"{COOKIE_PATH}/login?next={quote(request.url.path)}", status_code=303)
    # The app's own handler decides the status, so a refusal here is the API's refusal.
    handler = next(
        request.app.exception_handlers[c]
        for c in type(refused).__mro__
        if c in request.app.exception_handlers
    )
    answer = await handler(request, refused)
    try:
        visitor: Visitor | None = await _visitor(OperatorRole.VIEWER)(request)
    except PdsnoError:
        visitor = None
    # A refused action goes back to the page it was taken on (its path less the verb).
    back = request.url.path.rsplit("/", 1)[0] if request.method == "POST" else None
    return _render(request, "error.html", visitor, status_code=answer.status_code, error=refused,
                   status=answer.status_code, back=back)  # fmt: skip


def _render(
    request: Request, name: str, visitor: Visitor | None, *, status_code: int = 200, **context: Any
) -> Response:
    base: dict[str, Any] = {"node": request.app.state.node, "version": __version__}
    if visitor is not None:
        base.update(me=visitor.operator, csrf=visitor.session.csrf,
                    can_approve=visitor.operator.role.rank >= OperatorRole.APPROVER.rank)  # fmt: skip
    return templates.TemplateResponse(request, name, {**base, **context}, status_code=status_code)


async def _form(request: Request, visitor: Visitor) -> dict[str, str]:
    form = await request.form()
    check_csrf(visitor.session.csrf, form.get("csrf"))
    return {k: v for k, v in form.items() if isinstance(v, str)}


# --- login ------------------------------------------------------------------------------------


def _next(target: str | None) -> str:
    # Only a dashboard path: a login link must not be a way to send someone elsewhere.
    if target and target.startswith(f"{COOKIE_PATH}/"):
        return target
    return f"{COOKIE_PATH}/devices"


def _login_form(request: Request, *, error: str | None = None, status_code: int = 200) -> Response:
    csrf = secrets.token_urlsafe(32)
    response = _render(request, "login.html", None, status_code=status_code, csrf=csrf, error=error,
                       next=_next(request.query_params.get("next")))  # fmt: skip
    # Double submit: the form's token must match this cookie, which no other site can read or set.
    set_cookie(response, LOGIN_COOKIE, csrf, path=f"{COOKIE_PATH}/login", max_age=900)
    return response


@router.get("/")
async def home() -> Response:
    return RedirectResponse(f"{COOKIE_PATH}/devices", status_code=303)


@router.get("/login")
async def login_page(request: Request) -> Response:
    return _login_form(request)


@router.post("/login")
async def login(request: Request) -> Response:
    form = await request.form()
    check_csrf(request.cookies.get(LOGIN_COOKIE), form.get("csrf"))
    token = str(form.get("token") or "").strip()
    try:
        await authorise(request.app.state.node.store, hash_token(token), OperatorRole.VIEWER)
    except AuthError as refused:
        return _login_form(request, error=refused.message, status_code=401)
    session_id, _ = sessions_of(request).open(hash_token(token))
    response = RedirectResponse(_next(str(form.get("next") or "")), status_code=303)
    set_cookie(response, COOKIE, session_id, path=COOKIE_PATH, max_age=LIFETIME_S)
    response.delete_cookie(LOGIN_COOKIE, path=f"{COOKIE_PATH}/login")
    return response


@router.post("/logout")
async def logout(request: Request, visitor: Viewer) -> Response:
    await _form(request, visitor)
    sessions_of(request).close(request.cookies.get(COOKIE))
    response = RedirectResponse(f"{COOKIE_PATH}/login", status_code=303)
    response.delete_cookie(COOKIE, path=COOKIE_PATH, secure=True, httponly=True, samesite="strict")
    return response


@router.get("/static/{name}")
async def static(name: str) -> Response:
    if name not in STATIC:
        raise PdsnoError(f"no file {name}", code=ReasonCode.NOT_FOUND)
    return FileResponse(STATIC[name], headers={"Cache-Control": "max-age=300"})


# --- devices ------------------------------------------------------------------------------------


def _matches(device: Device, needle: str) -> bool:
    fields = [device.device_id, device.mac_address, device.hostname, device.ip_address, device.vendor,
              device.snmp_info.get("sys_name"), *device.addresses]  # fmt: skip
    return any(needle in str(f).lower() for f in fields if f)


@router.get("/devices")
async def devices(
    request: Request,
    visitor: Viewer,
    q: str = "",
    region: Blank[str] = None,
    status: Blank[DeviceStatus] = None,
    device_type: Blank[DeviceType] = None,
) -> Response:
    store = request.app.state.node.store
    scanned: list[Device] = await store.list_devices(
        region=region, status=status, device_type=device_type, limit=SEARCH_SCAN
    )
    needle = q.strip().lower()
    found = [d for d in scanned if _matches(d, needle)] if needle else scanned
    # By name; devices without one after them, by address in numeric order (198.18.1.2 before .11).
    found.sort(
        key=lambda d: (
            d.region or "",
            d.hostname is None,
            d.hostname or "",
            ip_key(d.ip_address),
            d.device_id,
        )
    )
    regions = sorted({c.region for c in await store.list_controllers() if c.region})
    summary = {
        r: {s.value: await store.count_devices(region=r, status=s) for s in DeviceStatus} for r in regions
    }
    return _render(request, "devices.html", visitor, devices=found[:PAGE], total=len(found),
                 truncated=len(found) > PAGE or len(scanned) == SEARCH_SCAN, summary=summary,
                 regions=regions, statuses=list(DeviceStatus), types=list(DeviceType),
                 filters={"q": q, "region": region, "status": status, "device_type": device_type})  # fmt: skip


@router.get("/devices/{device_id}")
async def device(request: Request, device_id: str, visitor: Viewer) -> Response:
    store = request.app.state.node.store
    found: Device | None = await store.get_device(device_id)
    if found is None:
        raise PdsnoError(f"no device {device_id}", code=ReasonCode.NOT_FOUND)
    history: list[Event] = await store.events_about(device_id)
    return _render(request, "device.html", visitor, device=found, history=list(reversed(history)))


# --- controllers ----------------------------------------------------------------------------------


@router.get("/controllers")
async def controllers(request: Request, visitor: Viewer) -> Response:
    node = request.app.state.node
    now = utcnow()
    # A controller is counted live while fewer than three heartbeats in a row are missing.
    live_s = 3 * node.config.mqtt.heartbeat_interval_s
    rows = []
    for view in await known_controllers(node):
        # Each one the GC knows, then those its heartbeat vouches for (an RC's local controllers).
        for entry, vouched in ((view, False), *((child, True) for child in view["children"])):
            seen = entry["last_seen"]
            age = (now - datetime.fromisoformat(seen)).total_seconds() if seen else None
            skew = entry["clock_skew_s"] if vouched else (entry["clock"] or {}).get("skew_s")
            rows.append({
                "view": entry,
                "parent": view["controller_id"] if vouched else entry["parent_id"],
                "vouched": vouched,
                "self": entry["controller_id"] == node.controller_id,
                "age": age,
                "live": age is not None and age < live_s,
                "skew": skew,
            })  # fmt: skip
    return _render(request, "controllers.html", visitor, rows=rows, mqtt_connected=node.mqtt_connected,
                 live_s=live_s)  # fmt: skip


# --- proposals --------------------------------------------------------------------------------------


@router.get("/proposals")
async def proposals(request: Request, visitor: Viewer, status: Blank[ConfigStatus] = None) -> Response:
    store = request.app.state.node.store
    found = await store.list_proposals(status=status, limit=PAGE, newest_first=True)
    return _render(request, "proposals.html", visitor, proposals=found,
                 total=await store.count_proposals(status=status), statuses=list(ConfigStatus),
                 status=status)  # fmt: skip


def _diff(view: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """What the change does per device: as executed (read before, written after) once the local
    controller reported it, else the values it will write."""
    for event in reversed(view["audit"]):
        results = event["payload"].get("device_results")
        if isinstance(results, dict) and any(isinstance(r, dict) and r.get("diff") for r in results.values()):
            return {d: list(r.get("diff") or []) for d, r in results.items() if isinstance(r, dict)}
    wanted = view["config_payload"].get("set") or {}
    return {
        d: [{"key": k, "before": None, "after": v} for k, v in wanted.items()] for d in view["target_devices"]
    }


@router.get("/proposals/{proposal_id}")
async def proposal(request: Request, proposal_id: str, visitor: Viewer) -> Response:
    node = request.app.state.node
    view: dict[str, Any] = await node.changes.view(proposal_id, audit=True)
    targets = [d for d in [await node.store.get_device(i) for i in view["target_devices"]] if d is not None]
    return _render(request, "proposal.html", visitor, p=view, radius=blast_radius(targets),
                 targets={d.device_id: d for d in targets}, diff=_diff(view),
                 waiting=view["status"] in (ConfigStatus.PENDING.value, ConfigStatus.QUEUED.value))  # fmt: skip


@router.post("/proposals/{proposal_id}/approve")
async def approve(request: Request, proposal_id: str, visitor: Approver) -> Response:
    form = await _form(request, visitor)
    await request.app.state.node.changes.approve(
        proposal_id, operator=visitor.operator.name, reason=form.get("reason") or None
    )
    return RedirectResponse(f"{COOKIE_PATH}/proposals/{proposal_id}", status_code=303)


@router.post("/proposals/{proposal_id}/deny")
async def deny(request: Request, proposal_id: str, visitor: Approver) -> Response:
    form = await _form(request, visitor)
    reason = form.get("reason", "").strip()
    if not reason:
        raise PdsnoError("a denial needs a reason", code=ReasonCode.INVALID_REQUEST)
    await request.app.state.node.changes.deny(proposal_id, operator=visitor.operator.name, reason=reason)
    return RedirectResponse(f"{COOKIE_PATH}/proposals/{proposal_id}", status_code=303)


# --- audit ------------------------------------------------------------------------------------------


@router.get("/audit")
async def audit(request: Request, visitor: Viewer, q: str = "") -> Response:
    node = request.app.state.node
    report = await verify_log(node.store, await signer_keys(node.store, node.own_public_keys()))
    recent: list[Event] = await node.store.last_events(PAGE)
    needle = q.strip().lower()
    shown = [
        e for e in reversed(recent) if not needle or needle in f"{e.event_type} {e.actor} {e.subject}".lower()
    ]
    signers = Counter(e.signer_id for e in recent)
    return _render(
        request, "audit.html", visitor, report=report.as_dict(), events=shown, q=q, signers=signers
    )


# --- live events ------------------------------------------------------------------------------------


def _feed_item(event: Event) -> dict[str, Any]:
    return {"seq": event.seq, "event_type": event.event_type, "actor": event.actor, "subject": event.subject,
            "timestamp": event.timestamp.isoformat()}  # fmt: skip


@router.get("/events")
async def events(request: Request, visitor: Viewer) -> Response:
    """Audit events as server-sent events, polled from the NIB by sequence number: the last few first, so
    a page opens with some history, then each new one."""
    store = request.app.state.node.store
    resumed = request.headers.get("last-event-id", "")
    head = (await store.audit_head()).seq
    # A reconnecting browser goes on from its last event; a new one gets the backlog, marked as history.
    cursor, history_until = (int(resumed), 0) if resumed.isdigit() else (max(0, head - FEED_BACKLOG), head)
    session_id = request.cookies.get(COOKIE)

    async def stream() -> AsyncIterator[str]:
        nonlocal cursor
        yield "retry: 1000\n\n"
        deadline = time.monotonic() + STREAM_S
        # A logged-out session's stream ends at the next poll.
        while time.monotonic() < deadline and sessions_of(request).get(session_id) is not None:
            for event in await store.read_events(after_seq=cursor, limit=100):
                cursor = event.seq
                kind = "history" if event.seq <= history_until else "audit"
                yield f"id: {event.seq}\nevent: {kind}\ndata: {json.dumps(_feed_item(event))}\n\n"
            await asyncio.sleep(POLL_S)

    return StreamingResponse(stream(), media_type="text/event-stream")
