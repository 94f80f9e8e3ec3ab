"""A desk with two builders, hostile text, notes, events and attachments, for web tests."""

from __future__ import annotations

import re
import struct
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.policy import SMTP
from html.parser import HTMLParser
from typing import Any

from conftest import RunningGateway
from gateway.model import App
from gateway.support import TicketChange

HOSTILE_TITLE = '<script>document.title="pwned"</script> Login <img src=x onerror=alert(1)> fails'
HOSTILE_NAME = '<img src=x onerror="alert(2)">Mallory'
# No slash: intake keeps only the last path segment of a filename.
HOSTILE_FILENAME = '"><img src=x onerror=alert(3)>.svg'
HOSTILE_BODY = (
    'Click <a href="javascript:alert(4)">here</a> to reproduce; '
    "<script>alert(5)</script> shows up in the Orders table."
)
INTERNAL_NOTE = "INTERNAL-ONLY: refund approved by finance, do not tell the builder yet"
SVG_WITH_SCRIPT = (
    b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(6)">'
    b"<script>alert(7)</script><rect width='10' height='10'/></svg>"
)
PDF_BYTES = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
)


def png_bytes(width: int = 4, height: int = 3) -> bytes:
    """Return a small valid PNG image."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = b"".join(b"\x00" + b"\x30\x90\xe0" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def compose(
    subject: str,
    body: str,
    *,
    sender: str = "Ada Lovelace <ada@example.com>",
    files: tuple[tuple[str, str, bytes], ...] = (),
    message_id: str | None = None,
) -> bytes:
    """Return an email to support as a mail client would send it."""
    message = EmailMessage(policy=SMTP)
    message["From"] = sender
    message["To"] = "support@localhost"
    message["Subject"] = subject
    message["Date"] = "Tue, 01 Dec 2026 09:00:00 +0000"
    if message_id:
        message["Message-ID"] = message_id
    message.set_content(body)
    for filename, content_type, data in files:
        maintype, _, subtype = content_type.partition("/")
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return message.as_bytes()


@dataclass(frozen=True)
class Desk:
    """Ticket numbers of the seeded desk."""

    ada_portal: int
    ada_hostile: int
    bob_billing: int


def seed_desk(gateway: RunningGateway) -> Desk:
    """Open three tickets from two builders with notes, events and attachments."""
    gateway.add_builder("ada@example.com", name="Ada Lovelace",
                        apps=(App("Client Portal", "https://portal.example.com"),))
    gateway.add_builder("bob@example.com", name=HOSTILE_NAME)

    _send_ok(gateway, compose(
        "Client Portal shows a blank page after login",
        "App: Client Portal\nSeverity: Sev 2\n\nAfter signing in, every user sees a blank "
        "page instead of the dashboard. It started this morning.",
        files=(("screen.png", "image/png", png_bytes()),
               ("invoice.pdf", "application/pdf", PDF_BYTES)),
    ))
    gateway.clock.advance(minutes=5)
    _send_ok(gateway, compose(
        HOSTILE_TITLE, HOSTILE_BODY,
        files=((HOSTILE_FILENAME, "image/svg+xml", SVG_WITH_SCRIPT),),
    ))
    gateway.clock.advance(minutes=5)
    _send_ok(gateway, compose(
        "Billing page charges twice for the Pro plan",
        "Category: Billing\n\nOur card was charged twice for the Pro plan this month; "
        "both charges show on the invoice page.",
        sender="Bob <bob@example.com>",
    ), mail_from="bob@example.com")

    support = gateway.gateway.support_desk
    assert support is not None
    gateway.clock.advance(minutes=5)
    gateway.call(lambda: support.note(1, INTERNAL_NOTE, author="grace"))
    gateway.call(lambda: support.note(3, INTERNAL_NOTE, author="grace"))
    gateway.call(lambda: support.reply(1, "We are looking at the login redirect now.",
                                       author="grace"))
    gateway.call(lambda: support.change(
        1, TicketChange(status="waiting_on_builder",
                        question="Which browser shows the blank page?"), actor="grace"))
    gateway.clock.advance(minutes=5)
    gateway.call(lambda: support.change(
        3, TicketChange(status="resolved", summary="The duplicate charge was refunded."),
        actor="grace"))
    gateway.flush_outbox()
    return Desk(ada_portal=1, ada_hostile=2, bob_billing=3)


def _send_ok(gateway: RunningGateway, data: bytes, mail_from: str = "ada@example.com") -> None:
    code, reply = gateway.send(data, mail_from=mail_from)
    assert code == 250, reply


def http(
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    data: bytes | None = None,
) -> tuple[int, Any, bytes]:
    """Send one request without following redirects; return status, headers, body."""
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def builder_links_in(gateway: RunningGateway, recipient: str) -> list[str]:
    """Return the builder-page links in the delivered mail to RECIPIENT, oldest first."""
    links = []
    for text in mail_texts(gateway, recipient):
        links.extend(re.findall(r"https?://\S+/b/[A-Za-z0-9._-]+", text))
    return links


def mail_texts(gateway: RunningGateway, recipient: str) -> list[str]:
    """Return the plain-text and HTML bodies of every delivered mail to RECIPIENT."""
    texts = []
    for path in gateway.outbox_files():
        message = message_from_bytes(path.read_bytes(), policy=policy.default)
        if recipient not in str(message["To"]):
            continue
        for part in message.walk():
            if part.get_content_type() in ("text/plain", "text/html"):
                texts.append(part.get_content())
    return texts


def active_content(page: str) -> list[str]:
    """Return every script element, on* attribute and javascript: URL in PAGE."""
    finder = _ActiveContent()
    finder.feed(page)
    return finder.found


class _ActiveContent(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script":
            self.found.append("<script>")
        for name, value in attrs:
            if name.startswith("on"):
                self.found.append(f"{tag} {name}")
            if name in ("href", "src", "action") and (value or "").strip().lower().startswith(
                "javascript:"
            ):
                self.found.append(f"{tag} {name}={value}")
