"""Micro benchmarks of the steps every inbound message goes through.

Run by `make bench` with pytest-benchmark; they live outside tests/, so
`make test` never runs them, and they assert only that each step still works.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from adapters.mail import parse_mail  # noqa: E402
from adapters.outbound import compose_email  # noqa: E402
from bench import corpus  # noqa: E402
from gateway.attachments import check_attachments  # noqa: E402
from gateway.reply_text import extract_reply  # noqa: E402

NEW_TICKET = corpus.new_ticket(1)
REPLY = corpus.reply(1, 42, "builder00001@example.com", "<seed.42@bench.example.com>")


@pytest.fixture(scope="module")
def large_update() -> bytes:
    return corpus.large_update(7)


def test_parse_new_ticket(benchmark) -> None:
    mail = benchmark(parse_mail, NEW_TICKET)

    assert mail.from_address == "builder00001@example.com"


def test_parse_maximum_update(benchmark, large_update: bytes) -> None:
    mail = benchmark.pedantic(parse_mail, args=(large_update,), rounds=5, warmup_rounds=1)

    assert len(mail.attachments) == corpus.PDF_FILES


def test_check_maximum_update_attachments(benchmark, large_update: bytes) -> None:
    files = parse_mail(large_update).attachments

    checked = benchmark.pedantic(check_attachments, args=(files,), rounds=5,
                                 warmup_rounds=1)

    assert checked.ok


def test_extract_reply_text(benchmark) -> None:
    mail = parse_mail(REPLY)

    body = benchmark(extract_reply, mail.text, mail.html)

    assert "wrote:" not in body


def test_compose_acknowledgement(benchmark) -> None:
    def compose() -> bytes:
        return compose_email(
            sender="support@localhost",
            sender_name="Support",
            recipient="builder00001@example.com",
            recipient_name="Builder 1",
            subject="[#42] Published app shows a blank page after login",
            text="We received your request and opened ticket #42.\n" * 10,
            html="<p>We received your request and opened ticket #42.</p>" * 10,
            message_id="<ack.42@localhost>",
            in_reply_to="<new.1@bench.example.com>",
            references=["<new.1@bench.example.com>"],
            reply_to="support+42.abc@localhost",
            date=datetime(2026, 12, 1, 9, 0, tzinfo=UTC),
        )

    data = benchmark(compose)

    assert b"Auto-Submitted" in data
