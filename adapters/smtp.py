"""Inbound SMTP: an aiosmtpd server on the gateway's own event loop."""

from __future__ import annotations

import asyncio
import enum
import logging
import re
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiosmtpd.smtp import MISSING, SMTP, Envelope, Session, syntax

from gateway.addresses import SupportAddresses
from gateway.config import MIB, SmtpConfig
from gateway.errors import StorageUnavailable, first_line
from gateway.tickets import Delivery, Desk

log = logging.getLogger(__name__)

TEMPORARY_FAILURE = "451 4.3.0 Temporary failure storing the message; please try again later"
# The last reply of every session open when the gateway stops (RFC 5321 section
# 3.8). 4.3.2 is "system not accepting network messages" (RFC 3463).
SHUTTING_DOWN_REPLY = "421 4.3.2 Service shutting down; please try again later"
# aiosmtpd 1.4.6's reply to a SIZE= parameter over the limit. It has no
# enhanced status code and does not say what the limit is, so GatewaySMTP.push
# replaces it with too_big_reply.
STOCK_SIZE_REPLY = "552 Error: message size exceeds fixed maximum message size"
# aiosmtpd 1.4.6's replies to a command line over its limit and to a line it
# cannot read as a command. GatewaySMTP.push gives both the enhanced status
# code 5.5.2 (syntax error, RFC 3463) and names the limit in the first.
STOCK_COMMAND_TOO_LONG_REPLY = "500 Command line too long"
STOCK_BAD_SYNTAX_REPLY = "500 Error: bad syntax"
# An enhanced status code at the start of a reply's text, such as "5.5.4 ".
_ENHANCED_CODE = re.compile(r"[245]\.\d{1,3}\.\d{1,3} ")
# Messages of this many bytes or more are applied one at a time.
LARGE_MESSAGE_BYTES = 1024 * 1024
# The maximum time storing a message may take before it gets 451. The store's
# own waits add up to 60 s: 30 s for this process's turn to write, then 30 s of
# SQLite's busy timeout. RFC 5321 gives a client 10 minutes for the reply to
# DATA. The bound ends a wait on a database server that stopped responding.
STORE_TIMEOUT_SECONDS = 120


def too_big_reply(limit: int) -> str:
    """Return the reply to a message over LIMIT bytes, declared or sent."""
    return f"552 5.3.4 Message too big; the limit is {_bytes_text(limit)}"


def line_too_long_reply(limit: int) -> str:
    """Return the reply to a DATA line over LIMIT bytes with its CRLF."""
    return (f"500 5.5.2 Line too long; the limit is {_bytes_text(limit)} "
            "per line, CRLF included")


def command_too_long_reply(limit: int, mail_limit: int) -> str:
    """Return the reply to a command line over LIMIT bytes, or MAIL_LIMIT for MAIL."""
    limits = f"{limit:,} bytes"
    if mail_limit != limit:
        limits += f" ({mail_limit:,} for MAIL)"
    return (f"500 5.5.2 Command line too long; the limit is {limits} per command, "
            "CRLF not counted")


def add_enhanced_code(reply: str) -> str:
    """Return REPLY, one of aiosmtpd's, with the RFC 3463 code it lacks.

    A line that is not a command gets 5.5.2 (syntax error), and every 501
    reply gets 5.5.4 (invalid command arguments). Other replies are returned
    unchanged.
    """
    if reply == STOCK_BAD_SYNTAX_REPLY:
        return f"500 5.5.2 {reply[4:]}"
    if reply.startswith("501 ") and not _ENHANCED_CODE.match(reply, 4):
        return f"501 5.5.4 {reply[4:]}"
    return reply


def _bytes_text(size: int) -> str:
    if size >= MIB and size % MIB == 0:
        return f"{size:,} bytes ({size // MIB} MiB)"
    return f"{size:,} bytes"


class SupportHandler:
    """aiosmtpd handler that accepts mail for the support addresses only."""

    def __init__(
        self,
        desk: Desk,
        support: SupportAddresses,
        *,
        on_accepted: Callable[[], None] | None = None,
    ) -> None:
        self._desk = desk
        self._support = support
        self._on_accepted = on_accepted
        # Set by start_smtp_server; None means no per-client limits.
        self.guard: ClientGuard | None = None
        # Parsing and storing a message of many megabytes takes a CPU core for
        # tenths of a second, mostly holding the GIL. Several at once would starve
        # the event loop and the database thread that serve the small messages,
        # and would each hold their decoded files in memory at the same time.
        self._large_messages = asyncio.Semaphore(1)

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        client = _peer(session)
        if self.guard is not None and not self.guard.allow_message(client):
            log.warning("deferred a message from %s: over %d messages per minute",
                        client, self.guard.max_messages_per_minute)
            return "450 4.7.1 Too many messages from your address; try again later"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Sender ok"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        # Only the support addresses and their +tag forms: never an open relay.
        if not self._support.accepts(address):
            log.info("rejected recipient at %s from %s", _domain(address), _peer(session))
            return "550 5.1.1 No support queue at this address"
        limit = self.guard.max_envelope_recipients if self.guard else None
        if limit is not None and len(envelope.rcpt_tos) >= limit:
            return f"452 4.5.3 Too many recipients; at most {limit} per message"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Recipient ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        delivery = Delivery(
            raw=raw,
            mail_from=envelope.mail_from or "",
            rcpt_tos=tuple(envelope.rcpt_tos),
            peer=_peer(session),
        )
        try:
            async with asyncio.timeout(STORE_TIMEOUT_SECONDS):
                if len(raw) >= LARGE_MESSAGE_BYTES:
                    async with self._large_messages:
                        verdict = await self._desk.receive(delivery)
                else:
                    verdict = await self._desk.receive(delivery)
        except TimeoutError:
            # Nothing was committed, or a copy was and the resent one is a duplicate.
            log.warning("storing a %d-byte message from %s took over %d s; not accepted",
                        len(raw), delivery.peer, STORE_TIMEOUT_SECONDS)
            return TEMPORARY_FAILURE
        except asyncio.CancelledError:
            # aiosmtpd cancels the handler when the client leaves, and so does the
            # gateway's shutdown. The client got no reply and sends the message
            # again, and a copy stored just before is recognised as a duplicate.
            log.warning("session with %s ended before its %d-byte message got a reply "
                        "(client gone or gateway stopping); not accepted",
                        delivery.peer, len(raw))
            raise
        except StorageUnavailable as exc:
            # An outage is expected now and then: one line each, with the traceback
            # only at debug level.
            log.warning("could not store a %d-byte message from %s: %s", len(raw),
                        delivery.peer, first_line(exc),
                        exc_info=log.isEnabledFor(logging.DEBUG))
            return TEMPORARY_FAILURE
        except Exception:
            # aiosmtpd would reply with a permanent 500 that shows the exception text.
            log.exception("unexpected error on a %d-byte message from %s", len(raw), delivery.peer)
            return TEMPORARY_FAILURE
        log.info("message from %s: %s (%d bytes)", delivery.peer, verdict.outcome, len(raw))
        if verdict.code == 250 and self._on_accepted is not None:
            self._on_accepted()
        return verdict.smtp_reply


class ClientGuard:
    """Per-client-address limits shared by every session of one SMTP server.

    Counts are kept in this process only, so with several instances each one
    applies the limits on its own.
    """

    def __init__(
        self,
        *,
        max_sessions_per_client: int,
        max_messages_per_minute: int,
        idle_timeout_seconds: float,
        max_line_bytes: int,
        max_envelope_recipients: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_sessions_per_client = max_sessions_per_client
        self.max_messages_per_minute = max_messages_per_minute
        self.idle_timeout_seconds = idle_timeout_seconds
        self.max_line_bytes = max_line_bytes
        self.max_envelope_recipients = max_envelope_recipients
        self._clock = clock
        self._sessions: Counter[str] = Counter()
        self._messages: dict[str, deque[float]] = {}

    @classmethod
    def from_config(cls, smtp: SmtpConfig) -> ClientGuard:
        """Return a guard with the limits of the [smtp] section."""
        return cls(
            max_sessions_per_client=smtp.max_sessions_per_client,
            max_messages_per_minute=smtp.max_messages_per_client_per_minute,
            idle_timeout_seconds=smtp.idle_timeout_seconds,
            max_line_bytes=smtp.max_line_bytes,
            max_envelope_recipients=smtp.max_recipients,
        )

    def open_session(self, client: str) -> bool:
        """Count a new session of CLIENT; return False when it has too many open."""
        if self._sessions[client] >= self.max_sessions_per_client:
            return False
        self._sessions[client] += 1
        return True

    def close_session(self, client: str) -> None:
        """Forget one session of CLIENT."""
        self._sessions[client] -= 1
        if self._sessions[client] <= 0:
            del self._sessions[client]

    def allow_message(self, client: str) -> bool:
        """Count a new message from CLIENT; return False when it sent too many lately."""
        now = self._clock()
        recent = self._messages.setdefault(client, deque())
        while recent and recent[0] <= now - 60:
            recent.popleft()
        if len(recent) >= self.max_messages_per_minute:
            return False
        recent.append(now)
        self._forget_quiet_clients(now)
        return True

    def _forget_quiet_clients(self, now: float) -> None:
        # Keeps the table small when many addresses each send a little.
        if len(self._messages) < 10_000:
            return
        for client in [c for c, times in self._messages.items() if times[-1] <= now - 60]:
            del self._messages[client]


class GatewaySMTP(SMTP):
    """aiosmtpd's SMTP protocol with the gateway's per-client limits.

    Lines up to ``guard.max_line_bytes`` are accepted. Only CRLF ends a line of
    DATA in aiosmtpd 1.4.6, so a bare LF never ends the message (the SMTP
    smuggling fix of CVE-2024-27305).
    """

    def __init__(
        self,
        handler: Any,
        *,
        guard: ClientGuard,
        listener: SmtpListener | None = None,
        **options: Any,
    ) -> None:
        # SMTP.__init__ sizes its stream reader from this attribute.
        self.line_length_limit = guard.max_line_bytes
        super().__init__(handler, timeout=guard.idle_timeout_seconds, **options)
        self._guard = guard
        self._listener = listener
        self._client: str | None = None
        # True from a DATA command until its reply is sent.
        self.is_in_message = False
        self._is_stop_requested = False

    def begin_stop(self) -> None:
        """Close the session with 421 now, or after the reply to its message in hand."""
        self._is_stop_requested = True
        if not self.is_in_message:
            self._close_for_stop()

    def abort(self) -> None:
        """Drop the connection without a reply, cancelling a message in hand."""
        if self.transport is not None:
            self.transport.abort()

    async def push(self, status: Any) -> None:
        """Send one reply, giving aiosmtpd's own rejections an enhanced status code.

        Every 501 reply and aiosmtpd's replies to a line that is too long or not a
        command get a code, and the replies about a limit name it in bytes.
        """
        if status == STOCK_SIZE_REPLY and self.data_size_limit:
            log.warning("rejected a message from %s: declared size over %d bytes",
                        self._client, self.data_size_limit)
            status = too_big_reply(self.data_size_limit)
        elif status == STOCK_COMMAND_TOO_LONG_REPLY:
            log.debug("rejected a command line from %s: over its limit", self._client)
            status = command_too_long_reply(self.command_size_limit,
                                            self._mail_command_limit())
        elif isinstance(status, str):
            status = add_enhanced_code(status)
        await super().push(status)

    def _mail_command_limit(self) -> int:
        # aiosmtpd raises the limit of MAIL in an EHLO session by the length of
        # the SIZE= and SMTPUTF8 parameters it advertises.
        # NOTE: aiosmtpd 1.4.6 keeps these limits in one dict shared by every
        # session. Each EHLO raises MAIL's limit for all of them, and each new
        # connection resets it, so the value read here is the one just applied
        # but may differ between sessions.
        if self.session is None or not self.session.extended_smtp:
            return self.command_size_limit
        return self.command_size_limits.get("MAIL", self.command_size_limit)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) and peer else str(peer or "")
        if self._listener is not None and self._listener.is_stopping:
            # A connection accepted just before the listener closed.
            transport.write(SHUTTING_DOWN_REPLY.encode() + b"\r\n")
            transport.close()
            return
        if not self._guard.open_session(client):
            log.warning("refused a connection from %s: %d sessions already open",
                        client, self._guard.max_sessions_per_client)
            transport.write(b"421 4.7.0 Too many connections from your address; "
                            b"try again later\r\n")
            transport.close()
            return
        self._client = client
        super().connection_made(transport)
        if self._listener is not None:
            self._listener.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        if self._client is None:
            # A refused connection: aiosmtpd never set up this session.
            return
        self._guard.close_session(self._client)
        self._client = None
        super().connection_lost(error)
        if self._listener is not None:
            self._listener.discard(self)

    def eof_received(self) -> bool | None:
        if self._client is None:
            return False
        return super().eof_received()

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        """Receive and store one message, then close the session if a stop began."""
        self.is_in_message = True
        try:
            await self._receive_message(arg)
        finally:
            self.is_in_message = False
        if self._is_stop_requested and self.transport is not None:
            self._close_for_stop()
            # _close_for_stop cancelled this task. Raising here, instead of at the next
            # await, keeps aiosmtpd from reading a command that the client pipelined
            # after the message.
            raise asyncio.CancelledError

    async def _receive_message(self, arg: str) -> None:
        """Receive the message text in blocks instead of one line at a time.

        aiosmtpd 1.4.6 reads DATA line by line and keeps each line as its own
        bytearray, which for a 35 MB message costs about 460,000 loop steps and
        about twice the message in memory. The limits and the end-of-data rule
        (only CRLF "." CRLF ends the text) are those of aiosmtpd's own smtp_DATA.
        The replies to a line or a message over its limit also give an enhanced
        status code and the limit.
        """
        if self._decode_data:
            await super().smtp_DATA(arg)
            return
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")

        data = DataReader(
            line_length_limit=self.line_length_limit, size_limit=self.data_size_limit
        )
        if not await self._read_data(data):
            return
        if data.state is DataState.LINE_TOO_LONG:
            log.warning("rejected a message from %s: a line is over %d bytes",
                        self._client, self.line_length_limit)
            await self.push(line_too_long_reply(self.line_length_limit))
            self._set_post_data_state()
            return
        if data.state is DataState.TOO_MUCH:
            assert self.data_size_limit is not None
            log.warning("rejected a message from %s: over %d bytes",
                        self._client, self.data_size_limit)
            await self.push(too_big_reply(self.data_size_limit))
            self._set_post_data_state()
            return
        if data.size >= LARGE_MESSAGE_BYTES:
            # bytes.join lets go of the GIL while it copies megabytes, so other
            # sessions go on meanwhile.
            content = await asyncio.to_thread(data.content)
        else:
            content = data.content()
        self.envelope.content = content
        self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else status)

    def _close_for_stop(self) -> None:
        if self.transport is None:
            return
        # The transport sends what it has buffered before it closes, so the 421
        # goes out.
        self._writer.write(SHUTTING_DOWN_REPLY.encode() + b"\r\n")
        log.debug("closed the session with %s: the gateway is stopping", self._client)
        if self._handler_coroutine is not None:
            self._handler_coroutine.cancel()
        self.transport.close()

    async def _read_data(self, data: DataReader) -> bool:
        """Feed DATA until its end line, or return False if the client left."""
        while self.transport is not None:
            try:
                # Every end line ends with ".\r\n", and readuntil stops at the
                # first one, so a block never takes bytes of the next command.
                block = await self._reader.readuntil(b".\r\n")
            except asyncio.LimitOverrunError as exc:
                # No ".\r\n" starts in the first exc.consumed buffered bytes.
                block = await self._reader.readexactly(exc.consumed)
            except asyncio.IncompleteReadError:
                log.info("connection closed during DATA by %s", self._client)
                self._writer.close()
                return False
            except asyncio.CancelledError:
                log.info("connection lost during DATA from %s", self._client)
                self._writer.close()
                raise
            if data.feed(block):
                return True
        return False


class DataState(enum.Enum):
    """Whether the text of one DATA command is kept or discarded, and why."""

    NOMINAL = "nominal"
    LINE_TOO_LONG = "line too long"
    TOO_MUCH = "too much"


class DataReader:
    """The text of one DATA command, fed in blocks of any size.

    Lines end with CRLF only, so a bare CR or LF is part of a line. A line that is
    exactly "." ends the text, and a leading "." of other lines is removed
    (RFC 5321 section 4.5.2). A line longer than LINE_LENGTH_LIMIT bytes with
    its CRLF, or more than SIZE_LIMIT bytes of text before the end line, makes
    the reader discard the text kept so far and only look for the end line.

    NOTE: for a message that breaks both limits within one block, the state (and
    so the reply, 552 or 500) may differ from the one aiosmtpd 1.4.6 would give,
    because aiosmtpd checks them line by line.
    """

    def __init__(self, *, line_length_limit: int, size_limit: int | None) -> None:
        self.state = DataState.NOMINAL
        self._line_length_limit = line_length_limit
        self._size_limit = size_limit
        self._received = 0
        # Kept as blocks and joined once at the end: appending to one growing
        # buffer copies it again each time it moves.
        self._text: list[bytes] = []
        self._text_bytes = 0
        # The bytes after the last CRLF; empty exactly at the start of a line.
        self._partial = b""

    def feed(self, block: bytes) -> bool:
        """Add one block; return True when it ended with the end line."""
        data = self._partial + block if self._partial else block
        ended = data.endswith(b".\r\n") and (len(data) == 3 or data[-5:-3] == b"\r\n")
        if ended:
            data = data[:-3]
            self._received += len(block) - 3
        else:
            self._received += len(block)
        last_line_end = data.rfind(b"\r\n")
        if last_line_end < 0:
            lines, self._partial = b"", data
        else:
            lines, self._partial = data[: last_line_end + 2], data[last_line_end + 2 :]

        if self._size_limit and self._received > self._size_limit:
            self._discard(DataState.TOO_MUCH)
        if lines and self.state is DataState.NOMINAL:
            if _has_long_line(lines, self._line_length_limit):
                self._discard(DataState.LINE_TOO_LONG)
            else:
                text = _unstuff(lines)
                self._text.append(text)
                self._text_bytes += len(text)
        if self._partial_too_long():
            self._discard(DataState.LINE_TOO_LONG)
        if self.state is not DataState.NOMINAL and len(self._partial) > 1:
            # Only "at a line start or not" and a CR that a LF may complete matter now.
            self._partial = self._partial[-1:]
        return ended

    @property
    def size(self) -> int:
        """Bytes of text kept so far."""
        return self._text_bytes

    def content(self) -> bytes:
        """Return the text received, with the leading dots of lines removed.

        The reader lets go of its own blocks, so only the returned copy stays.
        """
        text, self._text, self._text_bytes = self._text, [], 0
        return b"".join(text)

    def _partial_too_long(self) -> bool:
        # The line's text is at least this long, whatever its end brings.
        known = len(self._partial) - (1 if self._partial.endswith(b"\r") else 0)
        return known + 2 > self._line_length_limit

    def _discard(self, state: DataState) -> None:
        if self.state is DataState.NOMINAL:
            self.state = state
        self._text, self._text_bytes = [], 0


def _has_long_line(lines: bytes, limit: int) -> bool:
    """Return True if a line of LINES, which ends with CRLF, is over LIMIT bytes with it.

    Each step jumps to the last CRLF within LIMIT bytes of a line start, so a block
    is checked in about len(lines) / limit searches instead of line by line.
    """
    start = 0
    while start < len(lines):
        line_end = lines.rfind(b"\r\n", start, start + limit)
        if line_end < 0:
            return True
        start = line_end + 2
    return False


def _unstuff(lines: bytes) -> bytes:
    """Remove the leading "." of each line of LINES, which starts at a line start."""
    if lines.startswith(b"."):
        lines = lines[1:]
    if b"\r\n." not in lines:
        return lines
    return lines.replace(b"\r\n.", b"\r\n")


class SmtpListener:
    """The listening SMTP server and its open sessions, which stop together."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.is_stopping = False
        self._sessions: set[GatewaySMTP] = set()
        self._no_sessions = asyncio.Event()
        self._no_sessions.set()

    @property
    def address(self) -> tuple[str, int]:
        """The host and port the server listens on."""
        assert self.server is not None
        host, port = self.server.sockets[0].getsockname()[:2]
        return host, port

    def add(self, session: GatewaySMTP) -> None:
        """Count SESSION as open until discard."""
        self._sessions.add(session)
        self._no_sessions.clear()

    def discard(self, session: GatewaySMTP) -> None:
        """Forget SESSION, whose connection has closed."""
        self._sessions.discard(session)
        if not self._sessions:
            self._no_sessions.set()

    def begin_stop(self) -> SessionCounts:
        """Stop accepting connections and ask every open session to close.

        A session waiting for a command gets 421 and is closed at once. A session
        receiving or storing a message finishes it, sends its reply, then gets 421.
        """
        self.is_stopping = True
        if self.server is not None:
            self.server.close()
        sessions = list(self._sessions)
        messages = sum(1 for session in sessions if session.is_in_message)
        for session in sessions:
            session.begin_stop()
        return SessionCounts(sessions=len(sessions), messages=messages)

    async def finish_stop(self, timeout_seconds: float) -> int:
        """Wait up to TIMEOUT_SECONDS for the sessions to close, then drop the rest.

        Returns how many messages were cancelled before their reply. Their clients
        got no reply, so they send those messages again.
        """
        try:
            async with asyncio.timeout(max(timeout_seconds, 0.0)):
                await self._no_sessions.wait()
        except TimeoutError:
            pass
        cancelled = 0
        for session in list(self._sessions):
            if session.is_in_message:
                cancelled += 1
            # This also closes a session whose client reads nothing, which keeps
            # its 421 in the buffer.
            session.abort()
        if self.server is not None:
            # Before Python 3.12 this returns at once. From 3.12 on it also waits
            # for the connections, which the aborts above have closed.
            await self.server.wait_closed()
        return cancelled


@dataclass(frozen=True)
class SessionCounts:
    """Open SMTP sessions, and how many of them are receiving or storing a message."""

    sessions: int
    messages: int


async def start_smtp_server(
    handler: SupportHandler,
    *,
    host: str,
    port: int,
    data_size_limit: int,
    guard: ClientGuard,
    hostname: str | None = None,
) -> SmtpListener:
    """Serve SMTP on the running loop; return the listener."""
    loop = asyncio.get_running_loop()
    handler.guard = guard
    listener = SmtpListener()

    def make_protocol() -> GatewaySMTP:
        return GatewaySMTP(
            handler,
            guard=guard,
            listener=listener,
            data_size_limit=data_size_limit,
            enable_SMTPUTF8=True,
            hostname=hostname,
            ident="support-gateway ESMTP",
        )

    listener.server = await loop.create_server(make_protocol, host=host, port=port)
    return listener


def _peer(session: Session) -> str:
    peer: Any = session.peer
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return str(peer or "")


def _domain(address: str) -> str:
    return address.rpartition("@")[2] or "?"
