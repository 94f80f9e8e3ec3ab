"""Tests of composing outbound email and delivering it to a Maildir or SMTP relay."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import logging
import re
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timezone
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from adapters import outbound
from adapters.outbound import (
    MaildirTransport,
    RelayTransport,
    compose_email,
    make_message_id,
    sanitize_header_value,
    transport_from_config,
)
from gateway.config import OutboundConfig
from gateway.errors import ConfigError, DeliveryFailed
from gateway.machine_mail import has_own_message_id_shape
from gateway.model import CheckedAttachment
from ports import free_port

SENDER = "support@example.com"
RECIPIENT = "builder@example.com"
RELAY_USERNAME = "gateway"
RELAY_PASSWORD = "relay-secret-7f3a"
# An RFC 2047 encoded-word that hides a CR LF, and the text a parser decodes it to.
ENCODED_INJECTION = "=?utf-8?q?hello=0D=0ABcc:_victim@example.com?="
DECODED_INJECTION = "hello\r\nBcc: victim@example.com"
BASE_HEADERS = {
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "auto-submitted",
    "x-auto-response-suppress",
    "x-loop",
    "content-type",
}


def compose(**overrides: Any) -> bytes:
    arguments: dict[str, Any] = {
        "sender": SENDER,
        "sender_name": "Support",
        "recipient": RECIPIENT,
        "recipient_name": "Ada Builder",
        "subject": "Ticket #42 received",
        "text": "We received your request.\n",
        "html": "<p>We received your request.</p>",
        "message_id": "sg.1.abc@example.com",
        "date": datetime(2026, 12, 4, 15, 0, tzinfo=timezone.utc),
    }
    arguments.update(overrides)
    return compose_email(**arguments)


def parse(data: bytes) -> EmailMessage:
    return email.message_from_bytes(data, policy=default_policy)


def header_names(data: bytes) -> Counter[str]:
    return Counter(name.lower() for name in parse(data).keys())


def header_lines(data: bytes) -> list[bytes]:
    return data.partition(b"\r\n\r\n")[0].split(b"\r\n")


# Composing


def test_reply_parses_back_with_headers_and_parts():
    data = compose()

    message = parse(data)

    assert message["From"].addresses[0].addr_spec == SENDER
    assert message["From"].addresses[0].display_name == "Support"
    assert message["To"].addresses[0].addr_spec == RECIPIENT
    assert message["To"].addresses[0].display_name == "Ada Builder"
    assert message["Subject"] == "Ticket #42 received"
    assert message["Message-ID"] == "<sg.1.abc@example.com>"
    assert message["Date"].datetime == datetime(2026, 12, 4, 15, 0, tzinfo=timezone.utc)
    assert message["MIME-Version"] == "1.0"
    assert message["Auto-Submitted"] == "auto-replied"
    assert message["X-Auto-Response-Suppress"] == "All"
    assert message["X-Loop"] == SENDER
    assert message["Precedence"] is None
    assert message.get_content_type() == "multipart/alternative"
    plain = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert plain.get_content().replace("\r\n", "\n") == "We received your request.\n"
    assert "<p>We received your request.</p>" in html.get_content()


def test_reply_has_exactly_expected_headers():
    data = compose(reply_to="replies@example.com", extra_headers={"X-Ticket": "42"})

    names = header_names(data)

    expected = BASE_HEADERS | {"reply-to", "x-ticket"}
    assert set(names) == expected
    assert all(count == 1 for count in names.values())
    assert parse(data)["Reply-To"].addresses[0].addr_spec == "replies@example.com"
    assert parse(data)["X-Ticket"] == "42"


def test_reply_uses_crlf_and_short_lines():
    text = "A" * 2000 + "\nsecond line é\n"
    html = "<p>" + "B" * 3000 + "</p>"

    data = compose(text=text, html=html)

    lines = data.split(b"\r\n")
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert b"\r" not in data.replace(b"\r\n", b"")
    assert max(len(line) for line in lines) <= 998
    assert data.isascii()
    plain = parse(data).get_body(preferencelist=("plain",)).get_content()
    assert plain.replace("\r\n", "\n") == text


def test_text_only_reply_is_single_part():
    data = compose(html=None, auto_submitted="auto-generated")

    message = parse(data)

    assert message.get_content_type() == "text/plain"
    assert not message.is_multipart()
    assert message["Auto-Submitted"] == "auto-generated"
    assert set(header_names(data)) == BASE_HEADERS | {"content-transfer-encoding"}


def test_threading_headers_are_bracketed():
    references = [f"<thread{i}@example.com>" for i in range(25)]

    message = parse(compose(in_reply_to="thread24@example.com", references=references))

    assert message["In-Reply-To"] == "<thread24@example.com>"
    ids = str(message["References"]).split()
    assert ids == [f"<thread{i}@example.com>" for i in range(5, 25)]


def test_long_reference_ids_stay_unencoded():
    long_id = "x" * 200 + "@mail.example.com"
    references = [f"<{long_id}>", "<short@example.com>"]

    data = compose(in_reply_to=long_id, references=references)

    message = parse(data)
    assert b"=?" not in data.partition(b"\r\n\r\n")[0]
    assert message["In-Reply-To"] == f"<{long_id}>"
    assert str(message["References"]).split() == [f"<{long_id}>", "<short@example.com>"]
    assert all(len(line) <= 998 for line in header_lines(data))


def test_invalid_thread_ids_are_left_out(caplog):
    references = [
        "<good@example.com>",
        "bad id@example.com",
        "<>",
        "<a(b)@example.com>",
    ]

    with caplog.at_level(logging.WARNING, logger="adapters.outbound"):
        message = parse(compose(in_reply_to="no spaces allowed", references=references))

    assert message["In-Reply-To"] is None
    assert message["References"] == "<good@example.com>"
    assert "left out invalid" in caplog.text


@pytest.mark.parametrize(
    "subject",
    [DECODED_INJECTION, ENCODED_INJECTION, f"Re: {ENCODED_INJECTION}"],
    ids=["decoded-crlf", "encoded-word", "encoded-word-after-text"],
)
def test_subject_with_encoded_newline_adds_no_header(subject):
    data = compose(subject=subject)

    message = parse(data)

    assert message["Bcc"] is None
    assert set(header_names(data)) == BASE_HEADERS
    assert "hello Bcc: victim@example.com" in message["Subject"]
    assert b"\r\nBcc:" not in data


def test_display_name_with_encoded_newline_adds_no_header():
    data = compose(recipient_name=ENCODED_INJECTION, sender_name=DECODED_INJECTION)

    message = parse(data)

    assert message["Bcc"] is None
    assert set(header_names(data)) == BASE_HEADERS
    assert message["To"].addresses[0].addr_spec == RECIPIENT
    assert message["To"].addresses[0].display_name == "hello Bcc: victim@example.com"


def test_doubly_encoded_newline_adds_no_header():
    # The encoded-word decodes to ENCODED_INJECTION, which decodes to a CR LF.
    nested = (
        "=?utf-8?q?=3D=3Futf-8=3Fq=3Fhello=3D0D=3D0ABcc:_victim@example.com=3F=3D?="
    )

    message = parse(compose(subject=nested))

    assert message["Bcc"] is None
    assert message["Subject"] == "hello Bcc: victim@example.com"


def encode_word(text: str) -> str:
    return "=?utf-8?b?" + base64.b64encode(text.encode()).decode() + "?="


def test_deeply_encoded_subject_is_rejected():
    subject = ENCODED_INJECTION
    for _ in range(4):
        subject = encode_word(subject)

    with pytest.raises(ValueError, match="layers of RFC 2047 encoding"):
        compose(subject=subject)


def test_header_check_rejects_injected_header():
    data = (
        b"From: support@example.com\r\nSubject: hello\r\nBcc: victim@example.com\r\n"
        b"\r\nbody\r\n"
    )
    expected = Counter({"from": 1, "subject": 1})

    with pytest.raises(ValueError, match="extra: bcc"):
        outbound._verify_header_block(data, expected)


def test_header_check_rejects_malformed_lines():
    expected = Counter({"from": 1})

    with pytest.raises(ValueError, match="bare CR"):
        outbound._verify_header_block(b"From: a\nBcc: b@example.com\r\n\r\n", expected)
    with pytest.raises(ValueError, match="neither a field"):
        outbound._verify_header_block(b"From: a\r\nnot a header\r\n\r\n", expected)
    with pytest.raises(ValueError, match="longer than 998"):
        outbound._verify_header_block(b"From: " + b"a" * 1000 + b"\r\n\r\n", expected)
    with pytest.raises(ValueError, match="no blank line"):
        outbound._verify_header_block(b"From: a\r\n", expected)


def test_header_check_catches_library_injection(monkeypatch):
    probe = EmailMessage(policy=email.policy.SMTP)
    probe["Subject"] = ENCODED_INJECTION
    if b"\r\nBcc:" not in probe.as_bytes():
        pytest.skip("this Python encodes the decoded CR LF (CVE-2024-6923 is fixed)")
    # Without the sanitising setter, Python 3.11.7 writes the Bcc line itself.
    def set_unchecked(message: EmailMessage, name: str, value: str) -> None:
        message[name] = value

    monkeypatch.setattr(outbound, "_set_text_header", set_unchecked)
    # Only EmailMessage calls _set_text_header.
    monkeypatch.setattr(outbound, "_compose_direct", lambda *_args: None)

    with pytest.raises(ValueError, match="extra: bcc"):
        compose(subject=ENCODED_INJECTION)


def test_non_ascii_names_and_subject_are_encoded():
    data = compose(
        sender_name="Zoë Support — Équipe",
        recipient_name='Jürgen "Jo" Müller, Jr.',
        subject="Überprüfung erhalten ✓",
    )

    message = parse(data)

    assert data.partition(b"\r\n\r\n")[0].isascii()
    assert message["From"].addresses[0].display_name == "Zoë Support — Équipe"
    assert message["To"].addresses[0].display_name == 'Jürgen "Jo" Müller, Jr.'
    assert message["Subject"] == "Überprüfung erhalten ✓"


def test_long_subject_is_folded():
    subject = "Re: " + " ".join(f"word{i}" for i in range(80))

    data = compose(subject=subject)

    subject_lines = []
    for line in header_lines(data):
        if line.startswith(b"Subject:") or (subject_lines and line[:1] == b" "):
            subject_lines.append(line)
        elif subject_lines:
            break
    assert len(subject_lines) > 1
    assert all(len(line) <= 78 for line in subject_lines)
    assert parse(data)["Subject"] == subject


def test_attachments_round_trip():
    pdf = CheckedAttachment(
        filename="report.pdf",
        content_type="application/pdf",
        data=b"%PDF-1.7\n" + bytes(range(256)) * 40,
        sha256="unused",
    )
    log_file = CheckedAttachment(
        filename="journal d'erreurs é.txt",
        content_type="text/plain",
        data="première ligne\r\n".encode() * 3,
        sha256="unused",
    )

    data = compose(attachments=[pdf, log_file])

    message = parse(data)
    assert message.get_content_type() == "multipart/mixed"
    assert message.get_body(preferencelist=("html",)) is not None
    parts = list(message.iter_attachments())
    assert [part.get_filename() for part in parts] == [
        "report.pdf",
        "journal d'erreurs é.txt",
    ]
    assert [part.get_content_type() for part in parts] == [
        "application/pdf",
        "text/plain",
    ]
    assert parts[0].get_payload(decode=True) == pdf.data
    assert parts[1].get_payload(decode=True) == log_file.data
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    assert set(header_names(data)) == BASE_HEADERS


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"auto_submitted": "no"}, "auto_submitted"),
        ({"date": datetime(2026, 12, 4, 15, 0)}, "no time zone"),
        ({"extra_headers": {"Precedence": "bulk"}}, "reserved"),
        ({"extra_headers": {"bcc": "victim@example.com"}}, "reserved"),
        ({"extra_headers": {"X-Bad Name": "1"}}, "invalid header name"),
        ({"recipient": "builder@example.com\r\nBcc: victim@example.com"}, "To address"),
        ({"recipient": "Ada <builder@example.com>"}, "invalid To address"),
        ({"sender": "not-an-address"}, "invalid sender address"),
        ({"reply_to": "a@example.com, b@example.com"}, "invalid Reply-To"),
        ({"message_id": "<two words@example.com>"}, "invalid Message-ID"),
    ],
    ids=[
        "auto-submitted-no",
        "naive-date",
        "precedence",
        "bcc",
        "space-in-name",
        "crlf-in-address",
        "name-in-address",
        "no-at-sign",
        "two-reply-to",
        "space-in-message-id",
    ],
)
def test_invalid_arguments_raise_value_error(overrides, message):
    with pytest.raises(ValueError, match=message):
        compose(**overrides)


def test_make_message_id_is_unique_and_bare():
    ids = [make_message_id("support.example.com") for _ in range(1000)]

    assert len(set(ids)) == len(ids)
    pattern = re.compile(r"sg\.[0-9a-f]+\.[0-9a-f]{16}@support\.example\.com")
    for message_id in ids:
        assert pattern.fullmatch(message_id)


def test_make_message_id_has_own_shape():
    for domain in ("localhost", "support.example.com"):
        message_id = make_message_id(domain)
        assert has_own_message_id_shape(message_id)
        assert has_own_message_id_shape(f"<{message_id}>")
        local, _, host = message_id.partition("@")
        assert has_own_message_id_shape(f"{local}.42@{host}")


@pytest.mark.parametrize(
    "message_id",
    ["CAF4k2x9Lq7@mail.gmail.com", "sg.12.ab@example.com",
     "AM0PR01MB1234.eurprd01.prod.outlook.com", "sg.1a.0123456789abcdef"],
)
def test_other_message_ids_lack_own_shape(message_id):
    assert not has_own_message_id_shape(message_id)


@pytest.mark.parametrize(
    "domain", ["", "exa mple.com", "example.com>", "bücher.example"]
)
def test_make_message_id_rejects_bad_domain(domain):
    with pytest.raises(ValueError, match="invalid Message-ID domain"):
        make_message_id(domain)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain subject", "plain subject"),
        ("hello\r\nBcc: victim@example.com", "hello Bcc: victim@example.com"),
        ("  tab\tand\nnewline  ", "tab and newline"),
        ("nul\x00del\x7fnel\x85end", "nul del nel end"),
        ("line\u2028para\u2029end", "line para end"),
        ("keeps  inner  spaces", "keeps  inner  spaces"),
        ("Grüße ✓", "Grüße ✓"),
    ],
    ids=[
        "plain",
        "crlf",
        "tab-lf",
        "c0-del-c1",
        "unicode-separators",
        "spaces",
        "unicode",
    ],
)
def test_sanitize_header_value(value, expected):
    assert sanitize_header_value(value) == expected


# Maildir delivery


async def test_maildir_delivery_writes_one_file(tmp_path):
    maildir = tmp_path / "outbox"
    data = compose()

    await MaildirTransport(maildir).deliver(SENDER, RECIPIENT, data)

    delivered = list((maildir / "new").iterdir())
    assert len(delivered) == 1
    assert delivered[0].read_bytes() == data
    assert list((maildir / "tmp").iterdir()) == []
    assert (maildir / "cur").is_dir()


async def test_maildir_file_names_are_unique(tmp_path):
    transport = MaildirTransport(tmp_path)

    deliveries = [transport.deliver(SENDER, RECIPIENT, b"x\r\n") for _ in range(20)]
    await asyncio.gather(*deliveries)

    names = [path.name for path in (tmp_path / "new").iterdir()]
    assert len(names) == 20
    assert all(":" not in name and "/" not in name for name in names)


async def test_maildir_write_failure_is_temporary(tmp_path):
    blocked = tmp_path / "outbox"
    blocked.write_text("a file where the Maildir should be")

    with pytest.raises(DeliveryFailed, match="could not write to Maildir") as failure:
        await MaildirTransport(blocked).deliver(SENDER, RECIPIENT, b"x\r\n")

    assert failure.value.permanent is False


# Relay delivery


class RecordingHandler:
    """aiosmtpd handler that stores each envelope, or replies with preset codes."""

    def __init__(
        self, rcpt_reply: str | None = None, data_reply: str = "250 OK"
    ) -> None:
        self.rcpt_reply = rcpt_reply
        self.data_reply = data_reply
        self.envelopes: list[Any] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.rcpt_reply is not None:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        return self.data_reply


class StoredLogins:
    """aiosmtpd authenticator that accepts RELAY_USERNAME with RELAY_PASSWORD."""

    def __init__(self) -> None:
        self.logins: list[str] = []

    def __call__(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        self.logins.append(auth_data.login.decode())
        accepted = (
            auth_data.login.decode() == RELAY_USERNAME
            and auth_data.password.decode() == RELAY_PASSWORD
        )
        # handled=False makes aiosmtpd send the 535 reply itself.
        return AuthResult(success=accepted, handled=False)


@pytest.fixture
def start_relay() -> Iterator[Any]:
    """Start aiosmtpd Controllers on 127.0.0.1 at free ports and stop them after."""
    controllers: list[Controller] = []

    def start(handler: RecordingHandler, **smtp_parameters: Any) -> int:
        port = free_port()
        controller = Controller(
            handler,
            hostname="127.0.0.1",
            port=port,
            server_hostname="relay.example.com",
            **smtp_parameters,
        )
        controller.start()
        controllers.append(controller)
        return port

    yield start
    for controller in controllers:
        controller.stop()


def relay_transport(port: int, **overrides: Any) -> RelayTransport:
    arguments: dict[str, Any] = {
        "starttls": False,
        "timeout_seconds": 5.0,
        "local_hostname": "gateway.example.com",
    }
    arguments.update(overrides)
    return RelayTransport("127.0.0.1", port, **arguments)


async def test_relay_receives_message_and_envelope(start_relay):
    handler = RecordingHandler()
    port = start_relay(handler)
    data = compose()

    await relay_transport(port).deliver(SENDER, RECIPIENT, data)

    assert len(handler.envelopes) == 1
    envelope = handler.envelopes[0]
    assert envelope.mail_from == SENDER
    assert envelope.rcpt_tos == [RECIPIENT]
    assert envelope.original_content.rstrip(b"\r\n") == data.rstrip(b"\r\n")
    assert parse(envelope.original_content)["Message-ID"] == "<sg.1.abc@example.com>"


async def test_relay_550_is_permanent(start_relay):
    port = start_relay(RecordingHandler(rcpt_reply="550 5.1.1 No such mailbox"))

    with pytest.raises(DeliveryFailed) as failure:
        await relay_transport(port).deliver(SENDER, RECIPIENT, compose())

    assert failure.value.permanent is True
    assert f"127.0.0.1:{port}" in str(failure.value)
    assert "550" in str(failure.value)


async def test_relay_451_is_temporary(start_relay):
    port = start_relay(RecordingHandler(data_reply="451 4.3.0 Try again later"))

    with pytest.raises(DeliveryFailed) as failure:
        await relay_transport(port).deliver(SENDER, RECIPIENT, compose())

    assert failure.value.permanent is False
    assert f"127.0.0.1:{port}" in str(failure.value)
    assert "451" in str(failure.value)


async def test_relay_not_listening_is_temporary():
    port = free_port()

    with pytest.raises(DeliveryFailed) as failure:
        await relay_transport(port).deliver(SENDER, RECIPIENT, compose())

    assert failure.value.permanent is False
    assert f"127.0.0.1:{port}" in str(failure.value)


async def test_relay_without_greeting_times_out():
    connection_closed = asyncio.Event()

    async def stay_silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        try:
            await reader.read()
        finally:
            writer.close()
            await writer.wait_closed()
            connection_closed.set()

    server = await asyncio.start_server(stay_silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport = relay_transport(port, timeout_seconds=0.3)
    try:
        with pytest.raises(DeliveryFailed, match="timed out") as failure:
            await transport.deliver(SENDER, RECIPIENT, compose())
        await asyncio.wait_for(connection_closed.wait(), timeout=5)
    finally:
        server.close()
        await server.wait_closed()

    assert failure.value.permanent is False


async def test_relay_auth_succeeds(start_relay, caplog):
    handler = RecordingHandler()
    authenticator = StoredLogins()
    port = start_relay(handler, authenticator=authenticator, auth_require_tls=False)
    transport = relay_transport(port, username=RELAY_USERNAME, password=RELAY_PASSWORD)

    with caplog.at_level(logging.DEBUG, logger="adapters.outbound"):
        await transport.deliver(SENDER, RECIPIENT, compose())

    assert authenticator.logins == [RELAY_USERNAME]
    assert len(handler.envelopes) == 1
    assert "sent <sg.1.abc@example.com>" in caplog.text
    assert RELAY_PASSWORD not in caplog.text
    assert "We received your request" not in caplog.text
    assert RELAY_PASSWORD not in repr(transport)


async def test_relay_wrong_password_is_permanent(start_relay):
    handler = RecordingHandler()
    port = start_relay(handler, authenticator=StoredLogins(), auth_require_tls=False)
    transport = relay_transport(
        port, username=RELAY_USERNAME, password="wrong-password"
    )

    with pytest.raises(DeliveryFailed) as failure:
        await transport.deliver(SENDER, RECIPIENT, compose())

    assert failure.value.permanent is True
    assert "535" in str(failure.value)
    assert f"127.0.0.1:{port}" in str(failure.value)
    assert "wrong-password" not in str(failure.value)
    assert handler.envelopes == []


async def test_relay_rejects_invalid_envelope_address():
    transport = relay_transport(free_port())

    with pytest.raises(DeliveryFailed, match="envelope recipient") as failure:
        await transport.deliver(SENDER, "victim@example.com>\r\nRCPT TO:<x", b"x\r\n")

    assert failure.value.permanent is True


# Configuration


def test_config_without_relay_uses_maildir(tmp_path):
    transport = transport_from_config(OutboundConfig(maildir=str(tmp_path)))

    assert isinstance(transport, MaildirTransport)
    assert transport.path == Path(tmp_path)


def test_config_with_relay_uses_relay():
    config = OutboundConfig(
        relay_host="127.0.0.1",
        relay_port=2587,
        relay_username=RELAY_USERNAME,
        relay_password=RELAY_PASSWORD,
        relay_starttls=False,
        relay_timeout_seconds=7.5,
    )

    transport = transport_from_config(config)

    assert isinstance(transport, RelayTransport)
    assert (transport.host, transport.port) == ("127.0.0.1", 2587)
    assert transport.username == RELAY_USERNAME
    assert transport.starttls is False
    assert transport.timeout_seconds == 7.5
    assert RELAY_PASSWORD not in repr(transport)


def test_config_with_username_but_no_password_fails():
    config = OutboundConfig(relay_host="127.0.0.1", relay_username=RELAY_USERNAME)

    with pytest.raises(ConfigError, match="relay_password"):
        transport_from_config(config)


# A reply without attachments is written without building an EmailMessage. It
# must come out exactly as EmailMessage would write it, the boundary aside.

DIRECT_CASES: dict[str, dict[str, Any]] = {
    "text and html": {},
    "text only": {"html": None},
    "no display names": {"sender_name": "", "recipient_name": ""},
    "atext name": {"recipient_name": "Dan O'Neil-Smith"},
    "threaded": {
        "in_reply_to": "CAF1x2@mail.gmail.com",
        "references": ["a1@example.com", "CAF1x2@mail.gmail.com"],
        "reply_to": "reply+42.abcdef@support.example.com",
    },
    "long references fold": {"references": [f"id{i}.{'x' * 30}@example.com" for i in range(6)]},
    "extra header": {"extra_headers": {"X-Ticket-Number": "42"}},
    "subject with punctuation": {"subject": "[#42] Can't save: form (v2) -> error!"},
    "subject with tab is sanitised": {"subject": "Ticket\t#42 received"},
    "non-ASCII body, quoted-printable": {"text": "Grüße aus Köln,\nwir haben es.\n"},
    "non-ASCII body, base64": {"text": "日本語のテキストです。\n" * 12, "html": "<p>日本語</p>" * 40},
    "long ASCII lines": {"text": "word " * 60 + "\n" + "x" * 200 + "\n"},
    "many lines": {"text": "".join(f"línea {i}\n" for i in range(40))},
    "CR LF and bare CR in the body": {"text": "one\r\ntwo\rthree\n"},
    "empty body": {"text": "", "html": ""},
    "body with a boundary-like line": {"text": "--===============1234==\n"},
    "non-ASCII names": {"sender_name": "Zoë Support", "recipient_name": "José Núñez"},
    "name with a dot": {"recipient_name": "Ada L. Builder"},
    "name with quotes and comma": {"recipient_name": 'Jürgen "Jo" Müller, Jr.'},
    "non-ASCII subject": {"subject": "Ticket reçu ✓"},
    "subject that moves to its own line": {
        "subject": "[#1234] Notion database rows missing from the orders screen (report 1234)"},
    "subject folded between words": {"subject": "word " * 40},
    "word longer than a line": {"subject": "x" * 90 + " y"},
    "double space in subject": {"subject": "Ticket  #42"},
    "encoded-word subject": {"subject": "=?utf-8?q?caf=C3=A9?="},
    "empty subject": {"subject": ""},
    "long address": {"recipient": "a" * 60 + "@example.com"},
    "long extra header": {"extra_headers": {"List-Unsubscribe": "<https://" + "u" * 90 + ">"}},
}

GENERAL_CASES: dict[str, dict[str, Any]] = {
    "structured extra header": {"extra_headers": {"Sender": "support@example.com"}},
    "attachment": {"attachments": [CheckedAttachment(
        filename="log.txt", content_type="text/plain", data=b"line\n", sha256="0" * 64)]},
}


def without_boundary(data: bytes) -> bytes:
    return re.sub(rb"={15}\d{19}==", b"BOUNDARY", data)


def general_bytes(**overrides: Any) -> bytes:
    """Compose with EmailMessage alone, as compose_email does for a reply with files."""
    original = outbound._compose_direct
    outbound._compose_direct = lambda *args: None  # type: ignore[assignment]
    try:
        return compose(**overrides)
    finally:
        outbound._compose_direct = original  # type: ignore[assignment]


@pytest.mark.parametrize("overrides", DIRECT_CASES.values(), ids=DIRECT_CASES.keys())
def test_direct_reply_matches_email_message(overrides: dict[str, Any]) -> None:
    plain = compose(**overrides)
    assert without_boundary(plain) == without_boundary(general_bytes(**overrides))
    sent = overrides.get("text", "We received your request.\n")
    received = parse(plain).get_body(("plain",)).get_content()
    assert lines_of(received) == lines_of(sent)


def lines_of(text: str) -> list[str]:
    return text.replace("\r\n", "\n").replace("\r", "\n").rstrip("\n").split("\n")


@pytest.mark.parametrize("overrides", DIRECT_CASES.values(), ids=DIRECT_CASES.keys())
def test_reply_without_files_skips_email_message(
    overrides: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def reject(*_args: Any) -> bytes:
        raise AssertionError("reply went through EmailMessage")

    monkeypatch.setattr(outbound, "_compose_general", reject)
    compose(**overrides)


@pytest.mark.parametrize("overrides", GENERAL_CASES.values(), ids=GENERAL_CASES.keys())
def test_reply_with_files_uses_email_message(
    overrides: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    general = outbound._compose_general

    def counted(*args: Any) -> bytes:
        calls.append(1)
        return general(*args)

    monkeypatch.setattr(outbound, "_compose_general", counted)
    composed = compose(**overrides)
    assert calls == [1]
    assert header_names(composed)["from"] == 1


def test_direct_reply_boundaries_differ() -> None:
    first, second = compose(), compose()
    boundaries = [re.search(rb'boundary="([^"]+)"', data).group(1) for data in (first, second)]
    assert boundaries[0] != boundaries[1]


# Display names that an address parser could split into several addresses or a
# group once the header is folded.
RISKY_NAMES = {
    "long with a comma and an address": "evil@attacker.com, Ada Lovelace the builder of "
                                        "many fine apps on the platform",
    "group syntax": "Bob: evil@attacker.com, " + "x" * 80 + ";",
    "short with a comma": "Lovelace, Ada",
    "quotes and backslashes": 'Ada "the \\ builder" Lovelace',
    "long atext words": "Ada Lovelace the builder of many fine apps on the platform " * 2,
    "long non-ASCII with specials": "Jürgen «Jo» Müller, Jr. <jo@example.org>; " * 3,
    "literal encoded-word marker": "Ada =?x? Lovelace",
    "one word longer than a header line": "A" * 2000,
}


@pytest.mark.parametrize("name", RISKY_NAMES.values(), ids=RISKY_NAMES.keys())
def test_display_name_stays_one_address(name: str) -> None:
    data = compose(recipient_name=name)
    head = data.partition(b"\r\n\r\n")[0]
    raw_to = email.message_from_bytes(data, policy=email.policy.compat32)["To"]
    [(raw_name, address)] = email.utils.getaddresses([raw_to])

    assert [a.addr_spec for a in parse(data)["To"].addresses] == [RECIPIENT]
    assert address == RECIPIENT
    # RFC 2047 decoding, which drops the folding space between encoded-words.
    assert str(make_header(decode_header(raw_name))) == " ".join(name.split())
    assert max(len(line) for line in head.split(b"\r\n")) <= 78
