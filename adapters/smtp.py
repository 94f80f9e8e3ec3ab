"""Inbound SMTP: an aiosmtpd server on the gateway's own event loop."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from gateway.addresses import SupportAddresses
from gateway.config import SmtpConfig
from gateway.errors import StorageUnavailable
from gateway.tickets import Delivery, Desk

log = logging.getLogger(__name__)

TEMPORARY_FAILURE = "451 4.3.0 Temporary failure storing the message; please try again later"


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
            verdict = await self._desk.receive(delivery)
        except StorageUnavailable:
            log.exception("could not store a %d-byte message from %s", len(raw), delivery.peer)
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

    def __init__(self, handler: Any, *, guard: ClientGuard, **options: Any) -> None:
        # SMTP.__init__ sizes its stream reader from this attribute.
        self.line_length_limit = guard.max_line_bytes
        super().__init__(handler, timeout=guard.idle_timeout_seconds, **options)
        self._guard = guard
        self._client: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) and peer else str(peer or "")
        if not self._guard.open_session(client):
            log.warning("refused a connection from %s: %d sessions already open",
                        client, self._guard.max_sessions_per_client)
            transport.write(b"421 4.7.0 Too many connections from your address; "
                            b"try again later\r\n")
            transport.close()
            return
        self._client = client
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._client is None:
            # A refused connection: aiosmtpd never set up this session.
            return
        self._guard.close_session(self._client)
        self._client = None
        super().connection_lost(error)

    def eof_received(self) -> bool | None:
        if self._client is None:
            return False
        return super().eof_received()


async def start_smtp_server(
    handler: SupportHandler,
    *,
    host: str,
    port: int,
    data_size_limit: int,
    guard: ClientGuard,
    hostname: str | None = None,
) -> asyncio.Server:
    """Serve SMTP on the running loop; return the listening server."""
    loop = asyncio.get_running_loop()
    handler.guard = guard

    def make_protocol() -> GatewaySMTP:
        return GatewaySMTP(
            handler,
            guard=guard,
            data_size_limit=data_size_limit,
            enable_SMTPUTF8=True,
            hostname=hostname,
            ident="support-gateway ESMTP",
        )

    return await loop.create_server(make_protocol, host=host, port=port)


def _peer(session: Session) -> str:
    peer: Any = session.peer
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return str(peer or "")


def _domain(address: str) -> str:
    return address.rpartition("@")[2] or "?"
