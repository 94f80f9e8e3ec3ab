"""Oversized, malformed and lying mail gets the right SMTP reply over real SMTP."""

from __future__ import annotations

import base64
import email
import smtplib
import struct
import time
import zlib
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import FakeClock, RunningGateway, make_config, running_gateway, sample
from gateway.cli import cli
from gateway.config import Config, SmtpConfig
from gateway.tickets import Delivery

MIB = 1024 * 1024
BODY = (
    "Since this morning the Client Portal shows a blank white page right after\n"
    "login. It happens in Chrome and Firefox, and my clients see the same thing.\n"
)


def build_png(padding: int = 0) -> bytes:
    """Return a valid PNG image followed by PADDING zero bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    image = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
             + chunk(b"IDAT", zlib.compress(b"\x00\x80\x40\x20")) + chunk(b"IEND", b""))
    return image + bytes(padding)


def png_of_size(size: int) -> bytes:
    return build_png(size - len(build_png()))


def message(
    subject: str = "Client Portal shows a blank page after login",
    files: list[tuple[str, str, bytes]] = (),
    *,
    sender: str = "ada@example.com",
    body: str = BODY,
) -> bytes:
    """Return a CRLF message from SENDER with FILES as (name, type, bytes)."""
    mail = EmailMessage(policy=policy.SMTP)
    mail["From"] = f"Ada Lovelace <{sender}>"
    mail["To"] = "support@localhost"
    mail["Subject"] = subject
    mail["Message-ID"] = email.utils.make_msgid(domain="mail.example.com")
    mail.set_content(body)
    for name, content_type, data in files:
        maintype, subtype = content_type.split("/")
        mail.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return mail.as_bytes()


def large_message(files: list[tuple[str, bytes]]) -> bytes:
    """Return a CRLF message with PNG FILES, built faster than EmailMessage can."""
    parts = [
        b"From: Ada Lovelace <ada@example.com>\r\nTo: support@localhost\r\n"
        b"Subject: Client Portal screenshots of the blank page\r\n"
        b"Message-ID: <large." + str(len(files)).encode() + b"@mail.example.com>\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=large\r\n\r\n"
        b"--large\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        + BODY.encode().replace(b"\n", b"\r\n")
    ]
    for name, data in files:
        parts.append(
            b"--large\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n"
            b'Content-Disposition: attachment; filename="' + name.encode() + b'"\r\n\r\n'
            + base64.encodebytes(data).replace(b"\n", b"\r\n")
        )
    parts.append(b"--large--\r\n")
    return b"".join(parts)


def send_crlf(gateway: RunningGateway, data: bytes) -> tuple[int, str]:
    """Deliver DATA, which already has CRLF line endings, over SMTP."""
    with smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=60) as client:
        client.ehlo()
        client.mail("ada@example.com")
        client.rcpt("support@localhost")
        code, reply = client.data(data)
        return code, reply.decode()


def outcome(gateway: RunningGateway) -> Any:
    async def work() -> Any:
        async with gateway.gateway.store.read() as tx:
            return (await tx.list_inbound(limit=1))[0]

    return gateway.call(work)


def attachment_names(gateway: RunningGateway, number: int = 1) -> list[str]:
    detail = gateway.ticket(number)
    return [a.filename for m in detail.messages for a in m.attachments]


def delivered(gateway: RunningGateway) -> list[email.message.EmailMessage]:
    gateway.flush_outbox()
    return [email.message_from_bytes(p.read_bytes(), policy=policy.default)
            for p in gateway.outbox_files()]


# Attachment rules at their boundaries


def test_five_files_are_accepted(ada: RunningGateway) -> None:
    files = [(f"shot{i}.png", "image/png", build_png(i)) for i in range(5)]

    code, text = ada.send(message(files=files))

    assert code == 250, text
    assert len(attachment_names(ada)) == 5


def test_sixth_file_rejects_update(ada: RunningGateway) -> None:
    files = [(f"shot{i}.png", "image/png", build_png(i)) for i in range(6)]

    code, text = ada.send(message(files=files))

    assert code == 250, text
    assert outcome(ada).outcome == "rejected_attachments"
    assert ada.ticket(1) is None
    [notice] = delivered(ada)
    assert "shot5.png is the 6th file; an update may carry at most 5 files" in (
        notice.get_body(("plain",)).get_content())


def test_file_of_10_mib_and_1_byte_is_rejected(ada: RunningGateway) -> None:
    data = large_message([("big.png", png_of_size(10 * MIB + 1))])

    code, text = send_crlf(ada, data)

    assert code == 250, text
    assert outcome(ada).outcome == "rejected_attachments"
    assert "each file may be at most 10 MB" in outcome(ada).detail


def test_total_of_25_mib_is_accepted(ada: RunningGateway) -> None:
    # The first file is also exactly at the 10 MiB limit for one file.
    files = [("a.png", png_of_size(10 * MIB)),
             ("b.png", png_of_size(10 * MIB - 1)),
             ("c.png", png_of_size(5 * MIB + 1))]

    code, text = send_crlf(ada, large_message(files))

    assert code == 250, text
    assert attachment_names(ada) == ["a.png", "b.png", "c.png"]


def test_total_of_25_mib_and_1_byte_is_rejected(ada: RunningGateway) -> None:
    files = [("a.png", png_of_size(10 * MIB)),
             ("b.png", png_of_size(10 * MIB)),
             ("c.png", png_of_size(5 * MIB + 1))]

    code, text = send_crlf(ada, large_message(files))

    assert code == 250, text
    assert outcome(ada).outcome == "rejected_attachments"
    assert "c.png: brings the total to" in outcome(ada).detail


def test_empty_file_is_rejected(ada: RunningGateway) -> None:
    code, text = ada.send(message(files=[("empty.png", "image/png", b"")]))

    assert code == 250, text
    assert outcome(ada).detail == "empty.png: is empty"


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("exe_named_png.eml", "a Windows program"),
        ("html_declared_png.eml", "is declared as image/png but contains HTML"),
    ],
    ids=["exe-named-png", "html-declared-png"],
)
def test_file_that_lies_is_rejected(ada: RunningGateway, name: str, rule: str) -> None:
    code, text = ada.send(sample(name))

    assert code == 250, text
    assert outcome(ada).outcome == "rejected_attachments"
    assert rule in outcome(ada).detail
    assert ada.ticket(1) is None


def test_jpeg_as_octet_stream_is_accepted(ada: RunningGateway) -> None:
    code, text = ada.send(sample("jpeg_octet_stream.eml"))

    assert code == 250, text
    [attachment] = [a for m in ada.ticket(1).messages for a in m.attachments]
    assert attachment.content_type == "image/jpeg"


def test_dotdot_filename_loses_its_path(ada: RunningGateway) -> None:
    code, text = ada.send(sample("dotdot_filename.eml"))

    assert code == 250, text
    [name] = attachment_names(ada)
    assert "/" not in name
    assert "\\" not in name
    assert ".." not in name


def test_tnef_files_are_unpacked_and_checked(ada: RunningGateway) -> None:
    code, text = ada.send(sample("winmail_dat.eml"))

    assert code == 250, text
    names = attachment_names(ada) if ada.ticket(1) else []
    assert "winmail.dat" not in names
    assert outcome(ada).outcome in ("ticket_created", "rejected_attachments")
    assert "winmail.dat" not in outcome(ada).detail


def test_dropping_failing_files_keeps_text(tmp_path: Path, clock: FakeClock) -> None:
    config = make_config(
        tmp_path, smtp=SmtpConfig(host="127.0.0.1", port=0, drop_failing_attachments=True)
    )
    with running_gateway(config, clock) as gateway:
        gateway.add_builder("ada@example.com", name="Ada Lovelace")
        files = [("shot.png", "image/png", build_png()),
                 ("setup.png", "application/octet-stream", b"MZ" + bytes(200))]

        code, text = gateway.send(message(files=files))

        assert code == 250, text
        assert attachment_names(gateway) == ["shot.png"]
        notices = [m for m in delivered(gateway) if "not" in m.get_body(("plain",))
                   .get_content() and "setup.png" in m.get_body(("plain",)).get_content()]
        assert len(notices) == 1
        assert "We added your message" in notices[0].get_body(("plain",)).get_content()


# Structural limits before parsing


def test_deeply_nested_message_gets_554(ada: RunningGateway) -> None:
    depth = 5000
    opening = "".join(
        f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n'
        for i in range(depth)
    )
    closing = "".join(f"--b{i}--\r\n" for i in reversed(range(depth)))
    data = ("From: Ada Lovelace <ada@example.com>\r\nTo: support@localhost\r\n"
            "Subject: Nested\r\n" + opening + "Content-Type: text/plain\r\n\r\nhi\r\n"
            + closing).encode()

    code, text = ada.send(data)

    assert code == 554
    assert "nested more than 20 levels" in text


def test_too_many_parts_gets_554(ada: RunningGateway) -> None:
    parts = "".join("--p\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(201))
    data = ("From: Ada Lovelace <ada@example.com>\r\nTo: support@localhost\r\n"
            "Subject: Parts\r\nContent-Type: multipart/mixed; boundary=p\r\n\r\n"
            + parts + "--p--\r\n").encode()

    code, text = ada.send(data)

    assert code == 554
    assert "more than 200 MIME parts" in text


def test_header_bomb_gets_552_quickly(ada: RunningGateway) -> None:
    data = (b"From: Ada Lovelace <ada@example.com>\r\nTo: support@localhost\r\n"
            + b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaa\r\n" * 40_000 + b"\r\nhello\r\n")
    started = time.monotonic()

    code, text = ada.send(data)

    assert code == 552
    assert "over 262144 bytes" in text
    assert time.monotonic() - started < 2.0


def test_too_many_recipients_gets_550(ada: RunningGateway) -> None:
    to = ", ".join(f"user{i}@example.com" for i in range(101))
    data = message().replace(b"To: support@localhost", f"To: {to}".encode())

    code, text = ada.send(data)

    assert code == 550
    assert "101 recipients; the limit is 100" in text


def test_encoded_line_break_stays_in_subject(ada: RunningGateway) -> None:
    subject = "=?utf-8?q?Client_Portal_login_fails=0D=0ABcc:_mallory@example.com?="
    data = message().replace(
        b"Subject: Client Portal shows a blank page after login",
        f"Subject: {subject}".encode(),
    )

    code, text = ada.send(data)
    [ack] = delivered(ada)

    assert code == 250, text
    assert ack["Bcc"] is None
    assert "mallory" not in ",".join(str(ack.get_all(h) or "") for h in ("To", "Cc"))
    raw_headers = ada.outbox_files()[0].read_bytes().split(b"\r\n\r\n", 1)[0]
    assert b"\r\nBcc:" not in raw_headers


def test_long_lines_are_accepted(ada: RunningGateway) -> None:
    line = "The error text is " + "x" * 5000
    code, text = ada.send(message(body=BODY + line + "\n"))

    assert code == 250, text
    assert "x" * 5000 in ada.ticket(1).description


# Failed processing, held tickets and the inbound commands


def _config_file(config: Config, tmp_path: Path) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(f'[database]\nurl = "{config.database.url}"\n'
                    f'[outbound]\nmaildir = "{config.outbound.maildir}"\n')
    return path


def test_failed_message_is_listed_and_retried(
    ada: RunningGateway, config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    desk = ada.gateway.desk
    assert desk is not None

    def broken(raw: bytes) -> Any:
        raise RuntimeError("parser bug")

    monkeypatch.setattr(desk, "_parse", broken)
    code, text = ada.send(message())
    monkeypatch.undo()
    config_path = _config_file(config, tmp_path)

    listed = CliRunner().invoke(cli, ["--config", str(config_path), "inbound", "list"])
    retried = CliRunner().invoke(cli, ["--config", str(config_path),
                                       "inbound", "retry", "1"])

    assert code == 250, text
    assert "\tfailed\t" in listed.output
    assert "RuntimeError: parser bug" in listed.output
    assert retried.exit_code == 0, retried.output
    assert "Ticket #1 opened" in retried.output
    assert ada.ticket(1) is not None


def test_new_tickets_over_hourly_limit_are_held(tmp_path: Path, clock: FakeClock) -> None:
    config = make_config(tmp_path, smtp=SmtpConfig(
        host="127.0.0.1", port=0, new_tickets_per_sender_per_hour=2))
    with running_gateway(config, clock) as gateway:
        gateway.add_builder("ada@example.com", name="Ada Lovelace")
        for number in range(3):
            code, text = gateway.send(message(f"Client Portal export number {number} fails"))

        assert code == 250, text
        assert "held" in text
        assert gateway.ticket(3) is None
        assert outcome(gateway).outcome == "held_rate_limit"


def test_held_message_is_released_by_support(tmp_path: Path, clock: FakeClock) -> None:
    config = make_config(tmp_path, smtp=SmtpConfig(
        host="127.0.0.1", port=0, new_tickets_per_sender_per_hour=1))
    with running_gateway(config, clock) as gateway:
        gateway.add_builder("ada@example.com", name="Ada Lovelace")
        gateway.send(message("Client Portal export one fails"))
        gateway.send(message("Client Portal export two fails"))
        held = outcome(gateway)
        config_path = _config_file(config, tmp_path)

        released = CliRunner().invoke(
            cli, ["--config", str(config_path), "inbound", "release", str(held.id)])
        again = CliRunner().invoke(
            cli, ["--config", str(config_path), "inbound", "release", str(held.id)])

        assert held.outcome == "held_rate_limit"
        assert released.exit_code == 0, released.output
        assert "Ticket #2 opened" in released.output
        assert gateway.ticket(2).summary.title == "Client Portal export two fails"
        assert again.exit_code != 0
        assert "is not held" in again.output


def test_hourly_limit_resets_after_an_hour(tmp_path: Path, clock: FakeClock) -> None:
    config = make_config(tmp_path, smtp=SmtpConfig(
        host="127.0.0.1", port=0, new_tickets_per_sender_per_hour=1))
    with running_gateway(config, clock) as gateway:
        gateway.add_builder("ada@example.com", name="Ada Lovelace")
        gateway.send(message("Client Portal export one fails"))
        clock.advance(hours=1)

        code, text = gateway.send(message("Client Portal export two fails"))

        assert code == 250, text
        assert gateway.ticket(2) is not None


# Any bytes: a ticket change or a clean rejection

_FRAGMENTS = [
    b"From: Ada Lovelace <ada@example.com>\r\n",
    b"To: support@localhost\r\n",
    b"Subject: Client Portal shows a blank page\r\n",
    b"Subject: =?utf-8?b?Q2xpZW50DQpCY2M6IHg=?=\r\n",
    b"Content-Type: multipart/mixed; boundary=zz\r\n",
    b"Content-Type: message/rfc822\r\n",
    b"Content-Transfer-Encoding: base64\r\n",
    b"Content-Disposition: attachment; filename*=utf-8''..%2F..%2Fetc%2Fpasswd\r\n",
    b"Auto-Submitted: auto-replied\r\n",
    b"\r\n",
    b"--zz\r\n",
    b"--zz--\r\n",
    BODY.encode(),
    b"iVBORw0KGgo=\r\n",
    b"\xff\xfe\x00\x80",
]
_KNOWN_OUTCOMES = {
    "ticket_created", "reply_added", "duplicate", "rejected_unknown_sender",
    "rejected_missing_sender",
    "rejected_attachments", "rejected_title", "rejected_unreadable_mime",
    "rejected_max_header_bytes",
    "rejected_max_mime_parts", "rejected_max_mime_depth", "rejected_max_recipients",
    "automatic_ignored", "automatic_recorded", "dropped_own_mail", "held_rate_limit",
}


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(
    st.binary(max_size=2000),
    st.lists(st.sampled_from(_FRAGMENTS), max_size=25).map(b"".join),
))
def test_any_bytes_get_a_clean_verdict(ada: RunningGateway, raw: bytes) -> None:
    desk = ada.gateway.desk
    assert desk is not None

    verdict = ada.call(lambda: desk.receive(
        Delivery(raw=raw, mail_from="ada@example.com", rcpt_tos=("support@localhost",))))

    assert verdict.code in (250, 550, 552, 554)
    assert verdict.outcome in _KNOWN_OUTCOMES


def test_nul_characters_in_body_are_dropped(ada: RunningGateway) -> None:
    # UTF-16 text sent as ISO-8859-1, as a broken client may do: every other
    # byte is NUL, which PostgreSQL text columns cannot store.
    body = "Portal login fails for every user since this morning.\r\n".encode("utf-16-le")
    raw = (
        b"From: Ada Lovelace <ada@example.com>\r\nTo: support@localhost\r\n"
        b"Subject: Client Portal login fails since this morning\r\n"
        b"Message-ID: <nul.1@mail.example.com>\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=iso-8859-1\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\n" + body
    )

    code, text = send_crlf(ada, raw)

    assert code == 250, text
    ticket = ada.ticket(1)
    assert "\x00" not in ticket.description
    assert "Portal login fails for every user" in ticket.description


def test_small_message_parsed_off_loop(
    ada: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small message is parsed on a thread too.

    Its size does not bound the parse: a 60 KB message with many long parameter
    lists takes over a second of CPU.
    """
    import threading

    desk = ada.gateway.desk
    assert desk is not None
    parse = desk._parse
    parse_threads: list[int] = []

    def recorded(raw: bytes) -> Any:
        parse_threads.append(threading.get_ident())
        return parse(raw)

    async def loop_thread() -> int:
        return threading.get_ident()

    monkeypatch.setattr(desk, "_parse", recorded)
    code, text = ada.send(message())

    assert code == 250, text
    assert len(parse_threads) == 1
    assert parse_threads[0] != ada.call(loop_thread)
