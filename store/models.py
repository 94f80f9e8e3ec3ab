"""Tables of the ticket store, as SQLAlchemy 2 declarative models."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back as an aware datetime."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; pass an aware UTC time")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Counter(Base):
    """A named counter, such as the next ticket number, updated under a row lock."""

    __tablename__ = "counters"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)


class SettingRow(Base):
    """A value shared by every gateway instance, such as the reply-signing key."""

    __tablename__ = "settings"

    name: Mapped[str] = mapped_column(String(60), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class BuilderRow(Base):
    __tablename__ = "builders"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Lowercased, without a +tag: the identity that inbound mail is matched on.
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class AppRow(Base):
    __tablename__ = "apps"
    __table_args__ = (UniqueConstraint("builder_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    builder_id: Mapped[int] = mapped_column(ForeignKey("builders.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    uri: Mapped[str] = mapped_column(String(2000), default="")


class TicketRow(Base):
    __tablename__ = "tickets"
    __table_args__ = (
        Index("ix_tickets_last_activity", "last_activity_at", "id"),
        Index("ix_tickets_status_activity", "status", "last_activity_at"),
        Index("ix_tickets_category_activity", "category", "last_activity_at"),
        Index("ix_tickets_severity_activity", "severity", "last_activity_at"),
        Index("ix_tickets_app_activity", "app_name", "last_activity_at"),
        Index("ix_tickets_builder_activity", "builder_id", "last_activity_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    number: Mapped[int] = mapped_column(BigInteger, unique=True)
    title: Mapped[str] = mapped_column(String(500))
    description: Mapped[str] = mapped_column(Text)
    builder_id: Mapped[int] = mapped_column(ForeignKey("builders.id"))
    # Snapshot of the app at creation; both None for an account-level issue.
    app_name: Mapped[str | None] = mapped_column(String(200))
    app_uri: Mapped[str | None] = mapped_column(String(2000))
    category: Mapped[str] = mapped_column(String(40))
    severity: Mapped[str] = mapped_column(String(10))
    priority: Mapped[str] = mapped_column(String(4))
    status: Mapped[str] = mapped_column(String(30))
    assignee: Mapped[str | None] = mapped_column(String(200))
    resolution_summary: Mapped[str | None] = mapped_column(Text)
    duplicate_of_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_activity_at: Mapped[datetime] = mapped_column(UtcDateTime)
    status_changed_at: Mapped[datetime] = mapped_column(UtcDateTime)


class MessageRow(Base):
    """One entry of a conversation: a public message, an internal note or an event."""

    __tablename__ = "messages"
    __table_args__ = (Index("ix_messages_ticket", "ticket_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    # public: the builder may see it; internal: support only.
    visibility: Mapped[str] = mapped_column(String(10))
    # builder, support or system.
    kind: Mapped[str] = mapped_column(String(10))
    author: Mapped[str] = mapped_column(String(320))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    inbound_id: Mapped[int | None] = mapped_column(ForeignKey("inbound_messages.id"))


class BlobRow(Base):
    """Attachment bytes, stored once per distinct SHA-256."""

    __tablename__ = "blobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    # None for blobs stored before this column existed.
    stored_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class AttachmentRow(Base):
    __tablename__ = "attachments"
    __table_args__ = (
        Index("ix_attachments_message", "message_id"),
        Index("ix_attachments_blob", "blob_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    blob_id: Mapped[int] = mapped_column(ForeignKey("blobs.id"))
    # Display name only; the stored key is the generated blob id, never this name.
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(100))


class RawPartRow(Base):
    """A slice of a large message's raw bytes, written before the message itself.

    A message of many megabytes is written in slices, each in a short write
    transaction of its own, so that SQLite's single writer is never held for
    the whole message. The inbound record then refers to the slices by their key.
    """

    __tablename__ = "raw_message_parts"

    parts_key: Mapped[str] = mapped_column(String(32), primary_key=True)
    start_byte: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    stored_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)


class InboundRow(Base):
    """A received email: its raw bytes and what the gateway did with it."""

    __tablename__ = "inbound_messages"
    __table_args__ = (
        Index("ix_inbound_received", "received_at"),
        Index("ix_inbound_ticket", "ticket_id", "id"),
        Index("ix_inbound_outcome", "outcome"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)
    mail_from: Mapped[str] = mapped_column(String(320))
    rcpt_tos: Mapped[str] = mapped_column(Text)
    peer: Mapped[str] = mapped_column(String(100), default="")
    message_id: Mapped[str | None] = mapped_column(String(998))
    raw_sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    raw: Mapped[bytes | None] = mapped_column(LargeBinary)
    # Set instead of raw when the raw bytes were written as RawPartRow rows.
    raw_parts_key: Mapped[str | None] = mapped_column(String(32), index=True)
    # Set only once the message was applied, so a redelivery is recognised.
    dedupe_key: Mapped[str | None] = mapped_column(String(1000), unique=True)
    outcome: Mapped[str] = mapped_column(String(40))
    detail: Mapped[str] = mapped_column(Text, default="")
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))


class MailIndexRow(Base):
    """Every Message-ID the gateway sent or received, with its ticket."""

    __tablename__ = "mail_index"

    message_id: Mapped[str] = mapped_column(String(998), primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    outbound: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class NoticeLogRow(Base):
    """A notice sent to an address, kept to rate-limit notices per recipient."""

    __tablename__ = "notice_log"
    __table_args__ = (Index("ix_notice_log_recipient", "recipient", "sent_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    recipient: Mapped[str] = mapped_column(String(320))
    kind: Mapped[str] = mapped_column(String(40))
    sent_at: Mapped[datetime] = mapped_column(UtcDateTime)


class OutboxRow(Base):
    """A message waiting to leave, claimed by one worker at a time."""

    __tablename__ = "outbox"
    # Each worker claims the due rows of its own channel, so the channel leads.
    # Then a backlog of Slack calls does not lengthen the scan of an email claim.
    __table_args__ = (Index("ix_outbox_due", "channel", "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel: Mapped[str] = mapped_column(String(10))
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    kind: Mapped[str] = mapped_column(String(40))
    sender: Mapped[str] = mapped_column(String(320))
    recipient: Mapped[str] = mapped_column(String(320))
    message_id: Mapped[str | None] = mapped_column(String(998))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    # pending, sent or failed.
    state: Mapped[str] = mapped_column(String(10))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime)
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    claimed_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class BuilderLinkRow(Base):
    """A private status-page link sent to a builder, revocable and expiring."""

    __tablename__ = "builder_links"
    __table_args__ = (Index("ix_builder_links_builder", "builder_id", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    builder_id: Mapped[int] = mapped_column(ForeignKey("builders.id", ondelete="CASCADE"))
    # SHA-256 of the random part of the link, so a database dump opens no page.
    secret_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class LoginFailureRow(Base):
    """A failed status-page login, kept to rate-limit guessing from one address."""

    __tablename__ = "login_failures"
    __table_args__ = (Index("ix_login_failures_peer", "peer", "failed_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    peer: Mapped[str] = mapped_column(String(100))
    failed_at: Mapped[datetime] = mapped_column(UtcDateTime)


class SlackThreadRow(Base):
    """The Slack message whose thread carries one ticket's conversation."""

    __tablename__ = "slack_threads"
    __table_args__ = (UniqueConstraint("channel", "root_ts"),)

    ticket_id: Mapped[int] = mapped_column(
        ForeignKey("tickets.id", ondelete="CASCADE"), primary_key=True
    )
    channel: Mapped[str] = mapped_column(String(40))
    # None until the root message is posted.
    root_ts: Mapped[str | None] = mapped_column(String(40))


class SlackReceiptRow(Base):
    """An event id, command or action being handled or done, so a retry has no effect."""

    __tablename__ = "slack_receipts"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # "processing" until the effect is committed, then "done".
    state: Mapped[str] = mapped_column(String(20), server_default="done")
    # While processing: when another instance may take the request over.
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime)


class SlackReplyRow(Base):
    """A public reply sent from Slack, with the email kept back during the undo window."""

    __tablename__ = "slack_replies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    outbox_id: Mapped[int | None] = mapped_column(ForeignKey("outbox.id"))
    # "channel/ts" of the Slack message sent with the message shortcut, so the
    # same message is sent once and deleting it can cancel the email.
    source_key: Mapped[str | None] = mapped_column(String(100), unique=True)
    user_id: Mapped[str] = mapped_column(String(40))
    # pending, sent or cancelled.
    state: Mapped[str] = mapped_column(String(10))
    send_at: Mapped[datetime] = mapped_column(UtcDateTime)


class SuppressedAddressRow(Base):
    """An address that bounced: no notice is sent to it until the suppression ends."""

    __tablename__ = "suppressed_addresses"

    # Lowercased, as the outbox stores recipients.
    address: Mapped[str] = mapped_column(String(320), primary_key=True)
    suppressed_until: Mapped[datetime] = mapped_column(UtcDateTime)
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class DeliveryFailureRow(Base):
    """A bounce that names an email the gateway sent, and what it reported."""

    __tablename__ = "delivery_failures"
    __table_args__ = (Index("ix_delivery_failures_outbox", "outbox_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    outbox_id: Mapped[int] = mapped_column(ForeignKey("outbox.id", ondelete="CASCADE"))
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    inbound_id: Mapped[int | None] = mapped_column(ForeignKey("inbound_messages.id"))
    recipient: Mapped[str] = mapped_column(String(320))
    # The RFC 3463 status code, such as 5.1.1, when the report gives one.
    status: Mapped[str | None] = mapped_column(String(20))
    # The RFC 3464 action: failed or delayed.
    action: Mapped[str] = mapped_column(String(20))
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)


# Bounces and returning notices are matched to the outbox by Message-ID.
Index("ix_outbox_message_id", OutboxRow.message_id)


class DigestRunRow(Base):
    """A digest period handled for one time zone, so later runs skip it."""

    __tablename__ = "digest_runs"
    __table_args__ = (UniqueConstraint("timezone", "period_start"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # IANA name of the builders' time zone; "" for a run started by hand.
    timezone: Mapped[str] = mapped_column(String(64))
    # The scheduled time the run stands for, in UTC.
    period_start: Mapped[datetime] = mapped_column(UtcDateTime)
    # sent (at least one digest queued) or nothing_waiting.
    outcome: Mapped[str] = mapped_column(String(20))
    digest_count: Mapped[int] = mapped_column(Integer)
    finished_at: Mapped[datetime] = mapped_column(UtcDateTime)


class DigestClaimRow(Base):
    """One builder's digest for one period, inserted in the transaction that queues it."""

    __tablename__ = "digest_claims"
    __table_args__ = (
        UniqueConstraint("builder_id", "period_start"),
        Index("ix_digest_claims_run", "period_start", "claimed_by"),
        Index("ix_digest_claims_message_id", "message_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    builder_id: Mapped[int] = mapped_column(ForeignKey("builders.id", ondelete="CASCADE"))
    period_start: Mapped[datetime] = mapped_column(UtcDateTime)
    # The Message-ID of the digest's outbox row, without angle brackets.
    message_id: Mapped[str] = mapped_column(String(998))
    # Tickets due when the digest was claimed, including those it does not list.
    ticket_count: Mapped[int] = mapped_column(Integer)
    # The run that won the claim (instance and a token of that run).
    claimed_by: Mapped[str] = mapped_column(String(100))
    claimed_at: Mapped[datetime] = mapped_column(UtcDateTime)


class DigestClaimTicketRow(Base):
    """A ticket due for a claimed digest, kept until the outbox worker composes it."""

    __tablename__ = "digest_claim_tickets"

    claim_id: Mapped[int] = mapped_column(
        ForeignKey("digest_claims.id", ondelete="CASCADE"), primary_key=True
    )
    ticket_id: Mapped[int] = mapped_column(
        ForeignKey("tickets.id", ondelete="CASCADE"), primary_key=True
    )
    # The wait it was listed for: the digest leaves it out once that wait ended.
    wait_started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # False when the digest's bound on listed tickets left it out: the digest then
    # only counts it, and no reminder is recorded for it.
    listed: Mapped[bool] = mapped_column(Boolean, server_default=true())


class TicketReminderRow(Base):
    """How often one wait on the builder has been listed in a digest."""

    __tablename__ = "ticket_reminders"
    __table_args__ = (UniqueConstraint("ticket_id", "wait_started_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    # The ticket's status_changed_at when it moved to waiting_on_builder.
    wait_started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    reminder_count: Mapped[int] = mapped_column(Integer)
    # The period of the latest digest that listed it (not the send time), so
    # repeat intervals line up with the schedule.
    last_period_start: Mapped[datetime] = mapped_column(UtcDateTime)


class TicketActionRow(Base):
    """A scheduled action (auto-resolve, escalation) claimed for one ticket and wait."""

    __tablename__ = "ticket_actions"
    __table_args__ = (UniqueConstraint("action", "ticket_id", "wait_started_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # auto_resolve or escalate.
    action: Mapped[str] = mapped_column(String(20))
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    wait_started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # claimed, done or skipped.
    state: Mapped[str] = mapped_column(String(10))
    claimed_by: Mapped[str] = mapped_column(String(100))
    # Another instance may take over a claim that is still "claimed" after this.
    claimed_until: Mapped[datetime] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class DigestOptOutRow(Base):
    """A builder who unsubscribed from reminder digests."""

    __tablename__ = "digest_opt_outs"

    builder_id: Mapped[int] = mapped_column(
        ForeignKey("builders.id", ondelete="CASCADE"), primary_key=True
    )
    opted_out_at: Mapped[datetime] = mapped_column(UtcDateTime)

# Digests, auto-resolve and escalation look for tickets by status and how long
# they have had it.
Index("ix_tickets_status_changed", TicketRow.status, TicketRow.status_changed_at)
