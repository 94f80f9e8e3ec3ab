"""Attachment rules: accepted types by their bytes, size and count limits."""

from __future__ import annotations

import hashlib
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.mail import parse_mail
from gateway.attachments import (
    ACCEPTED_SUMMARY,
    DEFAULT_LIMITS,
    KIB,
    MIB,
    AttachmentLimits,
    check_attachments,
    sniff_type,
)
from gateway.model import MailAttachment

MESSAGES = Path(__file__).resolve().parent.parent / "messages"


def build_png(width: int = 4, height: int = 4) -> bytes:
    """Return a valid RGB PNG image."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + b"\x80\x40\x20" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def build_iso_media(brand: bytes) -> bytes:
    """Return an ISO base media file that starts with an ftyp box of this brand."""
    return struct.pack(">I", 24) + b"ftyp" + brand + b"\x00\x00\x00\x00mif1" + brand


PNG = build_png()
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xff\xd9"
GIF = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00;"
WEBP = b"RIFF\x1a\x00\x00\x00WEBPVP8 \x0e\x00\x00\x00" + bytes(14)
BMP = b"BM" + struct.pack("<IHHI", 58, 0, 0, 54) + struct.pack("<I", 40) + bytes(36)
TIFF = b"II*\x00\x08\x00\x00\x00" + bytes(8)
PDF = b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< >>\n%%EOF\n"
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>'
HTML = b"<!DOCTYPE html>\n<html><body><script>alert(1)</script></body></html>"
WINDOWS_PROGRAM = b"MZ\x90\x00" + bytes(56) + struct.pack("<I", 64) + b"PE\x00\x00"
LINUX_PROGRAM = b"\x7fELF\x02\x01\x01" + bytes(57)
ZIP = b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + bytes(20)


def make_attachment(
    data: bytes,
    filename: str = "file",
    declared_type: str = "",
    content_id: str | None = None,
    is_inline: bool = False,
) -> MailAttachment:
    return MailAttachment(filename, declared_type, data, content_id, is_inline)


def make_png_attachment(size: int, name: str = "shot.png") -> MailAttachment:
    """Return a PNG attachment padded to exactly `size` bytes."""
    return make_attachment(PNG + bytes(size - len(PNG)), name, "image/png")


def problem_rules(check) -> list[str]:
    return [problem.rule for problem in check.problems]


# sniff_type


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (PNG, "image/png"),
        (JPEG, "image/jpeg"),
        (GIF, "image/gif"),
        (WEBP, "image/webp"),
        (build_iso_media(b"avif"), "image/avif"),
        (build_iso_media(b"heic"), "image/heic"),
        (BMP, "image/bmp"),
        (TIFF, "image/tiff"),
        (PDF, "application/pdf"),
        (SVG, "image/svg+xml"),
        (HTML, "text/html"),
        (WINDOWS_PROGRAM, "application/x-msdownload"),
        (LINUX_PROGRAM, "application/x-executable"),
        (ZIP, "application/zip"),
    ],
    ids=[
        "png",
        "jpeg",
        "gif",
        "webp",
        "avif",
        "heic",
        "bmp",
        "tiff",
        "pdf",
        "svg",
        "html",
        "windows-program",
        "linux-program",
        "zip",
    ],
)
def test_sniff_type_recognises_format(data: bytes, expected: str) -> None:
    assert sniff_type(data) == expected


@pytest.mark.parametrize(
    "data",
    [
        b'\xef\xbb\xbf<?xml version="1.0" encoding="UTF-8"?>\n' + SVG,
        b"<!-- Generator: Adobe Illustrator 27.0 -->\n" + SVG,
        b'<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" '
        b'"http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">\n' + SVG,
        b'<?xml version="1.0"?>\n<!DOCTYPE svg [ <!ENTITY ns "http://x"> ]>\n' + SVG,
        b'<?xml version="1.0"?>\n<?xml-stylesheet href="a.css"?>\n' + SVG,
        b'  \n<svg:svg xmlns:svg="http://www.w3.org/2000/svg"/>',
        '<svg xmlns="http://www.w3.org/2000/svg"/>'.encode("utf-16"),
    ],
    ids=[
        "bom-and-declaration",
        "comment",
        "doctype",
        "doctype-internal-subset",
        "processing-instruction",
        "prefixed-root",
        "utf-16",
    ],
)
def test_sniff_type_finds_svg_after_prolog(data: bytes) -> None:
    assert sniff_type(data) == "image/svg+xml"


@pytest.mark.parametrize(
    "data",
    [
        b"Just some text",
        b"BM is not enough for a bitmap",
        b"<?xml version='1.0'?><note>not svg</note>",
        b"<!-- an unterminated comment <svg",
        b"<svgfoo/>",
        b"",
    ],
    ids=[
        "plain-text",
        "bm-text",
        "other-xml",
        "unterminated-comment",
        "svg-prefix-of-name",
        "empty",
    ],
)
def test_sniff_type_returns_none_for_unknown(data: bytes) -> None:
    assert sniff_type(data) is None


def test_sniff_type_treats_apng_as_png() -> None:
    apng = (
        PNG[:33]
        + struct.pack(">I", 8)
        + b"acTL"
        + bytes(8)
        + b"\x00\x00\x00\x00"
        + PNG[33:]
    )

    assert sniff_type(apng) == "image/png"


# Accepted files


@pytest.mark.parametrize(
    ("data", "name", "declared", "expected"),
    [
        (PNG, "shot.png", "image/png", "image/png"),
        (JPEG, "photo.JPG", "image/jpeg", "image/jpeg"),
        (JPEG, "photo.jpeg", "image/pjpeg", "image/jpeg"),
        (GIF, "anim.gif", "image/gif", "image/gif"),
        (WEBP, "shot.webp", "image/webp", "image/webp"),
        (build_iso_media(b"avif"), "shot.avif", "image/avif", "image/avif"),
        (build_iso_media(b"heic"), "IMG_0042.HEIC", "image/heic", "image/heic"),
        (build_iso_media(b"heic"), "IMG_0042.heif", "image/heif", "image/heic"),
        (BMP, "paint.bmp", "image/x-ms-bmp", "image/bmp"),
        (TIFF, "scan.tif", "image/tiff", "image/tiff"),
        (SVG, "logo.svg", "image/svg+xml", "image/svg+xml"),
        (SVG, "logo.svg", "text/xml", "image/svg+xml"),
        (PDF, "invoice.pdf", "application/pdf", "application/pdf"),
    ],
    ids=[
        "png",
        "jpeg-uppercase-extension",
        "jpeg-pjpeg",
        "gif",
        "webp",
        "avif",
        "heic",
        "heif-declared",
        "bmp-alias",
        "tiff",
        "svg",
        "svg-as-xml",
        "pdf",
    ],
)
def test_allowed_type_is_accepted(
    data: bytes, name: str, declared: str, expected: str
) -> None:
    check = check_attachments([make_attachment(data, name, declared)])

    assert check.ok
    [accepted] = check.accepted
    assert accepted.content_type == expected
    assert accepted.filename == name


@pytest.mark.parametrize(
    "declared",
    [
        "",
        "application/octet-stream",
        "binary/octet-stream",
        "application/x-unknown",
        "APPLICATION/OCTET-STREAM",
    ],
    ids=["missing", "octet-stream", "binary-octet-stream", "x-unknown", "uppercase"],
)
def test_generic_declared_type_is_accepted(declared: str) -> None:
    check = check_attachments([make_attachment(JPEG, "photo.jpg", declared)])

    assert check.ok
    assert check.accepted[0].content_type == "image/jpeg"


def test_unknown_suffix_is_not_an_extension() -> None:
    check = check_attachments(
        [make_attachment(PNG, "Screen Shot 2026-11-04 at 10.32.15", "")]
    )

    assert check.ok


def test_accepted_file_carries_hash_and_bytes() -> None:
    check = check_attachments([make_attachment(PDF, "invoice.pdf", "application/pdf")])

    [accepted] = check.accepted
    assert accepted.sha256 == hashlib.sha256(PDF).hexdigest()
    assert accepted.data == PDF
    assert accepted.size_bytes == len(PDF)


# Rejected types


def test_program_named_png_is_rejected() -> None:
    check = check_attachments(
        [make_attachment(WINDOWS_PROGRAM, "screenshot.png", "image/png")]
    )

    assert check.accepted == ()
    assert problem_rules(check) == [
        (
            "is a Windows program, not an image or PDF; only images (PNG, JPEG, GIF, "
            "WebP, AVIF, HEIC, BMP, TIFF, SVG) and PDF files are accepted"
        )
    ]


def test_html_declared_as_png_is_rejected() -> None:
    check = check_attachments([make_attachment(HTML, "error.png", "image/png")])

    assert problem_rules(check) == ["is declared as image/png but contains HTML"]


def test_html_page_is_rejected() -> None:
    check = check_attachments([make_attachment(HTML, "page.html", "text/html")])

    assert problem_rules(check) == [f"is HTML, not an image or PDF; {ACCEPTED_SUMMARY}"]


def test_pdf_named_jpg_is_rejected() -> None:
    check = check_attachments(
        [make_attachment(PDF, "photo.jpg", "application/octet-stream")]
    )

    assert problem_rules(check) == [
        "has the extension .jpg but contains a PDF document"
    ]


def test_png_declared_as_jpeg_is_rejected() -> None:
    check = check_attachments([make_attachment(PNG, "shot", "image/jpeg")])

    assert problem_rules(check) == [
        "is declared as image/jpeg but contains a PNG image"
    ]


@pytest.mark.parametrize(
    ("name", "extension"),
    [("shot.png.exe", ".exe"), ("shot.html", ".html"), ("shot.txt", ".txt")],
    ids=["program", "html", "text"],
)
def test_png_with_other_extension_is_rejected(name: str, extension: str) -> None:
    check = check_attachments([make_attachment(PNG, name, "")])

    assert problem_rules(check) == [
        f"has the extension {extension} but contains a PNG image"
    ]


def test_zip_archive_is_rejected() -> None:
    check = check_attachments([make_attachment(ZIP, "logs.zip", "application/zip")])

    assert problem_rules(check) == [
        f"is a ZIP archive, not an image or PDF; {ACCEPTED_SUMMARY}"
    ]


def test_unknown_bytes_are_rejected() -> None:
    check = check_attachments([make_attachment(b"plain notes", "notes", "")])

    assert problem_rules(check) == [
        f"is data of an unknown type, not an image or PDF; {ACCEPTED_SUMMARY}"
    ]


def test_unaccepted_image_format_is_rejected() -> None:
    icon = b"\x00\x00\x01\x00\x01\x00" + bytes(16)

    check = check_attachments([make_attachment(icon, "favicon.ico", "image/x-icon")])

    assert problem_rules(check) == [
        f"is an icon file, a format that is not accepted; {ACCEPTED_SUMMARY}"
    ]


def test_empty_file_is_rejected() -> None:
    check = check_attachments([make_attachment(b"", "shot.png", "image/png")])

    assert problem_rules(check) == ["is empty"]
    assert check.problems[0].filename == "shot.png"


# Size and count limits


def test_file_at_size_limit_is_accepted() -> None:
    check = check_attachments([make_png_attachment(10 * MIB)])

    assert check.ok


def test_file_one_byte_over_limit_is_rejected() -> None:
    check = check_attachments([make_png_attachment(10 * MIB + 1)])

    assert check.accepted == ()
    assert problem_rules(check) == [
        "is 10,485,761 bytes; each file may be at most 10 MB (10,485,760 bytes)"
    ]


def test_oversized_file_message_names_sizes() -> None:
    check = check_attachments([make_png_attachment(int(12.4 * MIB))])

    assert problem_rules(check) == ["is 12.4 MB; each file may be at most 10 MB"]


def test_five_files_are_accepted() -> None:
    check = check_attachments(
        [make_png_attachment(100, f"{index}.png") for index in range(5)]
    )

    assert check.ok
    assert len(check.accepted) == 5


def test_sixth_file_is_rejected() -> None:
    files = [make_png_attachment(100, f"{index}.png") for index in range(1, 7)]

    check = check_attachments(files)

    assert len(check.accepted) == 5
    assert [problem.filename for problem in check.problems] == ["6.png"]
    assert problem_rules(check) == [
        "is the 6th file; an update may carry at most 5 files"
    ]


def test_total_at_limit_is_accepted() -> None:
    files = [
        make_png_attachment(10 * MIB, "a.png"),
        make_png_attachment(10 * MIB, "b.png"),
        make_png_attachment(5 * MIB, "c.png"),
    ]

    check = check_attachments(files)

    assert check.ok
    assert sum(accepted.size_bytes for accepted in check.accepted) == 25 * MIB


def test_total_one_byte_over_limit_is_rejected() -> None:
    files = [
        make_png_attachment(10 * MIB, "a.png"),
        make_png_attachment(10 * MIB, "b.png"),
        make_png_attachment(5 * MIB + 1, "c.png"),
    ]

    check = check_attachments(files)

    assert [accepted.filename for accepted in check.accepted] == ["a.png", "b.png"]
    assert [problem.filename for problem in check.problems] == ["c.png"]
    assert problem_rules(check) == [
        (
            "brings the total to 26,214,401 bytes; all files of one update may add "
            "up to at most 25 MB (26,214,400 bytes)"
        )
    ]


def test_total_message_names_sizes() -> None:
    files = [
        make_png_attachment(10 * MIB, "a.png"),
        make_png_attachment(10 * MIB, "b.png"),
        make_png_attachment(6 * MIB, "c.png"),
    ]

    check = check_attachments(files)

    assert problem_rules(check) == [
        (
            "brings the total to 26.0 MB; all files of one update may add up to at "
            "most 25 MB"
        )
    ]


def test_later_file_that_fits_is_accepted() -> None:
    files = [
        make_png_attachment(10 * MIB, "a.png"),
        make_png_attachment(10 * MIB, "b.png"),
        make_png_attachment(6 * MIB, "c.png"),
        make_png_attachment(KIB, "d.png"),
    ]

    check = check_attachments(files)

    assert [accepted.filename for accepted in check.accepted] == [
        "a.png",
        "b.png",
        "d.png",
    ]


def test_rejected_file_does_not_count_toward_total() -> None:
    files = [
        make_png_attachment(12 * MIB, "big.png"),
        make_png_attachment(10 * MIB, "a.png"),
        make_png_attachment(10 * MIB, "b.png"),
        make_png_attachment(5 * MIB, "c.png"),
    ]

    check = check_attachments(files)

    assert [accepted.filename for accepted in check.accepted] == [
        "a.png",
        "b.png",
        "c.png",
    ]
    assert [problem.filename for problem in check.problems] == ["big.png"]


def test_every_failing_file_is_listed() -> None:
    files = [
        make_attachment(WINDOWS_PROGRAM, "setup.png", "image/png"),
        make_png_attachment(100, "fine.png"),
        make_attachment(b"", "empty.pdf", "application/pdf"),
        make_attachment(HTML, "page.png", "image/png"),
    ]

    check = check_attachments(files)

    assert [problem.filename for problem in check.problems] == [
        "setup.png",
        "empty.pdf",
        "page.png",
    ]
    assert [accepted.filename for accepted in check.accepted] == ["fine.png"]
    assert not check.ok


def test_file_breaking_two_rules_is_listed_twice() -> None:
    big_program = make_attachment(
        WINDOWS_PROGRAM + bytes(11 * MIB), "setup.png", "image/png"
    )

    check = check_attachments([big_program])

    assert len(check.problems) == 2
    assert problem_rules(check)[0].startswith("is a Windows program")
    assert problem_rules(check)[1] == "is 11.0 MB; each file may be at most 10 MB"


def test_custom_limits_are_applied() -> None:
    limits = AttachmentLimits(max_files=1, max_file_bytes=KIB, max_total_bytes=KIB)

    check = check_attachments(
        [make_png_attachment(500, "a.png"), make_png_attachment(500, "b.png")], limits
    )

    assert problem_rules(check) == [
        "is the 2nd file; an update may carry at most 1 file"
    ]


def test_negative_limit_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_files is -1"):
        AttachmentLimits(max_files=-1)


def test_default_limits_use_binary_megabytes() -> None:
    assert DEFAULT_LIMITS.max_file_bytes == 10_485_760
    assert DEFAULT_LIMITS.max_total_bytes == 26_214_400
    assert DEFAULT_LIMITS.inline_skip_bytes == 20_480


# Inline images


def test_small_inline_logo_is_skipped() -> None:
    logo = make_attachment(
        PNG, "image001.png", "image/png", content_id="logo@example.com", is_inline=True
    )

    check = check_attachments(
        [logo] + [make_png_attachment(100, f"{i}.png") for i in range(5)]
    )

    assert check.ok
    assert check.skipped_inline == 1
    assert len(check.accepted) == 5


def test_inline_image_at_skip_limit_is_skipped() -> None:
    logo = make_png_attachment(20 * KIB, "image001.png")
    logo = MailAttachment(logo.filename, logo.declared_type, logo.data, "logo@x", True)

    check = check_attachments([logo])

    assert check.skipped_inline == 1
    assert check.accepted == ()


def test_inline_image_over_skip_limit_is_counted() -> None:
    photo = make_png_attachment(20 * KIB + 1, "photo.png")
    photo = MailAttachment(
        photo.filename, photo.declared_type, photo.data, "photo@x", True
    )

    check = check_attachments([photo])

    assert check.skipped_inline == 0
    assert len(check.accepted) == 1


def test_inline_flag_without_content_id_is_counted() -> None:
    check = check_attachments(
        [make_attachment(PNG, "logo.png", "image/png", is_inline=True)]
    )

    assert check.skipped_inline == 0
    assert len(check.accepted) == 1


# Sample messages through parse_mail


@pytest.mark.parametrize(
    ("name", "accepted", "skipped"),
    [
        ("apple_mail_png.eml", [("screenshot.png", "image/png")], 0),
        ("pdf_attachment.eml", [("invoice-2026-11.pdf", "application/pdf")], 0),
        ("rfc2231_filename.eml", [("Rechnung März.pdf", "application/pdf")], 0),
        ("jpeg_octet_stream.eml", [("logo.jpg", "image/jpeg")], 0),
        ("dotdot_filename.eml", [("passwd.png", "image/png")], 0),
        ("forwarded_rfc822.eml", [("error-502.png", "image/png")], 0),
        ("winmail_dat.eml", [("diagram.png", "image/png")], 0),
        ("signature_logo_inline.eml", [], 1),
    ],
    ids=[
        "apple-png",
        "pdf",
        "rfc2231-pdf",
        "jpeg-octet-stream",
        "dotdot-name",
        "forwarded-png",
        "winmail-dat",
        "signature-logo",
    ],
)
def test_sample_attachments_are_accepted(
    name: str, accepted: list[tuple[str, str]], skipped: int
) -> None:
    mail = parse_mail((MESSAGES / name).read_bytes())

    check = check_attachments(mail.attachments)

    assert check.ok
    assert [(a.filename, a.content_type) for a in check.accepted] == accepted
    assert check.skipped_inline == skipped


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        (
            "exe_named_png.eml",
            f"is a Windows program, not an image or PDF; {ACCEPTED_SUMMARY}",
        ),
        ("html_declared_png.eml", "is declared as image/png but contains HTML"),
    ],
    ids=["exe-named-png", "html-declared-png"],
)
def test_sample_attachments_are_rejected(name: str, rule: str) -> None:
    mail = parse_mail((MESSAGES / name).read_bytes())

    check = check_attachments(mail.attachments)

    assert check.accepted == ()
    assert problem_rules(check) == [rule]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.builds(
            MailAttachment,
            filename=st.text(max_size=40),
            declared_type=st.sampled_from(
                [
                    "",
                    "image/png",
                    "application/pdf",
                    "text/html",
                    "image/svg+xml",
                    "x/y",
                ]
            ),
            data=st.one_of(
                st.binary(max_size=200),
                st.sampled_from([PNG, PDF, SVG, HTML, WINDOWS_PROGRAM, BMP[:10], b"<"]),
            ),
            content_id=st.one_of(st.none(), st.text(max_size=10)),
            is_inline=st.booleans(),
        ),
        max_size=8,
        unique_by=lambda attachment: attachment.filename,
    )
)
def test_check_never_raises_and_accounts_for_every_file(
    files: list[MailAttachment],
) -> None:
    check = check_attachments(files)

    rejected = {problem.filename for problem in check.problems}
    assert len(check.accepted) + len(rejected) + check.skipped_inline == len(files)
    assert len(check.accepted) <= DEFAULT_LIMITS.max_files
    assert all(a.content_type is not None for a in check.accepted)
