"""One inbound delivery, the verdict on it, and the state of applying it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.attachments import AttachmentCheck
from gateway.model import ParsedMail


@dataclass(frozen=True)
class Delivery:
    """One message as the SMTP server received it."""

    raw: bytes
    mail_from: str
    rcpt_tos: tuple[str, ...]
    peer: str = ""
    # Set when support reprocesses a stored message instead of a new arrival.
    inbound_id: int | None = None
    # Set when support releases a held message: the new-ticket limit is skipped.
    release: bool = False


@dataclass(frozen=True)
class Verdict:
    """The outcome of one delivery and the SMTP reply that reports it."""

    code: int
    enhanced: str
    text: str
    outcome: str
    ticket_number: int | None = None

    @property
    def smtp_reply(self) -> str:
        return f"{self.code} {self.enhanced} {self.text}"


@dataclass(frozen=True)
class Step:
    """A delivery being applied inside one write transaction."""

    tx: Any
    mail: ParsedMail
    inbound_id: int
    dedupe_key: str
    now: datetime
    # The message's files, checked before the transaction began.
    checked: AttachmentCheck
