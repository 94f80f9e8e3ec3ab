"""Parsing with base64 runs cut out gives exactly what the standard parse gives."""

from __future__ import annotations

import base64
import quopri
import random
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters import mail
from adapters.mail import CUT_MIN_MESSAGE_BYTES, _parse_mail, parse_mail
from adapters.mime_skeleton import parse_skeleton

MESSAGES = Path(__file__).resolve().parent.parent / "messages"
SAMPLES = sorted(MESSAGES.rglob("*.eml"))
MIB = 1024 * 1024


def parse_standard(raw: bytes):
    return _parse_mail(raw, cut_min_run_bytes=None)


def file_bytes(seed: int, size: int) -> bytes:
    return b"%PDF-1.7\n" + random.Random(seed).randbytes(size - 9)


def large_message(
    files: list[bytes],
    *,
    newline: bytes = b"\r\n",
    encode=base64.encodebytes,
    preamble: bytes = b"",
    epilogue: bytes = b"",
    close: bool = True,
    extra_parts: bytes = b"",
) -> bytes:
    boundary = b"=_outer_boundary"
    lines = [
        b"From: Ada Lovelace <ada@example.com>",
        b"To: support@localhost",
        b"Subject: Five reports",
        b"Message-ID: <large@example.com>",
        b"Date: Fri, 04 Dec 2026 10:00:00 +0000",
        b"MIME-Version: 1.0",
        b'Content-Type: multipart/mixed; boundary="' + boundary + b'"',
        b"",
    ]
    if preamble:
        lines.append(preamble)
    lines += [
        b"--" + boundary,
        b"Content-Type: text/plain; charset=utf-8",
        b"",
        b"The reports are attached.",
        b"--" + boundary,
        b"Content-Type: text/html; charset=utf-8",
        b"",
        b"<p>The reports are <b>attached</b>.</p>",
    ]
    for number, data in enumerate(files, start=1):
        lines += [
            b"--" + boundary,
            b"Content-Type: application/pdf",
            b"Content-Transfer-Encoding: base64",
            b'Content-Disposition: attachment; filename="report-%d.pdf"' % number,
            b"",
            encode(data).rstrip(b"\n"),
        ]
    if extra_parts:
        lines.append(extra_parts)
    if close:
        lines.append(b"--" + boundary + b"--")
    if epilogue:
        lines.append(epilogue)
    text = b"\n".join(lines) + b"\n"
    return text.replace(b"\n", newline)


@pytest.mark.parametrize("path", SAMPLES, ids=lambda path: path.name)
@pytest.mark.parametrize("min_run_bytes", [1, 16, 4096])
def test_samples_parse_the_same_with_cuts(path: Path, min_run_bytes: int) -> None:
    raw = path.read_bytes()
    assert _parse_mail(raw, cut_min_run_bytes=min_run_bytes) == parse_standard(raw)


def test_samples_with_files_use_the_skeleton() -> None:
    used = [
        path.name
        for path in SAMPLES
        if parse_skeleton(path.read_bytes(), mail._POLICY, 16) is not None
    ]
    for name in ("pdf_attachment.eml", "apple_mail_png.eml", "winmail_dat.eml",
                 "forwarded_rfc822.eml", "rfc2231_filename.eml"):
        assert name in used


@pytest.mark.parametrize(
    "newline", [b"\r\n", b"\n", b"\r"], ids=["crlf", "lf", "cr"]
)
def test_large_message_same_result(newline: bytes) -> None:
    # Sizes 3k, 3k+1 and 3k+2 give no, two and one "=" of padding.
    files = [file_bytes(seed, 600_000 + seed) for seed in range(3)]
    raw = large_message(files, newline=newline)
    assert len(raw) >= CUT_MIN_MESSAGE_BYTES
    assert parse_skeleton(raw, mail._POLICY, mail.CUT_MIN_RUN_BYTES) is not None

    parsed = parse_mail(raw)

    assert parsed == parse_standard(raw)
    assert [a.data for a in parsed.attachments] == files
    assert parsed.text == "The reports are attached."


@pytest.mark.parametrize(
    "case",
    [
        "bad_padding",
        "invalid_characters",
        "run_in_preamble",
        "run_in_epilogue",
        "no_close_boundary",
        "lookalike_placeholder",
        "quoted_printable",
        "forwarded_message",
        "single_part",
        "header_block_run",
    ],
)
def test_large_unusual_message_same_result(case: str) -> None:
    files = [file_bytes(seed, 500_000) for seed in range(2)]
    encoded = base64.encodebytes(file_bytes(9, 400_000))
    options: dict = {}
    if case == "bad_padding":
        options["encode"] = lambda data: base64.encodebytes(data).rstrip(b"=\n") + b"\n"
    elif case == "invalid_characters":
        options["encode"] = lambda data: base64.encodebytes(data).replace(
            b"\n", b"\n!!\n", 3
        )
    elif case == "run_in_preamble":
        options["preamble"] = encoded
    elif case == "run_in_epilogue":
        options["epilogue"] = encoded
    elif case == "no_close_boundary":
        options["close"] = False
    elif case == "lookalike_placeholder":
        options["preamble"] = b"GatewayCutBody0123456789abcdef000000Z"
    elif case == "quoted_printable":
        text = ("Zeile mit Umlauten: \u00e4\u00f6\u00fc = gleich. " * 20000).encode()
        options["extra_parts"] = (
            b"--=_outer_boundary\nContent-Type: text/plain; charset=utf-8\n"
            b"Content-Transfer-Encoding: quoted-printable\n"
            b'Content-Disposition: attachment; filename="notes.txt"\n\n'
            + quopri.encodestring(text)
        )
    elif case == "forwarded_message":
        inner = large_message([file_bytes(7, 300_000)]).replace(b"\r\n", b"\n")
        options["extra_parts"] = (
            b"--=_outer_boundary\nContent-Type: message/rfc822\n\n" + inner
        )
    if case == "single_part":
        raw = (
            b"From: ada@example.com\r\nSubject: One file\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
            b"\r\n" + base64.encodebytes(files[0]).replace(b"\n", b"\r\n")
        )
    elif case == "header_block_run":
        # No empty line after the header block: the first base64 line ends it.
        raw = (
            b"From: ada@example.com\r\nSubject: No separator\r\n"
            b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
            + base64.encodebytes(files[0]).replace(b"\n", b"\r\n")
        )
    else:
        raw = large_message(files, **options)
    assert len(raw) >= CUT_MIN_MESSAGE_BYTES

    assert parse_mail(raw) == parse_standard(raw)


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        (b'boundary="=_renamed"', "boundary '=_renamed' of the multipart/mixed"),
        (b'boundary="=_outer_boundary; charset=utf-8', "unclosed quote"),
        (b"charset=utf-8", "has no boundary parameter"),
    ],
    ids=["boundary-never-appears", "unclosed-quote", "no-boundary"],
)
def test_large_unsplit_multipart_same_problem(header: bytes, problem: str) -> None:
    files = [file_bytes(seed, 300_000) for seed in range(2)]
    raw = large_message(files).replace(b'boundary="=_outer_boundary"', header, 1)
    assert parse_skeleton(raw, mail._POLICY, mail.CUT_MIN_RUN_BYTES) is not None

    parsed = parse_mail(raw)

    assert parsed == parse_standard(raw)
    assert parsed.structure_problem is not None
    assert problem in parsed.structure_problem


def test_large_message_parse_memory() -> None:
    files = [file_bytes(seed, 2 * MIB) for seed in range(5)]
    raw = large_message(files)
    decoded = sum(len(data) for data in files)

    tracemalloc.start()
    try:
        parsed = parse_mail(raw)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert len(parsed.attachments) == 5
    # The decoded files must exist; the encoded text may not be copied whole.
    assert peak < decoded + len(raw) // 4


_LINES = st.sampled_from(
    [
        b"",
        b"QUJD",
        b"QUJDRA==",
        b"QUI=",
        b"=",
        b"QUJD=QUJD",
        b"--b1",
        b"--b1--",
        b"--b2",
        b"--b2--",
        b"Content-Type: multipart/mixed; boundary=b2",
        b"Content-Type: message/rfc822",
        b"Content-Type: text/plain",
        b"Content-Transfer-Encoding: base64",
        b"Content-Disposition: attachment; filename=a.pdf",
        b" folded",
        b"From nobody",
        b"plain words",
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(_LINES, max_size=40),
    st.sampled_from([b"\r\n", b"\n", b"\r"]),
)
def test_random_structure_same_result(lines: list[bytes], newline: bytes) -> None:
    head = [
        b"From: ada@example.com",
        b"Content-Type: multipart/mixed; boundary=b1",
        b"",
        b"--b1",
    ]
    raw = newline.join(head + lines) + newline
    assert _parse_mail(raw, cut_min_run_bytes=1) == parse_standard(raw)
