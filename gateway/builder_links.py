"""Private status-page links for builders: signed, stored, revocable and expiring."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from itsdangerous import URLSafeSerializer
from markupsafe import escape

from gateway.model import Builder
from gateway.signed_tokens import load_pair

log = logging.getLogger(__name__)

LINK_KEY_SETTING = "builder_link_key"
SECRET_BYTES = 24


@dataclass(frozen=True)
class BuilderLink:
    """A stored builder link; its secret is kept only as a SHA-256 digest."""

    id: int
    builder_id: int
    secret_sha256: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None


class BuilderLinks:
    """Issues `/b/<token>` links and resolves a token to its builder."""

    def __init__(self, key: bytes, *, public_url: str, lifetime: timedelta) -> None:
        # The salt keeps these signatures apart from anything else signed with KEY.
        self._serializer = URLSafeSerializer(key, salt="builder-status-link")
        self._public_url = public_url.rstrip("/")
        self.lifetime = lifetime

    async def issue(self, tx: Any, builder: Builder, *, now: datetime) -> tuple[str, datetime]:
        """Store a fresh link for BUILDER; return its URL and when it expires."""
        secret = secrets.token_urlsafe(SECRET_BYTES)
        expires_at = now + self.lifetime
        link_id = await tx.add_builder_link(
            builder.id, secret_sha256=_digest(secret), now=now, expires_at=expires_at
        )
        token = self._serializer.dumps([link_id, secret])
        log.debug("builder link %d issued for builder %d", link_id, builder.id)
        return f"{self._public_url}/b/{token}", expires_at

    async def resolve(self, tx: Any, token: str, *, now: datetime) -> Builder | None:
        """Return the builder a token belongs to, or None when it is invalid or dead."""
        pair = load_pair(self._serializer, token)
        if pair is None:
            return None
        link_id, secret = pair
        link = await tx.find_builder_link(link_id)
        if link is None or not hmac.compare_digest(link.secret_sha256, _digest(secret)):
            return None
        if link.revoked_at is not None:
            log.info("revoked builder link %d used", link.id)
            return None
        if link.expires_at <= now:
            log.info("expired builder link %d used", link.id)
            return None
        return await tx.get_builder_by_id(link.builder_id)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def with_link_footer(text: str, html: str, url: str, expires_at: datetime) -> tuple[str, str]:
    """Return TEXT and HTML with a footer that links the builder to their tickets."""
    expires = expires_at.strftime("%d %B %Y")
    text_footer = (
        f"\nSee all your tickets: {url}\n"
        f"This link is private to you; it works until {expires}.\n"
    )
    html_footer = (
        '<p style="font-size:13px;color:#59636e;">'
        f'<a href="{escape(url)}">See all your tickets</a>. '
        f"This link is private to you; it works until {escape(expires)}.</p>\n"
    )
    marker = html.rfind("</body>")
    if marker == -1:
        html = html + html_footer
    else:
        html = html[:marker] + html_footer + html[marker:]
    return text.rstrip("\n") + "\n" + text_footer, html
