"""Inbound SMTP: an aiosmtpd server on the gateway's own event loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from gateway.addresses import SupportAddresses
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


class GatewaySMTP(SMTP):
    """aiosmtpd's SMTP protocol with the gateway's limits."""


async def start_smtp_server(
    handler: SupportHandler,
    *,
    host: str,
    port: int,
    data_size_limit: int,
    hostname: str | None = None,
) -> asyncio.Server:
    """Serve SMTP on the running loop; return the listening server."""
    loop = asyncio.get_running_loop()

    def make_protocol() -> GatewaySMTP:
        return GatewaySMTP(
            handler,
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
