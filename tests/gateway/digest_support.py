"""Helpers of the digest and scheduler tests: tickets that wait, digests received."""

from __future__ import annotations

import email
import re
from datetime import datetime
from email import policy
from email.message import EmailMessage

from conftest import RunningGateway
from gateway.scheduler import ScheduledWork


def work(gateway: RunningGateway) -> ScheduledWork:
    """Return the gateway's scheduled jobs (not started: tests call them)."""
    assert gateway.gateway.scheduler is not None
    return gateway.gateway.scheduler.work


def add_waiting(
    gateway: RunningGateway,
    builder_email: str,
    title: str,
    *,
    since: datetime,
    severity: str = "sev3",
    question: str = "Which browser and version do you use when this happens?",
    timezone: str | None = None,
    app: str | None = None,
) -> int:
    """Store a ticket that waits on BUILDER_EMAIL since SINCE; return its number."""
    from gateway.model import App

    async def run() -> int:
        async with gateway.gateway.store.write() as tx:
            builder = await tx.find_builder(builder_email)
            if builder is None or timezone is not None:
                builder = await tx.upsert_builder(
                    builder_email, name=builder_email.split("@")[0].title(),
                    timezone=timezone, apps=(), now=since,
                )
            ticket_id, number = await tx.create_ticket(
                builder=builder, title=title,
                description="The page stays blank after I sign in on the staff account.",
                app=App(app, f"https://{app.lower().replace(' ', '-')}.example.com")
                if app else None,
                category="published_app", severity=severity, now=since,
            )
            await tx.add_message(ticket_id, visibility="public", kind="support",
                                 author="grace", body=question, now=since)
            await tx.update_ticket(ticket_id, status="waiting_on_builder", now=since)
        return number

    return gateway.call(run)


def send_digests(gateway: RunningGateway) -> int:
    """Run the scheduled digest job once; return how many digests it queued."""
    return gateway.call(work(gateway).send_digests)


def digests(gateway: RunningGateway) -> list[EmailMessage]:
    """Deliver the outbox and return every digest in the Maildir, oldest first."""
    gateway.flush_outbox()
    found = []
    for path in gateway.outbox_files():
        message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        if message["Auto-Submitted"] == "auto-generated":
            found.append(message)
    return found


def text_of(message: EmailMessage) -> str:
    """Return the plain-text body of MESSAGE."""
    return message.get_body(("plain",)).get_content()


def listed_numbers(message: EmailMessage) -> list[int]:
    """Return the ticket numbers a digest lists, in order."""
    return [int(n) for n in re.findall(r"^#(\d+) ", text_of(message), re.MULTILINE)]


def reply_addresses(message: EmailMessage) -> dict[int, str]:
    """Return each listed ticket's reply address from the digest text."""
    numbers = listed_numbers(message)
    found = re.findall(r"Answer:\s+write to (\S+@\S+)", text_of(message))
    return dict(zip(numbers, found, strict=True))
