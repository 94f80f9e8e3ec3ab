"""Benchmark mail: new tickets, replies, large updates and hostile inputs.

Every message is built from its index alone, so each target (sinks, parser,
gateway, peer) receives byte-for-byte the same corpus.
"""

from __future__ import annotations

import base64
import random
from email.message import EmailMessage
from email.policy import SMTP
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

SUPPORT_ADDRESS = "support@localhost"
BUILDER_COUNT = 1000
SMALL_MESSAGE_BYTES = 2048
PDF_FILE_BYTES = 5 * 1000 * 1000
PDF_FILES = 5

_PROBLEMS = (
    ("Published app shows a blank page after login", "published_app"),
    ("Notion database rows missing from the orders screen", "data_sync"),
    ("Custom domain certificate not issued after two days", "custom_domain"),
    ("Invoice for November charged twice on my card", "billing"),
    ("Sign-up form rejects valid email addresses", "auth_permissions"),
    ("Editor freezes when I add a chart component", "app_builder"),
    ("Template cloning stops at 80 percent", "templates"),
    ("Relation field shows record ids instead of names", "data_sync"),
)
_FILLER = (
    "Since this morning the app that my team uses for field reports behaves "
    "differently. I reloaded the data source, signed out and in again, and "
    "tried two browsers, but nothing changed. The Notion database still has "
    "all rows and the integration shows as connected in the settings. Our "
    "users depend on this screen every day, so any hint helps. "
)
_START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def builder_email(index: int) -> str:
    """Return the address of benchmark builder INDEX."""
    return f"builder{index % BUILDER_COUNT:05d}@example.com"


def new_ticket(index: int) -> bytes:
    """Return a plain-text new-ticket message of about 2 KB, in wire form (CRLF)."""
    title, category = _PROBLEMS[index % len(_PROBLEMS)]
    message = _envelope(
        sender=builder_email(index),
        subject=f"{title} (report {index})",
        message_id=f"<new.{index}@bench.example.com>",
        when=_START + timedelta(seconds=index),
    )
    header = f"Category: {category}\nSeverity: sev3\n\n"
    body = header + _FILLER * 8
    budget = SMALL_MESSAGE_BYTES - len(bytes(message)) - 200
    message.set_content(body[: max(budget, 400)] + "\n\nThanks,\nA builder\n")
    return message.as_bytes(policy=SMTP)


def reply(index: int, ticket_number: int, sender: str, original_id: str) -> bytes:
    """Return a builder's reply to a ticket, threaded by In-Reply-To."""
    message = _envelope(
        sender=sender,
        subject=f"Re: [#{ticket_number}] Report {ticket_number}",
        message_id=f"<reply.{index}@bench.example.com>",
        when=_START + timedelta(days=1, seconds=index),
    )
    message["In-Reply-To"] = original_id
    message["References"] = original_id
    message.set_content(
        "I tried the steps you sent and the screen now loads, but the totals row "
        "is still empty for the last week.\n\n"
        "On Tue, Dec 1, 2026 at 9:00 AM Support <support@localhost> wrote:\n"
        "> Could you reload the data source and tell us what you see?\n"
    )
    return message.as_bytes(policy=SMTP)


def large_update(index: int) -> bytes:
    """Return a new ticket with five 5 MB PDFs: the largest update the gateway accepts.

    The MIME text is assembled by hand because the email package takes seconds
    to encode 25 MB; the result is an ordinary multipart/mixed message.
    """
    boundary = f"=_bench_large_{index}"
    head = (
        f"From: Bench Builder <{builder_email(index)}>\r\n"
        f"To: {SUPPORT_ADDRESS}\r\n"
        f"Subject: Exported reports look wrong, five samples attached ({index})\r\n"
        f"Date: {format_datetime(_START + timedelta(hours=2, seconds=index))}\r\n"
        f"Message-ID: <large.{index}@bench.example.com>\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'
        f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        "Category: bug\r\n\r\nThe five exported reports attached here all show the "
        "totals of the previous month instead of the current one.\r\n"
    ).encode()
    parts = [head]
    for number in range(PDF_FILES):
        encoded = base64.encodebytes(_pdf_bytes(index * PDF_FILES + number, PDF_FILE_BYTES))
        parts.append(
            f"--{boundary}\r\nContent-Type: application/pdf\r\n"
            "Content-Transfer-Encoding: base64\r\n"
            f'Content-Disposition: attachment; filename="report-{number + 1}.pdf"\r\n\r\n'
            .encode()
        )
        parts.append(encoded.replace(b"\n", b"\r\n"))
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts)


def header_bomb(tag: str = "0") -> bytes:
    """Return a message with 8,000 addresses in To: and 1,000 Received: lines."""
    lines = [f"Received: from relay{i}.example.com by mx.example.com; "
             f"Tue, 1 Dec 2026 09:00:00 +0000" for i in range(1000)]
    recipients = ",\r\n ".join(f"user{i}@example.com" for i in range(8000))
    head = "\r\n".join(lines) + (
        "\r\nFrom: builder00001@example.com\r\n"
        f"To: {recipients}\r\n"
        "Subject: Header bomb with thousands of recipients\r\n"
        f"Message-ID: <hostile.headers.{tag}@bench.example.com>\r\n"
        "Content-Type: text/plain\r\n\r\n"
        "The app shows an error when I open the orders screen.\r\n"
    )
    return head.encode()


def nested_parts(tag: str = "0", depth: int = 5000) -> bytes:
    """Return a message whose multiparts nest DEPTH levels deep."""
    head = (
        "From: builder00002@example.com\r\nTo: support@localhost\r\n"
        "Subject: Deeply nested parts in one message\r\n"
        f"Message-ID: <hostile.nested.{tag}@bench.example.com>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b0"\r\n\r\n'
    )
    opening = "".join(
        f'--b{level}\r\nContent-Type: multipart/mixed; boundary="b{level + 1}"\r\n\r\n'
        for level in range(depth)
    )
    middle = f"--b{depth}\r\nContent-Type: text/plain\r\n\r\nThe inner text.\r\n"
    closing = "".join(f"--b{level}--\r\n" for level in range(depth, -1, -1))
    return (head + opening + middle + closing).encode()


def many_parts(tag: str = "0", count: int = 10_000) -> bytes:
    """Return a message with COUNT sibling parts."""
    head = (
        "From: builder00003@example.com\r\nTo: support@localhost\r\n"
        "Subject: Message with ten thousand small parts\r\n"
        f"Message-ID: <hostile.parts.{tag}@bench.example.com>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="sep"\r\n\r\n'
        "--sep\r\nContent-Type: text/plain\r\n\r\nThe app shows an error on the "
        "orders screen when I open it.\r\n"
    )
    parts = "".join(
        f"--sep\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; "
        f'filename="note{i}.txt"\r\n\r\nnote {i}\r\n'
        for i in range(count)
    )
    return (head + parts + "--sep--\r\n").encode()


def link_html(tag: str = "0", count: int = 2000) -> bytes:
    """Return an HTML-only message with COUNT links."""
    links = "".join(
        f'<p><a href="https://docs.example.com/page/{i}">Step {i} of the guide</a></p>\r\n'
        for i in range(count)
    )
    head = (
        "From: builder00004@example.com\r\nTo: support@localhost\r\n"
        "Subject: Two thousand links in one HTML message\r\n"
        f"Message-ID: <hostile.links.{tag}@bench.example.com>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/html; charset=utf-8\r\n\r\n"
        "<html><body><p>The app shows an error on the orders screen.</p>\r\n"
    )
    return (head + links + "</body></html>\r\n").encode()


HOSTILE = {
    "header bomb (8,000 To addresses, 1,000 Received)": header_bomb,
    "5,000 nested multiparts": nested_parts,
    "10,000 sibling parts": many_parts,
    "2,000-link HTML": link_html,
}


def _envelope(*, sender: str, subject: str, message_id: str, when: datetime) -> EmailMessage:
    message = EmailMessage()
    message["From"] = f"Bench Builder <{sender}>"
    message["To"] = SUPPORT_ADDRESS
    message["Subject"] = subject
    message["Date"] = format_datetime(when)
    message["Message-ID"] = message_id
    return message


def _pdf_bytes(seed: int, size: int) -> bytes:
    # Random bytes do not compress, so the wire size is what the issue describes.
    head = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"
    tail = b"\n%%EOF\n"
    return head + random.Random(seed).randbytes(size - len(head) - len(tail)) + tail


def wire_size(data: bytes) -> int:
    """Return the size of DATA once dot-stuffed for SMTP."""
    return len(data) + data.count(b"\r\n.")

