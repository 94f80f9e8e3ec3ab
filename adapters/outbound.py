"""Outbound email: compose replies to builders, deliver them to a Maildir or relay."""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.policy
import email.utils
import errno
import itertools
import logging
import os
import re
import secrets
import socket
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage
from email import quoprimime
from email.parser import BytesParser
from pathlib import Path
from typing import Protocol

import aiosmtplib

from gateway.config import OutboundConfig
from gateway.errors import ConfigError, DeliveryFailed
from gateway.model import CheckedAttachment

log = logging.getLogger(__name__)

# SMTP policy (CRLF line endings) with cte_type 7bit, so that every part uses 7bit,
# quoted-printable or base64 and the message never needs 8BITMIME or SMTPUTF8.
# refold_source="none" makes the generator write headers stored with set_raw exactly
# as given. The threading headers rely on that (see _message_id_field).
_POLICY = email.policy.SMTP.clone(cte_type="7bit", refold_source="none")

AUTO_SUBMITTED_VALUES = ("auto-replied", "auto-generated")
MAX_REFERENCES = 20

# RFC 5322 section 2.1.1 limits a line to 998 octets, excluding the CRLF.
_MAX_LINE_OCTETS = 998
# Keeps "In-Reply-To: <id>", the longest line that one id produces, within that limit.
_MAX_MESSAGE_ID_CHARS = _MAX_LINE_OCTETS - len("In-Reply-To: <>")
# Long References values are folded before this column, as RFC 5322 recommends.
_FOLD_COLUMN = 78

# Visible ASCII except angle brackets and parentheses, which would end the id or
# start a comment in a parser that reads the header.
_MESSAGE_ID_RE = re.compile(r"[!-'*-;=?-~]+")
_DOMAIN_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
# An RFC 5322 field-name is visible ASCII except the colon.
_FIELD_NAME_RE = re.compile(r"[!-9;-~]+")
_HEADER_LINE_RE = re.compile(rb"([!-9;-~]+):")

# Printable ASCII words with single spaces between them, which the email package
# writes unchanged in an unstructured header.
_PLAIN_TEXT_RE = re.compile(r"[!-~]+(?: [!-~]+)*")
# RFC 5322 atext words, which an address header shows without quotes.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_PHRASE_RE = re.compile(rf"{_ATEXT}(?: {_ATEXT})*")
# 45 bytes make 60 base64 characters, so "=?utf-8?b?...?=" stays within the 75
# characters that RFC 2047 allows an encoded-word.
_ENCODED_WORD_MAX_BYTES = 45
# Header names that the email package parses with a grammar of their own.
_STRUCTURED_HEADERS = frozenset(_POLICY.header_factory.registry)

# Headers that compose_email sets itself, so extra_headers must not repeat them.
# Precedence is reserved too, because replies are marked with Auto-Submitted
# (RFC 3834) and must not carry Precedence.
_RESERVED_HEADERS = frozenset(
    name.lower()
    for name in (
        "From",
        "To",
        "Cc",
        "Bcc",
        "Subject",
        "Date",
        "Message-ID",
        "In-Reply-To",
        "References",
        "Reply-To",
        "MIME-Version",
        "Auto-Submitted",
        "X-Auto-Response-Suppress",
        "X-Loop",
        "Precedence",
        "Content-Type",
        "Content-Transfer-Encoding",
        "Content-Disposition",
    )
)

# Layers of RFC 2047 encoding that _clean_header_text removes. More layers than this
# are only seen in crafted input, which is then rejected.
_MAX_DECODE_ROUNDS = 4

_SMTPS_PORT = 465
_MAX_REPLY_CHARS = 200

# Unicode category Cc (C0 controls, DEL, C1 controls) plus the line and paragraph
# separators, which str.splitlines() and some mail readers treat as line breaks.
_CONTROL_CLASS = r"[\x00-\x1f\x7f-\x9f\u2028\u2029]"
_CONTROL_CHAR_RE = re.compile(_CONTROL_CLASS)
_CONTROL_RUN_RE = re.compile(rf"\s*{_CONTROL_CLASS}+\s*")

_maildir_counter = itertools.count()


class Transport(Protocol):
    """Outbound transport interface: delivery of one message to one recipient."""

    async def deliver(self, sender: str, recipient: str, data: bytes) -> None:
        """Deliver DATA from SENDER to RECIPIENT or raise DeliveryFailed."""


def sanitize_header_value(value: str) -> str:
    """Return VALUE with line breaks and control characters replaced by spaces.

    Each run of C0 and C1 control characters (CR, LF and TAB included), DEL, U+2028
    and U+2029, together with the whitespace around it, becomes one space. Leading
    and trailing whitespace is removed. The result cannot end a header line by
    itself, but it may still contain an RFC 2047 encoded-word that decodes to CR or
    LF, which Python 3.11.7 can write as a real line break (CVE-2024-6923).
    compose_email decodes and sanitises such words before it sets a header.
    """
    return _CONTROL_RUN_RE.sub(" ", value).strip()


def make_message_id(domain: str) -> str:
    """Return a new unique Message-ID for DOMAIN, without angle brackets."""
    if not _DOMAIN_RE.fullmatch(domain):
        raise ValueError(
            f"invalid Message-ID domain {domain!r}; use an ASCII host name such as "
            "support.example.com (write internationalised domains in punycode)."
        )
    # Nanoseconds since the epoch plus 64 random bits make the id unique across
    # processes and hosts without any shared state.
    return f"sg.{time.time_ns():x}.{secrets.token_hex(8)}@{domain}"


def compose_email(
    *,
    sender: str,
    sender_name: str,
    recipient: str,
    recipient_name: str,
    subject: str,
    text: str,
    html: str | None,
    message_id: str,
    in_reply_to: str | None = None,
    references: Sequence[str] = (),
    reply_to: str | None = None,
    auto_submitted: str = "auto-replied",
    extra_headers: Mapping[str, str] | None = None,
    attachments: Sequence[CheckedAttachment] = (),
    date: datetime | None = None,
) -> bytes:
    """Build an automatic reply and return it as RFC 5322 bytes with CRLF endings.

    The body is text/plain, or multipart/alternative when HTML is given, wrapped in
    multipart/mixed when there are attachments. Message ids may be given with or
    without angle brackets. An invalid In-Reply-To or References id is left out
    with a warning, because it comes from the builder's mail. Raises ValueError for
    an invalid address, Message-ID, date, Auto-Submitted value or extra header, and
    when the generated header block is not exactly the expected set of headers.
    """
    if auto_submitted not in AUTO_SUBMITTED_VALUES:
        raise ValueError(
            f"invalid auto_submitted {auto_submitted!r}; use one of "
            f"{', '.join(AUTO_SUBMITTED_VALUES)}."
        )
    if date is None:
        date = datetime.now(timezone.utc)
    elif date.tzinfo is None:
        raise ValueError(
            f"date {date.isoformat()} has no time zone; pass an aware datetime."
        )

    sender_address = _require_address(sender, "sender")
    message_id = _require_message_id(message_id)
    parent_id = _optional_message_id(in_reply_to, "In-Reply-To")
    thread_ids = _thread_references(references)
    extra = dict(extra_headers or {})
    for name in extra:
        _check_extra_header_name(name)

    reply = _Reply(
        sender_address, sender_name, recipient, recipient_name, subject, text, html,
        message_id, parent_id, thread_ids, reply_to, auto_submitted, extra, date,
    )
    if not attachments:
        data = _compose_direct(reply)
        if data is not None:
            return data
    return _compose_general(reply, attachments)


@dataclass(frozen=True)
class _Reply:
    """The checked fields of a reply that compose_email writes."""

    sender: str
    sender_name: str
    recipient: str
    recipient_name: str
    subject: str
    text: str
    html: str | None
    message_id: str
    parent_id: str | None
    thread_ids: list[str]
    reply_to: str | None
    auto_submitted: str
    extra: Mapping[str, str]
    date: datetime


def _compose_general(reply: _Reply, attachments: Sequence[CheckedAttachment]) -> bytes:
    """Build the reply with EmailMessage, which encodes and folds the text headers and parts."""
    message = EmailMessage(policy=_POLICY)
    _set_address_header(message, "From", reply.sender, reply.sender_name)
    _set_address_header(message, "To", reply.recipient, reply.recipient_name)
    _set_text_header(message, "Subject", reply.subject)
    # Values that are plain ASCII by construction are stored raw: the email
    # package then neither parses them into header objects nor refolds them.
    message.set_raw("Date", email.utils.format_datetime(reply.date))
    message.set_raw("Message-ID", _message_id_field("Message-ID", [reply.message_id]))
    if reply.parent_id is not None:
        message.set_raw("In-Reply-To", _message_id_field("In-Reply-To", [reply.parent_id]))
    if reply.thread_ids:
        message.set_raw("References", _message_id_field("References", reply.thread_ids))
    if reply.reply_to is not None:
        _set_address_header(message, "Reply-To", reply.reply_to, "")
    message.set_raw("Auto-Submitted", reply.auto_submitted)
    # Exchange and Outlook send no out-of-office or other automatic reply to a
    # message with this header.
    message.set_raw("X-Auto-Response-Suppress", "All")
    message.set_raw("X-Loop", reply.sender)
    for name, value in reply.extra.items():
        _set_text_header(message, name, value)

    _set_body(message, reply.text, reply.html, attachments)
    data = message.as_bytes(policy=_POLICY)
    # The message object's own header list is the expectation, because an injected
    # header only appears once the bytes are generated.
    expected = Counter(name.lower() for name in message.keys())
    _verify_header_block(data, expected)
    return data


class MaildirTransport:
    """Delivery into a local Maildir, for development or for a local MTA to collect."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"MaildirTransport({str(self.path)!r})"

    async def deliver(self, sender: str, recipient: str, data: bytes) -> None:
        """Write DATA as one new message file, or raise a temporary DeliveryFailed.

        The bytes are stored unchanged, CRLF line endings included. The file is
        written in tmp/, flushed to disk, then moved into new/, so new/ never
        contains a partial file.
        """
        try:
            name = await asyncio.to_thread(_write_maildir_file, self.path, data)
        except OSError as exc:
            raise DeliveryFailed(
                f"could not write to Maildir {self.path}: {exc.strerror or exc}; "
                "check that the directory is writable and the disk is not full.",
                permanent=False,
            ) from exc
        log.info(
            "stored %s for %s in Maildir %s as %s (%d bytes)",
            _message_id_of(data),
            _domain_of(recipient),
            self.path,
            name,
            len(data),
        )


class RelayTransport:
    """Delivery through an SMTP relay with aiosmtplib.

    Port 465 uses implicit TLS. Other ports use STARTTLS when starttls is true and
    plain SMTP otherwise. Certificates are verified. The relay's reply decides the
    outcome: 5xx raises a permanent DeliveryFailed, and 4xx, timeouts and
    connection errors raise a temporary one. timeout_seconds limits each network
    operation (connect, each command, the data transfer), not the whole delivery.
    When local_hostname is None, aiosmtplib sends socket.getfqdn() in EHLO.
    """

    def __init__(
        self,
        host: str,
        port: int,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = True,
        timeout_seconds: float = 30.0,
        *,
        local_hostname: str | None = None,
    ) -> None:
        username = username or None
        password = password or None
        if (username is None) != (password is None):
            raise ValueError(
                f"relay {host}:{port} has a username or a password but not both; "
                "set both for AUTH, or neither."
            )
        self.host = host
        self.port = port
        self.username = username
        self._password = password
        self.starttls = starttls
        self.timeout_seconds = timeout_seconds
        self.local_hostname = local_hostname

    def __repr__(self) -> str:
        password = "'***'" if self._password else None
        return (
            f"RelayTransport(host={self.host!r}, port={self.port}, "
            f"username={self.username!r}, password={password}, "
            f"starttls={self.starttls}, timeout_seconds={self.timeout_seconds})"
        )

    async def deliver(self, sender: str, recipient: str, data: bytes) -> None:
        """Send DATA through the relay, or raise DeliveryFailed."""
        _check_envelope_address(sender, "sender")
        _check_envelope_address(recipient, "recipient")
        implicit_tls = self.port == _SMTPS_PORT
        client = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            username=self.username,
            password=self._password,
            local_hostname=self.local_hostname,
            timeout=self.timeout_seconds,
            use_tls=implicit_tls,
            start_tls=self.starttls and not implicit_tls,
        )
        started = time.monotonic()
        try:
            async with client:
                await client.sendmail(sender, [recipient], data)
        except (aiosmtplib.SMTPException, OSError, ValueError) as exc:
            raise self._delivery_failed(exc) from exc

        log.info(
            "sent %s for %s through relay %s:%d (%d bytes, %.2f s)",
            _message_id_of(data),
            _domain_of(recipient),
            self.host,
            self.port,
            len(data),
            time.monotonic() - started,
        )

    def _delivery_failed(
        self, exc: aiosmtplib.SMTPException | OSError | ValueError
    ) -> DeliveryFailed:
        """Return the DeliveryFailed for EXC, naming host:port and any reply code."""
        relay = f"relay {self.host}:{self.port}"
        if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
            exc = exc.recipients[0]
        if isinstance(exc, aiosmtplib.SMTPResponseException):
            reply = self._redact(_shorten_reply(exc.message))
            if 500 <= exc.code <= 599:
                return DeliveryFailed(
                    f"{relay} rejected the message with {exc.code} {reply}; the "
                    "rejection is permanent, so fix what the reply names first.",
                    permanent=True,
                )
            return DeliveryFailed(
                f"{relay} deferred the message with {exc.code} {reply}; it will be "
                "retried.",
                permanent=False,
            )
        if isinstance(exc, (aiosmtplib.SMTPTimeoutError, TimeoutError)):
            return DeliveryFailed(
                f"{relay} timed out after {self.timeout_seconds} s; the message will "
                "be retried.",
                permanent=False,
            )
        if isinstance(exc, (aiosmtplib.SMTPException, OSError)):
            detail = self._redact(_shorten_reply(str(exc) or type(exc).__name__))
            return DeliveryFailed(
                f"could not deliver through {relay}: {detail}; check that the relay "
                "is reachable and that the TLS and AUTH settings match it.",
                permanent=False,
            )
        # aiosmtplib raises ValueError for an option or address it cannot put on a
        # command line, so another attempt would fail the same way.
        return DeliveryFailed(f"{relay} was not contacted: {exc}", permanent=True)

    def _redact(self, text: str) -> str:
        """Remove the password and its AUTH PLAIN and LOGIN encodings from TEXT."""
        if not self._password:
            return text
        username = self.username or ""
        secrets_in_text = (
            self._password,
            base64.b64encode(self._password.encode()).decode(),
            base64.b64encode(f"\0{username}\0{self._password}".encode()).decode(),
        )
        for secret in secrets_in_text:
            text = text.replace(secret, "***")
        return text


def transport_from_config(config: OutboundConfig) -> MaildirTransport | RelayTransport:
    """Return the relay transport when relay_host is set, else the Maildir transport."""
    if config.relay_host:
        if config.relay_username and not config.relay_password:
            raise ConfigError(
                "outbound.relay_username is set but outbound.relay_password is "
                "empty; set it in the config file or export "
                "GATEWAY_OUTBOUND_RELAY_PASSWORD."
            )
        if config.relay_password and not config.relay_username:
            raise ConfigError(
                "outbound.relay_password is set but outbound.relay_username is "
                "empty; set the username too, or remove the password."
            )
        return RelayTransport(
            config.relay_host,
            config.relay_port,
            config.relay_username,
            config.relay_password,
            config.relay_starttls,
            config.relay_timeout_seconds,
            # socket.getfqdn(), aiosmtplib's default, may wait on a DNS lookup.
            local_hostname=config.helo_hostname or socket.gethostname(),
        )
    return MaildirTransport(config.maildir)


def _has_control_chars(value: str) -> bool:
    return _CONTROL_CHAR_RE.search(value) is not None


def _set_text_header(message: EmailMessage, name: str, value: str) -> None:
    message[name] = _clean_header_text(value, name)
    _check_stored_text(name, value, str(message[name]))


def _set_address_header(
    message: EmailMessage, name: str, address: str, display_name: str
) -> None:
    message.set_raw(name, _address_value(name, address, display_name))


def _clean_header_text(value: str, label: str) -> str:
    """Decode the encoded-words in VALUE as the email package would, then sanitise.

    Python 3.11.7 decodes RFC 2047 encoded-words in a value that is set on a message,
    and can write a decoded CR or LF as a real line break (CVE-2024-6923). Decoding
    here first lets sanitize_header_value remove those. Each round removes one layer
    of encoding.
    """
    clean = sanitize_header_value(value)
    # Only an encoded-word can decode to something else, and each starts with "=?".
    if "=?" not in clean:
        return clean
    for _ in range(_MAX_DECODE_ROUNDS):
        decoded = str(_POLICY.header_factory("Subject", clean))
        if decoded == clean:
            return clean
        clean = sanitize_header_value(decoded)
    raise ValueError(
        f"{label} {value[:80]!r} is nested in more than {_MAX_DECODE_ROUNDS} layers "
        "of RFC 2047 encoding; send it as plain text."
    )


def _require_address(address: str, role: str) -> str:
    """Return ADDRESS if it is one plain ASCII addr-spec, else raise ValueError."""
    # NOTE: internationalised addresses (SMTPUTF8) are rejected, because messages
    # are generated for relays without SMTPUTF8 support.
    if not address.isascii() or _has_control_chars(address) or " " in address:
        raise ValueError(
            f"invalid {role} address {address!r}; write a plain ASCII address such "
            "as support@example.com."
        )
    try:
        parsed = Address(addr_spec=address)
    except (ValueError, IndexError, HeaderParseError) as exc:
        raise ValueError(
            f"invalid {role} address {address!r} ({exc}); write a plain address "
            "such as support@example.com."
        ) from exc
    # The parser skips comments and quotes, so an address it rewrote is not plain.
    if not parsed.username or not parsed.domain or parsed.addr_spec != address:
        raise ValueError(
            f"invalid {role} address {address!r}; write a plain address such as "
            "support@example.com, without comments, quotes or angle brackets."
        )
    return address


def _normalize_message_id(value: str) -> str | None:
    """Return VALUE without whitespace and angle brackets, or None if invalid."""
    candidate = value.strip()
    if candidate.startswith("<") and candidate.endswith(">"):
        candidate = candidate[1:-1].strip()
    if len(candidate) > _MAX_MESSAGE_ID_CHARS:
        return None
    if not _MESSAGE_ID_RE.fullmatch(candidate):
        return None
    return candidate


def _require_message_id(value: str) -> str:
    normalized = _normalize_message_id(value)
    if normalized is None:
        raise ValueError(
            f"invalid Message-ID {value[:100]!r}; create one with make_message_id()."
        )
    return normalized


def _optional_message_id(value: str | None, name: str) -> str | None:
    if value is None or not value.strip():
        return None
    normalized = _normalize_message_id(value)
    if normalized is None:
        log.warning("left out invalid %s id (%d chars)", name, len(value))
    return normalized


def _thread_references(references: Sequence[str]) -> list[str]:
    """Return the valid, distinct ids of REFERENCES, keeping the last MAX_REFERENCES."""
    ids: list[str] = []
    for value in references:
        normalized = _optional_message_id(value, "References")
        if normalized is not None and normalized not in ids:
            ids.append(normalized)
    return ids[-MAX_REFERENCES:]


def _message_id_field(name: str, ids: list[str]) -> str:
    """Return the value of header NAME holding angle-bracketed IDS, folded between ids.

    Python 3.11's folder turns an id that does not fit in 78 columns into RFC 2047
    encoded-words, which breaks threading. The value is therefore folded here and
    set with set_raw, which refold_source="none" writes as given.
    """
    lines: list[list[str]] = [[]]
    column = len(name) + 1
    for message_id in ids:
        token = f"<{message_id}>"
        if lines[-1] and column + 1 + len(token) > _FOLD_COLUMN:
            lines.append([])
            column = 0
        lines[-1].append(token)
        column += 1 + len(token)
    return "\r\n ".join(" ".join(line) for line in lines)


def _check_extra_header_name(name: str) -> None:
    if not _FIELD_NAME_RE.fullmatch(name):
        raise ValueError(
            f"invalid header name {name!r}; use visible ASCII without a colon, such "
            "as X-Ticket-Number."
        )
    if name.lower() in _RESERVED_HEADERS:
        raise ValueError(
            f"extra header {name} is reserved because compose_email sets or forbids "
            "it; pass the value through the matching argument instead."
        )


def _set_body(
    message: EmailMessage,
    text: str,
    html: str | None,
    attachments: Sequence[CheckedAttachment],
) -> None:
    """Add the text, HTML and attachment parts to MESSAGE.

    The policy picks each transfer encoding: 7bit for short ASCII lines, else
    quoted-printable or base64.
    """
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
    for attachment in attachments:
        maintype, subtype = _split_content_type(attachment.content_type)
        message.add_attachment(
            attachment.data,
            maintype=maintype,
            subtype=subtype,
            filename=sanitize_header_value(attachment.filename) or "attachment",
        )

    # EmailMessage adds MIME-Version to each part it creates, but RFC 2045 requires
    # it only at the top level.
    for part in message.walk():
        if part is not message:
            del part["MIME-Version"]


def _compose_direct(reply: _Reply) -> bytes | None:
    """Write a reply without attachments, or return None when it needs EmailMessage.

    Building a whole EmailMessage costs more than a millisecond per reply, mostly
    in parsing and refolding header values that are already plain. This writes
    the same bytes as _compose_general (the MIME boundary aside): addresses as
    _address_value writes them, plain short text as it is, any other text
    folded by the email package header by header. An extra header with a name
    the email package parses by its own grammar (Sender, say) returns None.
    """
    if any(name.lower() in _STRUCTURED_HEADERS for name in reply.extra):
        return None
    lines = [
        _address_line("From", reply.sender, reply.sender_name),
        _address_line("To", reply.recipient, reply.recipient_name),
        _text_line("Subject", reply.subject),
        f"Date: {email.utils.format_datetime(reply.date)}\r\n",
        f"Message-ID: {_message_id_field('Message-ID', [reply.message_id])}\r\n",
    ]
    names = ["from", "to", "subject", "date", "message-id"]
    if reply.parent_id is not None:
        lines.append(f"In-Reply-To: {_message_id_field('In-Reply-To', [reply.parent_id])}\r\n")
        names.append("in-reply-to")
    if reply.thread_ids:
        lines.append(f"References: {_message_id_field('References', reply.thread_ids)}\r\n")
        names.append("references")
    if reply.reply_to is not None:
        lines.append(_address_line("Reply-To", reply.reply_to, ""))
        names.append("reply-to")
    lines.append(f"Auto-Submitted: {reply.auto_submitted}\r\n")
    lines.append("X-Auto-Response-Suppress: All\r\n")
    lines.append(f"X-Loop: {reply.sender}\r\n")
    names.extend(["auto-submitted", "x-auto-response-suppress", "x-loop"])
    for name, value in reply.extra.items():
        lines.append(_text_line(name, value))
        names.append(name.lower())

    text_cte, text_payload = _encode_text_part(reply.text)
    if reply.html is None:
        # The email package writes MIME-Version last in a single-part message.
        lines.append('Content-Type: text/plain; charset="utf-8"\r\n')
        lines.append(f"Content-Transfer-Encoding: {text_cte}\r\nMIME-Version: 1.0\r\n")
        names.extend(["content-type", "content-transfer-encoding", "mime-version"])
        body = text_payload
    else:
        html_cte, html_payload = _encode_text_part(reply.html)
        boundary = _new_boundary(text_payload, html_payload)
        lines.append(f'MIME-Version: 1.0\r\nContent-Type: multipart/alternative;\r\n'
                     f' boundary="{boundary}"\r\n')
        names.extend(["mime-version", "content-type"])
        body = (
            f"--{boundary}\r\n"
            f'Content-Type: text/plain; charset="utf-8"\r\n'
            f"Content-Transfer-Encoding: {text_cte}\r\n\r\n{text_payload}\r\n"
            f"--{boundary}\r\n"
            f'Content-Type: text/html; charset="utf-8"\r\n'
            f"Content-Transfer-Encoding: {html_cte}\r\n\r\n{html_payload}\r\n"
            f"--{boundary}--\r\n"
        )
    data = f"{''.join(lines)}\r\n{body}".encode("ascii")
    _verify_header_block(data, Counter(names))
    return data


def _address_line(name: str, address: str, display_name: str) -> str:
    """Return the header line NAME for ADDRESS and DISPLAY_NAME, with its CRLF."""
    return f"{name}: {_address_value(name, address, display_name)}\r\n"


def _address_value(name: str, address: str, display_name: str) -> str:
    """Return the value of address header NAME, folded where it is long.

    Python 3.11's folder drops the quotes around a display name that it has to
    fold, so a long name with a comma or an @ turned into extra addresses or a
    group. This writes the value itself: atext words as they are, other ASCII
    names that fit on the line as a quoted string, anything else as RFC 2047
    encoded-words, which contain no character that an address parser splits on.
    """
    addr_spec = _require_address(address, name)
    clean = _clean_header_text(display_name, f"{name} display name")
    if not clean:
        return addr_spec
    words = clean.split(" ")
    # A word longer than a line cannot be folded, but encoded-words split it.
    if (
        "=?" not in clean
        and _PLAIN_PHRASE_RE.fullmatch(clean)
        and max(len(word) for word in words) <= _FOLD_COLUMN - len(name) - 2
    ):
        return _fold_words(name, [*words, f"<{addr_spec}>"])
    if "=?" not in clean and clean.isascii() and clean.isprintable():
        quoted = clean.replace("\\", "\\\\").replace('"', '\\"')
        value = f'"{quoted}" <{addr_spec}>'
        if len(name) + 2 + len(value) <= _FOLD_COLUMN:
            return value
    return _fold_words(name, [*_encoded_words(clean), f"<{addr_spec}>"])


def _encoded_words(text: str) -> list[str]:
    """Return TEXT as RFC 2047 base64 encoded-words of at most 75 characters each.

    A word never splits a character, as RFC 2047 section 5 requires.
    """
    words: list[str] = []
    chunk = b""
    for character in text:
        encoded = character.encode("utf-8")
        if len(chunk) + len(encoded) > _ENCODED_WORD_MAX_BYTES:
            words.append(chunk)
            chunk = b""
        chunk += encoded
    words.append(chunk)
    return [f"=?utf-8?b?{base64.b64encode(word).decode('ascii')}?=" for word in words]


def _fold_words(name: str, words: list[str]) -> str:
    """Join WORDS with spaces, starting a new line before a word that passes column 78."""
    lines = [words[0]]
    column = len(name) + 2 + len(words[0])
    for word in words[1:]:
        if column + 1 + len(word) > _FOLD_COLUMN:
            lines.append(word)
            column = 1 + len(word)
        else:
            lines[-1] += f" {word}"
            column += 1 + len(word)
    return "\r\n ".join(lines)


def _text_line(name: str, value: str) -> str:
    """Return unstructured header NAME with VALUE sanitised, as the email package writes it."""
    clean = _clean_header_text(value, name)
    if (
        "=?" not in clean
        and _PLAIN_TEXT_RE.fullmatch(clean)
        and len(name) + 2 + len(clean) <= _FOLD_COLUMN
    ):
        return f"{name}: {clean}\r\n"
    header = _POLICY.header_store_parse(name, clean)[1]
    _check_stored_text(name, value, str(header))
    return header.fold(policy=_POLICY)


def _check_stored_text(name: str, value: str, stored: str) -> None:
    # A structured header (an extra header named Sender, say) parses the value
    # again with its own rules, so check what it stored as well.
    if _has_control_chars(stored):
        raise ValueError(
            f"{name} value {value[:80]!r} decodes to a control character; send it "
            "as plain text."
        )


def _encode_text_part(content: str) -> tuple[str, str]:
    """Return the transfer encoding and CRLF-ended payload of CONTENT in UTF-8.

    The choice follows the email package's: 7bit for ASCII lines of at most 78
    octets, else quoted-printable or base64, whichever is shorter on the first
    ten lines.
    """
    lines = content.encode("utf-8").splitlines()
    body = b"\n".join(lines) + b"\n"
    if max((len(line) for line in lines), default=0) <= _FOLD_COLUMN and body.isascii():
        return "7bit", body.decode("ascii").replace("\n", "\r\n")
    sniff = b"\r\n".join(lines[:10]) + b"\r\n"
    sniff_qp = quoprimime.body_encode(sniff.decode("latin-1"), _FOLD_COLUMN)
    if len(sniff_qp) > len(binascii.b2a_base64(sniff)):
        encoded = base64.encodebytes(b"\r\n".join(lines) + b"\r\n").decode("ascii")
        return "base64", encoded.replace("\n", "\r\n")
    if len(lines) > 10:
        sniff_qp = quoprimime.body_encode(body.decode("latin-1"), _FOLD_COLUMN)
    return "quoted-printable", sniff_qp.replace("\n", "\r\n")


def _new_boundary(*payloads: str) -> str:
    """Return a MIME boundary in the email package's form that appears in none of PAYLOADS."""
    while True:
        boundary = f"{'=' * 15}{secrets.randbelow(10 ** 19):019d}=="
        if not any(f"--{boundary}" in payload for payload in payloads):
            return boundary


def _split_content_type(content_type: str) -> tuple[str, str]:
    maintype, _, subtype = content_type.strip().lower().partition("/")
    if _FIELD_NAME_RE.fullmatch(maintype) and _FIELD_NAME_RE.fullmatch(subtype):
        return maintype, subtype
    return "application", "octet-stream"


def _verify_header_block(data: bytes, expected: Counter[str]) -> None:
    """Raise ValueError unless DATA's top-level headers are exactly EXPECTED.

    This is the check that stops CVE-2024-6923 and similar header injection, so it
    reads the generated bytes twice: once line by line and once with the standard
    parser, in case either one splits headers differently.
    """
    head, separator, _ = data.partition(b"\r\n\r\n")
    if not separator:
        raise ValueError("composed message has no blank line after its headers")

    found: Counter[str] = Counter()
    for number, line in enumerate(head.split(b"\r\n"), start=1):
        if len(line) > _MAX_LINE_OCTETS:
            raise ValueError(f"header line {number} is longer than 998 octets")
        if b"\r" in line or b"\n" in line or not line.isascii():
            raise ValueError(
                f"header line {number} contains a bare CR, LF or 8-bit byte"
            )
        if line[:1] in (b" ", b"\t") and number > 1:
            continue
        match = _HEADER_LINE_RE.match(line)
        if match is None:
            raise ValueError(
                f"header line {number} is neither a field nor a continuation"
            )
        found[match.group(1).decode("ascii").lower()] += 1
    if found != expected:
        raise ValueError(_header_mismatch(found, expected))

    # compat32 returns each value as written, without building header objects, and
    # splits the block into fields exactly as the default policy does.
    parsed = BytesParser(policy=email.policy.compat32).parsebytes(
        head + b"\r\n\r\n", headersonly=True
    )
    reparsed = Counter(name.lower() for name in parsed.keys())
    if reparsed != expected:
        raise ValueError(_header_mismatch(reparsed, expected))
    for name, raw_value in parsed.items():
        value = "".join(str(raw_value).splitlines())
        # Decoding can add characters only through encoded-words, which start
        # with "=?"; decode those values as a reader with the default policy would.
        if "=?" in value:
            value = str(email.policy.default.header_factory(name, value))
        if _has_control_chars(value):
            raise ValueError(f"decoded {name} header contains a control character")


def _header_mismatch(found: Counter[str], expected: Counter[str]) -> str:
    extra = sorted((found - expected).elements())
    missing = sorted((expected - found).elements())
    return (
        "composed message has unexpected headers "
        f"(extra: {', '.join(extra) or 'none'}, "
        f"missing: {', '.join(missing) or 'none'})"
    )


def _write_maildir_file(maildir: Path, data: bytes) -> str:
    """Write DATA into MAILDIR/new through tmp/ and return the file name."""
    for folder in ("tmp", "new", "cur"):
        (maildir / folder).mkdir(mode=0o700, parents=True, exist_ok=True)

    name = _maildir_file_name()
    tmp_path = maildir / "tmp" / name
    new_path = maildir / "new" / name
    fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise

    try:
        _link_or_rename(tmp_path, new_path)
    except OSError:
        tmp_path.unlink(missing_ok=True)
        raise
    # The new directory entry is durable only once the directory itself is synced.
    _fsync_directory(maildir / "new")
    return name


def _maildir_file_name() -> str:
    """Return a Maildir file name that is unique across processes and hosts."""
    now_ns = time.time_ns()
    seconds, micros = divmod(now_ns // 1000, 1_000_000)
    # The host part must not contain "/", which separates paths, or ":", which starts
    # the info suffix of files in cur/.
    host = socket.gethostname().replace("/", r"\057").replace(":", r"\072")
    # Zero-padded microseconds keep names of one process in delivery order when
    # sorted as text, which mail readers and tests rely on.
    return (
        f"{seconds}.M{micros:06d}P{os.getpid()}Q{next(_maildir_counter)}"
        f"R{secrets.token_hex(8)}.{host}"
    )


def _link_or_rename(source: Path, target: Path) -> None:
    """Move SOURCE to TARGET without ever replacing an existing TARGET."""
    try:
        os.link(source, target)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        # Some file systems have no hard links. The name is unique, so a rename
        # cannot replace another message in practice.
        os.rename(source, target)
        return
    os.unlink(source)


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_envelope_address(address: str, role: str) -> None:
    try:
        _require_address(address, f"envelope {role}")
    except ValueError as exc:
        raise DeliveryFailed(str(exc), permanent=True) from exc


def _message_id_of(data: bytes) -> str:
    """Return the Message-ID of DATA for log lines, or "(no Message-ID)"."""
    head = data.partition(b"\r\n\r\n")[0]
    match = re.search(rb"^Message-ID:[ \t]*(<[!-~]{1,200}>)", head, re.I | re.M)
    return match.group(1).decode("ascii") if match else "(no Message-ID)"


def _domain_of(address: str) -> str:
    return address.rpartition("@")[2] or "(no domain)"


def _shorten_reply(text: str) -> str:
    clean = sanitize_header_value(text)
    if len(clean) > _MAX_REPLY_CHARS:
        return clean[:_MAX_REPLY_CHARS] + "..."
    return clean
