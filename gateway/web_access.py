"""Access rules of the status page: bearer token, login cookie, or loopback only."""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from itsdangerous import BadSignature, TimestampSigner

from gateway.config import is_loopback

log = logging.getLogger(__name__)

COOKIE_NAME = "gateway_session"
SESSION_SECONDS = 12 * 3600
# Failed logins allowed from one address within the window before it gets 429.
MAX_LOGIN_FAILURES = 5
LOGIN_FAILURE_WINDOW = timedelta(minutes=15)
# Paths that check access themselves or need none. Slack requests carry Slack's
# signature, builder pages a signed link and unsubscribe links their own token.
OPEN_PREFIXES = ("/healthz", "/static/", "/login", "/logout", "/b/", "/slack/",
                 "/unsubscribe")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Access:
    """The access token, if any, and the signer of the login cookie derived from it."""

    token: str | None
    secure_cookie: bool = False

    @property
    def _signer(self) -> TimestampSigner:
        assert self.token is not None
        # Deriving the key from the token means every instance with the same
        # token accepts the cookie, and changing the token signs everyone out.
        key = hashlib.sha256(b"support-gateway login cookie\0" + self.token.encode()).digest()
        return TimestampSigner(key, salt="status-page-session")

    def has_token(self, offered: str) -> bool:
        """Return True when OFFERED is the access token."""
        if self.token is None:
            return False
        return hmac.compare_digest(offered.encode(), self.token.encode())

    def new_cookie(self) -> str:
        """Return a signed login cookie value."""
        return self._signer.sign("staff").decode()

    def is_signed_in(self, request: web.Request) -> bool:
        """Return True when REQUEST carries the token or a valid login cookie."""
        if self.token is None:
            return False
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self.has_token(value.strip()):
            return True
        cookie = request.cookies.get(COOKIE_NAME)
        if not cookie:
            return False
        try:
            self._signer.unsign(cookie, max_age=SESSION_SECONDS)
        except BadSignature:
            return False
        return True


def make_access_middleware(access: Access) -> Any:
    """Return middleware that guards every staff route."""

    @web.middleware
    async def access_control(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(OPEN_PREFIXES):
            return await handler(request)
        if access.token is None:
            # With no token the page is for this machine only; `serve` refuses to
            # listen elsewhere without one, and this also covers a proxy in front.
            if not is_loopback(request.remote or ""):
                raise web.HTTPForbidden(text="Set web.access_token to open the status page "
                                             "from another machine.\n")
            return await handler(request)
        if access.is_signed_in(request):
            return await handler(request)
        if request.method == "GET" and _wants_html(request):
            raise web.HTTPSeeOther(f"/login?{_next_query(request.path_qs)}")
        raise web.HTTPUnauthorized(
            text="A valid access token is required.\n",
            headers={"WWW-Authenticate": 'Bearer realm="support-gateway"'},
        )

    return access_control


async def record_failure(store: Any, peer: str, now: datetime) -> None:
    """Store one failed login from PEER."""
    async with store.write() as tx:
        await tx.record_login_failure(peer, now=now, forget_before=now - LOGIN_FAILURE_WINDOW)


async def is_locked_out(store: Any, peer: str, now: datetime) -> bool:
    """Return True when PEER failed too many logins within the window."""
    # NOTE: behind a reverse proxy every client shares the proxy's address, so
    # one guesser locks everyone out for the window.
    async with store.read() as tx:
        failures = await tx.count_login_failures(peer, since=now - LOGIN_FAILURE_WINDOW)
    return failures >= MAX_LOGIN_FAILURES


def safe_next(target: str | None) -> str:
    """Return TARGET when it is a path on this site, else "/"."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    if any(ord(c) < 32 for c in target):
        return "/"
    return target


def set_login_cookie(response: web.StreamResponse, access: Access) -> None:
    """Attach the signed, HttpOnly, SameSite=Strict login cookie to RESPONSE."""
    response.set_cookie(
        COOKIE_NAME,
        access.new_cookie(),
        max_age=SESSION_SECONDS,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=access.secure_cookie,
    )


def clear_login_cookie(response: web.StreamResponse) -> None:
    """Remove the login cookie."""
    response.del_cookie(COOKIE_NAME, path="/")


def _wants_html(request: web.Request) -> bool:
    if request.path.startswith(("/api/", "/metrics")):
        return False
    return "text/html" in request.headers.get("Accept", "")


def _next_query(path: str) -> str:
    return urlencode({"next": path})
