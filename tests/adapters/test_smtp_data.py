"""GatewaySMTP's DATA: its block-wise reader against aiosmtpd's, and a client that leaves while storing."""

from __future__ import annotations

import asyncio
import logging
import random

import pytest
from aiosmtpd.smtp import SMTP

from adapters.smtp import (
    ClientGuard,
    DataReader,
    DataState,
    GatewaySMTP,
    SupportHandler,
    add_enhanced_code,
    command_too_long_reply,
    line_too_long_reply,
    too_big_reply,
)
from gateway.addresses import SupportAddresses

LINE_LIMIT = 1001
SIZE_LIMIT = 200_000
# aiosmtpd 1.4.6 allows 512 bytes per command line without its CRLF, and 36 more
# for MAIL once EHLO has advertised SIZE and SMTPUTF8.
COMMAND_LIMIT = 512
MAIL_COMMAND_LIMIT = 548


class Recorder:
    """Handler that keeps each message's content and accepts it."""

    def __init__(self) -> None:
        self.contents: list[bytes] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.contents.append(envelope.original_content)
        assert envelope.content is envelope.original_content
        return "250 2.0.0 Kept"


def guard() -> ClientGuard:
    return ClientGuard(
        max_sessions_per_client=10,
        max_messages_per_minute=10_000,
        idle_timeout_seconds=30,
        max_line_bytes=LINE_LIMIT,
        max_envelope_recipients=10,
    )


async def exchange(gateway: bool, stream: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """Send STREAM's pieces to a server; return its replies and the kept contents."""
    recorder = Recorder()
    loop = asyncio.get_running_loop()

    def make_protocol() -> SMTP:
        options = {"data_size_limit": SIZE_LIMIT, "enable_SMTPUTF8": True}
        if gateway:
            return GatewaySMTP(recorder, guard=guard(), **options)
        return SMTP(recorder, **options)

    server = await loop.create_server(make_protocol, host="127.0.0.1", port=0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        try:
            for piece in stream:
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0)
            writer.write(b"QUIT\r\n")
        except ConnectionError:
            # A "." line in a random body ends DATA early, and the rest of the
            # body reads as bogus commands, which end the session.
            pass
        replies = []
        while True:
            try:
                line = await asyncio.wait_for(reader.readline(), 10)
            except ConnectionError:
                break
            if not line:
                break
            replies.append(line)
            if line.startswith(b"221"):
                break
    finally:
        writer.close()
        server.close()
        await server.wait_closed()
    return replies, recorder.contents


def split_randomly(data: bytes, rng: random.Random) -> list[bytes]:
    pieces, position = [], 0
    while position < len(data):
        size = rng.choice([1, 2, 3, 5, 7, 64, 1000, 70_000])
        pieces.append(data[position : position + size])
        position += size
    return pieces


def session(*bodies: bytes) -> bytes:
    commands = b"EHLO client.example.com\r\n"
    for body in bodies:
        commands += b"MAIL FROM:<ada@example.com>\r\nRCPT TO:<support@localhost>\r\nDATA\r\n"
        commands += body
    return commands


def random_body(rng: random.Random) -> bytes:
    """Return the text of one DATA command, its end line included."""
    lines = [
        b"", b".", b"..", b"...", b".x", b"x.", b"a\rb", b"a\nb", b"\r", b"\n",
        b"Subject: test", b"QUJDRA==", b" .", b"x" * 998, b"x" * 999,
    ]
    chosen = [rng.choice(lines) for _ in range(rng.randint(0, 30))]
    body = b"".join(line + b"\r\n" for line in chosen)
    if rng.random() < 0.1:
        body += b"y" * rng.choice([1000, 1001, 3000]) + b"\r\n"
    return body + b".\r\n"


# The gateway makes the same decisions as aiosmtpd, with its own text for
# these replies and an enhanced status code added to others.
OWN_WORDING = {
    b"500 Line too long (see RFC5321 4.5.3.1.6)\r\n":
        line_too_long_reply(LINE_LIMIT).encode() + b"\r\n",
    b"552 Error: Too much mail data\r\n": too_big_reply(SIZE_LIMIT).encode() + b"\r\n",
    b"500 Command line too long\r\n":
        command_too_long_reply(COMMAND_LIMIT, MAIL_COMMAND_LIMIT).encode() + b"\r\n",
}


def run_both(stream: list[bytes]):
    """Return the replies and contents of stock aiosmtpd and of the gateway for STREAM.

    The stock replies are given in the gateway's wording.
    """
    stock_replies, stock_contents = asyncio.run(exchange(False, stream))
    stock_replies = [in_own_wording(reply) for reply in stock_replies]
    return (stock_replies, stock_contents), asyncio.run(exchange(True, stream))


def in_own_wording(reply: bytes) -> bytes:
    if reply in OWN_WORDING:
        return OWN_WORDING[reply]
    return add_enhanced_code(reply.decode().removesuffix("\r\n")).encode() + b"\r\n"


@pytest.mark.parametrize("seed", range(60))
def test_data_random_streams_match_aiosmtpd(seed: int) -> None:
    rng = random.Random(seed)
    data = session(*(random_body(rng) for _ in range(rng.randint(1, 3))))
    stock, ours = run_both(split_randomly(data, rng))
    assert ours[0] == stock[0]
    assert ours[1] == stock[1]


@pytest.mark.parametrize(
    "body",
    [
        b".\r\n",
        b"..\r\n.\r\n",
        b"a\r\n.\r\n",
        b"a\r\n..\r\n.\r\n",
        b"a\n.\nb\r\n.\r\n",
        b"a\r.\r\nb\r\n.\r\n",
        b"a\r\n.\rb\r\n.\r\n",
        b"x" * 999 + b"\r\n.\r\n",
        b"x" * 1000 + b"\r\n.\r\n",
        b"x" * 5000 + b"\r\n.\r\n",
        b"x" * 1000 + b"\r\r\n.\r\n",
        (b"y" * 998 + b"\r\n") * 250 + b".\r\n",
        (b"y" * 70 + b"\r\n") * 2900 + b".\r\n",
    ],
    ids=[
        "empty", "dot-line", "one-line", "stuffed", "bare-lf-dot", "cr-dot", "dot-cr",
        "line-at-limit", "line-over-limit", "line-far-over", "cr-at-limit",
        "size-over-limit", "size-under-limit",
    ],
)
def test_data_edge_cases_match_aiosmtpd(body: bytes) -> None:
    data = session(body, b"After\r\n.\r\n")
    for pieces in ([data], [bytes([byte]) for byte in data[:3000]] + [data[3000:]]):
        stock, ours = run_both(pieces)
        assert ours[0] == stock[0]
        assert ours[1] == stock[1]


@pytest.mark.parametrize(
    ("body", "reply"),
    [
        (b"x" * 5000 + b"\r\n.\r\n",
         b"500 5.5.2 Line too long; the limit is 1,001 bytes per line, CRLF included"),
        ((b"y" * 998 + b"\r\n") * 250 + b".\r\n",
         b"552 5.3.4 Message too big; the limit is 200,000 bytes"),
    ],
    ids=["line", "size"],
)
def test_over_limit_replies_name_the_limit(
    body: bytes, reply: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="adapters.smtp"):
        replies, contents = asyncio.run(exchange(True, [session(body)]))

    after_354 = replies[[r[:3] for r in replies].index(b"354") + 1]
    assert after_354 == reply + b"\r\n"
    assert contents == []
    assert "rejected a message from 127.0.0.1" in caplog.text


def test_declared_size_over_limit_is_rejected(caplog: pytest.LogCaptureFixture) -> None:
    stream = [b"EHLO client.example.com\r\n",
              f"MAIL FROM:<ada@example.com> SIZE={SIZE_LIMIT + 1}\r\n".encode()]
    with caplog.at_level(logging.WARNING, logger="adapters.smtp"):
        replies, _ = asyncio.run(exchange(True, stream))

    assert replies[-2] == b"552 5.3.4 Message too big; the limit is 200,000 bytes\r\n"
    assert "declared size over 200000 bytes" in caplog.text


@pytest.mark.parametrize(
    ("commands", "reply"),
    [
        ([b"EHLO client.example.com", b"NOOP " + b"x" * 600],
         b"500 5.5.2 Command line too long; the limit is 512 bytes (548 for MAIL) "
         b"per command, CRLF not counted"),
        ([b"EHLO client.example.com", b"MAIL FROM:<" + b"a" * 540 + b"@example.com>"],
         b"500 5.5.2 Command line too long; the limit is 512 bytes (548 for MAIL) "
         b"per command, CRLF not counted"),
        ([b"HELO client.example.com", b"NOOP " + b"x" * 600],
         b"500 5.5.2 Command line too long; the limit is 512 bytes per command, "
         b"CRLF not counted"),
        ([b"EHLO client.example.com", b"NOOP " + b"x" * 5000],
         b"500 5.5.2 Command line too long; the limit is 512 bytes (548 for MAIL) "
         b"per command, CRLF not counted"),
        ([b"EHLO client.example.com", b"MAIL FROM:<ada@example.com> SIZE=abc"],
         b"501 5.5.4 Syntax: MAIL FROM: <address> [SP <mail-parameters>]"),
        ([b"HELO client.example.com", b"MAIL FROM:<ada@example.com> SIZE=1"],
         b"501 5.5.4 Syntax: MAIL FROM: <address>"),
        ([b"EHLO client.example.com", b"MAIL FROM:<ada@example.com> BODY=BINARY"],
         b"501 5.5.4 Error: BODY can only be one of 7BIT, 8BITMIME"),
        ([b"EHLO"], b"501 5.5.4 Syntax: EHLO hostname"),
        ([b"EHLO client.example.com", b"MAIL FROM:<ada@example.com>",
          b"RCPT TO:<support@localhost>", b"DATA now"],
         b"501 5.5.4 Syntax: DATA"),
        ([b"EHLO client.example.com", b""], b"500 5.5.2 Error: bad syntax"),
    ],
    ids=["command-too-long", "mail-too-long", "helo-command-too-long",
         "over-stream-limit", "size-not-a-number", "parameter-after-helo",
         "unknown-body", "ehlo-without-name", "data-argument", "empty-line"],
)
def test_stock_rejections_carry_enhanced_codes(commands: list[bytes], reply: bytes) -> None:
    stream = [command + b"\r\n" for command in commands]

    replies, _ = asyncio.run(exchange(True, stream))

    assert replies[-2] == reply + b"\r\n"


def test_named_mail_limit_is_applied() -> None:
    local_part = b"a" * (MAIL_COMMAND_LIMIT - len(b"MAIL FROM:<@example.com>"))
    at_limit = b"MAIL FROM:<" + local_part + b"@example.com>\r\n"
    over_limit = b"MAIL FROM:<a" + local_part + b"@example.com>\r\n"
    stream = [b"EHLO client.example.com\r\n", over_limit, at_limit]

    replies, _ = asyncio.run(exchange(True, stream))

    assert replies[-3] == (
        b"500 5.5.2 Command line too long; the limit is 512 bytes (548 for MAIL) "
        b"per command, CRLF not counted\r\n"
    )
    assert replies[-2] == b"250 OK\r\n"


def test_whole_mib_limit_shows_mib() -> None:
    assert too_big_reply(40 * 1024 * 1024) == (
        "552 5.3.4 Message too big; the limit is 41,943,040 bytes (40 MiB)"
    )


def test_data_large_message_kept_whole() -> None:
    text = b"".join(b"QUJD" * 19 + b"\r\n" for _ in range(2000))
    reader = DataReader(line_length_limit=LINE_LIMIT, size_limit=None)
    stream = text + b".\r\n"
    ended = False
    for start in range(0, len(stream), 4093):
        ended = reader.feed(stream[start : start + 4093])
    assert ended
    assert reader.state is DataState.NOMINAL
    assert reader.content() == text


def test_data_reader_keeps_nothing_after_limit() -> None:
    reader = DataReader(line_length_limit=LINE_LIMIT, size_limit=100)
    assert not reader.feed(b"a" * 60 + b"\r\n")
    assert not reader.feed(b"b" * 60 + b"\r\n")
    assert reader.feed(b".\r\n")
    assert reader.state is DataState.TOO_MUCH
    assert reader.content() == b""


@pytest.mark.parametrize(
    ("blocks", "state"),
    [
        ([b"x" * 999, b"\r\n.\r\n"], DataState.NOMINAL),
        ([b"x" * 999 + b"\r", b"\n.\r\n"], DataState.NOMINAL),
        ([b"x" * 999 + b"\r\n", b".\r\n"], DataState.NOMINAL),
        ([b"x" * 1000, b"\r\n.\r\n"], DataState.LINE_TOO_LONG),
        ([b"x" * 1000 + b"\r", b"\n.\r\n"], DataState.LINE_TOO_LONG),
        ([b"x" * 2000, b"x" * 2000, b"\r", b"\n.\r\n"], DataState.LINE_TOO_LONG),
    ],
    ids=["at-limit", "at-limit-cr-split", "at-limit-dot-split", "over-limit",
         "over-limit-cr-split", "far-over-limit"],
)
def test_data_reader_line_split_across_blocks(blocks: list[bytes], state: DataState) -> None:
    reader = DataReader(line_length_limit=LINE_LIMIT, size_limit=None)
    ended = [reader.feed(block) for block in blocks]
    assert ended == [False] * (len(blocks) - 1) + [True]
    assert reader.state is state


class StalledDesk:
    """Desk whose store never returns, as when another process keeps the write lock."""

    def __init__(self) -> None:
        self.started = asyncio.Event()

    async def receive(self, delivery: object) -> None:
        self.started.set()
        await asyncio.Event().wait()


def test_disconnect_while_storing_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def run() -> None:
        desk = StalledDesk()
        support = SupportAddresses.of(["support@localhost"])
        handler = SupportHandler(desk, support)  # type: ignore[arg-type]
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: GatewaySMTP(handler, guard=guard(), data_size_limit=SIZE_LIMIT),
            host="127.0.0.1", port=0,
        )
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(session(b"Subject: hello\r\n\r\nbody\r\n.\r\n"))
        await asyncio.wait_for(desk.started.wait(), 5)
        writer.transport.abort()
        for _ in range(100):
            if "ended before" in caplog.text:
                break
            await asyncio.sleep(0.01)
        server.close()
        await server.wait_closed()

    with caplog.at_level(logging.WARNING, logger="adapters.smtp"):
        asyncio.run(run())

    assert "ended before its" in caplog.text
    assert "not accepted" in caplog.text
