"""parse_mail on sample messages from real clients and on broken or hostile input."""

from __future__ import annotations

import base64
import re
from datetime import UTC, timedelta
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import adapters.mail
from adapters.mail import FORWARDED_MARKER, MAX_NESTING_DEPTH, parse_mail
from gateway.model import ParsedMail

MESSAGES = Path(__file__).resolve().parent.parent / "messages"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CLIENT_SAMPLES = [
    "android_gmail.eml",
    "apple_mail_png.eml",
    "dotdot_filename.eml",
    "exe_named_png.eml",
    "folded_references_no_brackets.eml",
    "forwarded_rfc822.eml",
    "forwarded_twice.eml",
    "gmail_plain_and_html.eml",
    "html_declared_png.eml",
    "html_only.eml",
    "iphone_short.eml",
    "iso2022jp.eml",
    "jpeg_octet_stream.eml",
    "koi8r_charset.eml",
    "latin1_charset.eml",
    "outlook_desktop.eml",
    "pdf_attachment.eml",
    "raw_8bit_headers.eml",
    "rfc2231_filename.eml",
    "signature_logo_inline.eml",
    "thunderbird.eml",
    "winmail_dat.eml",
]


def parse_sample(name: str) -> ParsedMail:
    return parse_mail((MESSAGES / name).read_bytes())


def read_sample_part(name: str, content_type: str) -> bytes:
    """Return the decoded payload of the first part of a sample with this type."""
    parsed = BytesParser(policy=policy.default).parsebytes(
        (MESSAGES / name).read_bytes()
    )
    for part in parsed.walk():
        if part.get_content_type() == content_type:
            return part.get_payload(decode=True)
    raise AssertionError(f"{name} has no {content_type} part")


def build_message(headers: str, body: str | bytes = "Body text.\n") -> bytes:
    """Build a raw message from a header block and a body, with LF line endings."""
    body_bytes = body.encode() if isinstance(body, str) else body
    return headers.strip("\n").encode() + b"\n\n" + body_bytes


def build_message_with_file(part_headers: str, payload: bytes) -> bytes:
    encoded = base64.encodebytes(payload).decode()
    return build_message(
        "From: ada@example.com\nSubject: file\n"
        'Content-Type: multipart/mixed; boundary="b1"',
        "--b1\nContent-Type: text/plain\n\nSee the file.\n"
        f"--b1\n{part_headers}\nContent-Transfer-Encoding: base64\n\n{encoded}"
        "--b1--\n",
    )


def build_nested_message(levels: int) -> bytes:
    opening = "".join(
        f"--b{level}\nContent-Type: multipart/mixed; boundary=b{level + 1}\n\n"
        for level in range(levels)
    )
    return build_message(
        "From: ada@example.com\nSubject: deep\n"
        "Content-Type: multipart/mixed; boundary=b0",
        opening + f"--b{levels}\nContent-Type: text/plain\n\ninnermost text\n",
    )


# Every sample


@pytest.mark.parametrize("name", sorted(p.name for p in MESSAGES.glob("*.eml")))
def test_every_sample_parses(name: str) -> None:
    raw = (MESSAGES / name).read_bytes()

    parsed = parse_mail(raw)

    assert isinstance(parsed, ParsedMail)
    assert parsed.size_bytes == len(raw)


@pytest.mark.parametrize("name", CLIENT_SAMPLES)
def test_client_sample_has_sender_subject_and_text(name: str) -> None:
    parsed = parse_sample(name)

    assert parsed.from_address == "ada@example.com"
    assert parsed.from_name == "Ada Lovelace"
    assert parsed.to_addresses == ("support@localhost",)
    assert parsed.subject.strip()
    assert parsed.text.strip()
    assert parsed.message_id
    assert "<" not in parsed.message_id
    assert parsed.date is not None
    assert parsed.date.tzinfo is not None


# Bodies and charsets


def test_gmail_plain_body_keeps_field_lines() -> None:
    parsed = parse_sample("gmail_plain_and_html.eml")

    assert parsed.subject == "Client Portal shows a blank page after login"
    assert parsed.text.startswith(
        "Category: Published app\nSeverity: Sev 2\nApp: Client Portal\n\n"
    )
    assert "<div" not in parsed.text
    assert parsed.html is not None
    assert '<div dir="ltr">' in parsed.html


def test_gmail_message_id_loses_brackets() -> None:
    parsed = parse_sample("gmail_plain_and_html.eml")

    assert (
        parsed.message_id == "CAKx7vQ9mR2pZ+Lw3hY8u1N0cT5eXs_4Jd6bFgA@mail.example.com"
    )


def test_outlook_windows1252_quoted_printable_decoded() -> None:
    parsed = parse_sample("outlook_desktop.eml")

    assert "\u201cExport to CSV\u201d" in parsed.text
    assert "doesn\u2019t" in parsed.text
    assert "\u20ac 1.200" in parsed.text
    assert parsed.header("Thread-Index") == "AdtC9k3QhV7yKx2sT1m8pLrWq4nBfA=="


def test_apple_mail_text_after_attachment_is_kept() -> None:
    parsed = parse_sample("apple_mail_png.eml")

    assert parsed.text.startswith("The chart widget")
    assert parsed.text.endswith("Thanks,\nAda")


def test_iphone_message_keeps_signature_line() -> None:
    parsed = parse_sample("iphone_short.eml")

    assert parsed.text.endswith("Sent from my iPhone")
    assert parsed.header("X-Mailer") == "iPhone Mail (22B83)"


def test_html_only_message_becomes_readable_text() -> None:
    parsed = parse_sample("html_only.eml")

    assert parsed.html is not None
    assert "<" not in parsed.text
    assert "1. Open the Bookings app and log in as any client." in parsed.text
    assert "3. Each appointment is listed two times" in parsed.text
    assert "https://bookings.example.com/appointments" in parsed.text


def test_latin1_subject_and_body_keep_umlauts() -> None:
    parsed = parse_sample("latin1_charset.eml")

    assert parsed.subject == "Anmeldung schlägt nach Passwortänderung fehl"
    assert "Kundenübersicht" in parsed.text
    assert "Viele Grüße" in parsed.text


def test_koi8r_subject_and_body_decoded() -> None:
    parsed = parse_sample("koi8r_charset.eml")

    assert parsed.subject == "Склад не сохраняет новые товары"
    assert parsed.text.startswith("Здравствуйте!")


def test_iso2022jp_seven_bit_body_decoded() -> None:
    parsed = parse_sample("iso2022jp.eml")

    assert parsed.subject == "予約アプリのカレンダーが表示されない"
    assert "予約アプリでカレンダーが表示されません。" in parsed.text
    assert "\x1b" not in parsed.text


def test_thunderbird_utf8_8bit_body_decoded() -> None:
    parsed = parse_sample("thunderbird.eml")

    assert "Crème Brûlée" in parsed.text


def test_android_gmail_prefers_plain_part() -> None:
    parsed = parse_sample("android_gmail.eml")

    assert parsed.text.startswith("The Team Calendar app crashes")
    assert parsed.html is not None
    assert 'dir="auto"' in parsed.html


@pytest.mark.parametrize(
    "charset",
    ["x-unknown-charset", "base64", "unicode_escape", "utf-8"],
    ids=["unknown-label", "bytes-codec", "escape-codec", "wrong-label"],
)
def test_unusable_charset_falls_back_to_guess(charset: str) -> None:
    raw = build_message(
        "From: ada@example.com\nSubject: x\n"
        f"Content-Type: text/plain; charset={charset}",
        "Grüße aus Köln\n".encode("cp1252"),
    )

    parsed = parse_mail(raw)

    assert parsed.text == "Grüße aus Köln"
    assert any("decoded by guess" in defect for defect in parsed.defects)


def test_iso_8859_1_label_decodes_cp1252_quotes() -> None:
    raw = build_message(
        "From: ada@example.com\nSubject: x\n"
        "Content-Type: text/plain; charset=iso-8859-1",
        "\u201cquoted\u201d".encode("cp1252"),
    )

    parsed = parse_mail(raw)

    assert parsed.text == "\u201cquoted\u201d"


def test_multipart_without_boundary_keeps_text() -> None:
    raw = build_message(
        "From: ada@example.com\nSubject: x\nContent-Type: multipart/mixed",
        "The body of a multipart that lost its boundary.\n",
    )

    parsed = parse_mail(raw)

    assert "lost its boundary" in parsed.text
    assert parsed.defects



# Unreadable MIME structure


@pytest.mark.parametrize("name", CLIENT_SAMPLES)
def test_client_sample_structure_is_readable(name: str) -> None:
    assert parse_sample(name).structure_problem is None


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        (
            "unclosed_boundary_quote.eml",
            "the boundary '----=_NextPart_000_000D_01DB4878.BFE09330;\\tcharset=' of "
            "the multipart/alternative part never appears in its body, because the "
            "Content-Type header has an unclosed quote; no text part was read",
        ),
        (
            "boundary_never_appears.eml",
            "the boundary 'Apple-Mail=_3F1C9A72-5E48-4B0D-8A6C-1D2E7F903B54' of the "
            "multipart/mixed part never appears in its body; no text part was read",
        ),
        (
            "multipart_without_boundary.eml",
            "the multipart/mixed part has no boundary parameter; no text part was read",
        ),
    ],
    ids=["unclosed-quote", "boundary-never-appears", "no-boundary"],
)
def test_unsplit_multipart_sets_structure_problem(name: str, problem: str) -> None:
    parsed = parse_sample(name)

    assert parsed.structure_problem == problem
    assert parsed.from_address == "ada@example.com"
    assert parsed.subject


def test_unsplit_inner_part_without_text() -> None:
    raw = build_message(
        "From: ada@example.com\nSubject: x\n"
        'Content-Type: multipart/mixed; boundary="outer"',
        '--outer\nContent-Type: multipart/alternative; boundary="inner"\n\n'
        "--other\nContent-Type: text/plain\n\nThe real text.\n--other--\n"
        "--outer\nContent-Type: image/png\nContent-Disposition: attachment; "
        "filename=shot.png\n\nPNG\n--outer--\n",
    )

    parsed = parse_mail(raw)

    assert parsed.structure_problem is not None
    assert "multipart/alternative" in parsed.structure_problem
    assert [a.filename for a in parsed.attachments] == ["shot.png"]


def test_unsplit_inner_part_beside_text() -> None:
    raw = build_message(
        "From: ada@example.com\nSubject: x\n"
        'Content-Type: multipart/mixed; boundary="outer"',
        "--outer\nContent-Type: text/plain\n\nThe text that was read.\n"
        '--outer\nContent-Type: multipart/related; boundary="inner"\n\n'
        "--other\nContent-Type: image/png\n\nPNG\n--other--\n--outer--\n",
    )

    parsed = parse_mail(raw)

    assert parsed.structure_problem is None
    assert parsed.text == "The text that was read."


def test_missing_close_boundary_is_readable() -> None:
    raw = build_message(
        "From: ada@example.com\nSubject: x\n"
        'Content-Type: multipart/mixed; boundary="b"',
        "--b\nContent-Type: text/plain\n\nText before the cut.\n",
    )

    parsed = parse_mail(raw)

    assert parsed.structure_problem is None
    assert parsed.text == "Text before the cut."
    assert any("CloseBoundaryNotFoundDefect" in defect for defect in parsed.defects)


def test_unclosed_quote_at_header_end_is_readable() -> None:
    # The standard parser reads a boundary whose quote the header's end cuts off.
    raw = build_message(
        'From: ada@example.com\nSubject: x\nContent-Type: multipart/mixed; boundary="b',
        "--b\nContent-Type: text/plain\n\nStill split.\n--b--\n",
    )

    parsed = parse_mail(raw)

    assert parsed.structure_problem is None
    assert parsed.text == "Still split."


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ("Content-Type: text/plain", ""),
        ("Content-Type: text/html", "<p><img src=\"cid:logo\"></p>\n"),
        ('Content-Type: multipart/mixed; boundary="b"', "\n\n"),
        (
            'Content-Type: multipart/mixed; boundary="b"',
            "--b\nContent-Type: application/pdf\nContent-Disposition: attachment; "
            "filename=scan.pdf\n\n%PDF-1.4\n--b--\n",
        ),
    ],
    ids=["empty-text", "html-without-text", "empty-multipart", "file-only"],
)
def test_message_without_text_is_readable(headers: str, body: str) -> None:
    raw = build_message(f"From: ada@example.com\nSubject: x\n{headers}", body)

    parsed = parse_mail(raw)

    assert parsed.structure_problem is None
    assert parsed.text.strip() == ""


def test_deep_nesting_sets_structure_problem() -> None:
    parsed = parse_mail(build_nested_message(5000))

    assert parsed.structure_problem is not None
    assert "nested too deeply" in parsed.structure_problem


# Headers


def test_folded_references_kept_in_order() -> None:
    parsed = parse_sample("folded_references_no_brackets.eml")

    assert parsed.references == (
        "CAKx7vQ9mR2pZ+Lw3hY8u1N0cT5eXs_4Jd6bFgA@mail.example.com",
        "ticket-12.ack.7f3e9b@localhost",
        "ticket-12.update.2c8d41@localhost",
    )


def test_in_reply_to_without_brackets_is_read() -> None:
    parsed = parse_sample("folded_references_no_brackets.eml")

    assert parsed.in_reply_to == ("ticket-12.ack.7f3e9b@localhost",)


def test_id_folded_inside_brackets_is_joined() -> None:
    raw = build_message(
        "From: ada@example.com\nReferences: <first@example.com> <sec\n ond@example.com>"
    )

    parsed = parse_mail(raw)

    assert parsed.references == ("first@example.com", "second@example.com")


def test_unbracketed_ids_skip_comments() -> None:
    raw = build_message(
        "From: ada@example.com\n"
        "In-Reply-To: one@example.com (message from ada@example.com), two@example.com"
    )

    parsed = parse_mail(raw)

    assert parsed.in_reply_to == ("one@example.com", "two@example.com")


def test_message_id_without_brackets() -> None:
    raw = build_message("From: ada@example.com\nMessage-ID: 12345.abc@example.com")

    parsed = parse_mail(raw)

    assert parsed.message_id == "12345.abc@example.com"


def test_raw_8bit_subject_keeps_letters() -> None:
    parsed = parse_sample("raw_8bit_headers.eml")

    assert parsed.subject == "Grüße: Umlaute im Export fehlen"
    assert parsed.header("Organization") == "Analytische Maschinen Müller GmbH"


def test_raw_utf8_header_bytes_read_as_utf8() -> None:
    raw = build_message("From: Jürgen <jurgen@example.com>\nSubject: Größe")

    parsed = parse_mail(raw)

    assert parsed.subject == "Größe"
    assert parsed.from_name == "Jürgen"


def test_encoded_words_split_inside_letter_are_joined() -> None:
    # "ü" is C3 BC in UTF-8; this sender split it across two encoded words.
    raw = build_message(
        "From: ada@example.com\nSubject: =?utf-8?q?Gr=C3?= =?utf-8?q?=BC=C3=9Fe?="
    )

    parsed = parse_mail(raw)

    assert parsed.subject == "Grüße"


def test_encoded_newline_in_subject_becomes_space() -> None:
    raw = build_message(
        "From: ada@example.com\nSubject: =?utf-8?q?Hello=0ABcc=3A_x@example.com?="
    )

    parsed = parse_mail(raw)

    assert parsed.subject == "Hello Bcc: x@example.com"


def test_from_address_is_lowercased() -> None:
    raw = build_message('From: "Ada Lovelace" <Ada@Example.COM>\nTo: Support@LOCALHOST')

    parsed = parse_mail(raw)

    assert parsed.from_address == "ada@example.com"
    assert parsed.to_addresses == ("support@localhost",)


def test_ambiguous_from_address_is_rejected() -> None:
    raw = build_message("From: alice@example.org)<bob@example.org>")

    parsed = parse_mail(raw)

    assert parsed.from_address == ""
    assert any("AddressHeaderDefect" in defect for defect in parsed.defects)


def test_missing_from_gives_empty_address() -> None:
    parsed = parse_mail(build_message("Subject: no sender"))

    assert parsed.from_address == ""
    assert parsed.from_name == ""


def test_cc_and_reply_to_addresses() -> None:
    raw = build_message(
        "From: ada@example.com\n"
        'Cc: "Babbage, Charles" <charles@example.com>, grace@example.com\n'
        "Reply-To: Ada Desk <desk@example.com>"
    )

    parsed = parse_mail(raw)

    assert parsed.cc_addresses == ("charles@example.com", "grace@example.com")
    assert parsed.reply_to == ("desk@example.com",)


def test_minus_zero_date_zone_is_utc() -> None:
    raw = build_message("From: ada@example.com\nDate: Wed, 04 Nov 2026 10:00:00 -0000")

    parsed = parse_mail(raw)

    assert parsed.date is not None
    assert parsed.date.tzinfo == UTC


def test_date_keeps_sender_offset() -> None:
    parsed = parse_sample("iso2022jp.eml")

    assert parsed.date is not None
    assert parsed.date.utcoffset() == timedelta(hours=9)


def test_headers_list_every_top_level_header() -> None:
    parsed = parse_sample("outlook_desktop.eml")

    names = [name for name, _ in parsed.headers]
    assert names[:3] == ["From", "To", "Subject"]
    assert "X-MS-Has-Attach" in names
    assert parsed.header("x-mailer") == "Microsoft Outlook 16.0"


def test_mailparser_failure_falls_back_to_stdlib(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def fail(text: str) -> None:
        raise ValueError("broken")

    monkeypatch.setattr(adapters.mail.mailparser, "parse_from_string", fail)

    parsed = parse_sample("gmail_plain_and_html.eml")

    assert parsed.from_address == "ada@example.com"
    assert parsed.to_addresses == ("support@localhost",)
    assert any("mail-parser failed" in defect for defect in parsed.defects)


# Attachments


def test_apple_mail_png_is_an_attachment() -> None:
    parsed = parse_sample("apple_mail_png.eml")

    [attachment] = parsed.attachments
    assert attachment.filename == "screenshot.png"
    assert attachment.declared_type == "image/png"
    assert attachment.data.startswith(PNG_SIGNATURE)
    assert attachment.is_inline is False


def test_rfc2231_filename_is_decoded() -> None:
    parsed = parse_sample("rfc2231_filename.eml")

    [attachment] = parsed.attachments
    assert attachment.filename == "Rechnung März.pdf"
    assert attachment.data.startswith(b"%PDF-1.4")


def test_unreferenced_content_id_is_not_inline() -> None:
    parsed = parse_sample("pdf_attachment.eml")

    [attachment] = parsed.attachments
    assert attachment.content_id == "f_mh3k2x9a0"
    assert attachment.is_inline is False


def test_signature_logo_referenced_by_cid_is_inline() -> None:
    parsed = parse_sample("signature_logo_inline.eml")

    [logo] = parsed.attachments
    assert logo.content_id == "logo.ae7f21@example.com"
    assert logo.is_inline is True


def test_generic_declared_type_is_kept() -> None:
    parsed = parse_sample("jpeg_octet_stream.eml")

    [attachment] = parsed.attachments
    assert attachment.declared_type == "application/octet-stream"
    assert attachment.data.startswith(b"\xff\xd8\xff")


def test_program_named_png_keeps_its_bytes() -> None:
    parsed = parse_sample("exe_named_png.eml")

    [attachment] = parsed.attachments
    assert attachment.filename == "screenshot.png"
    assert attachment.data.startswith(b"MZ")


def test_dotdot_filename_reduced_to_basename() -> None:
    parsed = parse_sample("dotdot_filename.eml")

    [attachment] = parsed.attachments
    assert attachment.filename == "passwd.png"


@pytest.mark.parametrize(
    ("raw_name", "expected"),
    [
        ("../../etc/shot.png", "shot.png"),
        ("invoice\u202egnp.exe", "invoicegnp.exe"),
        ("\u2066report\u2069\u200e.pdf", "report.pdf"),
        ("bell\x07tab\tname.png", "belltabname.png"),
        ("..", "attachment-1.png"),
        ("", "attachment-1.png"),
    ],
    ids=[
        "relative-path",
        "right-to-left-override",
        "isolates-and-marks",
        "controls",
        "dot-dot",
        "empty",
    ],
)
def test_filename_is_cleaned(raw_name: str, expected: str) -> None:
    raw = build_message_with_file(
        "Content-Type: image/png\n"
        f'Content-Disposition: attachment; filename="{raw_name}"',
        PNG_SIGNATURE,
    )

    parsed = parse_mail(raw)

    [attachment] = parsed.attachments
    assert attachment.filename == expected


def test_windows_path_filename_reduced_to_basename() -> None:
    # Backslashes escape the next character in a quoted string, so this sender
    # used RFC 2231 encoding to keep them.
    raw = build_message_with_file(
        "Content-Type: image/png\nContent-Disposition: attachment; "
        "filename*=utf-8''C%3A%5CUsers%5Cada%5CDesktop%5Cshot.png",
        PNG_SIGNATURE,
    )

    parsed = parse_mail(raw)

    [attachment] = parsed.attachments
    assert attachment.filename == "shot.png"


def test_long_filename_keeps_extension() -> None:
    raw = build_message_with_file(
        "Content-Type: image/png\nContent-Disposition: attachment; "
        f'filename="{"a" * 300}.png"',
        PNG_SIGNATURE,
    )

    parsed = parse_mail(raw)

    [attachment] = parsed.attachments
    assert len(attachment.filename) == 200
    assert attachment.filename.endswith("a.png")


def test_latin1_8bit_filename_keeps_letters() -> None:
    raw = build_message_with_file(
        "Content-Type: image/png\n"
        'Content-Disposition: attachment; filename="Grüße.png"',
        PNG_SIGNATURE,
    ).replace("Grüße".encode(), "Grüße".encode("latin-1"))

    parsed = parse_mail(raw)

    [attachment] = parsed.attachments
    assert attachment.filename == "Grüße.png"


def test_nameless_part_gets_numbered_name() -> None:
    raw = build_message_with_file(
        "Content-Type: image/png\nContent-ID: <shot@example.com>", PNG_SIGNATURE
    )

    parsed = parse_mail(raw)

    [attachment] = parsed.attachments
    assert attachment.filename == "attachment-1.png"
    assert attachment.content_id == "shot@example.com"


def test_part_without_content_type_has_empty_declared_type() -> None:
    raw = build_message_with_file(
        'Content-Disposition: attachment; filename="shot.png"', PNG_SIGNATURE
    )

    parsed = parse_mail(raw)

    [attachment] = parsed.attachments
    assert attachment.declared_type == ""


def test_single_part_pdf_message_is_an_attachment() -> None:
    raw = build_message(
        "From: ada@example.com\nSubject: scan\n"
        'Content-Type: application/pdf; name="scan.pdf"\n'
        "Content-Transfer-Encoding: base64",
        base64.encodebytes(b"%PDF-1.4\n%%EOF\n").decode(),
    )

    parsed = parse_mail(raw)

    [attachment] = parsed.attachments
    assert attachment.filename == "scan.pdf"
    assert parsed.text == ""


def test_text_file_attachment_is_not_body() -> None:
    raw = build_message(
        "From: ada@example.com\nSubject: log\n"
        'Content-Type: multipart/mixed; boundary="b"',
        "--b\nContent-Type: text/html\n\n<p>See the log.</p>\n"
        '--b\nContent-Type: text/plain; name="server.log"\n'
        "\nERROR 500 at /home\n--b--\n",
    )

    parsed = parse_mail(raw)

    assert parsed.text == "See the log."
    assert [a.filename for a in parsed.attachments] == ["server.log"]


# Forwarded messages


def test_forwarded_message_text_is_quoted_block() -> None:
    parsed = parse_sample("forwarded_rfc822.eml")

    own_text, forwarded = parsed.text.split(FORWARDED_MARKER)
    assert own_text.startswith("A client sent me this report")
    assert "From: Grace Hopper <grace@example.com>\n" in forwarded
    assert "Subject: Checkout page fails with error 502\n" in forwarded
    assert "Date: Sun, 15 Nov 2026 21:48:12 +0100\n" in forwarded
    assert "\n> Hi Ada,\n" in forwarded
    assert "\n> Screenshot attached.\n" in forwarded


def test_forwarded_message_body_not_merged_unquoted() -> None:
    parsed = parse_sample("forwarded_rfc822.eml")

    lines = [line for line in parsed.text.split("\n") if "Pay now" in line]
    assert len(lines) == 1
    assert lines[0].startswith("> ")


def test_forwarded_message_attachment_is_listed() -> None:
    parsed = parse_sample("forwarded_rfc822.eml")

    [attachment] = parsed.attachments
    assert attachment.filename == "error-502.png"
    assert attachment.data.startswith(PNG_SIGNATURE)


def test_message_nested_in_forward_is_not_unpacked() -> None:
    parsed = parse_sample("forwarded_twice.eml")

    assert parsed.attachments == ()
    assert "See the original report below." in parsed.text
    assert "more than 10,000 orders" not in parsed.text
    assert any("not unpacked" in defect for defect in parsed.defects)


# winmail.dat


def test_winmail_dat_files_are_unpacked() -> None:
    parsed = parse_sample("winmail_dat.eml")

    [attachment] = parsed.attachments
    assert attachment.filename == "diagram.png"
    assert attachment.declared_type == ""
    assert attachment.data.startswith(PNG_SIGNATURE)


def test_winmail_dat_body_used_without_text_part() -> None:
    tnef = read_sample_part("winmail_dat.eml", "application/ms-tnef")
    raw = build_message(
        "From: ada@example.com\nSubject: tnef\n"
        'Content-Type: multipart/mixed; boundary="b"',
        '--b\nContent-Type: application/ms-tnef; name="winmail.dat"\n'
        "Content-Transfer-Encoding: base64\n\n"
        + base64.encodebytes(tnef).decode()
        + "--b--\n",
    )

    parsed = parse_mail(raw)

    assert parsed.text == (
        "The workflow diagram in the Approvals app loses its arrows after saving."
    )


def test_broken_winmail_dat_is_kept_as_file() -> None:
    raw = build_message_with_file(
        'Content-Type: application/ms-tnef; name="winmail.dat"', b"not a TNEF stream"
    )

    parsed = parse_mail(raw)

    [attachment] = parsed.attachments
    assert attachment.filename == "winmail.dat"
    assert any("winmail.dat" in defect for defect in parsed.defects)


# Hostile input


def test_deeply_nested_parts_keep_headers() -> None:
    raw = build_nested_message(5000)

    parsed = parse_mail(raw)

    assert parsed.subject == "deep"
    assert parsed.from_address == "ada@example.com"
    assert parsed.text == ""
    assert any("nested too deeply" in defect for defect in parsed.defects)


def test_parts_past_depth_limit_are_ignored() -> None:
    raw = build_nested_message(MAX_NESTING_DEPTH + 10)

    parsed = parse_mail(raw)

    assert "innermost text" not in parsed.text
    assert any("nested deeper than" in defect for defect in parsed.defects)


def test_parts_within_depth_limit_are_read() -> None:
    raw = build_nested_message(MAX_NESTING_DEPTH - 2)

    parsed = parse_mail(raw)

    assert parsed.text == "innermost text"


def test_huge_content_type_header_is_cut() -> None:
    params = ";\n ".join(f"p{index}=v{index}" for index in range(40_000))
    raw = build_message(
        f"From: ada@example.com\nSubject: x\nContent-Type: text/plain;\n {params}"
    )

    parsed = parse_mail(raw)

    assert parsed.text == "Body text."


def test_large_attachment_survives_intact() -> None:
    payload = PNG_SIGNATURE + bytes(range(256)) * (30 * 1024 * 1024 // 256)
    raw = build_message_with_file('Content-Type: image/png; name="big.png"', payload)

    parsed = parse_mail(raw)

    [attachment] = parsed.attachments
    assert attachment.data == payload


def test_nul_in_rfc2231_charset_keeps_body_and_file() -> None:
    # Python 3.11's header parser raises "embedded null character" on these values.
    raw = build_message(
        "From: ada@example.com\nSubject: x\n"
        "Content-Type: multipart/mixed; boundary=b; x*=U\x00TF-8''y",
        "--b\nContent-Type: text/plain; charset*=U\x00TF-8''y\n\nStill readable.\n"
        "--b\nContent-Type: image/png\n"
        "Content-Disposition: attachment; filename*=U\x00TF-8''shot.png\n"
        "\nPNG\n--b--\n",
    )

    parsed = parse_mail(raw)

    assert parsed.text == "Still readable."
    assert [a.data for a in parsed.attachments] == [b"PNG"]


def test_non_bytes_input_is_rejected() -> None:
    with pytest.raises(TypeError):
        parse_mail("From: ada@example.com\n\nhi")  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_parse_never_raises_for_arbitrary_bytes(raw: bytes) -> None:
    parsed = parse_mail(raw)

    assert parsed.size_bytes == len(raw)


_SAMPLE_BYTES = [(MESSAGES / name).read_bytes() for name in CLIENT_SAMPLES]
_MIME_TOKENS = [
    b"\n",
    b"--",
    b":",
    b";",
    b"=?",
    b"?=",
    b"<",
    b">",
    b'"',
    b"\\",
    b"boundary=",
    b"Content-Type: multipart/mixed",
    b"message/rfc822",
    b"charset=",
    b"base64",
    b"filename*0*=",
    b"\x00",
    b"\xff",
    b"\x1b$B",
]


@st.composite
def mutated_samples(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(_SAMPLE_BYTES)))
    for _ in range(draw(st.integers(min_value=1, max_value=8))):
        position = draw(st.integers(min_value=0, max_value=len(data)))
        action = draw(st.sampled_from(["insert", "delete", "replace", "truncate"]))
        if action == "insert":
            data[position:position] = draw(st.sampled_from(_MIME_TOKENS))
        elif action == "delete":
            del data[position : position + draw(st.integers(min_value=1, max_value=64))]
        elif action == "replace" and position < len(data):
            data[position] = draw(st.integers(min_value=0, max_value=255))
        elif action == "truncate":
            del data[position:]
    return bytes(data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_samples())
def test_parse_never_raises_for_mutated_samples(raw: bytes) -> None:
    parsed = parse_mail(raw)

    assert parsed.size_bytes == len(raw)
    assert all(isinstance(attachment.data, bytes) for attachment in parsed.attachments)
    assert not re.search(r"[\r\n]", parsed.subject)
