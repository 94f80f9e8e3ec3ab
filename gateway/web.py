"""The status page and JSON API, served by aiohttp."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from jinja2 import Environment

from gateway import fields
from gateway.builder_links import BuilderLinks
from gateway.errors import StorageUnavailable
from gateway.metrics import CONTENT_TYPE, render_metrics
from gateway.model import (
    Builder,
    MessageView,
    TicketDetail,
    TicketFilter,
    TicketPage,
    TicketSummary,
)
from gateway.notices import TEMPLATES_DIR, make_environment
from gateway.paging import InvalidCursor, PageCursor, decode_cursor, encode_cursor
from gateway.unsubscribe import add_unsubscribe_routes
from gateway.web_access import (
    Access,
    clear_login_cookie,
    is_locked_out,
    make_access_middleware,
    record_failure,
    safe_next,
    set_login_cookie,
)
from gateway.web_files import attachment_response, is_thumbnail_type

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

log = logging.getLogger(__name__)

DEFAULT_PER_PAGE = 50
MAX_PER_PAGE = 200
BUILDER_PER_PAGE = 25
STATIC_DIR = TEMPLATES_DIR / "static"
# No script-src: the pages run no JavaScript at all, so injected markup cannot either.
PAGE_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": PAGE_CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
DEAD_LINK = (
    "This link is invalid, expired or revoked. Open the newest email from "
    "support for a fresh link.\n"
)

STORE_KEY = web.AppKey("store", object)
ACCESS_KEY = web.AppKey("access", Access)
TEMPLATES_KEY = web.AppKey("templates", Environment)
NOW_KEY = web.AppKey("now", object)
LINKS_KEY = web.AppKey("links", object)


def make_web_app(
    store: Any,
    *,
    access_token: str | None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    links: BuilderLinks | None = None,
    secure_cookie: bool = False,
) -> web.Application:
    """Build the aiohttp application with every route and middleware."""
    access = Access(access_token, secure_cookie=secure_cookie)
    app = web.Application(middlewares=[_security_headers, make_access_middleware(access)])
    app[STORE_KEY] = store
    app[ACCESS_KEY] = access
    app[TEMPLATES_KEY] = make_environment()
    app[NOW_KEY] = now
    app[LINKS_KEY] = links
    app.router.add_get("/", status_page)
    app.router.add_get("/tickets/{number}", ticket_page)
    app.router.add_get("/attachments/{id}", attachment)
    app.router.add_get("/api/tickets", api_tickets)
    app.router.add_get("/api/tickets/{number}", api_ticket)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/b/{token}", builder_page)
    app.router.add_get("/b/{token}/tickets/{number}", builder_ticket_page)
    app.router.add_get("/b/{token}/attachments/{id}", builder_attachment)
    app.router.add_get("/b/{token}/api/tickets", builder_api_tickets)
    app.router.add_get("/b/{token}/api/tickets/{number}", builder_api_ticket)
    app.router.add_static("/static/", STATIC_DIR, show_index=False)
    add_unsubscribe_routes(app, store, now=now)
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
    if not request.path.startswith("/static/"):
        # Pages and JSON carry ticket data: keep them out of shared caches.
        response.headers.setdefault("Cache-Control", "no-store")
    if request.path.startswith("/b/"):
        response.headers.setdefault("X-Robots-Tag", "noindex, nofollow")
    if isinstance(response, web.HTTPException):
        raise response
    return response


async def healthz(request: web.Request) -> web.Response:
    """Report whether the database responds."""
    healthy = await request.app[STORE_KEY].ping()
    body = {"status": "ok" if healthy else "unavailable", "database": healthy}
    return web.json_response(body, status=200 if healthy else 503)


async def metrics(request: web.Request) -> web.Response:
    """Return the desk's counts in the Prometheus text format."""
    async with request.app[STORE_KEY].read() as tx:
        counts = await tx.desk_counts()
    response = web.Response(body=render_metrics(counts))
    response.headers["Content-Type"] = CONTENT_TYPE
    return response


# Staff pages


async def status_page(request: web.Request) -> web.Response:
    """Render the ticket list with the desk's counts."""
    where, page, per_page = _read_filters(request)
    cursor = _read_cursor(request)
    async with request.app[STORE_KEY].read() as tx:
        listing = await tx.list_tickets(where, page=page, per_page=per_page, cursor=cursor)
    return _render(
        request,
        "status_page.html",
        listing=listing,
        where=where,
        pages=_page_count(listing.matched, per_page),
        pager=_pager(request, listing),
        categories=fields.CATEGORIES,
        severities=fields.SEVERITIES,
        statuses=fields.STATUSES,
        filter_url=lambda name, value: _filter_url(request, name, value),
    )


async def ticket_page(request: web.Request) -> web.Response:
    """Render one ticket with its whole conversation."""
    ticket = await _load_ticket(request)
    first_body = ticket.messages[0].body if ticket.messages else ""
    return _render(
        request,
        "ticket_page.html",
        ticket=ticket,
        show_description=ticket.description.strip() != first_body.strip(),
    )


async def attachment(request: web.Request) -> web.Response:
    """Serve one stored attachment to the support team."""
    attachment_id = _number(request, "id", "Attachment id", MAX_ROW_ID)
    async with request.app[STORE_KEY].read() as tx:
        found = await tx.get_attachment(attachment_id)
    if found is None:
        raise web.HTTPNotFound(text=f"No attachment {attachment_id}.\n")
    return attachment_response(*found)


async def api_tickets(request: web.Request) -> web.Response:
    """Return the filtered ticket list as JSON, with the cursors of the pages around it."""
    where, page, per_page = _read_filters(request)
    cursor = _read_cursor(request)
    async with request.app[STORE_KEY].read() as tx:
        listing = await tx.list_tickets(where, page=page, per_page=per_page, cursor=cursor)
    return web.json_response(
        {
            "total": listing.total,
            "open": listing.open,
            "by_label": listing.label_counts,
            "matched": listing.matched,
            "matched_exact": listing.matched_exact,
            "page": listing.page,
            "per_page": listing.per_page,
            "tickets": [ticket_json(t) for t in listing.tickets],
            **_cursor_json(listing),
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
        messages=[message_json(m) for m in ticket.messages],
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


def message_json(message: MessageView) -> dict[str, Any]:
    """Return the JSON form of one conversation entry with its attachments."""
    return {
        "id": message.id,
        "visibility": message.visibility,
        "kind": message.kind,
        "author": message.author,
        "body": message.body,
        "created_at": message.created_at.isoformat(),
        "attachments": [
            {
                "id": a.id,
                "filename": a.filename,
                "content_type": a.content_type,
                "size_bytes": a.size_bytes,
                "sha256": a.sha256,
            }
            for a in message.attachments
        ],
    }


# Login


async def login_form(request: web.Request) -> web.StreamResponse:
    """Show the login form, or go straight on when no login is needed."""
    access = request.app[ACCESS_KEY]
    target = safe_next(request.query.get("next"))
    if access.token is None or access.is_signed_in(request):
        raise web.HTTPSeeOther(target)
    return _render(request, "login_page.html", next_path=target, error=None)


async def login(request: web.Request) -> web.StreamResponse:
    """Check the submitted token; set the login cookie or count a failure."""
    access = request.app[ACCESS_KEY]
    form = await request.post()
    target = safe_next(str(form.get("next", "")))
    if access.token is None:
        raise web.HTTPSeeOther(target)
    store = request.app[STORE_KEY]
    peer = request.remote or "unknown"
    now = request.app[NOW_KEY]()
    if await is_locked_out(store, peer, now):
        log.warning("login from %s rejected: too many failed attempts", peer)
        response = _render(
            request, "login_page.html", next_path=target,
            error="Too many failed attempts. Wait 15 minutes, then try again.",
        )
        response.set_status(429)
        response.headers["Retry-After"] = "900"
        return response
    if not access.has_token(str(form.get("token", ""))):
        await record_failure(store, peer, now)
        log.warning("failed login from %s", peer)
        response = _render(
            request, "login_page.html", next_path=target,
            error="That access token is not valid. Check web.access_token and try again.",
        )
        response.set_status(401)
        return response
    log.info("login from %s", peer)
    redirect = web.HTTPSeeOther(target)
    set_login_cookie(redirect, access)
    raise redirect


async def logout(request: web.Request) -> web.StreamResponse:
    """Remove the login cookie and show the login form."""
    redirect = web.HTTPSeeOther("/login")
    clear_login_cookie(redirect)
    raise redirect


# Builder pages: the signed link is the only credential, and each query is
# scoped to the builder it names.


async def builder_page(request: web.Request) -> web.Response:
    """Render the list of one builder's tickets."""
    builder = await _link_builder(request)
    page = _positive_int(request.query, "page", 1, 10**9)
    cursor = _read_cursor(request)
    async with request.app[STORE_KEY].read() as tx:
        listing = await tx.list_builder_tickets(
            builder.id, page=page, per_page=BUILDER_PER_PAGE, cursor=cursor
        )
    return _render(
        request,
        "builder_page.html",
        builder=builder,
        listing=listing,
        pages=_page_count(listing.matched, BUILDER_PER_PAGE),
        pager=_pager(request, listing),
        base=_builder_base(request),
    )


async def builder_ticket_page(request: web.Request) -> web.Response:
    """Render one of the builder's tickets with its public messages."""
    builder = await _link_builder(request)
    ticket = await _builder_ticket(request, builder)
    return _render(
        request, "builder_ticket_page.html", builder=builder, ticket=ticket,
        base=_builder_base(request),
    )


async def builder_attachment(request: web.Request) -> web.Response:
    """Serve an attachment of a public message on one of the builder's tickets."""
    builder = await _link_builder(request)
    attachment_id = _number(request, "id", "Attachment id", MAX_ROW_ID)
    async with request.app[STORE_KEY].read() as tx:
        found = await tx.get_builder_attachment(builder.id, attachment_id)
    if found is None:
        raise web.HTTPNotFound(text=f"No attachment {attachment_id} on your tickets.\n")
    return attachment_response(*found)


async def builder_api_tickets(request: web.Request) -> web.Response:
    """Return one page of the builder's tickets as JSON, with the cursors around it."""
    builder = await _link_builder(request)
    page = _positive_int(request.query, "page", 1, 10**9)
    cursor = _read_cursor(request)
    async with request.app[STORE_KEY].read() as tx:
        listing = await tx.list_builder_tickets(
            builder.id, page=page, per_page=BUILDER_PER_PAGE, cursor=cursor
        )
    return web.json_response(
        {
            "total": listing.total,
            "open": listing.open,
            "by_label": listing.label_counts,
            "page": listing.page,
            "per_page": listing.per_page,
            "tickets": [builder_ticket_json(t) for t in listing.tickets],
            **_cursor_json(listing),
        }
    )


async def builder_api_ticket(request: web.Request) -> web.Response:
    """Return one of the builder's tickets with its public messages as JSON."""
    builder = await _link_builder(request)
    ticket = await _builder_ticket(request, builder)
    body = builder_ticket_json(ticket.summary)
    body.update(
        description=ticket.description,
        resolution_summary=ticket.resolution_summary,
        duplicate_of=ticket.duplicate_of,
        messages=[message_json(m) for m in ticket.messages],
    )
    return web.json_response(body)


def builder_ticket_json(ticket: TicketSummary) -> dict[str, Any]:
    """Return the JSON form of a ticket for its builder: labels, no internal status."""
    return {
        "number": ticket.number,
        "title": ticket.title,
        "status_label": ticket.status_label,
        "category": ticket.category,
        "category_label": fields.CATEGORIES[ticket.category],
        "severity": ticket.severity,
        "severity_label": fields.SEVERITIES[ticket.severity],
        "app": ticket.app_name or fields.ACCOUNT_LEVEL_APP,
        "created_at": ticket.created_at.isoformat(),
        "last_activity_at": ticket.last_activity_at.isoformat(),
    }


async def _link_builder(request: web.Request) -> Builder:
    links = request.app[LINKS_KEY]
    if links is None:
        raise web.HTTPNotFound(text=DEAD_LINK)
    async with request.app[STORE_KEY].read() as tx:
        builder = await links.resolve(tx, request.match_info["token"], now=request.app[NOW_KEY]())
    if builder is None:
        raise web.HTTPNotFound(text=DEAD_LINK)
    return builder


async def _builder_ticket(request: web.Request, builder: Builder) -> TicketDetail:
    number = _number(request, "number", "Ticket number")
    async with request.app[STORE_KEY].read() as tx:
        ticket = await tx.get_builder_ticket(builder.id, number)
    if ticket is None:
        raise web.HTTPNotFound(text=f"No ticket #{number} among your tickets.\n")
    return ticket


def _builder_base(request: web.Request) -> str:
    return f"/b/{request.match_info['token']}"


# Helpers


def _render(request: web.Request, name: str, **context: Any) -> web.Response:
    access = request.app[ACCESS_KEY]
    html = request.app[TEMPLATES_KEY].get_template(name).render(
        now=request.app[NOW_KEY](),
        labels=fields.BUILDER_LABELS,
        relative_time=relative_time,
        is_thumbnail=is_thumbnail_type,
        signed_in=access.token is not None and access.is_signed_in(request),
        **context,
    )
    return web.Response(text=html, content_type="text/html", charset="utf-8")


async def _load_ticket(request: web.Request) -> TicketDetail:
    number = _number(request, "number", "Ticket number")
    async with request.app[STORE_KEY].read() as tx:
        ticket = await tx.get_ticket(number)
    if ticket is None:
        raise web.HTTPNotFound(text=f"No ticket #{number}.\n")
    return ticket


# Ticket numbers are BIGINT columns and attachment ids INTEGER columns.
MAX_TICKET_NUMBER = 10**18 - 1
MAX_ROW_ID = 2**31 - 1


def _number(
    request: web.Request, key: str, label: str, maximum: int = MAX_TICKET_NUMBER
) -> int:
    raw = request.match_info[key].lstrip("#")
    if not _is_digits(raw) or len(raw) > len(str(maximum)) or int(raw) > maximum:
        raise web.HTTPBadRequest(
            text=f"{label} {raw!r} is invalid; use a whole number from 0 to {maximum}.\n"
        )
    return int(raw)


def _is_digits(raw: str) -> bool:
    # str.isdigit() also accepts digits such as "²" or "٣" that int() rejects or
    # reads differently, so only ASCII digits count.
    return raw.isascii() and raw.isdigit()


def _read_filters(request: web.Request) -> tuple[TicketFilter, int, int]:
    query = request.query
    status = query.get("status") or None
    allowed = [*fields.STATUSES, *fields.BUILDER_LABELS, fields.UNFINISHED_FILTER]
    if status and status not in allowed:
        raise _bad_filter("status", status, allowed)
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
        app=(query.get("app") or "").strip() or None,
        builder=(query.get("builder") or "").strip() or None,
    )
    return where, page, per_page


def _positive_int(query: Any, name: str, default: int, maximum: int) -> int:
    raw = query.get(name)
    if not raw:
        return default
    if not _is_digits(raw) or len(raw) > len(str(maximum)) or not 1 <= int(raw) <= maximum:
        raise web.HTTPBadRequest(
            text=f"Query parameter {name}={raw!r} is invalid; use a whole number "
            f"from 1 to {maximum}.\n"
        )
    return int(raw)


def _bad_filter(name: str, value: str, allowed: list[str]) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(
        text=f"Unknown {name} {value!r}; use one of: {', '.join(allowed)}.\n"
    )


def _page_count(matched: int, per_page: int) -> int:
    return max(1, -(-matched // per_page))


def _read_cursor(request: web.Request) -> PageCursor | None:
    raw = request.query.get("cursor")
    if not raw:
        return None
    if request.query.get("page"):
        raise web.HTTPBadRequest(
            text="Query parameters page and cursor cannot be combined; use one of them.\n"
        )
    try:
        return decode_cursor(raw)
    except InvalidCursor as exc:
        raise web.HTTPBadRequest(
            text=f"Query parameter cursor is invalid: {exc}. Use the next or previous "
            "cursor of a listing, or leave cursor out to start from the newest tickets.\n"
        ) from None


def _cursor_json(listing: TicketPage) -> dict[str, str | None]:
    # "next" leads to older tickets and "previous" to newer ones, as on the page.
    return {
        "next": encode_cursor(listing.older) if listing.older else None,
        "previous": encode_cursor(listing.newer) if listing.newer else None,
    }


def _pager(request: web.Request, listing: TicketPage) -> dict[str, str | None]:
    """Return the pager's links; a link is None where that page does not exist."""
    at_newest = listing.page == 1
    return {
        "newest": None if at_newest else _cursor_url(request, None),
        "newer": _cursor_url(request, listing.newer) if listing.newer else None,
        "older": _cursor_url(request, listing.older) if listing.older else None,
        "oldest": _cursor_url(request, PageCursor.oldest_page()) if listing.older else None,
    }


def _cursor_url(request: web.Request, cursor: PageCursor | None) -> str:
    # Filters and per_page stay; a page number gives way to the cursor.
    params = {k: v for k, v in request.query.items() if k not in ("page", "cursor") and v}
    if cursor is not None:
        params["cursor"] = encode_cursor(cursor)
    return f"{request.path}?{urlencode(params)}" if params else request.path


def _filter_url(request: web.Request, name: str, value: str) -> str:
    # A new filter starts again from the first page.
    params = {
        k: v for k, v in request.query.items() if k not in ("page", "cursor", name) and v
    }
    params[name] = value
    return f"/?{urlencode(params)}"


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
