"""Frozen values that cross between adapters/, gateway/ and store/."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from gateway.paging import PageCursor


@dataclass(frozen=True)
class MailAttachment:
    """One file part of an inbound email, before any rule is applied."""

    filename: str
    declared_type: str
    data: bytes
    content_id: str | None = None
    is_inline: bool = False


@dataclass(frozen=True)
class ParsedMail:
    """The parts of an inbound email that the ticket rules read."""

    message_id: str | None
    from_address: str
    from_name: str
    subject: str
    text: str
    to_addresses: tuple[str, ...] = ()
    cc_addresses: tuple[str, ...] = ()
    reply_to: tuple[str, ...] = ()
    date: datetime | None = None
    in_reply_to: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    html: str | None = None
    attachments: tuple[MailAttachment, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    defects: tuple[str, ...] = ()
    size_bytes: int = 0
    # Why the MIME structure could not be read, set only when no text was read
    # from it. Then ``text`` may be raw MIME syntax rather than what the sender wrote.
    structure_problem: str | None = None

    def header(self, name: str) -> str | None:
        """Return the first value of a header, matched case-insensitively."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None


@dataclass(frozen=True)
class CheckedAttachment:
    """A file that passed the attachment rules, typed by its bytes."""

    filename: str
    content_type: str
    data: bytes
    sha256: str

    @property
    def size_bytes(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class AttachmentProblem:
    """One file that broke one attachment rule, in words a builder understands."""

    filename: str
    rule: str


@dataclass(frozen=True)
class Builder:
    """A builder account and its apps."""

    id: int
    email: str
    name: str
    timezone: str = "UTC"
    apps: tuple[App, ...] = ()


@dataclass(frozen=True)
class App:
    """An app a builder has built, by name and URI."""

    name: str
    uri: str


@dataclass(frozen=True)
class AttachmentInfo:
    """A stored attachment of a message, without its bytes."""

    id: int
    filename: str
    content_type: str
    size_bytes: int
    sha256: str


@dataclass(frozen=True)
class MessageView:
    """One entry of a ticket's conversation."""

    id: int
    visibility: str
    kind: str
    author: str
    body: str
    created_at: datetime
    attachments: tuple[AttachmentInfo, ...] = ()


@dataclass(frozen=True)
class TicketSummary:
    """A ticket as a list shows it."""

    id: int
    number: int
    title: str
    status: str
    status_label: str
    category: str
    severity: str
    priority: str
    app_name: str | None
    app_uri: str | None
    builder_email: str
    builder_name: str
    assignee: str | None
    created_at: datetime
    last_activity_at: datetime


@dataclass(frozen=True)
class TicketDetail:
    """A whole ticket with its conversation."""

    summary: TicketSummary
    description: str
    resolution_summary: str | None
    duplicate_of: int | None
    status_changed_at: datetime
    messages: tuple[MessageView, ...] = ()
    inbound: tuple[InboundView, ...] = ()


@dataclass(frozen=True)
class InboundView:
    """A stored inbound email and what became of it."""

    id: int
    received_at: datetime
    mail_from: str
    message_id: str | None
    size_bytes: int
    outcome: str
    detail: str
    ticket_number: int | None


@dataclass(frozen=True)
class TicketFilter:
    """Filters of a ticket list; None means no filter."""

    status: str | None = None
    category: str | None = None
    severity: str | None = None
    app: str | None = None
    builder: str | None = None


@dataclass(frozen=True)
class TicketPage:
    """One page of a filtered ticket list with the desk's counts.

    MATCHED is exact when MATCHED_EXACT is true; otherwise counting stopped at
    that many and more tickets match. PAGE is None for a page read by cursor.
    NEWER and OLDER are the cursors of the neighbouring pages, None at an end.
    """

    total: int
    open: int
    label_counts: dict[str, int]
    matched: int
    page: int | None
    per_page: int
    tickets: tuple[TicketSummary, ...] = field(default_factory=tuple)
    matched_exact: bool = True
    newer: PageCursor | None = None
    older: PageCursor | None = None


@dataclass(frozen=True)
class OutgoingEmail:
    """A rendered email waiting in the outbox."""

    id: int
    recipient: str
    sender: str
    data: bytes
    attempts: int


@dataclass(frozen=True)
class TicketState:
    """The fields of one ticket that rules and notices read, with its builder."""

    id: int
    number: int
    title: str
    status: str
    category: str
    severity: str
    priority: str
    assignee: str | None
    resolution_summary: str | None
    duplicate_of: int | None
    app_name: str | None
    builder: Builder


@dataclass(frozen=True)
class StagedRaw:
    """The raw bytes of a large message, already stored in slices under KEY."""

    key: str
    sha256: str
    size: int
