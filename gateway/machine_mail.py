"""Mail that a machine sent: auto-replies, bounces and the gateway's own mail.

Such mail never opens a ticket, never changes a status and never gets a
reply, so two robots cannot keep mailing each other.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from gateway import robots
from gateway.events import TicketEvents
from gateway.inbound import Step, Verdict
from gateway.model import ParsedMail

log = logging.getLogger(__name__)

# Characters of an automatic message's text kept in the internal event for support.
_EXCERPT_CHARS = 1000
_ROBOT_NOUNS = {
    "bounce": "delivery report",
    "auto_reply": "reply",
    "list": "mailing-list message",
    "automatic": "message",
}


# Every Message-ID the gateway writes has this shape, so other ids need no lookup in
# the outbox. It is the shape of adapters.outbound.make_message_id, plus
# ".<builder id>" before the "@" for digests, which one run queues under one id.
_OWN_MESSAGE_ID_RE = re.compile(r"<?sg\.[0-9a-f]+\.[0-9a-f]{16}(?:\.[0-9]+)?@[^\s>]+>?")


def has_own_message_id_shape(message_id: str) -> bool:
    """Return True when MESSAGE_ID could be one the gateway wrote."""
    return _OWN_MESSAGE_ID_RE.fullmatch(message_id.strip()) is not None


class MachineMail:
    """Applies automatic mail and delivery reports to the tickets they concern."""

    def __init__(self, settings: Any, events: TicketEvents) -> None:
        self._settings = settings
        self._events = events

    async def own_mail_signal(self, tx: Any, mail: ParsedMail) -> str | None:
        """Return how MAIL shows that the gateway sent it, or None."""
        own = {self._settings.sender_address, *self._settings.support.addresses}
        for name, value in mail.headers:
            if name.lower() == "x-loop" and value.strip().strip("<>").lower() in own:
                return "X-Loop header"
        if (mail.message_id and has_own_message_id_shape(mail.message_id)
                and await tx.is_own_message_id(mail.message_id)):
            return "Message-ID"
        return None

    async def apply(
        self,
        step: Step,
        robot: robots.RobotMail,
        report: robots.DeliveryReport | None,
        sender: str,
        find_ticket: Callable[[], Awaitable[Any]],
    ) -> Verdict:
        """Record automatic mail on its ticket or ignore it; never reply to it."""
        tx, mail = step.tx, step.mail
        if report is not None:
            sent = await tx.find_sent_email(
                [*report.message_ids, *mail.in_reply_to, *reversed(mail.references)]
            )
            if sent is not None:
                return await self._apply_bounce(step, robot, report, sent)

        match = await find_ticket()
        if match is None:
            await tx.set_inbound_outcome(
                step.inbound_id, "automatic_ignored",
                detail=f"{robot.kind} ({robot.signal}); matches no ticket",
                dedupe_key=step.dedupe_key,
            )
            log.info("automatic message %s ignored: %s", mail.message_id, robot.signal)
            return Verdict(250, "2.0.0", "Automatic message received; it gets no answer",
                           "automatic_ignored")

        ticket = match.ticket
        excerpt = (mail.text or "").strip()[:_EXCERPT_CHARS]
        body = (
            f"Automatic {_ROBOT_NOUNS[robot.kind]} from {sender or 'an unknown sender'} "
            f"({robot.signal}), matched by {match.how}. It was not added as a reply "
            f"and did not change the ticket.\nSubject: {mail.subject[:200]}"
        )
        if excerpt:
            body += f"\n\n{excerpt}"
        message_id = await tx.add_message(
            ticket.id, visibility="internal", kind="system", author="gateway",
            body=body, inbound_id=step.inbound_id, now=step.now,
        )
        await self._events.message_added(tx, ticket, message_id)
        await tx.set_inbound_outcome(
            step.inbound_id, "automatic_recorded",
            detail=f"{robot.kind} ({robot.signal}) recorded on #{ticket.number}",
            ticket_id=ticket.id, dedupe_key=step.dedupe_key,
        )
        log.info("automatic message %s recorded on #%d: %s",
                 mail.message_id, ticket.number, robot.signal)
        return Verdict(250, "2.0.0", f"Automatic message recorded on ticket "
                       f"#{ticket.number}; it gets no answer", "automatic_recorded",
                       ticket.number)

    async def _apply_bounce(
        self,
        step: Step,
        robot: robots.RobotMail,
        report: robots.DeliveryReport,
        sent: robots.SentEmail,
    ) -> Verdict:
        tx, now = step.tx, step.now
        failed = report.failed_recipient or sent.recipient
        await tx.record_delivery_failure(
            sent, recipient=failed, status=report.status, action=report.action,
            inbound_id=step.inbound_id, now=now,
        )
        status = f"status {report.status}" if report.status else "no status code"
        suppression = ""
        if report.is_permanent and self._settings.suppress_after_bounce > timedelta(0):
            until = now + self._settings.suppress_after_bounce
            await tx.suppress_address(
                sent.recipient, until=until,
                reason=f"{report.action} delivery of {sent.message_id} ({status})",
                now=now,
            )
            suppression = (f" No email is sent to {sent.recipient} until "
                           f"{until:%Y-%m-%d %H:%M} UTC.")
        outcome = "bounce_recorded" if report.is_permanent else "delay_recorded"
        ticket = await tx.lock_ticket_by_id(sent.ticket_id) if sent.ticket_id else None
        if ticket is not None:
            verb = "failed" if report.is_permanent else "is delayed"
            message_id = await tx.add_message(
                ticket.id, visibility="internal", kind="system", author="gateway",
                body=f"Delivery of the {sent.kind} email to {failed} {verb} "
                f"({status}, reported by {robot.signal}).{suppression}",
                inbound_id=step.inbound_id, now=now,
            )
            await self._events.message_added(tx, ticket, message_id)
        await tx.set_inbound_outcome(
            step.inbound_id, outcome,
            detail=f"{report.action} delivery of outbox email {sent.outbox_id} to "
            f"{failed} ({status})",
            ticket_id=ticket.id if ticket else None, dedupe_key=step.dedupe_key,
        )
        log.warning("outbox email %d to a recipient at %s: %s (%s)", sent.outbox_id,
                    failed.rpartition("@")[2], report.action, status)
        return Verdict(250, "2.0.0", "Delivery report received", outcome,
                       ticket.number if ticket else None)


async def drop_own_mail(step: Step, signal: str) -> Verdict:
    """Keep the gateway's own mail that came back, without acting on it."""
    await step.tx.set_inbound_outcome(
        step.inbound_id, "dropped_own_mail",
        detail=f"the gateway's own mail came back ({signal})",
        dedupe_key=step.dedupe_key,
    )
    log.warning("dropped message %s: the gateway's own mail came back (%s)",
                step.mail.message_id, signal)
    return Verdict(250, "2.0.0", "Accepted and discarded", "dropped_own_mail")
