"""Structural limits on a raw message, checked before the full MIME parse.

The standard parser needs memory and time in proportion to the number of headers,
parts and nesting levels, and 5,000 nested parts make it raise RecursionError. A
single pass over the lines here reads only header blocks and boundary lines, so a
hostile message is rejected before any of that work starts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

KIB = 1024

_BOUNDARY = re.compile(rb'boundary\s*=\s*(?:"([^"\r\n]{1,200})"|([^\s;"]{1,200}))', re.I)


@dataclass(frozen=True)
class MessageLimits:
    """Limits on one inbound message; each is checked on the raw bytes."""

    max_header_bytes: int = 256 * KIB
    max_mime_parts: int = 200
    max_mime_depth: int = 20
    max_recipients: int = 100


@dataclass(frozen=True)
class LimitExceeded:
    """The first limit a message breaks, as an SMTP reply code and text."""

    code: int
    enhanced: str
    text: str
    limit: str


def check_message(raw: bytes, limits: MessageLimits) -> LimitExceeded | None:
    """Return the first limit RAW breaks, or None when it is within all of them."""
    header_end, _ = _header_block(raw, 0, limits.max_header_bytes)
    if header_end > limits.max_header_bytes:
        return _header_too_big("Header block", limits)

    recipients = _count_recipients(raw[:header_end])
    if recipients > limits.max_recipients:
        return LimitExceeded(
            550, "5.5.3",
            f"To and Cc name {recipients} recipients; the limit is "
            f"{limits.max_recipients}",
            "max_recipients",
        )

    structure = _scan_structure(raw, limits)
    if structure.oversized_part_header:
        return _header_too_big("A MIME part's header block", limits)
    if structure.depth > limits.max_mime_depth:
        return LimitExceeded(
            554, "5.6.0",
            f"MIME parts are nested more than {limits.max_mime_depth} levels deep",
            "max_mime_depth",
        )
    if structure.parts > limits.max_mime_parts:
        return LimitExceeded(
            554, "5.6.0",
            f"Message has more than {limits.max_mime_parts} MIME parts",
            "max_mime_parts",
        )
    return None


@dataclass
class _Structure:
    parts: int = 0
    depth: int = 0
    oversized_part_header: bool = False


def _header_too_big(what: str, limits: MessageLimits) -> LimitExceeded:
    return LimitExceeded(
        552, "5.3.4",
        f"{what} is over {limits.max_header_bytes} bytes, the limit",
        "max_header_bytes",
    )


def _header_block(raw: bytes, start: int, max_bytes: int) -> tuple[int, int]:
    """Return where the header block at START ends and where its body starts.

    The block ends at the first empty line (CRLF or bare LF endings), or at the end
    of RAW when there is none. Only MAX_BYTES are searched, so a block that is
    longer ends at start + max_bytes + 1, which the caller reads as too big.
    """
    if raw.startswith(b"\r\n", start):
        return start, start + 2
    if raw.startswith(b"\n", start):
        return start, start + 1
    stop = start + max_bytes + 4
    found = [
        (end, end + len(separator))
        for separator in (b"\r\n\r\n", b"\n\n", b"\n\r\n")
        if (end := raw.find(separator, start, stop)) >= 0
    ]
    if not found:
        end = min(len(raw), start + max_bytes + 1)
        return end, end
    end, body = min(found)
    return end + 1 if raw[end : end + 1] == b"\n" else end + 2, body


def _count_recipients(header_block: bytes) -> int:
    """Count the addresses in To and Cc, by their "@" signs, folded lines included."""
    total = 0
    for field in _header_fields(header_block):
        name, _, value = field.partition(b":")
        if name.strip().lower() in (b"to", b"cc"):
            total += value.count(b"@")
    return total


def _header_fields(header_block: bytes) -> list[bytes]:
    """Split a header block into fields, each with its folded lines joined."""
    fields: list[bytes] = []
    for line in header_block.split(b"\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        else:
            fields.append(line)
    return fields


def _scan_structure(raw: bytes, limits: MessageLimits) -> _Structure:
    """Return the parts and deepest nesting of RAW, stopping once a limit is passed.

    Each header block is read for a multipart boundary or a message/rfc822 type.
    Only lines starting with "--" are compared with the open boundaries, so the
    pass stays linear in the size of the message.
    """
    boundaries: list[bytes] = []
    found = _Structure()
    position = 0
    reading_headers = True
    while position < len(raw):
        if reading_headers:
            end, body_start = _header_block(raw, position, limits.max_header_bytes)
            if end - position > limits.max_header_bytes:
                found.oversized_part_header = True
                break
            content_type = _content_type(raw[position:end])
            position = body_start
            if content_type.lower().startswith(b"multipart/"):
                match = _BOUNDARY.search(content_type)
                if match:
                    boundaries.append(b"--" + (match.group(1) or match.group(2)))
                    found.depth = max(found.depth, len(boundaries))
                reading_headers = False
            elif content_type.lower().startswith((b"message/rfc822", b"message/global")):
                # A forwarded message starts with its own header block.
                found.depth = max(found.depth, len(boundaries) + 1)
                boundaries.append(b"")
            else:
                reading_headers = False
            if found.depth > limits.max_mime_depth:
                break
            continue

        if not boundaries:
            break
        if not raw.startswith(b"--", position):
            # Jump to the next line that could be a boundary line.
            next_dashes = raw.find(b"\n--", position)
            if next_dashes < 0:
                break
            position = next_dashes + 1
        line_end = raw.find(b"\n", position)
        if line_end < 0:
            line_end = len(raw)
        if boundaries:
            line = raw[position:line_end].rstrip(b"\r \t")
            level = _boundary_level(boundaries, line)
            if level is not None:
                del boundaries[level + 1 :]
                if line.endswith(b"--") and line[:-2] == boundaries[level]:
                    boundaries.pop()
                    _drop_forward_markers(boundaries)
                else:
                    found.parts += 1
                    reading_headers = True
                    if found.parts > limits.max_mime_parts:
                        break
        position = line_end + 1
    return found


def _content_type(block: bytes) -> bytes:
    for field in _header_fields(block):
        name, _, value = field.partition(b":")
        if name.strip().lower() == b"content-type":
            return value.strip()
    return b""


def _boundary_level(boundaries: list[bytes], line: bytes) -> int | None:
    for level in range(len(boundaries) - 1, -1, -1):
        boundary = boundaries[level]
        if boundary and (line == boundary or line == boundary + b"--"):
            return level
    return None


def _drop_forward_markers(boundaries: list[bytes]) -> None:
    # A forwarded message ends with the multipart that contains it.
    while boundaries and boundaries[-1] == b"":
        boundaries.pop()
