"""The desk, which applies inbound email to tickets and queues notices in reply."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from gateway import addresses, fields, intake, robots, rules
from gateway.addresses import ReplySigner, SupportAddresses
from gateway.attachments import AttachmentCheck, check_attachments
from gateway.builder_names import fit_builder_name
from gateway.config import Config
from gateway.errors import DuplicateDelivery, StorageUnavailable
from gateway.events import NoEvents, TicketEvents
from gateway.inbound import Delivery, Step, Verdict
from gateway.limits import MessageLimits, check_message
from gateway.machine_mail import MachineMail, drop_own_mail
from gateway.mailer import NoticeMailer
from gateway.model import AttachmentProblem, Builder, ParsedMail, StagedRaw, TicketState
from gateway.notices import NoticeRenderer, ticket_subject
from gateway.reply_text import extract_reply

log = logging.getLogger(__name__)

_SUBJECT_TICKET = re.compile(r"\[#(\d{1,12})\]")
# Files of a message that add up to this many bytes are stored before its
# transaction, each in its own (see Desk._store_files_first).
FILES_FIRST_MIN_BYTES = 1024 * 1024
# The limits of a message of this size or more are checked on a thread.
LARGE_CHECK_MIN_BYTES = 1024 * 1024
# A message of this size or more is stored as a bulk write, which waits for the
# small ones on SQLite (see store/writer_queue.py).
BULK_WRITE_MIN_BYTES = 1024 * 1024
# The raw bytes of a message of this size or more are stored in slices before
# its transaction (see Desk._stage_raw).
STAGE_RAW_MIN_BYTES = 1024 * 1024

UNCHECKED_FILES = AttachmentCheck(accepted=(), problems=(), skipped_inline=0)


@dataclass(frozen=True)
class DeskSettings:
    """The parts of the configuration that the desk reads."""

    support: SupportAddresses
    register_unknown_senders: bool = False
    message_limits: MessageLimits = field(default_factory=MessageLimits)
    new_tickets_per_hour: int = 10
    drop_failing_attachments: bool = False
    suppress_after_bounce: timedelta = timedelta(hours=72)
    # The From address of outbound mail, which is also its X-Loop value.
    sender_address: str = ""

    @classmethod
    def from_config(cls, config: Config, support: SupportAddresses) -> DeskSettings:
        """Return the desk settings of CONFIG."""
        smtp = config.smtp
        return cls(
            support=support,
            register_unknown_senders=smtp.register_unknown_senders,
            message_limits=MessageLimits(
                max_header_bytes=smtp.max_header_bytes,
                max_mime_parts=smtp.max_mime_parts,
                max_mime_depth=smtp.max_mime_depth,
                max_recipients=smtp.max_recipients,
            ),
            new_tickets_per_hour=smtp.new_tickets_per_sender_per_hour,
            drop_failing_attachments=smtp.drop_failing_attachments,
            suppress_after_bounce=timedelta(
                hours=config.outbound.suppress_after_bounce_hours
            ),
            sender_address=config.sender_address.lower(),
        )


@dataclass(frozen=True)
class _Match:
    ticket: TicketState
    how: str


UNKNOWN_SENDER = Verdict(
    550,
    "5.7.1",
    "This address has no builder account with support; write from the email "
    "address of your account.",
    "rejected_unknown_sender",
)


MISSING_SENDER = Verdict(
    550,
    "5.7.1",
    "The From header is missing or could not be read; send from the address of "
    "your builder account with a plain From header.",
    "rejected_missing_sender",
)


class Desk:
    """Applies inbound email to tickets and queues the notices that reply to it."""

    def __init__(
        self,
        *,
        store: Any,
        settings: DeskSettings,
        signer: ReplySigner,
        mailer: NoticeMailer,
        parse: Callable[[bytes], ParsedMail],
        renderer: NoticeRenderer | None = None,
        events: TicketEvents | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._events: TicketEvents = events or NoEvents()
        self._settings = settings
        self._signer = signer
        self._mailer = mailer
        self._parse = parse
        self._renderer = renderer or NoticeRenderer()
        self._now = now
        self._machine_mail = MachineMail(settings, self._events)

    async def receive(self, delivery: Delivery) -> Verdict:
        """Apply one delivered message and return the verdict for the SMTP reply.

        Raises StorageUnavailable when nothing could be stored, so that the
        caller replies with a temporary failure and the sender tries again.
        """
        limits = self._settings.message_limits
        if len(delivery.raw) < LARGE_CHECK_MIN_BYTES:
            exceeded = check_message(delivery.raw, limits)
        else:
            # Scanning 35 MB takes about 25 ms. On a thread, the event loop gets
            # the GIL back every few milliseconds meanwhile.
            exceeded = await asyncio.to_thread(check_message, delivery.raw, limits)
        if exceeded is not None:
            log.warning("rejected a %d-byte message from %s: over %s",
                        len(delivery.raw), delivery.peer or "?", exceeded.limit)
            return Verdict(exceeded.code, exceeded.enhanced, exceeded.text,
                           f"rejected_{exceeded.limit}")
        staged = None
        try:
            # Parsing can take noticeable CPU, even for a small message with many
            # long headers, so it stays off the loop.
            mail = await asyncio.to_thread(self._parse, delivery.raw)
            robot = robots.classify(mail, delivery.mail_from)
            # Machine mail adds no files to a ticket, so its files go unchecked.
            checked = UNCHECKED_FILES
            if robot is None:
                checked = await self._check_files(mail)
                await self._store_files_first(mail, checked)
            staged = await self._stage_raw(delivery, mail)
            report = None
            if robot is not None and robot.kind == "bounce":
                report = await asyncio.to_thread(robots.read_delivery_report,
                                                 delivery.raw)
            return await self._apply(delivery, mail, robot, report, checked, staged)
        except DuplicateDelivery:
            await self._discard_staged(staged)
            log.info("redelivered message %s ignored", _digest(delivery.raw))
            return Verdict(250, "2.0.0", "Already received", "duplicate")
        except StorageUnavailable:
            # The sender tries again later and would leave one more copy each time.
            await self._discard_staged(staged)
            raise
        except Exception as exc:
            log.exception("processing failed for a %d-byte message", len(delivery.raw))
            return await self._keep_failed(delivery, exc, staged)

    @staticmethod
    async def _check_files(mail: ParsedMail) -> AttachmentCheck:
        """Check the message's files, on a thread when they are large.

        Hashing and sniffing megabytes would hold up every other session.
        """
        if sum(len(file.data) for file in mail.attachments) < FILES_FIRST_MIN_BYTES:
            return check_attachments(mail.attachments)
        return await asyncio.to_thread(check_attachments, mail.attachments)

    async def _store_files_first(self, mail: ParsedMail, checked: AttachmentCheck) -> None:
        """Write a builder's large files in short write transactions of their own.

        The message's own transaction then finds each blob by its SHA-256, so it
        holds SQLite's single writer, or PostgreSQL's lock on the ticket counter,
        for less time. A file of a message that is not applied after all (a
        rejected title, the hourly limit, a reply to a closed ticket) stays stored
        without an attachment row until the scheduled clean-up deletes it a day later.
        """
        if sum(len(file.data) for file in mail.attachments) < FILES_FIRST_MIN_BYTES:
            return
        sender = addresses.identity(mail.from_address)
        async with self._store.read() as tx:
            if not sender or await tx.find_builder(sender) is None:
                return
        if not checked.ok and not self._settings.drop_failing_attachments:
            return
        for attachment in checked.accepted:
            async with self._store.write(bulk=True) as tx:
                await tx.store_blob(attachment, now=self._now())

    async def _stage_raw(self, delivery: Delivery, mail: ParsedMail) -> StagedRaw | None:
        """Write a large message's raw bytes in slices before its own transaction.

        A 35 MB message written in one statement holds SQLite's single writer,
        or PostgreSQL's lock on the ticket counter, for a quarter of a second
        or more, and every small message that arrives meanwhile waits for it.
        A message already applied is not written again.
        """
        if delivery.inbound_id is not None or len(delivery.raw) < STAGE_RAW_MIN_BYTES:
            return None
        async with self._store.read() as tx:
            if await tx.find_applied_inbound(_dedupe_key(mail, delivery.raw)) is not None:
                return None
        return await self._store.stage_raw(delivery.raw, now=self._now())

    async def _discard_staged(self, staged: StagedRaw | None) -> None:
        """Delete slices that Desk._stage_raw wrote for a message that was not recorded."""
        if staged is None:
            return
        try:
            await self._store.discard_staged_raw(staged)
        except StorageUnavailable:
            log.warning("could not delete slices %s, so the scheduled clean-up "
                        "deletes them after a day", staged.key)

    async def _apply(
        self,
        delivery: Delivery,
        mail: ParsedMail,
        robot: robots.RobotMail | None,
        report: robots.DeliveryReport | None,
        checked: AttachmentCheck,
        staged: StagedRaw | None = None,
    ) -> Verdict:
        # Identity is the From address; Reply-To never decides who wrote.
        sender = addresses.identity(mail.from_address)
        dedupe_key = _dedupe_key(mail, delivery.raw)
        now = self._now()

        bulk = len(delivery.raw) >= BULK_WRITE_MIN_BYTES
        async with self._store.write(bulk=bulk, short=not bulk) as tx:
            applied = await tx.find_applied_inbound(dedupe_key)
            if applied is not None and applied != delivery.inbound_id:
                raise DuplicateDelivery(dedupe_key)
            inbound_id = delivery.inbound_id
            if inbound_id is None:
                inbound_id = await tx.add_inbound(
                    raw=delivery.raw,
                    mail_from=delivery.mail_from,
                    rcpt_tos=delivery.rcpt_tos,
                    peer=delivery.peer,
                    message_id=mail.message_id,
                    outcome="received",
                    now=now,
                    staged=staged,
                )
            step = Step(tx, mail, inbound_id, dedupe_key, now, checked)

            own = await self._machine_mail.own_mail_signal(tx, mail)
            if own is not None:
                return await drop_own_mail(step, own)
            if robot is not None:
                return await self._machine_mail.apply(
                    step, robot, report, sender,
                    lambda: self._find_ticket(tx, delivery, mail, sender),
                )

            builder = await tx.find_builder(sender) if sender else None
            match = await self._find_ticket(tx, delivery, mail, sender)
            if match is not None and match.ticket.builder.email == sender:
                return await self._add_reply(step, match)

            if builder is None and self._settings.register_unknown_senders and sender:
                name = fit_builder_name(mail.from_name) or None
                builder = await tx.upsert_builder(
                    sender, name=name, timezone=None, apps=(), now=now
                )
                log.info("registered a new builder at %s", sender.rpartition("@")[2])
            if not sender:
                await tx.set_inbound_outcome(
                    inbound_id, MISSING_SENDER.outcome,
                    detail="the From header is missing or could not be read",
                )
                log.warning("rejected message %s without a readable From address",
                            mail.message_id or "(no Message-ID)")
                return MISSING_SENDER
            if builder is None:
                detail = f"{sender} has no builder account"
                if match is not None:
                    detail += f"; the message referred to ticket #{match.ticket.number}"
                await tx.set_inbound_outcome(inbound_id, UNKNOWN_SENDER.outcome, detail=detail)
                log.warning("rejected a message from an unknown sender at %s",
                            sender.rpartition("@")[2] or "no domain")
                return UNKNOWN_SENDER
            if not delivery.release:
                opened = await tx.count_tickets_opened(
                    builder.id, since=now - timedelta(hours=1)
                )
                if opened >= self._settings.new_tickets_per_hour:
                    return await self._hold(step, builder, opened)
            return await self._open_ticket(step, builder, referred=match)

    async def _find_ticket(
        self, tx: Any, delivery: Delivery, mail: ParsedMail, sender: str
    ) -> _Match | None:
        # 1. A signed reply address; a wrong signature matches nothing.
        for recipient in dict.fromkeys([*delivery.rcpt_tos, *mail.to_addresses,
                                        *mail.cc_addresses]):
            number = self._signer.tagged_ticket(recipient)
            if number is None:
                continue
            ticket = await tx.lock_ticket(number)
            if ticket and self._signer.is_valid(recipient, number, ticket.builder.email):
                return _Match(ticket, "reply address")
            log.warning("reply address for #%d has an invalid signature", number)

        # 2. Message-IDs the gateway sent or received, newest first.
        candidates = [*mail.in_reply_to, *reversed(mail.references)]
        ticket_id = await tx.ticket_for_message_ids(list(dict.fromkeys(candidates)))
        if ticket_id is not None:
            ticket = await tx.lock_ticket_by_id(ticket_id)
            if ticket is not None:
                return _Match(ticket, "message id")

        # 3. [#123] in the subject, only from that ticket's own builder.
        for found in _SUBJECT_TICKET.finditer(mail.subject or ""):
            ticket = await tx.lock_ticket(int(found.group(1)))
            if ticket is not None and ticket.builder.email == sender:
                return _Match(ticket, "subject")
        return None

    async def _add_reply(self, step: Step, match: _Match) -> Verdict:
        ticket = match.ticket
        tx, mail, now = step.tx, step.mail, step.now
        if not rules.accepts_builder_replies(ticket.status):
            return await self._reject_finished(step, ticket)
        if mail.structure_problem is not None:
            return await self._reject_unreadable(step, ticket.builder,
                                                 mail.structure_problem, ticket)

        checked = step.checked
        if not checked.ok and not self._settings.drop_failing_attachments:
            return await self._reject_attachments(step, ticket.builder, checked.problems, ticket)

        body = extract_reply(mail.text, mail.html)
        message_id = await tx.add_message(
            ticket.id,
            visibility="public",
            kind="builder",
            author=ticket.builder.email,
            body=body,
            attachments=checked.accepted,
            inbound_id=step.inbound_id,
            now=now,
        )
        if mail.message_id:
            await tx.index_message_id(mail.message_id, ticket.id, outbound=False, now=now)
        new_status = rules.status_after_builder_reply(ticket.status)
        if new_status != ticket.status:
            await tx.update_ticket(ticket.id, status=new_status, now=now)
            await add_status_event(tx, ticket, new_status, ticket.builder.email, now)
        else:
            await tx.update_ticket(ticket.id, now=now)
        after = await tx.lock_ticket_by_id(ticket.id)
        await self._events.message_added(tx, after, message_id)
        if new_status != ticket.status:
            await self._events.ticket_changed(
                tx, ticket, after, ticket.builder.email,
                (f"status {ticket.status} → {new_status}",),
            )
        await tx.set_inbound_outcome(
            step.inbound_id, "reply_added",
            detail=f"added to #{ticket.number} by {match.how}",
            ticket_id=ticket.id, dedupe_key=step.dedupe_key,
        )
        await self._notify_dropped(step, ticket.builder, checked, after)
        log.info("reply added to #%d by %s (%d bytes, %d attachments)",
                 ticket.number, match.how, mail.size_bytes, len(checked.accepted))
        return Verdict(250, "2.0.0", f"Added to ticket #{ticket.number}", "reply_added",
                       ticket.number)

    async def _reject_finished(self, step: Step, ticket: TicketState) -> Verdict:
        kind = "reply_to_closed" if ticket.status == "closed" else "reply_to_duplicate"
        support = self._settings.support.primary
        follow_up = f"Follow-up to #{ticket.number}: {ticket.title}"
        notice = self._renderer.render(
            kind,
            ticket_subject(ticket.number, ticket.title),
            builder_name=ticket.builder.name,
            number=ticket.number,
            title=ticket.title,
            duplicate_of=ticket.duplicate_of,
            new_ticket_link=f"mailto:{support}?subject={quote(follow_up)}",
            support_address=support,
        )
        sent = await self._mailer.queue(step.tx, ticket.builder, notice, now=step.now,
                                        ticket=ticket, answering=step.mail)
        await step.tx.set_inbound_outcome(
            step.inbound_id, f"rejected_{ticket.status}",
            detail=f"#{ticket.number} is {ticket.status}; reply not added",
            ticket_id=ticket.id, dedupe_key=step.dedupe_key,
        )
        log.info("reply to %s ticket #%d not added", ticket.status, ticket.number)
        return Verdict(250, "2.0.0", f"Received; ticket #{ticket.number} is {ticket.status} "
                       f"and takes no replies{_notice_hint(sent)}",
                       f"rejected_{ticket.status}", ticket.number)

    async def _open_ticket(
        self, step: Step, builder: Builder, *, referred: _Match | None
    ) -> Verdict:
        tx, mail, now = step.tx, step.mail, step.now
        if mail.structure_problem is not None:
            return await self._reject_unreadable(step, builder, mail.structure_problem, None)
        checked = step.checked
        if not checked.ok and not self._settings.drop_failing_attachments:
            return await self._reject_attachments(step, builder, checked.problems, None)

        found = intake.read_intake(mail.subject, mail.text, builder)
        problem = intake.title_problem(found.title) or intake.description_problem(
            found.description
        )
        if problem is not None:
            return await self._reject_title(step, builder, found.title, problem)

        ticket_id, number = await tx.create_ticket(
            builder=builder,
            title=found.title,
            description=found.description,
            app=found.app,
            category=found.category,
            severity=found.severity,
            now=now,
        )
        first_message_id = await tx.add_message(
            ticket_id,
            visibility="public",
            kind="builder",
            author=builder.email,
            body=found.description,
            attachments=checked.accepted,
            inbound_id=step.inbound_id,
            now=now,
        )
        if referred is not None:
            # The other ticket belongs to someone else: name it to support only.
            await tx.add_message(
                ticket_id,
                visibility="internal",
                kind="system",
                author="gateway",
                body=f"This message referred to ticket #{referred.ticket.number} "
                f"(matched by {referred.how}), which belongs to another builder, "
                "so it was opened as a new ticket.",
                now=now,
            )
        if mail.message_id:
            await tx.index_message_id(mail.message_id, ticket_id, outbound=False, now=now)
        await tx.set_inbound_outcome(
            step.inbound_id, "ticket_created", detail=f"opened #{number}",
            ticket_id=ticket_id, dedupe_key=step.dedupe_key,
        )

        ticket = tx.opened_ticket_state(ticket_id, builder)
        await self._events.ticket_opened(tx, ticket, first_message_id)
        notice = self._renderer.render(
            "ticket_opened",
            ticket_subject(number, found.title),
            builder_name=builder.name,
            number=number,
            title=found.title,
            app_name=found.app.name if found.app else None,
            category=found.category,
            severity=found.severity,
            status="new",
            attachment_count=len(checked.accepted),
            notes=found.notes,
        )
        await self._mailer.queue(tx, builder, notice, now=now, ticket=ticket, answering=mail,
                                 opened_by_answering=True)
        await self._notify_dropped(step, builder, checked, ticket)
        log.info("ticket #%d opened (%d bytes, %d attachments)",
                 number, mail.size_bytes, len(checked.accepted))
        return Verdict(250, "2.0.0", f"Ticket #{number} opened", "ticket_created", number)

    async def _reject_attachments(
        self,
        step: Step,
        builder: Builder,
        problems: tuple[AttachmentProblem, ...],
        ticket: TicketState | None,
    ) -> Verdict:
        subject = intake.clean_title(step.mail.subject)
        await step.tx.set_inbound_outcome(
            step.inbound_id,
            "rejected_attachments",
            detail="; ".join(f"{p.filename}: {p.rule}" for p in problems),
            ticket_id=ticket.id if ticket else None,
            dedupe_key=step.dedupe_key,
        )
        notice = self._renderer.render(
            "attachments_rejected",
            _rejection_subject(ticket, subject),
            builder_name=builder.name,
            subject=subject,
            problems=problems,
            text_accepted=False,
        )
        sent = await self._mailer.queue(step.tx, builder, notice, now=step.now,
                                        ticket=ticket, answering=step.mail)
        log.info("inbound %d rejected for %d attachment problems",
                 step.inbound_id, len(problems))
        return Verdict(250, "2.0.0", "Received, but the attachments were not accepted"
                       f"{_notice_hint(sent)}", "rejected_attachments")

    async def _reject_unreadable(
        self, step: Step, builder: Builder, problem: str, ticket: TicketState | None
    ) -> Verdict:
        # Without readable text the title and description rules would blame the
        # builder's wording, when the sender's mail program is at fault. A reply
        # would add raw MIME syntax to the ticket's thread.
        await step.tx.set_inbound_outcome(
            step.inbound_id, "rejected_unreadable_mime", detail=problem,
            ticket_id=ticket.id if ticket else None, dedupe_key=step.dedupe_key,
        )
        subject = intake.clean_title(step.mail.subject)
        notice = self._renderer.render(
            "mime_unreadable",
            _rejection_subject(ticket, subject),
            builder_name=builder.name,
            subject=subject,
            number=ticket.number if ticket else None,
        )
        sent = await self._mailer.queue(step.tx, builder, notice, now=step.now,
                                        ticket=ticket, answering=step.mail)
        log.warning("inbound %d rejected: its MIME structure could not be read "
                    "(%d defects)", step.inbound_id, len(step.mail.defects))
        result = (f"it was not added to ticket #{ticket.number}" if ticket
                  else "no ticket was opened")
        return Verdict(250, "2.0.0", "Received, but the message structure could not be "
                       f"read, so {result}{_notice_hint(sent)}",
                       "rejected_unreadable_mime", ticket.number if ticket else None)

    async def _reject_title(
        self, step: Step, builder: Builder, title: str, problem: str
    ) -> Verdict:
        await step.tx.set_inbound_outcome(
            step.inbound_id, "rejected_title", detail=problem, dedupe_key=step.dedupe_key
        )
        notice = self._renderer.render(
            "title_rejected",
            _rejection_subject(None, title),
            builder_name=builder.name,
            problem=problem,
            example=intake.GOOD_TITLE_EXAMPLE,
            min_title_chars=intake.MIN_TITLE_CHARS,
        )
        sent = await self._mailer.queue(step.tx, builder, notice, now=step.now,
                                        answering=step.mail)
        log.info("inbound %d rejected: %s", step.inbound_id, problem)
        return Verdict(250, "2.0.0", f"Received, but no ticket was opened{_notice_hint(sent)}",
                       "rejected_title")

    async def _notify_dropped(
        self, step: Step, builder: Builder, checked: AttachmentCheck,
        ticket: TicketState,
    ) -> None:
        # Only with drop_failing_attachments: the update was applied without them.
        if checked.ok:
            return
        notice = self._renderer.render(
            "attachments_rejected",
            ticket_subject(ticket.number, ticket.title),
            builder_name=builder.name,
            subject=intake.clean_title(step.mail.subject),
            problems=checked.problems,
            text_accepted=True,
        )
        await self._mailer.queue(step.tx, builder, notice, now=step.now, ticket=ticket,
                                 answering=step.mail)
        await step.tx.add_message(
            ticket.id,
            visibility="internal",
            kind="system",
            author="gateway",
            body="Attachments left out of the builder's message: "
            + "; ".join(f"{p.filename} {p.rule}" for p in checked.problems),
            now=step.now,
        )
        log.info("message %s applied without %d failing attachments",
                 step.mail.message_id, len(checked.problems))

    async def _hold(self, step: Step, builder: Builder, opened: int) -> Verdict:
        limit = self._settings.new_tickets_per_hour
        await step.tx.set_inbound_outcome(
            step.inbound_id, "held_rate_limit",
            detail=f"{builder.email} opened {opened} tickets in the past hour (limit "
            f"{limit}); release with `support-gateway inbound release "
            f"{step.inbound_id}`",
            dedupe_key=step.dedupe_key,
        )
        log.warning("held inbound %d: a builder at %s opened %d tickets this hour",
                    step.inbound_id, builder.email.rpartition("@")[2], opened)
        return Verdict(250, "2.0.0", "Received; held for support to review, because "
                       f"at most {limit} new tickets per hour are opened per sender",
                       "held_rate_limit")

    async def _keep_failed(
        self, delivery: Delivery, error: Exception, staged: StagedRaw | None = None
    ) -> Verdict:
        # Kept as a failed record for `inbound retry`; the sender gets 250
        # because sending the same bytes again would fail the same way.
        detail = f"{type(error).__name__}: {error}"[:2000]
        async with self._store.write() as tx:
            inbound_id = delivery.inbound_id
            if inbound_id is None:
                inbound_id = await tx.add_inbound(
                    raw=delivery.raw,
                    mail_from=delivery.mail_from,
                    rcpt_tos=delivery.rcpt_tos,
                    peer=delivery.peer,
                    message_id=None,
                    outcome="failed",
                    detail=detail,
                    now=self._now(),
                    staged=staged,
                )
            else:
                await tx.set_inbound_outcome(inbound_id, "failed", detail=detail)
        log.error("message kept as failed inbound record %d", inbound_id)
        return Verdict(250, "2.0.0", "Received; kept for support to review", "failed")


async def add_status_event(
    tx: Any, ticket: TicketState, new_status: str, actor: str, now: datetime
) -> None:
    """Record a status change in the ticket's conversation, for support."""
    old_label = fields.status_label(ticket.status)
    new_label = fields.status_label(new_status)
    await tx.add_message(
        ticket.id,
        visibility="internal",
        kind="system",
        author=actor,
        body=f"Status changed from {ticket.status} ({old_label}) to {new_status} "
        f"({new_label}) by {actor}.",
        now=now,
    )


def _rejection_subject(ticket: TicketState | None, subject: str) -> str:
    """Return the subject of a rejection notice: its ticket's, or one naming SUBJECT."""
    if ticket is not None:
        return ticket_subject(ticket.number, ticket.title)
    return f"Not accepted: {subject or 'your message'}"


def _notice_hint(sent_message_id: str | None) -> str:
    # Refusal notices are rate-limited, so the reply must not promise one.
    if sent_message_id is not None:
        return "; see the notice sent to you"
    return "; no new notice was sent, because one about the same problem went out recently"


def _dedupe_key(mail: ParsedMail, raw: bytes) -> str:
    if mail.message_id:
        return f"message-id:{mail.message_id}"[:1000]
    return f"sha256:{_digest(raw)}"


def _digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()
