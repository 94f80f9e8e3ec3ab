"""Support's reply, note and set, with the emails each one sends."""

from __future__ import annotations

import email
from email import policy
from typing import Any

import pytest

from conftest import RunningGateway, sample
from gateway.errors import InvalidChange, UnknownTicket
from gateway.support import TicketChange


@pytest.fixture
def desk(ada: RunningGateway) -> RunningGateway:
    code, _ = ada.send(sample("gmail_plain_and_html.eml"))
    assert code == 250
    ada.flush_outbox()
    return ada


def _support(gateway: RunningGateway) -> Any:
    assert gateway.gateway.support_desk is not None
    return gateway.gateway.support_desk


def _change(gateway: RunningGateway, number: int = 1, **change: Any) -> Any:
    return gateway.call(
        lambda: _support(gateway).change(number, TicketChange(**change), actor="grace")
    )


def _mails(gateway: RunningGateway) -> list[email.message.EmailMessage]:
    gateway.flush_outbox()
    return [
        email.message_from_bytes(p.read_bytes(), policy=policy.default)
        for p in gateway.outbox_files()
    ]


def _text(message: email.message.EmailMessage) -> str:
    return message.get_body(("plain",)).get_content()


def test_reply_is_public_and_emailed(desk: RunningGateway) -> None:
    desk.call(lambda: _support(desk).reply(1, "Please clear the cache.", author="grace"))

    ticket = desk.ticket(1)
    support = [m for m in ticket.messages if m.kind == "support"]
    assert support[0].visibility == "public"
    assert support[0].body == "Please clear the cache."
    assert ticket.summary.status == "open"
    assert "Please clear the cache." in _text(_mails(desk)[-1])


def test_note_is_internal_and_never_emailed(desk: RunningGateway) -> None:
    before = len(_mails(desk))

    desk.call(lambda: _support(desk).note(1, "Looks like the CDN bug.", author="grace"))

    [note] = [m for m in desk.ticket(1).messages if m.kind == "support"]
    assert note.visibility == "internal"
    assert len(_mails(desk)) == before
    for message in _mails(desk):
        assert "CDN bug" not in message.as_string()


def test_waiting_on_builder_emails_the_question(desk: RunningGateway) -> None:
    _change(desk, status="waiting_on_builder", question="Which browser do you use?")

    last = _mails(desk)[-1]

    assert desk.ticket(1).summary.status_label == "Waiting on you"
    assert "Which browser do you use?" in _text(last)
    assert last["Subject"].startswith("[#1] ")


def test_resolve_needs_summary(desk: RunningGateway) -> None:
    with pytest.raises(InvalidChange, match="summary"):
        _change(desk, status="resolved")


def test_resolve_emails_summary_and_stores_it(desk: RunningGateway) -> None:
    _change(desk, status="resolved", summary="We fixed the session cache.")

    ticket = desk.ticket(1)
    assert ticket.resolution_summary == "We fixed the session cache."
    assert "We fixed the session cache." in _text(_mails(desk)[-1])


def test_close_emails_builder(desk: RunningGateway) -> None:
    _change(desk, status="closed")

    assert "is now closed" in _text(_mails(desk)[-1])


def test_duplicate_needs_existing_target(desk: RunningGateway) -> None:
    with pytest.raises(InvalidChange, match="#7 does not exist"):
        _change(desk, duplicate_of=7)


def test_duplicate_of_duplicate_is_refused(desk: RunningGateway) -> None:
    desk.send(sample("thunderbird.eml"))
    desk.send(sample("outlook_desktop.eml"))
    _change(desk, 2, duplicate_of=1)

    with pytest.raises(InvalidChange, match="itself a duplicate"):
        _change(desk, 3, duplicate_of=2)


def test_duplicate_emails_tracking_ticket(desk: RunningGateway) -> None:
    desk.send(sample("thunderbird.eml"))

    _change(desk, 2, duplicate_of=1)

    assert desk.ticket(2).duplicate_of == 1
    assert "ticket #1" in _text(_mails(desk)[-1])


def test_field_changes_are_recorded_as_event(desk: RunningGateway) -> None:
    result = _change(desk, severity="sev1", category="bug", priority="p1", assignee="grace")

    ticket = desk.ticket(1).summary
    assert (ticket.severity, ticket.category, ticket.priority, ticket.assignee) == (
        "sev1", "bug", "P1", "grace")
    assert len(result.changes) == 4
    events = [m for m in desk.ticket(1).messages if m.kind == "system"]
    assert "severity sev2 → sev1" in events[-1].body
    assert events[-1].visibility == "internal"


def test_priority_change_keeps_severity(desk: RunningGateway) -> None:
    _change(desk, priority="P4")

    ticket = desk.ticket(1).summary
    assert ticket.priority == "P4"
    assert ticket.severity == "sev2"


def test_closed_ticket_must_be_reopened_first(desk: RunningGateway) -> None:
    _change(desk, status="closed")

    with pytest.raises(InvalidChange, match="reopen it first"):
        _change(desk, status="in_progress")


def test_reopen_closed_ticket(desk: RunningGateway) -> None:
    _change(desk, status="closed")

    _change(desk, status="reopened")

    assert desk.ticket(1).summary.status == "reopened"


def test_unknown_ticket_is_named(desk: RunningGateway) -> None:
    with pytest.raises(UnknownTicket, match="#42"):
        desk.call(lambda: _support(desk).note(42, "hello", author="grace"))


def test_empty_reply_is_refused(desk: RunningGateway) -> None:
    with pytest.raises(InvalidChange, match="empty"):
        desk.call(lambda: _support(desk).reply(1, "   ", author="grace"))


def test_same_status_is_refused(desk: RunningGateway) -> None:
    _change(desk, status="in_progress")

    with pytest.raises(InvalidChange, match="already in_progress"):
        _change(desk, status="in_progress")


def test_duplicate_of_other_builders_ticket_is_refused(desk: RunningGateway) -> None:
    desk.add_builder("grace@example.com", name="Grace Hopper")
    raw = sample("thunderbird.eml").replace(b"ada@example.com", b"grace@example.com")
    code, _ = desk.send(raw, mail_from="grace@example.com")
    assert code == 250

    with pytest.raises(InvalidChange, match="belongs to another builder"):
        _change(desk, 2, duplicate_of=1)
