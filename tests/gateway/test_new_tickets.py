"""A builder's first email becomes a ticket, over a real SMTP conversation."""

from __future__ import annotations

import email
from email import policy
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from adapters import mail
from adapters.mime_skeleton import parse_skeleton
from conftest import (
    DIALECT,
    FakeClock,
    RunningGateway,
    make_config,
    running_gateway,
    sample,
)
from gateway.builder_names import MAX_BUILDER_NAME_CHARS
from gateway.cli import to_crlf
from gateway.config import SmtpConfig
from test_hostile_mail import MIB, large_message, png_of_size, send_crlf


def _delivered(gateway: RunningGateway) -> list[email.message.EmailMessage]:
    gateway.flush_outbox()
    return [
        email.message_from_bytes(path.read_bytes(), policy=policy.default)
        for path in gateway.outbox_files()
    ]


def test_gmail_message_opens_ticket_with_fields(ada: RunningGateway) -> None:
    code, text = ada.send(sample("gmail_plain_and_html.eml"))

    assert code == 250, text
    assert "Ticket #1" in text
    ticket = ada.ticket(1)
    assert ticket.summary.title == "Client Portal shows a blank page after login"
    assert ticket.summary.category == "published_app"
    assert ticket.summary.severity == "sev2"
    assert ticket.summary.priority == "P2"
    assert ticket.summary.app_name == "Client Portal"
    assert ticket.summary.app_uri == "https://portal.example.com"
    assert ticket.summary.status == "new"
    assert not ticket.description.lower().startswith("category:")


def test_ticket_defaults_without_field_lines(ada: RunningGateway) -> None:
    code, _ = ada.send(sample("thunderbird.eml"))

    assert code == 250
    ticket = ada.ticket(1)
    assert ticket.summary.severity == "sev3"
    assert ticket.summary.category == "other"
    assert ticket.summary.app_name is None


def test_acknowledgement_names_ticket_and_fields(ada: RunningGateway) -> None:
    ada.send(sample("gmail_plain_and_html.eml"))

    [ack] = _delivered(ada)

    assert ack["To"].addresses[0].addr_spec == "ada@example.com"
    assert ack["Subject"] == "[#1] Client Portal shows a blank page after login"
    assert ack["Auto-Submitted"] == "auto-replied"
    text = ack.get_body(("plain",)).get_content()
    assert "ticket #1" in text
    assert "Client Portal shows a blank page after login" in text
    assert "Published app or end-user experience" in text
    assert "Sev 2 - Major" in text
    assert "In review" in text
    assert "reply to this email" in text
    html = ack.get_body(("html",)).get_content()
    assert "ticket #1" in html


def test_acknowledgement_threads_to_builder_message(ada: RunningGateway) -> None:
    raw = sample("gmail_plain_and_html.eml")
    original = email.message_from_bytes(raw, policy=policy.default)
    ada.send(raw)

    [ack] = _delivered(ada)

    assert original["Message-ID"].strip() in ack["In-Reply-To"]
    assert ack["Reply-To"].addresses[0].addr_spec.startswith("support+1.")


@pytest.mark.parametrize(
    "name",
    [
        "gmail_plain_and_html.eml",
        "outlook_desktop.eml",
        "apple_mail_png.eml",
        "iphone_short.eml",
        "html_only.eml",
        "latin1_charset.eml",
        "rfc2231_filename.eml",
        "pdf_attachment.eml",
        "thunderbird.eml",
        "android_gmail.eml",
    ],
)
def test_real_client_message_opens_one_ticket(ada: RunningGateway, name: str) -> None:
    code, text = ada.send(sample(name))

    assert code == 250, text
    ticket = ada.ticket(1)
    assert ticket is not None
    assert ticket.summary.title
    assert ticket.description.strip()
    assert len(_delivered(ada)) == 1


def test_html_only_message_is_stored_as_text(ada: RunningGateway) -> None:
    ada.send(sample("html_only.eml"))

    description = ada.ticket(1).description

    assert "<" not in description
    assert description.strip()


def test_latin1_message_keeps_umlauts(ada: RunningGateway) -> None:
    ada.send(sample("latin1_charset.eml"))

    ticket = ada.ticket(1)

    assert any(letter in ticket.description for letter in "äöüß")
    assert any(letter in ticket.summary.title for letter in "äöüÄÖÜß")


def test_png_attachment_is_stored_with_ticket(ada: RunningGateway) -> None:
    ada.send(sample("apple_mail_png.eml"))

    [message] = ada.ticket(1).messages

    [attachment] = message.attachments
    assert attachment.content_type == "image/png"
    assert attachment.size_bytes > 0


def test_rfc2231_filename_is_decoded(ada: RunningGateway) -> None:
    ada.send(sample("rfc2231_filename.eml"))

    [message] = ada.ticket(1).messages

    [attachment] = message.attachments
    assert attachment.content_type == "application/pdf"
    assert "ä" in attachment.filename
    assert attachment.filename.endswith(".pdf")


def test_same_attachment_twice_is_stored_once(ada: RunningGateway) -> None:
    ada.send(sample("apple_mail_png.eml"))
    second = sample("apple_mail_png.eml").replace(b"Message-Id: <", b"Message-Id: <again-", 1)
    second = second.replace(b"Message-ID: <", b"Message-ID: <again-", 1)
    ada.send(second)

    [(blobs,)] = ada.sql("select count(*) from blobs")
    [(links,)] = ada.sql("select count(*) from attachments")

    assert links == 2
    assert blobs == 1


def test_unknown_sender_gets_550_and_no_mail(gateway: RunningGateway) -> None:
    code, text = gateway.send(sample("gmail_plain_and_html.eml"))

    assert code == 550
    assert "5.7.1" in text
    assert "no builder account" in text
    assert gateway.flush_outbox() == 0


def test_unknown_sender_message_is_kept(gateway: RunningGateway) -> None:
    gateway.send(sample("gmail_plain_and_html.eml"))

    [(outcome, size)] = gateway.sql("select outcome, size_bytes from inbound_messages")

    assert outcome == "rejected_unknown_sender"
    assert size > 0


def test_registered_sender_name_is_cut(tmp_path: Path, clock: FakeClock) -> None:
    config = make_config(tmp_path, smtp=SmtpConfig(host="127.0.0.1", port=0,
                                                   register_unknown_senders=True))
    long_name = "Ada Lovelace " * 30
    message = sample("gmail_plain_and_html.eml").replace(
        b"From: Ada Lovelace <ada@example.com>",
        f"From: {long_name.strip()} <ada@example.com>".encode(),
    )

    with running_gateway(config, clock) as gateway:
        code, text = gateway.send(message)
        [(name,)] = gateway.sql("select name from builders")

    assert code == 250, text
    assert len(name) == MAX_BUILDER_NAME_CHARS
    assert name == long_name[:MAX_BUILDER_NAME_CHARS].strip()


def test_wrong_recipient_gets_550_5_1_1(ada: RunningGateway) -> None:
    code, text = ada.send(sample("gmail_plain_and_html.eml"), to=("someone@example.com",))

    assert code == 550
    assert "5.1.1" in text


def test_tagged_support_address_is_accepted(ada: RunningGateway) -> None:
    code, _ = ada.send(sample("gmail_plain_and_html.eml"), to=("support+billing@localhost",))

    assert code == 250


def test_storage_failure_answers_451(ada: RunningGateway) -> None:
    # SQLite has no DROP TABLE ... CASCADE, so drop the referencing tables first.
    cascade = " cascade" if DIALECT == "postgresql" else ""
    for table in ("mail_index", "attachments", "messages", "inbound_messages"):
        ada.sql(f"drop table {table}{cascade}")

    code, text = ada.send(sample("gmail_plain_and_html.eml"))

    assert code == 451
    assert text.startswith("4.3.0")
    assert "Error" not in text


def test_oversize_message_declared_with_size_gets_552(ada: RunningGateway) -> None:
    import smtplib

    limit = ada.gateway.config.smtp.max_message_bytes
    with smtplib.SMTP("127.0.0.1", ada.smtp_port, timeout=60) as client:
        client.ehlo()
        assert int(client.esmtp_features["size"]) == limit
        code, text = client.mail("ada@example.com", options=[f"SIZE={limit + 1}"])

    assert code == 552
    assert text.decode() == f"5.3.4 Message too big; the limit is {limit:,} bytes (40 MiB)"


def test_oversize_message_without_size_gets_552(ada: RunningGateway) -> None:
    limit = ada.gateway.config.smtp.max_message_bytes
    body = (b"x" * 76 + b"\r\n") * (limit // 78 + 10)
    raw = sample("thunderbird.eml") + b"\r\n" + body

    code, text = ada.send(raw)

    assert code == 552
    assert text == f"5.3.4 Message too big; the limit is {limit:,} bytes (40 MiB)"
    assert ada.ticket(1) is None


def test_missing_from_header_gets_specific_550(ada: RunningGateway) -> None:
    raw = b"\n".join(
        line for line in sample("thunderbird.eml").split(b"\n") if not line.startswith(b"From:")
    )

    code, text = ada.send(raw)

    assert code == 550
    assert "5.7.1" in text
    assert "From header is missing" in text


def _statements_while(gateway: RunningGateway, raw: bytes) -> list[str]:
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement.split(None, 1)[0].upper())

    engine = gateway.gateway.store._engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        code, text = gateway.send(raw)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert code == 250, text
    return statements


def test_new_ticket_statement_count_is_fixed(ada: RunningGateway) -> None:
    raw = sample("gmail_plain_and_html.eml")
    original = email.message_from_bytes(raw, policy=policy.default)
    old_id = original["Message-ID"].strip().encode()

    counts = []
    for number in range(1, 4):
        unique = raw.replace(old_id, f"<count.{number}@mail.example.com>".encode())
        counts.append(len(_statements_while(ada, unique)))

    # The intake writes the inbound record, ticket, message, index entries, builder
    # link and outbox row, and reads the dedupe key, builder, rate limit, number
    # counter and suppression, with no query per earlier ticket or message.
    assert counts[1] == counts[2]
    assert counts[2] <= 16


# Messages whose MIME structure cannot be read

UNREADABLE_SAMPLES = {
    "unclosed_boundary_quote.eml": "unclosed quote",
    "boundary_never_appears.eml": "never appears in its body",
    "multipart_without_boundary.eml": "has no boundary parameter",
    "alternative_boundary_never_appears.eml": "'=_alt_8c3d07e61b94' of the multipart/",
}


def _inbound(gateway: RunningGateway) -> tuple[str, str]:
    [(outcome, detail)] = gateway.sql("select outcome, detail from inbound_messages")
    return outcome, detail


def _stored_raw(gateway: RunningGateway) -> bytes | None:
    async def work() -> bytes | None:
        async with gateway.gateway.store.read() as tx:
            [record] = await tx.list_inbound(limit=1)
            _, raw = await tx.get_inbound_raw(record.id)
            return raw

    return gateway.call(work)


@pytest.mark.parametrize("name", list(UNREADABLE_SAMPLES), ids=lambda name: name[:-4])
def test_unreadable_mime_gets_own_notice(ada: RunningGateway, name: str) -> None:
    code, text = ada.send(sample(name))

    assert code == 250, text
    assert "structure could not be read" in text
    assert ada.ticket(1) is None
    [notice] = _delivered(ada)
    assert notice["Subject"].strip().startswith("Not accepted: ")
    assert notice["Auto-Submitted"] == "auto-replied"
    body = notice.get_body(("plain",)).get_content()
    assert "its structure could not be read" in body
    assert "as plain text" in body
    assert "from another mail program" in body
    assert "too little detail" not in body
    assert "its structure could not be read" in notice.get_body(("html",)).get_content()


@pytest.mark.parametrize("name", list(UNREADABLE_SAMPLES), ids=lambda name: name[:-4])
def test_unreadable_mime_outcome_names_problem(ada: RunningGateway, name: str) -> None:
    ada.send(sample(name))

    outcome, detail = _inbound(ada)

    assert outcome == "rejected_unreadable_mime"
    assert UNREADABLE_SAMPLES[name] in detail
    assert "no text part was read" in detail


def test_unreadable_mime_raw_message_is_kept(ada: RunningGateway) -> None:
    raw = sample("boundary_never_appears.eml")

    ada.send(raw)

    assert _stored_raw(ada) == to_crlf(raw)


def test_large_unreadable_mime_gets_own_notice(ada: RunningGateway) -> None:
    # Large messages are parsed with their base64 runs cut out first.
    raw = large_message([("blank-page.png", png_of_size(2 * MIB))]).replace(
        b"boundary=large", b"boundary=large-renamed", 1
    )
    assert parse_skeleton(raw, mail._POLICY, mail.CUT_MIN_RUN_BYTES) is not None

    code, text = send_crlf(ada, raw)

    assert code == 250, text
    assert "structure could not be read" in text
    outcome, detail = _inbound(ada)
    assert outcome == "rejected_unreadable_mime"
    assert "'large-renamed'" in detail
    [notice] = _delivered(ada)
    body = notice.get_body(("plain",)).get_content()
    assert "its structure could not be read" in body
    assert _stored_raw(ada) == raw


def test_html_only_message_still_opens_ticket(ada: RunningGateway) -> None:
    code, text = ada.send(sample("html_only.eml"))

    assert code == 250, text
    assert _inbound(ada)[0] == "ticket_created"


def test_empty_body_still_gets_detail_notice(ada: RunningGateway) -> None:
    code, text = ada.send(sample("empty_body.eml"))

    assert code == 250, text
    outcome, detail = _inbound(ada)
    assert outcome == "rejected_title"
    assert "too little detail" in detail
    [notice] = _delivered(ada)
    assert "too little detail" in notice.get_body(("plain",)).get_content()
