"""Attachment rules: which files an update may carry, judged by their bytes.

An update may carry images (PNG, JPEG, GIF, WebP, AVIF, HEIC, BMP, TIFF, SVG) and PDF
files: at most 5 files, 10 MB per file and 25 MB together, where 1 MB is 1024 * 1024
bytes. A declared media type or a filename extension that names a different type than
the bytes contain gets the file rejected. Small inline images that the HTML body
shows through ``cid:`` links, such as signature logos, are skipped.
"""

from __future__ import annotations

import hashlib
import mimetypes
import re
from collections.abc import Iterable
from dataclasses import dataclass, fields

import filetype

from gateway.model import AttachmentProblem, CheckedAttachment, MailAttachment

KIB = 1024
MIB = 1024 * KIB

# Accepted media types, as sniff_type returns them.
# NOTE: an SVG file can contain scripts. Whatever serves stored files must send SVG
# as a download or under a Content-Security-Policy that blocks scripts.
ACCEPTED_TYPES = frozenset(
    {
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "image/avif",
        "image/heic",
        "image/bmp",
        "image/tiff",
        "image/svg+xml",
        "application/pdf",
    }
)
ACCEPTED_SUMMARY = (
    "only images (PNG, JPEG, GIF, WebP, AVIF, HEIC, BMP, TIFF, SVG) and PDF files "
    "are accepted"
)

# Declared types that carry no information about the content. The last three come
# from web mail and upload forms that force a download.
GENERIC_TYPES = frozenset(
    {
        "",
        "application/octet-stream",
        "binary/octet-stream",
        "application/x-unknown",
        "application/unknown",
        "application/x-download",
        "application/force-download",
    }
)

# Other names in use for the accepted types. APNG is a PNG with extra chunks.
_TYPE_ALIASES = {
    "image/apng": "image/png",
    "image/x-png": "image/png",
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "image/heif": "image/heic",
    "image/x-ms-bmp": "image/bmp",
    "image/x-bmp": "image/bmp",
    "image/tif": "image/tiff",
    "image/x-tiff": "image/tiff",
    "image/svg": "image/svg+xml",
    "text/xml": "image/svg+xml",
    "application/xml": "image/svg+xml",
    "application/x-pdf": "application/pdf",
    "application/acrobat": "application/pdf",
}
_EXTENSION_TYPES = {
    ".png": "image/png",
    ".apng": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".jpe": "image/jpeg",
    ".jfif": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".heic": "image/heic",
    ".heif": "image/heic",
    ".bmp": "image/bmp",
    ".dib": "image/bmp",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".svg": "image/svg+xml",
    ".pdf": "application/pdf",
}
# Python's table maps these to application/octet-stream, which would hide them.
_PROGRAM_EXTENSIONS = frozenset(
    {
        ".exe",
        ".dll",
        ".scr",
        ".com",
        ".msi",
        ".bat",
        ".cmd",
        ".ps1",
        ".vbs",
        ".jar",
        ".lnk",
        ".hta",
        ".cpl",
        ".pif",
        ".app",
        ".sh",
    }
)
_PROGRAM_TYPES = frozenset({"application/x-msdownload", "application/x-executable"})
# The built-in table only, so that results do not depend on /etc/mime.types.
_MIME_TYPES = mimetypes.MimeTypes()

_OOXML = "application/vnd.openxmlformats-officedocument."
_TYPE_NOUNS = {
    "image/png": "a PNG image",
    "image/jpeg": "a JPEG image",
    "image/gif": "a GIF image",
    "image/webp": "a WebP image",
    "image/avif": "an AVIF image",
    "image/heic": "a HEIC image",
    "image/bmp": "a BMP image",
    "image/tiff": "a TIFF image",
    "image/svg+xml": "an SVG image",
    "application/pdf": "a PDF document",
    "text/html": "HTML",
    "application/x-msdownload": "a Windows program",
    "application/x-executable": "a Linux program",
    "application/zip": "a ZIP archive",
    "application/x-rar-compressed": "a RAR archive",
    "application/x-7z-compressed": "a 7-Zip archive",
    "application/gzip": "a gzip archive",
    "application/x-tar": "a tar archive",
    "application/msword": "a Word document",
    _OOXML + "wordprocessingml.document": "a Word document",
    "application/vnd.ms-excel": "an Excel spreadsheet",
    _OOXML + "spreadsheetml.sheet": "an Excel spreadsheet",
    "application/vnd.ms-powerpoint": "a PowerPoint presentation",
    _OOXML + "presentationml.presentation": "a PowerPoint presentation",
    "application/rtf": "an RTF document",
    "image/vnd.adobe.photoshop": "a Photoshop image",
    "image/x-icon": "an icon file",
    "image/jpx": "a JPEG 2000 image",
}

# A text file whose first element has one of these names is HTML. The names are
# those of the HTML byte patterns in the WHATWG MIME Sniffing Standard's rules for
# identifying a resource with an unknown MIME type.
_HTML_ROOTS = frozenset(
    {
        "html",
        "head",
        "body",
        "script",
        "iframe",
        "h1",
        "div",
        "font",
        "table",
        "a",
        "style",
        "title",
        "b",
        "br",
        "p",
    }
)
# SVG and HTML are recognised by their first element, looked for in this many bytes.
_MARKUP_SCAN_BYTES = 64 * KIB
_ELEMENT_NAME = re.compile(r"<(?:[A-Za-z_][\w.-]*:)?([A-Za-z][\w.-]*)[\s/>]")
_BMP_HEADER_SIZES = frozenset({12, 40, 52, 56, 64, 108, 124})


@dataclass(frozen=True)
class AttachmentLimits:
    """Limits on the files of one update, in bytes, where 1 MB is 1024 * 1024 bytes.

    Inline images referenced from the HTML body by ``cid:`` that are at most
    ``inline_skip_bytes`` long are skipped instead of counted.
    """

    max_files: int = 5
    max_file_bytes: int = 10 * MIB
    max_total_bytes: int = 25 * MIB
    inline_skip_bytes: int = 20 * KIB

    def __post_init__(self) -> None:
        for limit in fields(self):
            value = getattr(self, limit.name)
            if value < 0:
                raise ValueError(
                    f"AttachmentLimits.{limit.name} is {value}; it must be 0 or more."
                )


DEFAULT_LIMITS = AttachmentLimits()


@dataclass(frozen=True)
class AttachmentCheck:
    """Outcome of check_attachments: accepted files, problems and skipped images.

    ``problems`` contains one entry per broken rule, so a file may appear twice.
    """

    accepted: tuple[CheckedAttachment, ...]
    problems: tuple[AttachmentProblem, ...]
    skipped_inline: int

    @property
    def ok(self) -> bool:
        """True when no file broke a rule."""
        return not self.problems


def check_attachments(
    files: Iterable[MailAttachment], limits: AttachmentLimits = DEFAULT_LIMITS
) -> AttachmentCheck:
    """Apply the attachment rules to the files of one update.

    Every file is checked, and a file may break more than one rule. Files are
    numbered in their order, skipped inline images left out, and a file past
    ``max_files`` is rejected. Only accepted files add to the combined size, so a
    later file that still fits is accepted after one that did not.
    """
    accepted: list[CheckedAttachment] = []
    problems: list[AttachmentProblem] = []
    skipped_inline = 0
    position = 0
    total_bytes = 0

    for file in files:
        size = len(file.data)
        if file.is_inline and file.content_id and size <= limits.inline_skip_bytes:
            skipped_inline += 1
            continue
        position += 1

        if size == 0:
            problems.append(AttachmentProblem(file.filename, "is empty"))
            continue
        sniffed = sniff_type(file.data)
        file_problems = [
            rule
            for rule in (
                _content_problem(file, sniffed),
                _size_problem(size, limits.max_file_bytes),
            )
            if rule
        ]
        if not file_problems and position > limits.max_files:
            file_problems.append(
                f"is the {_ordinal(position)} file; an update may carry at most "
                f"{limits.max_files} {'file' if limits.max_files == 1 else 'files'}"
            )
        if not file_problems and total_bytes + size > limits.max_total_bytes:
            total_text, limit_text = _compare_sizes(
                total_bytes + size, limits.max_total_bytes
            )
            file_problems.append(
                f"brings the total to {total_text}; all files of one update may add "
                f"up to at most {limit_text}"
            )
        if file_problems:
            problems.extend(
                AttachmentProblem(file.filename, rule) for rule in file_problems
            )
            continue

        total_bytes += size
        accepted.append(
            CheckedAttachment(
                filename=file.filename,
                content_type=sniffed,
                data=file.data,
                sha256=hashlib.sha256(file.data).hexdigest(),
            )
        )
    return AttachmentCheck(tuple(accepted), tuple(problems), skipped_inline)


def sniff_type(data: bytes) -> str | None:
    """Return the media type that a file's bytes show, or None when unrecognised.

    Binary formats are recognised by the filetype package from the first 8 KiB.
    SVG and HTML are recognised here by their first element, because filetype reads
    no text formats. The result may be a type that the rules reject, such as
    ``application/x-msdownload`` or ``text/html``.
    """
    root = _first_element(data)
    if root == "svg":
        return "image/svg+xml"
    if root in _HTML_ROOTS:
        return "text/html"

    kind = filetype.guess(data)
    if kind is None:
        return None
    media_type = _TYPE_ALIASES.get(kind.mime, kind.mime)
    if media_type == "image/bmp" and not _has_bmp_header(data):
        # filetype accepts any data starting with "BM".
        return None
    return media_type


def _content_problem(file: MailAttachment, sniffed: str | None) -> str | None:
    """Return the problem with a file's type, or None when its type is accepted."""
    declared = _normalise_type(file.declared_type)
    named = _extension_type(file.filename)
    extension = _extension(file.filename)
    contents = _describe(sniffed)

    if sniffed not in ACCEPTED_TYPES:
        if sniffed in _PROGRAM_TYPES:
            return f"is {contents}, not an image or PDF; {ACCEPTED_SUMMARY}"
        if declared in ACCEPTED_TYPES:
            return (
                f"is declared as {file.declared_type.strip()} but contains {contents}"
            )
        if named in ACCEPTED_TYPES:
            return f"has the extension {extension} but contains {contents}"
        if sniffed and sniffed.startswith("image/"):
            return f"is {contents}, a format that is not accepted; {ACCEPTED_SUMMARY}"
        return f"is {contents}, not an image or PDF; {ACCEPTED_SUMMARY}"

    if declared not in GENERIC_TYPES and declared != sniffed:
        return f"is declared as {file.declared_type.strip()} but contains {contents}"
    if named is not None and named != sniffed:
        return f"has the extension {extension} but contains {contents}"
    return None


def _size_problem(size: int, max_file_bytes: int) -> str | None:
    if size <= max_file_bytes:
        return None
    size_text, limit_text = _compare_sizes(size, max_file_bytes)
    return f"is {size_text}; each file may be at most {limit_text}"


def _normalise_type(media_type: str) -> str:
    media_type = media_type.split(";", 1)[0].strip().lower()
    return _TYPE_ALIASES.get(media_type, media_type)


def _extension(filename: str) -> str:
    stem, dot, extension = filename.rpartition(".")
    return f".{extension.lower()}" if dot and stem.strip() else ""


def _extension_type(filename: str) -> str | None:
    """Return the specific type that a filename's extension names, or None."""
    extension = _extension(filename)
    if not extension:
        return None
    if extension in _EXTENSION_TYPES:
        return _EXTENSION_TYPES[extension]
    if extension in _PROGRAM_EXTENSIONS:
        return "application/x-msdownload"
    guessed, _ = _MIME_TYPES.guess_type(f"file{extension}")
    if guessed is None or guessed in GENERIC_TYPES:
        # Unknown suffixes such as ".15" in "Screen Shot 10.32.15" name no type.
        return None
    return _normalise_type(guessed)


def _describe(media_type: str | None) -> str:
    if media_type is None:
        return "data of an unknown type"
    if media_type in _TYPE_NOUNS:
        return _TYPE_NOUNS[media_type]
    if media_type.startswith("image/"):
        return f"an image of type {media_type}"
    if media_type.startswith("video/"):
        return "a video"
    if media_type.startswith("audio/"):
        return "an audio file"
    return f"a file of type {media_type}"


def _first_element(data: bytes) -> str | None:
    """Return the lowercased name of a text file's first element, or None.

    An optional byte order mark, white space, XML declaration, processing
    instructions, comments and a doctype may come before the element.
    """
    head = data[:_MARKUP_SCAN_BYTES]
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = head.decode("utf-16", "ignore")
    else:
        # Latin-1 maps every byte to one character, so markup stays where it was.
        text = head.removeprefix(b"\xef\xbb\xbf").decode("latin-1")

    position = 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if not text.startswith("<", position):
            return None
        if text.startswith("<?", position):
            position = _after(text, "?>", position)
        elif text.startswith("<!--", position):
            position = _after(text, "-->", position)
        elif text[position : position + 9].lower() == "<!doctype":
            position = _after_doctype(text, position)
        else:
            break
        if position < 0:
            return None
    match = _ELEMENT_NAME.match(text, position)
    return match.group(1).lower() if match else None


def _after(text: str, terminator: str, start: int) -> int:
    end = text.find(terminator, start)
    return end + len(terminator) if end >= 0 else -1


def _after_doctype(text: str, start: int) -> int:
    bracket = text.find("[", start)
    close = text.find(">", start)
    if 0 <= bracket < close:
        # An internal subset may contain ">" of its own declarations.
        subset_end = text.find("]", bracket)
        return _after(text, ">", subset_end) if subset_end >= 0 else -1
    return close + 1 if close >= 0 else -1


def _has_bmp_header(data: bytes) -> bool:
    if len(data) < 18:
        return False
    return int.from_bytes(data[14:18], "little") in _BMP_HEADER_SIZES


def _compare_sizes(size: int, limit: int) -> tuple[str, str]:
    """Return a size and a limit as text, in bytes when rounding would hide the gap."""
    size_text, limit_text = _format_size(size), _format_size(limit)
    whole_limit_text = limit_text.replace(".0 ", " ")
    if size_text == limit_text:
        return f"{size:,} bytes", f"{whole_limit_text} ({limit:,} bytes)"
    return size_text, whole_limit_text


def _format_size(size: int) -> str:
    if size >= MIB:
        return f"{size / MIB:.1f} MB"
    if size >= KIB:
        return f"{size / KIB:.1f} KB"
    return f"{size} bytes"


def _ordinal(number: int) -> str:
    if 10 <= number % 100 <= 20:
        suffix = "th"
    else:
        suffix = {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number}{suffix}"
