"""Replies find their ticket, from the right person, once, and move its status."""

from __future__ import annotations

import email
import logging
from email import policy
from typing import Any

import pytest

from conftest import MESSAGES, RunningGateway, sample
from gateway.support import TicketChange

REPLIES = MESSAGES / "replies"
TITLE = "Client Portal shows a blank page after login"


class Thread:
    """Ticket #1 opened by Ada, and the acknowledgement she received."""

    def __init__(self, gateway: RunningGateway) -> None:
        self.gateway = gateway
        code, text = gateway.send(sample("gmail_plain_and_html.eml"))
        assert code == 250, text
        gateway.flush_outbox()
        [path] = gateway.outbox_files()
        self.ack = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        self._tokens = 0

    @property
    def reply_to(self) -> str:
        return self.ack["Reply-To"].addresses[0].addr_spec

    @property
    def ack_id(self) -> str:
        return self.ack["Message-ID"].strip().strip("<>")

    @property
    def references(self) -> str:
        return str(self.ack["References"] or "") + f" <{self.ack_id}>"

    def mail(self, name: str, **values: str) -> bytes:
        self._tokens += 1
        fields = {
            "references": self.references,
            "in_reply_to": self.ack_id,
            "reply_to": self.reply_to,
            "subject": str(self.ack["Subject"]),
            "token": f"T{self._tokens:04d}",
            "number": "1",
            "stranger": "bob@example.com",
        }
        fields.update(values)
        return (REPLIES / name).read_text().format(**fields).encode()

    def change(self, **change: Any) -> None:
        support = self.gateway.gateway.support_desk
        assert support is not None
        self.gateway.call(lambda: support.change(1, TicketChange(**change), actor="grace"))
        self.gateway.flush_outbox()

    def outbox(self) -> list[email.message.EmailMessage]:
        self.gateway.flush_outbox()
        return [
            email.message_from_bytes(p.read_bytes(), policy=policy.default)
            for p in self.gateway.outbox_files()
        ]


@pytest.fixture
def thread(ada: RunningGateway) -> Thread:
    return Thread(ada)


def _builder_messages(gateway: RunningGateway, number: int = 1) -> list[Any]:
    return [m for m in gateway.ticket(number).messages if m.kind == "builder"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("gmail_reply.eml", "still there on Chrome 131"),
        ("outlook_web_reply_no_headers.eml", "the spinner shows for a second"),
        ("apple_mail_reply.eml", "The app ID is portal-7731"),
        ("thunderbird_reply.eml", "renamed the \"Orders\" database"),
        ("iphone_reply.eml", "Yes it happens on my phone too"),
    ],
    ids=["gmail", "outlook-web-no-headers", "apple-mail", "thunderbird", "iphone"],
)
def test_client_reply_joins_ticket(thread: Thread, name: str, expected: str) -> None:
    code, text = thread.gateway.send(thread.mail(name))

    assert code == 250, text
    assert "ticket #1" in text
    [_first, reply] = _builder_messages(thread.gateway)
    assert expected in reply.body
    assert "We received your request" not in reply.body
    assert thread.gateway.ticket(2) is None


def test_reply_cuts_signature_and_mobile_footer(thread: Thread) -> None:
    thread.gateway.send(thread.mail("thunderbird_reply.eml"))
    thread.gateway.send(thread.mail("iphone_reply.eml"))

    [_first, desktop, phone] = _builder_messages(thread.gateway)

    assert "Analytical Engines" not in desktop.body
    assert "Sent from my iPhone" not in phone.body


def test_rewritten_message_id_with_valid_reply_address(thread: Thread) -> None:
    raw = thread.mail("gmail_reply.eml", in_reply_to="rewritten@exchange.example.com",
                      references="<rewritten@exchange.example.com>")

    code, _ = thread.gateway.send(raw)

    assert code == 250
    assert len(_builder_messages(thread.gateway)) == 2


def test_reply_with_only_message_id_headers(thread: Thread) -> None:
    raw = thread.mail("apple_mail_reply.eml", reply_to="support@localhost")

    thread.gateway.send(raw)

    assert len(_builder_messages(thread.gateway)) == 2


def test_new_subject_with_ticket_number_joins(thread: Thread) -> None:
    code, text = thread.gateway.send(thread.mail("new_subject_reply.eml"))

    assert code == 250
    assert "ticket #1" in text
    assert "mobile web app" in _builder_messages(thread.gateway)[-1].body


def test_tampered_signature_matches_nothing(thread: Thread) -> None:
    tampered = thread.reply_to.replace(thread.reply_to.split(".")[1][:4], "0000", 1)
    raw = thread.mail(
        "outlook_web_reply_no_headers.eml",
        reply_to=tampered,
        subject="The portal login spinner never stops now",
    )

    code, text = thread.gateway.send(raw)

    assert code == 250
    assert "Ticket #2 opened" in text
    assert len(_builder_messages(thread.gateway)) == 1


def test_reply_address_of_other_ticket_is_not_accepted(thread: Thread) -> None:
    forged = thread.reply_to.replace("support+1.", "support+2.", 1)
    raw = thread.mail("outlook_web_reply_no_headers.eml", reply_to=forged,
                      subject="Billing page shows the wrong plan name")

    thread.gateway.send(raw)

    assert thread.gateway.ticket(2).summary.title == "Billing page shows the wrong plan name"
    assert len(_builder_messages(thread.gateway)) == 1


def test_stranger_quoting_ticket_gets_550(thread: Thread) -> None:
    code, text = thread.gateway.send(thread.mail("stranger_quote.eml"),
                                     mail_from="bob@example.com")

    assert code == 550
    assert "5.7.1" in text
    assert len(_builder_messages(thread.gateway)) == 1


def test_other_builder_quoting_ticket_opens_own_ticket(thread: Thread) -> None:
    thread.gateway.add_builder("grace@example.com", name="Grace Hopper")
    raw = thread.mail("stranger_quote.eml", stranger="grace@example.com",
                      subject="Inventory app shows a blank page too")

    code, text = thread.gateway.send(raw, mail_from="grace@example.com")

    assert code == 250
    assert "Ticket #2 opened" in text
    second = thread.gateway.ticket(2)
    assert second.summary.builder_email == "grace@example.com"
    notes = [m for m in second.messages if m.visibility == "internal"]
    assert "#1" in notes[0].body
    assert len(_builder_messages(thread.gateway)) == 1


def test_reply_to_header_never_decides_identity(thread: Thread) -> None:
    raw = thread.mail("stranger_quote.eml").replace(
        b"MIME-Version", b"Reply-To: ada@example.com\r\nMIME-Version", 1
    )

    code, _ = thread.gateway.send(raw, mail_from="ada@example.com")

    assert code == 550
    assert len(_builder_messages(thread.gateway)) == 1


def test_tagged_sender_is_the_same_builder(thread: Thread) -> None:
    raw = thread.mail("gmail_reply.eml").replace(
        b"From: Ada Lovelace <ada@example.com>", b"From: Ada Lovelace <Ada+Work@Example.com>"
    )

    thread.gateway.send(raw)

    assert len(_builder_messages(thread.gateway)) == 2


def test_reply_to_waiting_ticket_moves_it_to_open(thread: Thread) -> None:
    thread.change(status="waiting_on_builder", question="Which browser do you use?")

    thread.gateway.send(thread.mail("gmail_reply.eml"))

    assert thread.gateway.ticket(1).summary.status == "open"


def test_reply_to_resolved_ticket_reopens_it(thread: Thread) -> None:
    thread.change(status="resolved", summary="Cleared the stale session cache.")

    thread.gateway.send(thread.mail("gmail_reply.eml"))

    assert thread.gateway.ticket(1).summary.status == "reopened"


@pytest.mark.parametrize("status", ["in_progress", "escalated", "triaged"])
def test_reply_keeps_other_statuses(thread: Thread, status: str) -> None:
    thread.change(status=status)
    thread.gateway.clock.advance(hours=1)

    thread.gateway.send(thread.mail("gmail_reply.eml"))

    ticket = thread.gateway.ticket(1)
    assert ticket.summary.status == status
    assert ticket.summary.last_activity_at == thread.gateway.clock()


def test_reply_to_closed_ticket_is_refused_with_notice(thread: Thread) -> None:
    thread.change(status="closed")
    before = len(thread.outbox())

    code, _ = thread.gateway.send(thread.mail("gmail_reply.eml"))

    assert code == 250
    assert len(_builder_messages(thread.gateway)) == 1
    notices = thread.outbox()[before:]
    assert len(notices) == 1
    text = notices[0].get_body(("plain",)).get_content()
    assert "is closed" in text
    assert "mention #1" in text
    assert "mailto:support@localhost?subject=Follow-up%20to%20%231" in text


def test_closed_notices_are_rate_limited(thread: Thread) -> None:
    thread.change(status="closed")
    before = len(thread.outbox())

    thread.gateway.send(thread.mail("gmail_reply.eml"))
    thread.gateway.send(thread.mail("gmail_reply.eml"))
    thread.gateway.clock.advance(minutes=11)
    thread.gateway.send(thread.mail("gmail_reply.eml"))

    assert len(thread.outbox()) - before == 2


def test_reply_to_duplicate_names_tracking_ticket(thread: Thread) -> None:
    thread.gateway.send(sample("thunderbird.eml"))
    thread.change(duplicate_of=2)
    before = len(thread.outbox())

    thread.gateway.send(thread.mail("gmail_reply.eml"))

    [notice] = thread.outbox()[before:]
    text = notice.get_body(("plain",)).get_content()
    assert "ticket #2, which tracks the same issue" in text.replace("\r\n", " ").replace("\n", " ")
    assert len(_builder_messages(thread.gateway)) == 1


def test_redelivered_reply_is_added_once(thread: Thread) -> None:
    raw = thread.mail("gmail_reply.eml")

    first = thread.gateway.send(raw)
    second = thread.gateway.send(raw)

    assert first[0] == 250
    assert second[0] == 250
    assert len(_builder_messages(thread.gateway)) == 2


def test_redelivery_without_message_id_is_added_once(thread: Thread) -> None:
    raw = thread.mail("new_subject_reply.eml")
    raw = b"\n".join(line for line in raw.split(b"\n") if not line.startswith(b"Message-ID"))

    thread.gateway.send(raw)
    code, _ = thread.gateway.send(raw)

    assert code == 250
    assert len(_builder_messages(thread.gateway)) == 2


def test_message_to_two_support_addresses_is_one_update(thread: Thread) -> None:
    code, _ = thread.gateway.send(
        thread.mail("gmail_reply.eml"), to=(thread.reply_to, "support@localhost")
    )

    assert code == 250
    assert len(_builder_messages(thread.gateway)) == 2


LANGUAGES = [
    ("en", "Re:", "On Tue, Dec 1, 2026 at 10:00 AM Support <support@localhost> wrote:"),
    ("de", "AW:", "Am Di., 1. Dez. 2026 um 10:00 Uhr schrieb Support <support@localhost>:"),
    ("fr", "RE :", "Le mar. 1 déc. 2026 à 10:00, Support <support@localhost> a écrit :"),
    ("es", "RE:", "El mar, 1 dic 2026 a las 10:00, Support (<support@localhost>) escribió:"),
    ("nl", "Antw:", "Op di 1 dec. 2026 om 10:00 schreef Support <support@localhost>:"),
    ("da", "SV:", "Den tir. 1. dec. 2026 kl. 10.00 skrev Support <support@localhost>:"),
    ("sv", "SV:", "Den tis 1 dec. 2026 kl 10:00 skrev Support <support@localhost>:"),
    ("no", "SV:", "Den tir. 1. des. 2026 kl. 10:00 skrev Support <support@localhost>:"),
    ("pt", "RE:", "Em ter., 1 de dez. de 2026 às 10:00, Support <support@localhost> escreveu:"),
]


@pytest.mark.parametrize(("language", "prefix", "attribution"), LANGUAGES,
                         ids=[row[0] for row in LANGUAGES])
def test_quoted_history_is_cut_in_language(
    thread: Thread, language: str, prefix: str, attribution: str
) -> None:
    answer = f"Die Seite bleibt weiß ({language}), auch nach dem Neuladen."
    raw = thread.mail("quoted_language_reply.eml", prefix=prefix, answer=answer,
                      attribution=attribution)

    code, _ = thread.gateway.send(raw)

    assert code == 250
    reply = _builder_messages(thread.gateway)[-1]
    assert reply.body == answer


def test_only_quote_keeps_whole_text(thread: Thread) -> None:
    raw = thread.mail("quoted_language_reply.eml", prefix="Re:", answer="",
                      attribution="On Tue, Dec 1, 2026 at 10:00 AM Support wrote:")

    thread.gateway.send(raw)

    assert "We received your request" in _builder_messages(thread.gateway)[-1].body


@pytest.mark.parametrize(
    ("subject", "rule"),
    [
        ("", "empty"),
        ("help", "too vague"),
        ("Re: Urgent", "too vague"),
        ("Fwd: not working", "too vague"),
        ("Login?", "too short"),
    ],
    ids=["empty", "help", "urgent-with-prefix", "not-working-forwarded", "short"],
)
def test_vague_title_is_refused_with_notice(
    ada: RunningGateway, subject: str, rule: str
) -> None:
    raw = sample("thunderbird.eml")
    start = raw.index(b"Subject:")
    end = raw.index(b"\n", start)
    raw = raw[:start] + b"Subject: " + subject.encode() + raw[end:]

    code, _ = ada.send(raw)

    assert code == 250
    assert ada.ticket(1) is None
    ada.flush_outbox()
    [notice_path] = ada.outbox_files()
    notice = email.message_from_bytes(notice_path.read_bytes(), policy=policy.default)
    text = notice.get_body(("plain",)).get_content()
    assert rule in text
    assert "Client Portal shows a blank page after login" in text
    assert ada.sql("select outcome from inbound_messages") == [("rejected_title",)]


def test_thin_description_is_refused(ada: RunningGateway) -> None:
    raw = (
        b"From: Ada Lovelace <ada@example.com>\r\nTo: support@localhost\r\n"
        b"Subject: Portal invoices page crashes\r\nMessage-ID: <thin@example.com>\r\n"
        b"Content-Type: text/plain\r\n\r\nsee title\r\n"
    )

    code, _ = ada.send(raw)

    assert code == 250
    assert ada.ticket(1) is None


def test_rejection_log_names_inbound_id(
    ada: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    raw = (
        b"From: Ada Lovelace <ada@example.com>\r\nTo: support@localhost\r\n"
        b"Subject: Portal invoices page crashes\r\n"
        b"Content-Type: text/plain\r\n\r\nsee title\r\n"
    )

    with caplog.at_level(logging.INFO, logger="gateway.tickets"):
        code, _ = ada.send(raw)

    [(inbound_id,)] = ada.sql("select id from inbound_messages")
    assert code == 250
    assert f"inbound {inbound_id} rejected:" in caplog.text
    assert "message None" not in caplog.text


def test_outbound_mail_threads_and_carries_reply_address(thread: Thread) -> None:
    thread.gateway.send(thread.mail("gmail_reply.eml"))
    support = thread.gateway.gateway.support_desk
    assert support is not None
    thread.gateway.call(lambda: support.reply(1, "Please try the new build.", author="grace"))

    reply = thread.outbox()[-1]

    assert reply["Subject"] == f"[#1] {TITLE}"
    assert reply["In-Reply-To"].strip("<>") in reply["References"]
    assert thread.ack_id in reply["References"]
    assert reply["Reply-To"].addresses[0].addr_spec == thread.reply_to
    assert "Please try the new build." in reply.get_body(("plain",)).get_content()


def _unreadable_reply(thread: Thread) -> bytes:
    """A reply from Outlook whose Content-Type has an unclosed quote in its boundary."""
    boundary = "----=_NextPart_000_0021_01DB4E2A.6C1F7D40"
    return (
        "From: Ada Lovelace <ada@example.com>\r\n"
        f"To: {thread.reply_to}\r\n"
        f"Subject: RE: {thread.ack['Subject']}\r\n"
        "Date: Tue, 08 Dec 2026 09:12:03 +0100\r\n"
        "Message-ID: <002201db4e2a$6c1f7d40$44567ac0$@example.com>\r\n"
        f"In-Reply-To: <{thread.ack_id}>\r\n"
        f"References: {thread.references}\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: multipart/alternative;\r\n"
        f'\tboundary="{boundary};\r\n'
        "X-Mailer: Microsoft Outlook 16.0\r\n"
        "\r\n"
        f"--{boundary}\r\n"
        "Content-Type: text/plain; charset=\"us-ascii\"\r\n"
        "\r\n"
        "The blank page is back since this morning's update.\r\n"
        "\r\n"
        f"--{boundary}--\r\n"
    ).encode()


def test_unreadable_reply_not_added(thread: Thread) -> None:
    before = len(thread.outbox())

    code, text = thread.gateway.send(_unreadable_reply(thread))

    assert code == 250, text
    assert "not added to ticket #1" in text
    assert len(_builder_messages(thread.gateway)) == 1
    [notice] = thread.outbox()[before:]
    assert "[#1]" in notice["Subject"]
    assert notice["In-Reply-To"].strip() == "<002201db4e2a$6c1f7d40$44567ac0$@example.com>"
    body = notice.get_body(("plain",)).get_content().replace("\n", " ")
    assert "could not add your reply to ticket #1" in body
    assert "its structure could not be read" in body
