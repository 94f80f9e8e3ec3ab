"""Serve stored attachments so that no file can run as a page on our origin."""

from __future__ import annotations

import re
from urllib.parse import quote

from aiohttp import web

from gateway.attachments import ACCEPTED_TYPES, sniff_type
from gateway.model import AttachmentInfo

# Image types that browsers render as pictures and never as documents. SVG is
# missing on purpose: it can carry scripts, so it is always a download.
# NOTE: HEIC and TIFF are stored but shown as download links, because most
# browsers cannot display them.
INLINE_IMAGE_TYPES = frozenset(
    {"image/png", "image/jpeg", "image/gif", "image/webp", "image/avif", "image/bmp"}
)
# `sandbox` gives a file opened directly a unique origin with scripts off.
ATTACHMENT_CSP = "sandbox; default-src 'none'; img-src 'self'; frame-ancestors 'none'"
_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._ -]")


def is_thumbnail_type(content_type: str) -> bool:
    """Return True when a stored type, verified from the bytes at intake, may show inline."""
    return content_type in INLINE_IMAGE_TYPES


def attachment_response(info: AttachmentInfo, data: bytes) -> web.Response:
    """Return DATA with a sniffed type, a sandboxing CSP and a safe disposition."""
    sniffed = sniff_type(data)
    content_type = sniffed if sniffed in ACCEPTED_TYPES else "application/octet-stream"
    # Inline only when the bytes are a raster image now, whatever was stored.
    disposition = "inline" if sniffed in INLINE_IMAGE_TYPES else "attachment"
    return web.Response(
        body=data,
        headers={
            "Content-Type": content_type,
            "Content-Disposition": content_disposition(disposition, info.filename),
            "Content-Security-Policy": ATTACHMENT_CSP,
            "X-Content-Type-Options": "nosniff",
            "Cross-Origin-Resource-Policy": "same-origin",
            "Cache-Control": "private, no-store",
        },
    )


def content_disposition(disposition: str, filename: str) -> str:
    """Return a Content-Disposition value with an ASCII name and an RFC 6266 UTF-8 name."""
    cleaned = "".join(c for c in filename if c.isprintable()).strip() or "attachment"
    fallback = _UNSAFE_FILENAME.sub("_", cleaned)
    return f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{quote(cleaned, safe='')}"
