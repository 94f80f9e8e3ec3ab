"""Parse inbound email bytes into a ParsedMail, recording defects instead of raising.

The standard library's parser (``policy.default``) decides the MIME structure: which
parts are the body, which are files, and what a forwarded message contains. mail-parser
4.8.0 parses the From, To, Cc and Reply-To headers, because its address recovery
rejects ambiguous mailboxes such as ``alice@example.org)<bob@example.org>`` that the
standard library of Python 3.11.7 reads as ``alice@example.org``. Its Date parser is
the fallback when the standard library cannot read the date. mail-parser is not
given the body, because it merges the body of an attached ``message/rfc822`` into the
text, lists that message's files at the top level, drops raw 8-bit header bytes and
raises on some malformed messages.
"""

from __future__ import annotations

import binascii
import codecs
import functools
import html as html_lib
import logging
import mimetypes
import re
import unicodedata
import urllib.parse
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email import errors as email_errors
from email.message import Message
from email.parser import BytesParser
from email.policy import EmailPolicy
from email.utils import getaddresses, parsedate_to_datetime

import mailparser
from inscriptis import get_text
from inscriptis.model.config import ParserConfig
from tnefparse import TNEF

from adapters.mime_skeleton import parse_skeleton
from gateway.model import MailAttachment, ParsedMail

log = logging.getLogger(__name__)

FORWARDED_MARKER = "---------- Forwarded message ----------"
MAX_FILENAME_CHARS = 200
# MIME levels read below the top-level message. Deeper parts are ignored.
MAX_NESTING_DEPTH = 50
# Python 3.11's structured header parser takes quadratic time. A 137 KB folded
# Content-Type header took 2 s to parse (Python 3.11.7 on a 2-core machine). Real
# MIME headers are far shorter than this cap.
MAX_STRUCTURED_HEADER_CHARS = 16 * 1024
MAX_DEFECTS = 100
# Messages of this size or more are parsed with their long base64 runs cut out and
# decoded one part at a time (adapters/mime_skeleton.py). The result is the same
# as from FeedParser, for a fraction of its time and memory.
CUT_MIN_MESSAGE_BYTES = 256 * 1024
CUT_MIN_RUN_BYTES = 16 * 1024

_FORWARDED_TYPES = frozenset({"message/rfc822", "message/global"})
_TNEF_TYPES = frozenset({"application/ms-tnef", "application/vnd.ms-tnef"})
_BODY_TYPES = frozenset({"text/plain", "text/html"})
_ADDRESS_HEADERS = frozenset({"from", "to", "cc", "reply-to"})
# Defects that the standard parser records on a multipart whose parts it could not
# find, because the boundary parameter is missing or never appears in the body.
# CloseBoundaryNotFoundDefect is not among them, because the parts before the
# missing end are still read.
_UNSPLIT_DEFECTS = (
    email_errors.NoBoundaryInMultipartDefect,
    email_errors.StartBoundaryNotFoundDefect,
    email_errors.MultipartInvariantViolationDefect,
)

# Senders label text with a charset but often use a superset of it. The WHATWG
# Encoding Standard (encodings.json) maps these labels to the same supersets.
_CHARSET_SUPERSETS = {
    "iso-8859-1": "cp1252",
    "iso8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "iso-8859-9": "cp1254",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "euc-kr": "cp949",
    "ks_c_5601-1987": "cp949",
    "shift_jis": "cp932",
    "tis-620": "cp874",
}
# Python codecs that are not character sets but would accept a sender's label.
_NON_CHARSET_CODECS = ("escape", "idna", "punycode")

_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_MEDIA_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+")
_CID_REFERENCE = re.compile(r"cid:([^\"'\s<>)]+)", re.IGNORECASE)
_BRACKETED_ID = re.compile(r"<([^<>]*)>")
_COMMENT = re.compile(r"\([^()]*\)")
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_HTML_TO_TEXT = ParserConfig(display_links=True)
# The built-in table only, so that fallback names do not depend on /etc/mime.types.
_MIME_TYPES = mimetypes.MimeTypes()


class _BoundedPolicy(EmailPolicy):
    """policy.default, but header values are cut before parsing and parse errors kept.

    The cut bounds the time spent on a hostile Content-Type or Content-Disposition
    header, which the parser itself reads while it splits the parts. A value that
    the standard library fails to parse, such as an RFC 2231 charset containing a
    NUL, is returned as plain text, which the methods ``Message`` shares with the
    compat32 policy still accept.
    """

    def header_fetch_parse(self, name, value):
        if isinstance(value, str) and not hasattr(value, "name"):
            value = value[:MAX_STRUCTURED_HEADER_CHARS]
        try:
            return super().header_fetch_parse(name, value)
        except Exception:
            return str(value)


_POLICY = _BoundedPolicy()


def parse_mail(raw: bytes) -> ParsedMail:
    """Parse raw email bytes into a ParsedMail without raising for any bytes.

    Broken input and failures inside either parser become entries of ``defects``.
    When the MIME structure cannot be parsed at all, for example because parts are
    nested thousands of levels deep, the result carries the headers and no body.
    A ``str`` argument raises TypeError, because its bytes are unknown.
    """
    if not isinstance(raw, bytes):
        raw = bytes(raw)
    cut = CUT_MIN_RUN_BYTES if len(raw) >= CUT_MIN_MESSAGE_BYTES else None
    return _parse_mail(raw, cut_min_run_bytes=cut)


def _parse_mail(raw: bytes, *, cut_min_run_bytes: int | None) -> ParsedMail:
    """Parse RAW; unless CUT_MIN_RUN_BYTES is None, base64 runs that long are cut first."""
    defects = _Defects()
    try:
        return _parse(raw, defects, cut_min_run_bytes)
    except Exception as exc:
        # The steps below catch what they expect, so this is a bug in this module
        # or in a library. The message is still stored with its defects.
        log.exception("parsing a message of %d bytes failed", len(raw))
        problem = f"the message could not be parsed ({type(exc).__name__})"
        defects.add(problem)
        return _empty_mail(defects, len(raw), problem)


def _parse(
    raw: bytes, defects: _Defects, cut_min_run_bytes: int | None
) -> ParsedMail:
    try:
        message = None
        if cut_min_run_bytes is not None:
            message = parse_skeleton(raw, _POLICY, cut_min_run_bytes)
        if message is None:
            message = BytesParser(policy=_POLICY).parsebytes(raw)
    except RecursionError:
        problem = "MIME parts are nested too deeply to parse; body and files not read"
        defects.add(problem)
        return _parse_header_block(raw, defects, problem)
    except Exception as exc:
        log.warning(
            "standard mail parser failed on %d bytes (%s); reading headers only",
            len(raw),
            exc,
        )
        problem = f"the MIME structure could not be parsed ({type(exc).__name__})"
        defects.add(problem)
        return _parse_header_block(raw, defects, problem)

    try:
        content = _ContentReader(defects, nested=False).read(message)
    except Exception as exc:
        log.warning("reading the body of %d bytes failed (%s)", len(raw), exc)
        problem = f"the body could not be read ({type(exc).__name__})"
        defects.add(problem)
        content = _Content(structure_problem=problem)
    return _assemble(message, content, defects, len(raw))


def _parse_header_block(raw: bytes, defects: _Defects, problem: str) -> ParsedMail:
    try:
        message = BytesParser(policy=_POLICY).parsebytes(raw, headersonly=True)
    except Exception as exc:
        log.warning("reading the header block failed (%s)", exc)
        defects.add(f"the header block could not be parsed ({type(exc).__name__})")
        return _empty_mail(defects, len(raw), problem)
    return _assemble(message, _Content(structure_problem=problem), defects, len(raw))


def _empty_mail(defects: _Defects, size_bytes: int, problem: str) -> ParsedMail:
    return ParsedMail(
        message_id=None,
        from_address="",
        from_name="",
        subject="",
        text="",
        defects=defects.as_tuple(),
        size_bytes=size_bytes,
        structure_problem=problem,
    )


def _assemble(
    message: Message, content: _Content, defects: _Defects, size_bytes: int
) -> ParsedMail:
    headers: list[tuple[str, str]] = []
    try:
        headers = _read_headers(message, content.charset)
    except Exception as exc:
        log.warning("reading the headers failed (%s)", exc)
        defects.add(f"the headers could not be read ({type(exc).__name__})")
    addresses = _read_addresses(headers, defects)
    message_id = _first_header(headers, "message-id")
    subject = _first_header(headers, "subject") or ""
    return ParsedMail(
        message_id=_message_id(message_id) if message_id else None,
        from_address=addresses.from_address,
        from_name=addresses.from_name,
        subject=_single_line(_decode_words(subject, content.charset)),
        text=_without_nul(content.text),
        to_addresses=addresses.to,
        cc_addresses=addresses.cc,
        reply_to=addresses.reply_to,
        date=addresses.date,
        in_reply_to=_message_ids(_all_headers(headers, "in-reply-to")),
        references=_message_ids(_all_headers(headers, "references")),
        html=_without_nul(content.html) if content.html is not None else None,
        attachments=_name_unnamed(content.attachments),
        headers=tuple(
            (name, _single_line(_decode_words(value, content.charset)))
            for name, value in headers
        ),
        defects=defects.as_tuple(),
        size_bytes=size_bytes,
        structure_problem=content.structure_problem,
    )


class _Defects:
    """Defect descriptions in order of discovery, without repeats, up to MAX_DEFECTS."""

    def __init__(self) -> None:
        self._seen: dict[str, None] = {}

    def add(self, text: str) -> None:
        if len(self._seen) < MAX_DEFECTS:
            self._seen.setdefault(text, None)

    def as_tuple(self) -> tuple[str, ...]:
        return tuple(self._seen)


@dataclass
class _Content:
    """Text, HTML and files read from one message's MIME tree."""

    text: str = ""
    html: str | None = None
    charset: str | None = None
    attachments: list[MailAttachment] = field(default_factory=list)
    structure_problem: str | None = None


@dataclass
class _Addresses:
    """The sender, recipients and date read from the header block."""

    from_name: str = ""
    from_address: str = ""
    to: tuple[str, ...] = ()
    cc: tuple[str, ...] = ()
    reply_to: tuple[str, ...] = ()
    date: datetime | None = None


class _ContentReader:
    """Reader for the text, HTML and files of one message and a message forwarded in it.

    A reader for a forwarded message (``nested=True``) records a defect for any
    message inside it instead of unpacking that one as well.
    """

    def __init__(self, defects: _Defects, *, nested: bool) -> None:
        self._defects = defects
        self._nested = nested
        self._content = _Content()
        self._html_cids: frozenset[str] = frozenset()
        self._tail: list[str] = []
        self._tnef_text = ""

    def read(self, message: Message) -> _Content:
        content = self._content
        plain_part = _find_body(message, "plain")
        html_part = _find_body(message, "html")
        if plain_part is not None:
            content.text, content.charset = self._decode_part(plain_part)
        if html_part is not None:
            content.html, html_charset = self._decode_part(html_part)
            content.charset = content.charset or html_charset
            self._html_cids = _cid_references(content.html)
        has_body_text = bool(content.text.strip() or (content.html or "").strip())
        body_parts = [plain_part, html_part]
        if plain_part is None and html_part is None and _is_unsplit_text(message):
            content.text, content.charset = self._decode_part(message)
            body_parts.append(message)

        unsplit: list[Message] = []
        for part, in_alternative in _iter_leaves(message, self._defects):
            if _is_unsplit_multipart(part):
                unsplit.append(part)
            if any(part is body_part for body_part in body_parts):
                continue
            try:
                self._read_leaf(part, in_alternative)
            except Exception as exc:
                content_type = _safe_type(part)
                log.warning("skipped an unreadable %s part (%s)", content_type, exc)
                self._defects.add(
                    f"a {content_type} part could not be read ({type(exc).__name__})"
                )

        # The raw text of a multipart that was not split is MIME syntax, not what the
        # sender wrote, so only text from parts that were found counts.
        has_body_text = has_body_text or any(piece.strip() for piece in self._tail)
        if unsplit and not has_body_text and not self._tnef_text.strip():
            content.structure_problem = _unsplit_problem(unsplit[0])
        if not content.text.strip() and content.html:
            content.text = _html_to_text(content.html, self._defects)
        if not content.text.strip() and self._tnef_text:
            content.text = self._tnef_text
        content.text = "\n\n".join(
            piece.strip("\n") for piece in [content.text, *self._tail] if piece.strip()
        )
        return content

    def _decode_part(self, part: Message) -> tuple[str, str | None]:
        payload = _payload_bytes(part)
        try:
            charset = part.get_content_charset()
        except Exception:
            # The standard library raises on some malformed parameters.
            charset = None
        text = _decode_text(payload, charset, self._defects)
        return _normalise_newlines(text.removeprefix("\ufeff")), charset

    def _read_leaf(self, part: Message, in_alternative: bool) -> None:
        content_type = _safe_type(part)
        maintype = content_type.split("/", 1)[0]
        filename = _part_filename(part, self._content.charset)
        is_file = bool(filename) or _disposition(part) == "attachment"

        if content_type in _FORWARDED_TYPES:
            self._add_forwarded(part)
        elif maintype in ("message", "multipart"):
            # Delivery reports and multiparts without a boundary are not files.
            return
        elif not is_file and content_type in _BODY_TYPES:
            if content_type == "text/plain" and not in_alternative:
                text, _ = self._decode_part(part)
                self._tail.append(text)
        elif not is_file and in_alternative and maintype == "text":
            # Another rendering of the body, such as text/enriched.
            return
        elif content_type in _TNEF_TYPES or filename.lower() == "winmail.dat":
            self._add_tnef(part, filename)
        else:
            self._add_file(part, filename)

    def _add_file(self, part: Message, filename: str) -> None:
        data = _payload_bytes(part)
        content_id = _strip_brackets(_raw_header(part, "content-id") or "") or None
        self._content.attachments.append(
            MailAttachment(
                filename=_clean_filename(filename),
                declared_type=_declared_type(part),
                data=data,
                content_id=content_id,
                is_inline=content_id is not None
                and content_id.lower() in self._html_cids,
            )
        )

    def _add_forwarded(self, part: Message) -> None:
        if self._nested:
            self._defects.add(
                "a message/rfc822 part inside a forwarded message was not unpacked"
            )
            return
        payload = part.get_payload() if part.is_multipart() else None
        if not isinstance(payload, list) or not payload:
            self._defects.add("a message/rfc822 part contains no message")
            return
        inner = payload[0]
        inner_content = _ContentReader(self._defects, nested=True).read(inner)
        self._tail.append(_forwarded_block(inner, inner_content.text))
        self._content.attachments.extend(inner_content.attachments)

    def _add_tnef(self, part: Message, filename: str) -> None:
        try:
            tnef = TNEF(_payload_bytes(part), do_checksum=False)
            files = [
                MailAttachment(
                    filename=_clean_filename(_tnef_text_value(item.long_filename())),
                    declared_type="",
                    data=item.data if isinstance(item.data, bytes) else b"",
                )
                for item in tnef.attachments
            ]
            body = _tnef_text_value(tnef.body, tnef.codepage)
            html_body = _tnef_text_value(tnef.htmlbody, tnef.codepage)
        except Exception as exc:
            log.warning("winmail.dat could not be unpacked (%s); kept as a file", exc)
            self._defects.add(
                f"winmail.dat could not be unpacked ({type(exc).__name__})"
            )
            self._add_file(part, filename)
            return
        self._content.attachments.extend(files)
        if not body.strip() and html_body.strip():
            body = _html_to_text(html_body, self._defects)
        if not self._tnef_text:
            self._tnef_text = _normalise_newlines(body)


def _payload_bytes(part: Message) -> bytes:
    """Return a part's payload with its transfer encoding undone, or b"" if none."""
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        return b""
    return payload if isinstance(payload, bytes) else b""


def _is_unsplit_text(message: Message) -> bool:
    """Return True for a single-part text message or a multipart without boundary.

    Either way the payload is the only text there is.
    """
    maintype = _safe_type(message).split("/", 1)[0]
    return not message.is_multipart() and maintype in ("text", "multipart")


def _is_unsplit_multipart(part: Message) -> bool:
    """Return True for a multipart whose parts the parser could not find.

    A multipart with a blank body is not one, because it has nothing to find.
    """
    if part.is_multipart() or not _safe_type(part).startswith("multipart/"):
        return False
    if not any(isinstance(defect, _UNSPLIT_DEFECTS) for defect in part.defects):
        return False
    return bool(_payload_bytes(part).strip())


def _unsplit_problem(part: Message) -> str:
    """Describe why the parts of an unsplit multipart were not found, for support."""
    content_type = _safe_type(part)
    no_boundary = email_errors.NoBoundaryInMultipartDefect
    try:
        boundary = part.get_boundary()
    except Exception:
        boundary = None
    if any(isinstance(defect, no_boundary) for defect in part.defects):
        problem = f"the {content_type} part has no boundary parameter"
    elif boundary is None:
        problem = f"the parts of the {content_type} part were not found"
    else:
        problem = (
            f"the boundary {boundary[:100]!r} of the {content_type} part never "
            "appears in its body"
        )
        # An unclosed quote makes the boundary take in the rest of the header.
        if (_raw_header(part, "content-type") or "").count('"') % 2:
            problem += ", because the Content-Type header has an unclosed quote"
    return problem + "; no text part was read"


def _iter_leaves(message: Message, defects: _Defects):
    """Yield each part that is not a multipart container, in order, with a flag.

    The flag is true inside a multipart/alternative. Message parts are yielded without
    looking inside them. Walking with a stack keeps deep nesting off the call stack.
    """
    stack = [(message, 0, False)]
    while stack:
        part, depth, in_alternative = stack.pop()
        content_type = _safe_type(part)
        for defect in part.defects:
            defects.add(f"{type(defect).__name__} in {content_type}")
        # get_payload() of a single part decodes it and may raise, so check first.
        children = part.get_payload() if part.is_multipart() else None
        if not content_type.startswith("multipart/") or not isinstance(children, list):
            yield part, in_alternative
            continue
        if depth >= MAX_NESTING_DEPTH:
            defects.add(
                f"parts nested deeper than {MAX_NESTING_DEPTH} levels were ignored"
            )
            continue
        in_alternative = in_alternative or content_type == "multipart/alternative"
        for child in reversed(children):
            stack.append((child, depth + 1, in_alternative))


def _find_body(message: Message, subtype: str) -> Message | None:
    """Return the first text/<subtype> part that is a body, not a file, or None.

    This follows ``EmailMessage.get_body``: only the start part of a
    multipart/related is searched, and files are skipped. Unlike ``get_body`` it also
    skips parts that have a filename but no Content-Disposition.
    """
    stack = [(message, 0)]
    while stack:
        part, depth = stack.pop()
        if depth > 0 and (_disposition(part) == "attachment" or _part_filename(part)):
            continue
        content_type = _safe_type(part)
        if content_type == f"text/{subtype}":
            return part
        children = part.get_payload() if part.is_multipart() else None
        if not content_type.startswith("multipart/") or not isinstance(children, list):
            continue
        if depth >= MAX_NESTING_DEPTH or not children:
            continue
        if content_type == "multipart/related":
            children = [_related_start(part, children)]
        for child in reversed(children):
            stack.append((child, depth + 1))
    return None


def _related_start(part: Message, children: list[Message]) -> Message:
    try:
        start = _strip_brackets(str(part.get_param("start") or ""))
    except Exception:
        start = ""
    for child in children:
        if start and _strip_brackets(_raw_header(child, "content-id") or "") == start:
            return child
    return children[0]


def _forwarded_block(message: Message, text: str) -> str:
    headers = _read_headers(message, None)
    lines = [FORWARDED_MARKER]
    for name in ("From", "Date", "Subject"):
        value = _first_header(headers, name)
        if value is not None:
            lines.append(f"{name}: {_single_line(_decode_words(value, None))}")
    lines.append("")
    for line in text.split("\n"):
        lines.append(f"> {line}" if line else ">")
    return "\n".join(lines)


def _read_headers(message: Message, charset: str | None) -> list[tuple[str, str]]:
    """Return the headers in order, unfolded, with raw 8-bit bytes decoded.

    Encoded words (RFC 2047) are left in place, because address parsing must see
    the quoting and commas of the original text.
    """
    return [
        (name, _unfold(_decode_8bit(value, charset)))
        for name, value in message.raw_items()
    ]


def _read_addresses(headers: list[tuple[str, str]], defects: _Defects) -> _Addresses:
    address_headers = [
        (name, value)
        for name, value in headers
        if name.lower() in _ADDRESS_HEADERS or name.lower() == "date"
    ]
    if not address_headers:
        return _Addresses()
    block = "".join(f"{name}: {value}\n" for name, value in address_headers) + "\n"
    try:
        parsed = mailparser.parse_from_string(block)
        senders = list(parsed.from_ or [])
        to, cc, reply_to = parsed.to or [], parsed.cc or [], parsed.reply_to or []
        fallback_date = parsed.date
        for entry in parsed.defects:
            for descriptions in entry.values():
                for description in descriptions:
                    defects.add(description)
    except Exception as exc:
        log.warning("mail-parser failed on the address headers (%s)", exc)
        defects.add(
            f"mail-parser failed ({type(exc).__name__}); addresses read by stdlib"
        )
        return _read_addresses_stdlib(headers)

    date_value = _first_header(headers, "date")
    name, address = senders[0] if senders else ("", "")
    return _Addresses(
        from_name=_single_line(_decode_words(name, None)).strip(),
        from_address=_normalise_address(address),
        to=_address_list(to),
        cc=_address_list(cc),
        reply_to=_address_list(reply_to),
        date=_parse_date(date_value, fallback_date),
    )


def _read_addresses_stdlib(headers: list[tuple[str, str]]) -> _Addresses:
    def pairs(name: str) -> list[tuple[str, str]]:
        try:
            return getaddresses([_first_header(headers, name) or ""])
        except Exception:
            return []

    senders = pairs("from")
    name, address = senders[0] if senders else ("", "")
    return _Addresses(
        from_name=_single_line(_decode_words(name, None)).strip(),
        from_address=_normalise_address(address),
        to=_address_list(pairs("to")),
        cc=_address_list(pairs("cc")),
        reply_to=_address_list(pairs("reply-to")),
        date=_parse_date(_first_header(headers, "date"), None),
    )


def _parse_date(value: str | None, fallback: datetime | None) -> datetime | None:
    parsed = fallback
    if value:
        try:
            parsed = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            parsed = fallback
    if parsed is not None and parsed.tzinfo is None:
        # RFC 5322 reads a -0000 zone as UTC with the sender's zone unknown.
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def _normalise_address(address: str) -> str:
    address = "".join(address.split()).lower()
    return address if "@" in address else ""


def _address_list(pairs) -> tuple[str, ...]:
    addresses = (_normalise_address(address) for _, address in pairs)
    return tuple(dict.fromkeys(address for address in addresses if address))


def _message_id(value: str) -> str | None:
    ids = _message_ids([value])
    if ids:
        return ids[0]
    value = value.strip()
    return value if value and not any(ch.isspace() for ch in value) else None


def _message_ids(values: list[str]) -> tuple[str, ...]:
    """Return the message ids in header order, without angle brackets or repeats.

    Some clients send ids without brackets. Then whitespace and commas separate them,
    and only tokens that contain "@" count, so that comments do not become ids.
    """
    ids: list[str] = []
    for value in values:
        bracketed = _BRACKETED_ID.findall(value)
        if bracketed:
            ids.extend("".join(found.split()) for found in bracketed)
        else:
            tokens = re.split(r"[\s,]+", _COMMENT.sub(" ", value))
            ids.extend(token for token in tokens if "@" in token)
    return tuple(dict.fromkeys(found for found in ids if found))


def _first_header(headers: list[tuple[str, str]], name: str) -> str | None:
    name = name.lower()
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def _all_headers(headers: list[tuple[str, str]], name: str) -> list[str]:
    name = name.lower()
    return [value for key, value in headers if key.lower() == name]


def _raw_header(part: Message, name: str) -> str | None:
    name = name.lower()
    for key, value in part.raw_items():
        if key.lower() == name:
            return _unfold(value)
    return None


def _unfold(value: str) -> str:
    return _FOLD.sub("", value).replace("\r", " ").replace("\n", " ").strip()


def _without_nul(text: str) -> str:
    # PostgreSQL text columns reject NUL, and a body decoded with the wrong
    # charset (UTF-16 read as Latin-1, say) is full of them.
    return text.replace("\x00", "")


def _single_line(text: str) -> str:
    # An encoded word can carry a line break. A subject with one, copied into a
    # reply header, would start a new header there.
    return "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in text)


def _decode_8bit(value: str, charset: str | None) -> str:
    """Decode raw 8-bit bytes that the parser kept as surrogate escapes.

    UTF-8 is tried first, then the body's declared charset, then cp1252, and Latin-1
    last, which accepts any byte, so no letter is dropped.
    """
    if value.isascii():
        return value
    try:
        data = value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        # Only surrogates from undecodable bytes can be turned back into bytes.
        return value.encode("utf-8", "replace").decode("utf-8")
    for candidate in ("utf-8", charset, "cp1252"):
        codec = _codec(candidate)
        if codec is None:
            continue
        try:
            return data.decode(codec)
        except UnicodeError:
            continue
    return data.decode("latin-1")


def _decode_words(value: str, charset: str | None) -> str:
    """Decode RFC 2047 encoded words in a header value, in linear time.

    Python 3.11's own header parser takes quadratic time on long values. Adjacent
    words in one charset are joined before decoding, because some clients split a
    multibyte letter across two words. A word that cannot be decoded stays as it is.
    """
    if "=?" not in value:
        return value
    pieces: list[str] = []
    pending = bytearray()
    pending_charset: str | None = None
    position = 0

    def flush() -> None:
        nonlocal pending, pending_charset
        if pending_charset is not None:
            pieces.append(
                _decode_text(bytes(pending), pending_charset or charset, None)
            )
        pending, pending_charset = bytearray(), None

    for match in _ENCODED_WORD.finditer(value):
        gap = value[position : match.start()]
        # RFC 2047 drops the white space between two adjacent encoded words.
        if pending_charset is None or gap.strip(" \t"):
            flush()
            pieces.append(gap)
        word_charset = match.group(1).split("*", 1)[0].lower()
        data = _encoded_word_bytes(match.group(2), match.group(3))
        if data is None:
            flush()
            pieces.append(match.group(0))
        elif word_charset == pending_charset:
            pending += data
        else:
            flush()
            pending, pending_charset = bytearray(data), word_charset
        position = match.end()
    flush()
    pieces.append(value[position:])
    return "".join(pieces)


def _encoded_word_bytes(encoding: str, text: str) -> bytes | None:
    if not text.isascii():
        return None
    try:
        if encoding in "bB":
            return binascii.a2b_base64(text + "=" * (-len(text) % 4))
        return binascii.a2b_qp(text, header=True)
    except binascii.Error:
        return None


def _decode_text(data: bytes, charset: str | None, defects: _Defects | None) -> str:
    """Decode text with its declared charset, falling back without raising.

    Data that the declared charset rejects is tried as UTF-8, then cp1252, then
    Latin-1, which accepts any byte. Pure 7-bit data in a known charset such as
    ISO-2022-JP keeps that charset with replacement characters, because it would
    always pass as UTF-8 and come out as escape sequences.
    """
    codec = _codec(charset)
    if codec is not None:
        try:
            return data.decode(codec)
        except UnicodeError:
            pass
        if data.isascii():
            if defects is not None:
                defects.add(f"text is not valid {charset[:40]!r}; bad bytes replaced")
            return data.decode(codec, "replace")
    if charset and defects is not None:
        reason = "not valid" if codec else "an unknown charset"
        defects.add(f"text declared as {charset[:40]!r} is {reason}; decoded by guess")
    for fallback in ("utf-8", "cp1252"):
        try:
            return data.decode(fallback)
        except UnicodeError:
            continue
    return data.decode("latin-1")


@functools.lru_cache(maxsize=128)
def _codec(charset: str | None) -> str | None:
    """Return the Python codec for a charset label, or None when there is none."""
    if not charset:
        return None
    label = charset.strip().strip('"').lower()
    label = _CHARSET_SUPERSETS.get(label, label)
    try:
        name = codecs.lookup(label).name
        # Only text encodings decode bytes, so this rejects codecs such as base64.
        b"a".decode(label)
    except UnicodeDecodeError:
        pass
    except (LookupError, ValueError):
        return None
    if any(marker in name for marker in _NON_CHARSET_CODECS):
        return None
    return name


def _normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _html_to_text(html: str, defects: _Defects) -> str:
    try:
        return get_text(html, _HTML_TO_TEXT).strip("\n")
    except Exception as exc:
        log.warning("inscriptis could not convert the HTML body (%s)", exc)
        defects.add(f"the HTML body could not be converted ({type(exc).__name__})")
        return html_lib.unescape(re.sub(r"<[^>]*>", " ", html)).strip()


def _cid_references(html: str) -> frozenset[str]:
    return frozenset(
        _strip_brackets(urllib.parse.unquote(found)).lower()
        for found in _CID_REFERENCE.findall(html)
    )


def _part_filename(part: Message, charset: str | None = None) -> str:
    """Return a part's filename, decoded from RFC 2231 or RFC 2047, or ""."""
    for header, parameter in (
        ("content-disposition", "filename"),
        ("content-type", "name"),
    ):
        raw = _raw_header(part, header)
        if raw is None or parameter not in raw.lower():
            continue
        value = _decode_8bit(raw, charset)[:MAX_STRUCTURED_HEADER_CHARS]
        try:
            name = _POLICY.header_factory(header, value).params.get(parameter)
        except Exception:
            # The standard library raises on some malformed RFC 2231 parameters.
            continue
        if name:
            return _decode_words(str(name), charset)
    return ""


def _disposition(part: Message) -> str:
    raw = _raw_header(part, "content-disposition") or ""
    return raw.split(";", 1)[0].strip().lower()


def _declared_type(part: Message) -> str:
    """Return the media type from the part's Content-Type header, or "" if none."""
    raw = _raw_header(part, "content-type") or ""
    media_type = raw.split(";", 1)[0].strip().lower()
    return media_type if _MEDIA_TYPE.fullmatch(media_type) else ""


def _safe_type(part: Message) -> str:
    """Return the part's content type, or application/octet-stream when unreadable.

    ``get_content_type`` parses the whole Content-Type header, and the standard
    library raises on some malformed parameters.
    """
    try:
        return part.get_content_type()
    except Exception:
        return "application/octet-stream"


def _strip_brackets(value: str) -> str:
    return value.strip().removeprefix("<").removesuffix(">").strip()


def _clean_filename(name: str) -> str:
    """Return the last path segment of a filename, safe to show and to store.

    Control and bidirectional-override characters are removed, and a name longer
    than MAX_FILENAME_CHARS is cut in its stem so that the extension survives.
    """
    name = unicodedata.normalize("NFC", re.split(r"[/\\]", name)[-1])
    name = "".join(
        ch
        for ch in name
        if ch not in _BIDI_CONTROLS and unicodedata.category(ch) not in ("Cc", "Cs")
    ).strip()
    if name in (".", ".."):
        return ""
    if len(name) <= MAX_FILENAME_CHARS:
        return name
    stem, dot, extension = name.rpartition(".")
    if dot and stem and len(extension) <= 16:
        return (
            stem[: MAX_FILENAME_CHARS - len(extension) - 1].rstrip() + "." + extension
        )
    return name[:MAX_FILENAME_CHARS]


def _name_unnamed(attachments: list[MailAttachment]) -> tuple[MailAttachment, ...]:
    """Give each file without a usable name one like ``attachment-2.png``."""
    named = []
    for number, attachment in enumerate(attachments, start=1):
        if not attachment.filename:
            extension = _MIME_TYPES.guess_extension(attachment.declared_type) or ""
            attachment = replace(attachment, filename=f"attachment-{number}{extension}")
        named.append(attachment)
    return tuple(named)


def _tnef_text_value(value, codepage: str | None = None) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return _decode_text(value.rstrip(b"\x00"), codepage, None)
    return str(value).rstrip("\x00")
