"""The status page and JSON API, served by aiohttp."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from jinja2 import Environment

from gateway import fields
from gateway.config import is_loopback
from gateway.errors import StorageUnavailable
from gateway.model import TicketDetail, TicketFilter, TicketSummary
from gateway.notices import TEMPLATES_DIR, make_environment

log = logging.getLogger(__name__)

DEFAULT_PER_PAGE = 50
MAX_PER_PAGE = 200
STATIC_DIR = TEMPLATES_DIR / "static"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
STORE_KEY = web.AppKey("store", object)
TOKEN_KEY = web.AppKey("access_token", object)
TEMPLATES_KEY = web.AppKey("templates", Environment)
NOW_KEY = web.AppKey("now", object)


def make_web_app(
    store: Any,
    *,
    access_token: str | None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> web.Application:
    """Build the aiohttp application with every route and middleware."""
    app = web.Application(middlewares=[_security_headers, _access_control])
    app[STORE_KEY] = store
    app[TOKEN_KEY] = access_token
    app[TEMPLATES_KEY] = make_environment()
    app[NOW_KEY] = now
    app.router.add_get("/", status_page)
    app.router.add_get("/tickets/{number}", ticket_page)
    app.router.add_get("/api/tickets", api_tickets)
    app.router.add_get("/api/tickets/{number}", api_ticket)
    app.router.add_get("/healthz", healthz)
    app.router.add_static("/static/", STATIC_DIR, show_index=False)
    return app


@web.middleware
async def _security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = exc
    except StorageUnavailable:
        log.exception("database unavailable for %s", request.path)
        response = web.Response(status=503, text="The ticket store is unavailable.\n")
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if isinstance(response, web.HTTPException):
        raise response
    return response


@web.middleware
async def _access_control(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path == "/healthz" or request.path.startswith("/static/"):
        return await handler(request)
    token = request.app[TOKEN_KEY]
    if token is None:
        # With no token the page is for this machine only; `serve` refuses to
        # listen elsewhere without one, and this also covers a proxy in front.
        if not is_loopback(request.remote or ""):
            raise web.HTTPForbidden(text="Set web.access_token to open the status page "
                                         "from another machine.\n")
        return await handler(request)
    if _has_token(request, str(token)):
        return await handler(request)
    raise web.HTTPUnauthorized(
        text="A valid access token is required.\n",
        headers={"WWW-Authenticate": 'Bearer realm="support-gateway"'},
    )


def _has_token(request: web.Request, token: str) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(value.strip(), token):
        return True
    return False


async def healthz(request: web.Request) -> web.Response:
    """Report whether the database answers."""
    healthy = await request.app[STORE_KEY].ping()
    body = {"status": "ok" if healthy else "unavailable", "database": healthy}
    return web.json_response(body, status=200 if healthy else 503)


async def status_page(request: web.Request) -> web.Response:
    """Render the ticket list with the desk's counts."""
    where, page, per_page = _read_filters(request)
    async with request.app[STORE_KEY].read() as tx:
        listing = await tx.list_tickets(where, page=page, per_page=per_page)
    pages = max(1, -(-listing.matched // per_page))
    html = request.app[TEMPLATES_KEY].get_template("status_page.html").render(
        listing=listing,
        where=where,
        pages=pages,
        now=request.app[NOW_KEY](),
        categories=fields.CATEGORIES,
        severities=fields.SEVERITIES,
        statuses=fields.STATUSES,
        labels=fields.BUILDER_LABELS,
        page_url=lambda number: _page_url(request, number),
        relative_time=relative_time,
    )
    return web.Response(text=html, content_type="text/html", charset="utf-8")


async def ticket_page(request: web.Request) -> web.Response:
    """Render one ticket with its whole conversation."""
    ticket = await _load_ticket(request)
    html = request.app[TEMPLATES_KEY].get_template("ticket_page.html").render(
        ticket=ticket,
        now=request.app[NOW_KEY](),
        labels=fields.BUILDER_LABELS,
        relative_time=relative_time,
    )
    return web.Response(text=html, content_type="text/html", charset="utf-8")


async def api_tickets(request: web.Request) -> web.Response:
    """Return the filtered ticket list as JSON."""
    where, page, per_page = _read_filters(request)
    async with request.app[STORE_KEY].read() as tx:
        listing = await tx.list_tickets(where, page=page, per_page=per_page)
    return web.json_response(
        {
            "total": listing.total,
            "open": listing.open,
            "by_label": listing.label_counts,
            "matched": listing.matched,
            "page": listing.page,
            "per_page": listing.per_page,
            "tickets": [ticket_json(t) for t in listing.tickets],
        }
    )


async def api_ticket(request: web.Request) -> web.Response:
    """Return one ticket with its conversation as JSON."""
    ticket = await _load_ticket(request)
    body = ticket_json(ticket.summary)
    body.update(
        description=ticket.description,
        resolution_summary=ticket.resolution_summary,
        duplicate_of=ticket.duplicate_of,
        status_changed_at=ticket.status_changed_at.isoformat(),
        messages=[
            {
                "id": m.id,
                "visibility": m.visibility,
                "kind": m.kind,
                "author": m.author,
                "body": m.body,
                "created_at": m.created_at.isoformat(),
                "attachments": [
                    {
                        "id": a.id,
                        "filename": a.filename,
                        "content_type": a.content_type,
                        "size_bytes": a.size_bytes,
                        "sha256": a.sha256,
                    }
                    for a in m.attachments
                ],
            }
            for m in ticket.messages
        ],
    )
    return web.json_response(body)


def ticket_json(ticket: TicketSummary) -> dict[str, Any]:
    """Return the JSON form of a ticket as lists show it."""
    return {
        "number": ticket.number,
        "title": ticket.title,
        "status": ticket.status,
        "status_label": ticket.status_label,
        "category": ticket.category,
        "category_label": fields.CATEGORIES[ticket.category],
        "severity": ticket.severity,
        "severity_label": fields.SEVERITIES[ticket.severity],
        "priority": ticket.priority,
        "app": ticket.app_name or fields.ACCOUNT_LEVEL_APP,
        "app_uri": ticket.app_uri,
        "builder": ticket.builder_email,
        "builder_name": ticket.builder_name,
        "assignee": ticket.assignee,
        "created_at": ticket.created_at.isoformat(),
        "last_activity_at": ticket.last_activity_at.isoformat(),
    }


async def _load_ticket(request: web.Request) -> TicketDetail:
    raw = request.match_info["number"].lstrip("#")
    if not raw.isdigit():
        raise web.HTTPBadRequest(text=f"Ticket number {raw!r} is not a number.\n")
    async with request.app[STORE_KEY].read() as tx:
        ticket = await tx.get_ticket(int(raw))
    if ticket is None:
        raise web.HTTPNotFound(text=f"No ticket #{raw}.\n")
    return ticket


def _read_filters(request: web.Request) -> tuple[TicketFilter, int, int]:
    query = request.query
    status = query.get("status") or None
    if status and status not in fields.STATUSES and status not in fields.BUILDER_LABELS:
        raise _bad_filter("status", status, [*fields.STATUSES, *fields.BUILDER_LABELS])
    category = query.get("category") or None
    if category and category not in fields.CATEGORIES:
        raise _bad_filter("category", category, list(fields.CATEGORIES))
    severity = query.get("severity") or None
    if severity and severity not in fields.SEVERITIES:
        raise _bad_filter("severity", severity, list(fields.SEVERITIES))
    page = _positive_int(query, "page", 1, 10**9)
    per_page = _positive_int(query, "per_page", DEFAULT_PER_PAGE, MAX_PER_PAGE)
    where = TicketFilter(
        status=status,
        category=category,
        severity=severity,
        app=query.get("app") or None,
        builder=query.get("builder") or None,
    )
    return where, page, per_page


def _positive_int(query: Any, name: str, default: int, maximum: int) -> int:
    raw = query.get(name)
    if not raw:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= maximum:
        raise web.HTTPBadRequest(
            text=f"Query parameter {name}={raw!r} is invalid; use a whole number "
            f"from 1 to {maximum}.\n"
        )
    return int(raw)


def _bad_filter(name: str, value: str, allowed: list[str]) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(
        text=f"Unknown {name} {value!r}; use one of: {', '.join(allowed)}.\n"
    )


def _page_url(request: web.Request, page: int) -> str:
    params = {k: v for k, v in request.query.items() if k != "page" and v}
    params["page"] = str(page)
    return f"{request.path}?{urlencode(params)}"


def relative_time(moment: datetime, now: datetime) -> str:
    """Return a short phrase such as "5 minutes ago" for MOMENT."""
    seconds = int((now - moment).total_seconds())
    if seconds < 45:
        return "just now"
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = round(seconds / size)
            return f"{count} {unit}{'s' if count != 1 else ''} ago"
    return "just now"
