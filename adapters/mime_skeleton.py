"""Parse a large message's MIME structure without feeding its encoded bodies through it.

The standard library's FeedParser handles every line of a message in Python. A
35 MB message with five base64 files costs about 460,000 of its steps, and it keeps
the whole encoded text in its line buffers beside the parsed tree. Here each long
run of base64-looking lines is cut out of the raw bytes and replaced by one
placeholder line before the parse. The parts then read their payload back from the
raw bytes, one part at a time, when asked for it.

Why the cut cannot change the tree: a cut line contains only base64 letters and
"=" (998 at most), and so does the placeholder. Such a line is never empty, never a
header field, never a header continuation and never a boundary line (those start
with "--"). FeedParser therefore treats the placeholder exactly as it would have
treated the first cut line, and the rest of the run as more of the same text. A
parse is used only when each placeholder lands inside the payload of a part that
is not a container. Any other outcome, such as a run in a preamble, makes the
caller parse the raw bytes the usual way. tests/adapters/test_mime_skeleton.py
compares both parses on every sample message and on generated ones.
"""

from __future__ import annotations

import binascii
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.policy import EmailPolicy

# Complete base64-looking lines from the start of a line on. Line endings are
# those FeedParser splits on: CRLF, CR or LF.
_BASE64_LINES = re.compile(rb"(?<![^\r\n])(?:[A-Za-z0-9+/=]{1,998}(?:\r\n|\r|\n))+")
# The regular expression engine and binascii hold the GIL for a whole call, and
# the event loop and the database threads wait for it. Scanning and decoding in
# pieces of this many bytes keeps each call to about a millisecond, and the
# thread offers the GIL to the others after each piece (see _yield_gil).
_PIECE_BYTES = 256 * 1024


@dataclass(frozen=True)
class _Cut:
    start: int
    end: int


class CutBodies:
    """The raw message and where each placeholder's text was cut from it."""

    def __init__(self, raw: bytes, prefix: str, cuts: dict[str, _Cut]) -> None:
        self.raw = raw
        self.prefix = prefix
        self.cuts = cuts
        self._placeholder = re.compile(re.escape(prefix) + r"\d{6}Z")

    def placeholders_in(self, text: str) -> list[str]:
        return self._placeholder.findall(text)

    def restore(self, text: str) -> str:
        """Return TEXT with each placeholder replaced by the text it stands for."""
        return self._placeholder.sub(
            lambda found: self._original(self.cuts[found.group(0)]), text
        )

    def _original(self, cut: _Cut) -> str:
        return self.raw[cut.start : cut.end].decode("ascii")

    def decode_base64(self, part: SkeletonMessage) -> bytes | None:
        """Return the decoded body of a base64 part that is one whole cut, or None.

        None means that the standard library's own decoding must run, because it
        would record a defect or pad the text. The fast path decodes with
        ``validate=True``. It therefore takes only text whose "=" signs, at most
        two, all come at its end, and whose length without line breaks is a
        multiple of 4.
        """
        cut = self.cuts.get(part.cut_payload())
        if cut is None:
            return None
        if str(part.get("content-transfer-encoding", "")).lower() != "base64":
            return None
        raw, start, end = self.raw, cut.start, cut.end
        padding = raw.find(b"=", start, end)
        if padding >= 0:
            tail = raw[padding:end]
            if tail.count(b"=") > 2 or tail.translate(None, b"=\r\n"):
                return None
        if _letters(raw, start, end) % 4:
            return None
        view = memoryview(raw)
        # One growing buffer instead of a list of pieces: each piece is freed
        # at once, so the allocator reuses one small block for all of them.
        decoded = bytearray()
        while start < end:
            stop = min(end, start + _PIECE_BYTES)
            # End each piece after a whole number of 4-letter groups, so that
            # "=" can only end the last piece. Line breaks are skipped.
            extra = _letters(raw, start, stop) % 4
            while extra:
                stop -= 1
                if raw[stop] not in b"\r\n":
                    extra -= 1
            decoded += binascii.a2b_base64(view[start:stop])
            start = stop
            _yield_gil()
        return bytes(decoded)


class SkeletonMessage(EmailMessage):
    """A parsed part that reads cut-out text back from the raw message on demand."""

    cut_bodies: CutBodies | None = None

    def cut_payload(self) -> object:
        return self._payload

    def get_payload(self, i=None, decode=False):
        cut_bodies = self.cut_bodies
        if cut_bodies is None or not isinstance(self._payload, str):
            return super().get_payload(i, decode)
        if decode and i is None:
            data = cut_bodies.decode_base64(self)
            if data is not None:
                return data
        skeleton = self._payload
        self._payload = cut_bodies.restore(skeleton)
        try:
            return super().get_payload(i, decode)
        finally:
            self._payload = skeleton


def parse_skeleton(raw: bytes, policy: EmailPolicy, min_run_bytes: int) -> Message | None:
    """Parse RAW with its base64 runs of MIN_RUN_BYTES or more cut out.

    Returns None when RAW has no such run, or when a placeholder did not land
    inside a single part's payload. The caller then parses RAW as it is.
    Exceptions of the parser propagate.
    """
    cut_bodies, skeleton = _cut(raw, min_run_bytes)
    if cut_bodies is None:
        return None
    message = BytesParser(policy=policy.clone(message_factory=SkeletonMessage)).parsebytes(
        skeleton
    )
    if not _attach(message, cut_bodies):
        return None
    return message


def _cut(raw: bytes, min_run_bytes: int) -> tuple[CutBodies | None, bytes]:
    prefix = _unused_prefix(raw)
    cuts: dict[str, _Cut] = {}
    pieces: list[bytes | memoryview] = []
    view = memoryview(raw)
    position = 0
    for run_start, run_end in _base64_runs(raw):
        # The last line ending stays: it may belong to a following boundary line.
        end = run_end - (2 if raw.startswith(b"\r\n", run_end - 2) else 1)
        if end - run_start < min_run_bytes:
            continue
        placeholder = f"{prefix}{len(cuts):06d}Z"
        cuts[placeholder] = _Cut(run_start, end)
        pieces += [view[position:run_start], placeholder.encode("ascii")]
        position = end
    if not cuts:
        return None, raw
    pieces.append(view[position:])
    return CutBodies(raw, prefix, cuts), b"".join(pieces)


def _base64_runs(raw: bytes) -> Iterator[tuple[int, int]]:
    """Yield the start and end of each run of base64-looking lines in RAW."""
    run_start = run_end = -1
    position = 0
    while position < len(raw):
        window_end = min(len(raw), position + _PIECE_BYTES)
        _yield_gil()
        match = _BASE64_LINES.search(raw, position, window_end)
        if match is None:
            position = window_end
            continue
        # A run that the window cut off goes on at the start of the next match.
        if match.start() != run_end:
            if run_start >= 0:
                yield run_start, run_end
            run_start = match.start()
        run_end = position = match.end()
    if run_start >= 0:
        yield run_start, run_end


def _yield_gil() -> None:
    """Release the GIL so that a waiting thread runs before this one goes on.

    Without it, the event loop and the database threads, which serve the small
    messages, could each wait up to ``sys.getswitchinterval()`` (5 ms by default)
    for the GIL while a large message is parsed.
    """
    time.sleep(0)


def _letters(raw: bytes, start: int, end: int) -> int:
    """Return how many bytes of RAW[START:END] are not CR or LF."""
    return end - start - raw.count(b"\r", start, end) - raw.count(b"\n", start, end)


def _unused_prefix(raw: bytes) -> str:
    while True:
        prefix = f"GatewayCutBody{secrets.token_hex(8)}"
        if raw.find(prefix.encode("ascii")) < 0:
            return prefix


def _attach(message: Message, cut_bodies: CutBodies) -> bool:
    """Give each part that contains a placeholder its cut text.

    Returns False if a placeholder is astray.
    """
    found = 0
    for part in message.walk():
        payload = part.cut_payload() if isinstance(part, SkeletonMessage) else None
        if not isinstance(payload, str):
            continue
        placeholders = cut_bodies.placeholders_in(payload)
        if placeholders:
            part.cut_bodies = cut_bodies
            found += len(placeholders)
    return found == len(cut_bodies.cuts)
