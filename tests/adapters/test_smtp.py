"""The SMTP server's own defences: smuggling, long lines, timeouts and floods."""

from __future__ import annotations

import smtplib
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import FakeClock, RunningGateway, make_config, running_gateway
from gateway.config import SmtpConfig

MESSAGE = (
    b"From: Ada Lovelace <ada@example.com>\r\nTo: support@localhost\r\n"
    b"Subject: Client Portal shows a blank page after login\r\n"
    b"Message-ID: <smuggle.1@mail.example.com>\r\n\r\n"
    b"Since this morning the Client Portal shows a blank white page right after\r\n"
    b"login. It happens in Chrome and Firefox, and my clients see the same thing.\r\n"
)
SMUGGLED = (
    b"MAIL FROM:<mallory@example.com>\r\nRCPT TO:<support@localhost>\r\nDATA\r\n"
    b"From: Ada Lovelace <ada@example.com>\r\nTo: support@localhost\r\n"
    b"Subject: Smuggled ticket from someone else entirely\r\n"
    b"Message-ID: <smuggle.2@mail.example.com>\r\n\r\n"
    b"This text must never become a ticket of its own, whatever happens.\r\n"
)


def _connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    client = socket.create_connection(("127.0.0.1", port), timeout=5,
                                      source_address=(source, 0))
    _read_reply(client)
    return client


def _read_reply(client: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\r\n") or data.split(b"\r\n")[-2][3:4] == b"-":
        chunk = client.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def _command(client: socket.socket, line: bytes) -> bytes:
    client.sendall(line + b"\r\n")
    return _read_reply(client)


def _inbound(gateway: RunningGateway) -> list[Any]:
    async def work() -> list[Any]:
        async with gateway.gateway.store.read() as tx:
            return await tx.list_inbound(limit=20)

    return gateway.call(work)


@pytest.mark.parametrize(
    "ending",
    [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n", b"\r\n.\r", b"\n.\r"],
    ids=["lf-dot-lf", "lf-dot-crlf", "crlf-dot-lf", "cr-dot-crlf", "crlf-dot-cr",
         "lf-dot-cr"],
)
def test_smuggled_message_stays_in_data(ada: RunningGateway, ending: bytes) -> None:
    client = _connect(ada.smtp_port)
    _command(client, b"EHLO client.example.com")
    _command(client, b"MAIL FROM:<ada@example.com>")
    _command(client, b"RCPT TO:<support@localhost>")
    _command(client, b"DATA")

    client.sendall(MESSAGE + ending + SMUGGLED + b"\r\n.\r\n")
    reply = _read_reply(client)
    _command(client, b"QUIT")
    client.close()

    assert reply.startswith(b"250"), reply
    assert len(_inbound(ada)) == 1
    assert ada.ticket(1) is not None
    assert ada.ticket(2) is None


def test_line_over_1000_octets_is_accepted(ada: RunningGateway) -> None:
    data = MESSAGE + b"Error text: " + b"x" * 20_000 + b"\r\n"

    code, text = ada.send(data)

    assert code == 250, text
    assert "x" * 20_000 in ada.ticket(1).description


def test_line_over_configured_limit_gets_500(tmp_path: Path, clock: FakeClock) -> None:
    config = make_config(tmp_path, smtp=SmtpConfig(host="127.0.0.1", port=0,
                                                   max_line_bytes=4096))
    with running_gateway(config, clock) as gateway:
        code, text = gateway.send(MESSAGE + b"x" * 5000 + b"\r\n")

    assert code == 500
    assert text == "5.5.2 Line too long; the limit is 4,096 bytes per line, CRLF included"


def test_invalid_size_parameter_gets_501_5_5_4(ada: RunningGateway) -> None:
    client = _connect(ada.smtp_port)
    _command(client, b"EHLO client.example.com")

    reply = _command(client, b"MAIL FROM:<ada@example.com> SIZE=abc")
    _command(client, b"QUIT")
    client.close()

    assert reply == b"501 5.5.4 Syntax: MAIL FROM: <address> [SP <mail-parameters>]\r\n"


def test_long_command_line_gets_500_5_5_2(ada: RunningGateway) -> None:
    client = _connect(ada.smtp_port)
    _command(client, b"EHLO client.example.com")

    reply = _command(client, b"NOOP " + b"x" * 600)
    _command(client, b"QUIT")
    client.close()

    assert reply == (b"500 5.5.2 Command line too long; the limit is 512 bytes "
                     b"(548 for MAIL) per command, CRLF not counted\r\n")


@pytest.fixture
def guarded(tmp_path: Path, clock: FakeClock) -> Iterator[RunningGateway]:
    config = make_config(tmp_path, smtp=SmtpConfig(
        host="127.0.0.1", port=0, max_sessions_per_client=2,
        max_messages_per_client_per_minute=3, idle_timeout_seconds=0.5,
        max_recipients=2,
    ))
    with running_gateway(config, clock) as gateway:
        gateway.add_builder("ada@example.com", name="Ada Lovelace")
        yield gateway


def test_idle_connection_is_closed(guarded: RunningGateway) -> None:
    client = _connect(guarded.smtp_port)
    started = time.monotonic()

    data = client.recv(4096)

    assert data == b""
    assert time.monotonic() - started < 3


def test_slow_data_is_cut_off(guarded: RunningGateway) -> None:
    client = _connect(guarded.smtp_port)
    _command(client, b"EHLO client.example.com")
    _command(client, b"MAIL FROM:<ada@example.com>")
    _command(client, b"RCPT TO:<support@localhost>")
    _command(client, b"DATA")
    closed = False

    for line in MESSAGE.split(b"\r\n") * 10:
        try:
            client.sendall(line + b"\r\n")
        except OSError:
            closed = True
            break
        time.sleep(0.1)
    try:
        closed = closed or client.recv(4096) == b""
    except OSError:
        closed = True

    assert closed
    assert _inbound(guarded) == []


def test_extra_session_from_one_address_gets_421(guarded: RunningGateway) -> None:
    first = smtplib.SMTP("127.0.0.1", guarded.smtp_port, timeout=5)
    second = smtplib.SMTP("127.0.0.1", guarded.smtp_port, timeout=5)

    with pytest.raises(smtplib.SMTPConnectError) as refused:
        smtplib.SMTP("127.0.0.1", guarded.smtp_port, timeout=5)

    assert refused.value.smtp_code == 421
    first.close()
    second.close()


def test_other_client_served_during_flood(guarded: RunningGateway) -> None:
    flood = [smtplib.SMTP("127.0.0.1", guarded.smtp_port, timeout=5) for _ in range(2)]

    with smtplib.SMTP("127.0.0.1", guarded.smtp_port, timeout=5,
                      source_address=("127.0.0.2", 0)) as other:
        code, _ = other.ehlo()
        mail_code, _ = other.mail("ada@example.com")

    assert code == 250
    assert mail_code == 250
    for client in flood:
        client.close()


def test_message_flood_gets_450(guarded: RunningGateway) -> None:
    codes = []
    with smtplib.SMTP("127.0.0.1", guarded.smtp_port, timeout=5) as client:
        client.ehlo()
        for _ in range(4):
            code, _ = client.mail("ada@example.com")
            codes.append(code)
            client.rset()

    with smtplib.SMTP("127.0.0.1", guarded.smtp_port, timeout=5,
                      source_address=("127.0.0.2", 0)) as other:
        other.ehlo()
        other_code, _ = other.mail("ada@example.com")

    assert codes == [250, 250, 250, 450]
    assert other_code == 250


def test_too_many_envelope_recipients_get_452(guarded: RunningGateway) -> None:
    with smtplib.SMTP("127.0.0.1", guarded.smtp_port, timeout=5) as client:
        client.ehlo()
        client.mail("ada@example.com")
        codes = [client.rcpt(f"support+{i}@localhost")[0] for i in range(3)]

    assert codes == [250, 250, 452]
