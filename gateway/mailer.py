"""Queue rendered notices as threaded, answerable emails in the outbox."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from gateway import addresses
from gateway.addresses import ReplySigner
from gateway.builder_links import BuilderLinks, with_link_footer
from gateway.model import Builder, CheckedAttachment, ParsedMail, TicketState
from gateway.notices import Notice

log = logging.getLogger(__name__)

# Notices that reject a builder's mail are rate-limited per
# recipient, so a misbehaving sender or a loop cannot make the gateway spam.
LIMITED_KINDS = frozenset(
    {
        "attachments_rejected",
        "mime_unreadable",
        "reply_to_closed",
        "reply_to_duplicate",
        "title_rejected",
    }
)
NOTICE_INTERVAL = timedelta(minutes=10)


class Composer(Protocol):
    def __call__(self, **kwargs: Any) -> bytes: ...


@dataclass(frozen=True)
class MailerSettings:
    """Sender identity and notice limits of outbound mail."""

    sender_address: str
    sender_name: str
    notices_per_day: int = 20


def with_builder_link(notice: Notice, link: tuple[str, datetime] | None) -> Notice:
    """Return NOTICE ending with LINK (URL and expiry), or unchanged without one."""
    if link is None:
        return notice
    text, html = with_link_footer(notice.text, notice.html, *link)
    return replace(notice, text=text, html=html)


class NoticeMailer:
    """Composes notices with threading headers and writes them to the outbox."""

    def __init__(
        self,
        *,
        settings: MailerSettings,
        signer: ReplySigner,
        compose: Composer,
        make_message_id: Callable[[str], str],
        is_own_address: Callable[[str], bool],
        links: BuilderLinks | None = None,
    ) -> None:
        self._settings = settings
        self._signer = signer
        self._compose = compose
        self._make_message_id = make_message_id
        self._is_own_address = is_own_address
        self._links = links

    def reply_address(self, ticket: TicketState) -> str:
        """Return the signed address that threads a builder's reply into TICKET."""
        return self._signer.reply_address(ticket.number, ticket.builder.email)

    async def queue(
        self,
        tx: Any,
        builder: Builder,
        notice: Notice,
        *,
        now: datetime,
        ticket: TicketState | None = None,
        answering: ParsedMail | None = None,
        attachments: tuple[CheckedAttachment, ...] = (),
        extra_headers: Mapping[str, str] | None = None,
        opened_by_answering: bool = False,
    ) -> str | None:
        """Queue NOTICE to BUILDER; return its Message-ID, or None when it is held back.

        Pass opened_by_answering when ANSWERING just opened TICKET: its thread then
        contains that message alone, and the thread is not read again.
        """
        recipient = builder.email
        if addresses.is_robot_address(recipient) or self._is_own_address(recipient):
            log.warning("notice %s not sent: %s never reads mail", notice.kind,
                        recipient.rpartition("@")[2])
            return None
        # A permanent bounce suppresses every kind of mail to the address for a while.
        if await tx.suppressed_until(recipient, now) is not None:
            log.warning("notice %s not sent: mail to a builder at %s is suppressed "
                        "after a bounce", notice.kind, recipient.rpartition("@")[2])
            return None
        if notice.kind in LIMITED_KINDS and not await self._within_limits(
            tx, recipient, notice.kind, now
        ):
            log.warning("notice %s to a builder at %s held back by the rate limit",
                        notice.kind, recipient.rpartition("@")[2])
            return None

        references: list[str] = []
        if ticket is not None and not opened_by_answering:
            references = await tx.thread_message_ids(ticket.id)
        if answering is not None and answering.message_id:
            references = [r for r in references if r != answering.message_id]
            references.append(answering.message_id)
        in_reply_to = references[-1] if references else None

        notice = with_builder_link(notice, await self.issue_builder_link(tx, builder, now=now))
        text, html = notice.text, notice.html

        domain = self._settings.sender_address.rpartition("@")[2] or "localhost"
        message_id = self._make_message_id(domain)
        data = self._compose(
            sender=self._settings.sender_address,
            sender_name=self._settings.sender_name,
            recipient=recipient,
            recipient_name=builder.name,
            subject=notice.subject,
            text=text,
            html=html,
            message_id=message_id,
            in_reply_to=in_reply_to,
            references=references,
            reply_to=self.reply_address(ticket) if ticket is not None else None,
            auto_submitted=notice.auto_submitted,
            extra_headers=extra_headers,
            attachments=attachments,
            date=now,
        )
        await tx.enqueue_email(
            kind=notice.kind,
            sender=self._settings.sender_address,
            recipient=recipient,
            data=data,
            message_id=message_id,
            ticket_id=ticket.id if ticket else None,
            now=now,
        )
        if ticket is not None:
            await tx.index_message_id(message_id, ticket.id, outbound=True, now=now)
        if notice.kind in LIMITED_KINDS:
            await tx.log_notice(recipient, notice.kind, now=now)
        return message_id

    def new_message_id(self) -> str:
        """Return a new unique Message-ID in the sender's domain, without angle brackets."""
        domain = self._settings.sender_address.rpartition("@")[2] or "localhost"
        return self._make_message_id(domain)

    async def issue_builder_link(
        self, tx: Any, builder: Builder, *, now: datetime
    ) -> tuple[str, datetime] | None:
        """Store a fresh link to BUILDER's own status page; return its URL and expiry.

        Every email to a builder ends with one. Returns None when builder links
        are not configured.
        """
        if self._links is None:
            return None
        return await self._links.issue(tx, builder, now=now)

    def compose_unqueued(
        self,
        builder: Builder,
        notice: Notice,
        *,
        now: datetime,
        message_id: str | None = None,
        reply_to: str | None = None,
        references: Sequence[str] = (),
        extra_headers: Mapping[str, str] | None = None,
    ) -> tuple[str, bytes]:
        """Compose NOTICE to BUILDER for a caller that queues it; return (Message-ID, bytes).

        Digests use this to compose an email whose outbox row, and Message-ID,
        a digest run created before. Without MESSAGE_ID a new one is made.
        REFERENCES are the thread's earlier Message-IDs, oldest first.
        """
        if message_id is None:
            message_id = self.new_message_id()
        data = self._compose(
            sender=self._settings.sender_address,
            sender_name=self._settings.sender_name,
            recipient=builder.email,
            recipient_name=builder.name,
            subject=notice.subject,
            text=notice.text,
            html=notice.html,
            message_id=message_id,
            in_reply_to=references[-1] if references else None,
            references=references,
            reply_to=reply_to,
            auto_submitted=notice.auto_submitted,
            extra_headers=extra_headers,
            date=now,
        )
        return message_id, data

    async def _within_limits(self, tx: Any, recipient: str, kind: str, now: datetime) -> bool:
        recent = await tx.count_notices(recipient, since=now - NOTICE_INTERVAL, kind=kind)
        if recent:
            return False
        today = await tx.count_notices(recipient, since=now - timedelta(days=1))
        return today < self._settings.notices_per_day
