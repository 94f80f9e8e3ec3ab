"""Unsubscribe links of reminder digests: a signed URL per builder.

GET shows a confirmation form, so a mail scanner that follows links
unsubscribes nobody. POST unsubscribes: it is what the form sends and what a
mail client sends for RFC 8058 one-click unsubscription (the body
`List-Unsubscribe=One-Click`). Only reminder digests stop; answers about the
builder's tickets still arrive.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from itsdangerous import URLSafeSerializer
from markupsafe import escape

from gateway.model import Builder
from gateway.signed_tokens import load_pair

log = logging.getLogger(__name__)

UNSUBSCRIBE_KEY_SETTING = "digest_unsubscribe_key"
ROUTE = "/unsubscribe/{token}"
_LINKS_KEY = web.AppKey("unsubscribe_links", dict)

INVALID_LINK = (
    "This unsubscribe link is invalid or incomplete. Copy the whole link from "
    "the reminder email, or reply to support and ask to stop reminders."
)


class UnsubscribeLinks:
    """Signs and reads the unsubscribe token of one builder."""

    def __init__(self, key: bytes, *, public_url: str = "") -> None:
        # The salt keeps these signatures apart from anything else signed with KEY.
        self._serializer = URLSafeSerializer(key, salt="digest-unsubscribe")
        self._public_url = public_url.rstrip("/")

    def url(self, builder: Builder) -> str:
        """Return the unsubscribe URL for BUILDER."""
        token = self._serializer.dumps([builder.id, builder.email])
        return f"{self._public_url}/unsubscribe/{token}"

    def read(self, token: str) -> tuple[int, str] | None:
        """Return (builder id, email) from a token, or None when it is not ours."""
        return load_pair(self._serializer, token)


async def load_unsubscribe_links(store: Any, *, public_url: str = "") -> UnsubscribeLinks:
    """Return the link signer, with its key created once and shared through the database."""
    async with store.write() as tx:
        key = await tx.get_or_create_setting(
            UNSUBSCRIBE_KEY_SETTING, lambda: secrets.token_hex(32)
        )
    return UnsubscribeLinks(key.encode(), public_url=public_url)


def add_unsubscribe_routes(
    app: web.Application,
    store: Any,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> None:
    """Serve GET and POST /unsubscribe/TOKEN on APP."""
    # Filled on the first request, because the key lives in the database.
    app[_LINKS_KEY] = {"store": store, "now": now}
    app.router.add_get(ROUTE, confirm_page)
    app.router.add_post(ROUTE, unsubscribe)


async def confirm_page(request: web.Request) -> web.Response:
    """Show the form that confirms unsubscribing; change nothing."""
    found = await _recipient(request)
    if found is None:
        return _page(INVALID_LINK, status=400)
    email, opted_out = found
    if opted_out:
        return _page(f"{email} no longer gets reminder digests.")
    return _page(
        f"Stop reminder digests to {email}? You will still get answers and status "
        "changes about your tickets.",
        form_action=request.path,
    )


async def unsubscribe(request: web.Request) -> web.Response:
    """Stop digests to the builder the token names (RFC 8058 one-click or the form)."""
    state = request.app[_LINKS_KEY]
    links = await _links(request)
    found = links.read(request.match_info["token"])
    if found is None:
        return _page(INVALID_LINK, status=400)
    builder_id, email = found
    async with state["store"].write() as tx:
        recipient = await tx.digest_recipient(builder_id)
        if recipient is None or recipient[0] != email:
            recipient = None
        else:
            await tx.opt_out_of_digests(builder_id, now=state["now"]())
    if recipient is None:
        return _page(INVALID_LINK, status=400)
    log.info("builder %d unsubscribed from reminder digests", builder_id)
    return _page(f"Done: {email} no longer gets reminder digests.")


async def _recipient(request: web.Request) -> tuple[str, bool] | None:
    found = (await _links(request)).read(request.match_info["token"])
    if found is None:
        return None
    builder_id, email = found
    async with request.app[_LINKS_KEY]["store"].read() as tx:
        recipient = await tx.digest_recipient(builder_id)
    if recipient is None or recipient[0] != email:
        return None
    return recipient


async def _links(request: web.Request) -> UnsubscribeLinks:
    state = request.app[_LINKS_KEY]
    if "links" not in state:
        state["links"] = await load_unsubscribe_links(state["store"])
    return state["links"]


def _page(message: str, *, status: int = 200, form_action: str | None = None) -> web.Response:
    form = ""
    if form_action is not None:
        form = (
            f'<form method="post" action="{escape(form_action)}">'
            '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
            '<button type="submit">Unsubscribe</button></form>'
        )
    html = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<title>Reminder digests</title>'
        '<link rel="stylesheet" href="/static/gateway.css"></head>'
        f"<body><main><h1>Reminder digests</h1><p>{escape(message)}</p>{form}"
        "</main></body></html>\n"
    )
    return web.Response(text=html, status=status, content_type="text/html", charset="utf-8")
