"""Reminder digests: who gets one, what it lists, and how often."""

from __future__ import annotations

import email
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest

from conftest import FakeClock, RunningGateway, make_config, running_gateway, sample
from digest_support import (
    add_waiting,
    digests,
    listed_numbers,
    reply_addresses,
    send_digests,
    text_of,
    work,
)
from gateway.digest import MAX_LISTED_TICKETS, DigestPlan, describe_wait, excerpt
from gateway.support import TicketChange

# Tuesday 1 December 2026, 09:00 UTC: the fixture clock's start.
TUESDAY_9 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def _ask(gateway: RunningGateway, number: int, question: str) -> None:
    support = gateway.gateway.support_desk
    assert support is not None
    gateway.call(lambda: support.change(
        number, TicketChange(status="waiting_on_builder", question=question), actor="grace"))


def _reply(message: bytes, to: str) -> bytes:
    return message.replace(b"To: support@localhost", f"To: {to}".encode())


def _two_tickets_wait_a_day(ada: RunningGateway) -> None:
    assert ada.send(sample("thunderbird.eml"))[0] == 250
    assert ada.send(sample("gmail_plain_and_html.eml"))[0] == 250
    _ask(ada, 1, "Which language is the search box set to?")
    _ask(ada, 2, "Does the blank page also show in a private window?")
    ada.flush_outbox()
    ada.clock.current = datetime(2026, 12, 2, 9, 5, tzinfo=UTC)


def test_builder_gets_one_digest_listing_both(ada: RunningGateway) -> None:
    _two_tickets_wait_a_day(ada)

    queued = send_digests(ada)

    [digest] = digests(ada)
    assert queued == 1
    assert digest["To"].addresses[0].addr_spec == "ada@example.com"
    assert digest["Subject"] == "Reminder: 2 tickets wait for your answer"
    assert listed_numbers(digest) == [2, 1]


def test_reply_to_digest_address_reopens_conversation(ada: RunningGateway) -> None:
    ada.send(sample("thunderbird.eml"))
    ada.send(sample("gmail_plain_and_html.eml"))
    _ask(ada, 1, "Which language is the search box set to?")
    _ask(ada, 2, "Does the blank page also show in a private window?")
    ada.clock.current = datetime(2026, 12, 2, 9, 5, tzinfo=UTC)
    send_digests(ada)
    [digest] = digests(ada)
    address = reply_addresses(digest)[1]
    answer = (
        "From: Ada Lovelace <ada@example.com>\r\n"
        f"To: {address}\r\n"
        "Subject: Re: Reminder: 2 tickets wait for your answer\r\n"
        "Message-ID: <answer-1@mail.example.com>\r\n"
        "Date: Wed, 02 Dec 2026 09:30:00 +0000\r\n"
        "\r\n"
        "The search box is set to German.\r\n"
    ).encode()

    code, reply = ada.send(answer, to=(address,))

    assert code == 250, reply
    assert ada.ticket(1).summary.status == "open"
    assert ada.ticket(2).summary.status == "waiting_on_builder"
    builder_messages = [m for m in ada.ticket(1).messages if m.kind == "builder"]
    assert builder_messages[-1].body.startswith("The search box is set to German.")


def test_digest_names_every_field_and_headers(gateway: RunningGateway) -> None:
    number = add_waiting(
        gateway, "ada@example.com", "Client Portal shows a blank page after login",
        since=TUESDAY_9 - timedelta(days=2, hours=3), severity="sev2", app="Client Portal",
        question="Does the blank page also show\n\nin a private window?",
    )

    send_digests(gateway)

    [digest] = digests(gateway)
    text = text_of(digest)
    assert f"#{number} Client Portal shows a blank page after login" in text
    assert "App:      Client Portal" in text
    assert "Severity: Sev 2 - Major" in text
    assert "Waiting:  2 days, 3 hours" in text
    assert "Question: Does the blank page also show in a private window?" in text
    assert digest["Reply-To"].addresses[0].addr_spec in text
    assert digest["Auto-Submitted"] == "auto-generated"
    assert digest["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert digest["List-Unsubscribe"].startswith("<http://127.0.0.1:8080/unsubscribe/")
    assert digest["Subject"] == f"Reminder: [#{number}] Client Portal shows a blank page after login"


def test_each_ticket_has_own_reply_address(gateway: RunningGateway) -> None:
    first = add_waiting(gateway, "ada@example.com", "Search ignores accented letters",
                        since=TUESDAY_9 - timedelta(days=2))
    second = add_waiting(gateway, "ada@example.com", "Orders export button does nothing",
                         since=TUESDAY_9 - timedelta(days=2))

    send_digests(gateway)

    [digest] = digests(gateway)
    found = reply_addresses(digest)
    assert found[first].startswith(f"support+{first}.")
    assert found[second].startswith(f"support+{second}.")
    assert digest["Reply-To"] is None


def test_same_severity_longest_wait_first(gateway: RunningGateway) -> None:
    recent = add_waiting(gateway, "ada@example.com", "Orders export button does nothing",
                         since=TUESDAY_9 - timedelta(days=2))
    oldest = add_waiting(gateway, "ada@example.com", "Search ignores accented letters",
                         since=TUESDAY_9 - timedelta(days=5))
    blocking = add_waiting(gateway, "ada@example.com", "Published app returns error 500",
                           since=TUESDAY_9 - timedelta(days=1), severity="sev1")

    send_digests(gateway)

    [digest] = digests(gateway)
    assert listed_numbers(digest) == [blocking, oldest, recent]


def test_wait_under_threshold_is_not_listed(gateway: RunningGateway) -> None:
    add_waiting(gateway, "ada@example.com", "Search ignores accented letters",
                since=TUESDAY_9 - timedelta(hours=23))
    listed = add_waiting(gateway, "ada@example.com", "Orders export button does nothing",
                         since=TUESDAY_9 - timedelta(hours=24))

    send_digests(gateway)

    [digest] = digests(gateway)
    assert listed_numbers(digest) == [listed]


def test_builder_with_nothing_waiting_gets_nothing(gateway: RunningGateway) -> None:
    add_waiting(gateway, "ada@example.com", "Search ignores accented letters",
                since=TUESDAY_9 - timedelta(days=2))
    gateway.add_builder("grace@example.com", name="Grace Hopper")

    send_digests(gateway)

    recipients = [d["To"].addresses[0].addr_spec for d in digests(gateway)]
    assert recipients == ["ada@example.com"]


def test_ticket_in_other_status_is_not_listed(gateway: RunningGateway) -> None:
    number = add_waiting(gateway, "ada@example.com", "Search ignores accented letters",
                         since=TUESDAY_9 - timedelta(days=2))
    gateway.sql("UPDATE tickets SET status = 'in_progress' WHERE number = :n", n=number)

    assert send_digests(gateway) == 0
    assert digests(gateway) == []


def test_ticket_repeats_only_after_interval(gateway: RunningGateway) -> None:
    add_waiting(gateway, "ada@example.com", "Search ignores accented letters",
                since=TUESDAY_9 - timedelta(days=2))
    send_digests(gateway)
    sent = []

    for day in (2, 3, 4, 5, 7):  # Wednesday to Saturday, then Monday
        gateway.clock.current = datetime(2026, 12, day, 9, 1, tzinfo=UTC)
        sent.append(send_digests(gateway))

    # Friday is 3 days after Tuesday, and Monday 3 days after Friday.
    assert sent == [0, 0, 1, 0, 1]


def test_reminders_stop_after_max(gateway: RunningGateway) -> None:
    add_waiting(gateway, "ada@example.com", "Search ignores accented letters",
                since=TUESDAY_9 - timedelta(days=2))
    sent = []

    for week in range(5):
        for weekday in range(5):
            gateway.clock.current = TUESDAY_9 + timedelta(weeks=week, days=weekday)
            sent.append(send_digests(gateway))

    assert sum(sent) == 3
    assert len(digests(gateway)) == 3


def test_new_wait_restarts_reminder_count(gateway: RunningGateway) -> None:
    number = add_waiting(gateway, "ada@example.com", "Search ignores accented letters",
                         since=TUESDAY_9 - timedelta(days=2))
    for days in (0, 3, 6):
        gateway.clock.current = TUESDAY_9 + timedelta(days=days)
        send_digests(gateway)
    assert len(digests(gateway)) == 3

    async def ask_again() -> None:
        async with gateway.gateway.store.write() as tx:
            ticket = await tx.lock_ticket(number)
            await tx.update_ticket(ticket.id, status="waiting_on_builder",
                                   now=TUESDAY_9 + timedelta(days=7))

    gateway.call(ask_again)

    gateway.clock.current = TUESDAY_9 + timedelta(days=9)
    sent = send_digests(gateway)

    assert sent == 1


def test_builder_time_zone_decides_send_time(gateway: RunningGateway) -> None:
    # Monday 20:00 UTC: 24 hours before Tokyo's Wednesday 09:00 (00:00 UTC),
    # but less than 24 hours before London's Tuesday 09:00.
    since = datetime(2026, 11, 30, 20, 0, tzinfo=UTC)
    add_waiting(gateway, "kenji@example.com", "Search ignores accented letters",
                since=since, timezone="Asia/Tokyo")
    add_waiting(gateway, "ada@example.com", "Orders export button does nothing",
                since=since, timezone="Europe/London")
    # Wednesday 00:30 UTC is 09:30 in Tokyo and still Tuesday night in London.
    gateway.clock.current = datetime(2026, 12, 2, 0, 30, tzinfo=UTC)
    send_digests(gateway)
    first = [d["To"].addresses[0].addr_spec for d in digests(gateway)]

    gateway.clock.current = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
    send_digests(gateway)
    both = [d["To"].addresses[0].addr_spec for d in digests(gateway)]

    assert first == ["kenji@example.com"]
    assert sorted(both) == ["ada@example.com", "kenji@example.com"]


def test_no_digest_before_first_weekday_time(gateway: RunningGateway) -> None:
    # Saturday and Sunday are outside the default schedule: Friday's period
    # stays the latest, and its digests went out on Friday.
    add_waiting(gateway, "ada@example.com", "Search ignores accented letters",
                since=datetime(2026, 12, 1, 9, 0, tzinfo=UTC))
    gateway.clock.current = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)  # Friday
    assert send_digests(gateway) == 1
    add_waiting(gateway, "grace@example.com", "Orders export button does nothing",
                since=datetime(2026, 12, 4, 9, 30, tzinfo=UTC))

    gateway.clock.current = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)  # Sunday
    weekend = send_digests(gateway)
    gateway.clock.current = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)  # Monday
    monday = send_digests(gateway)

    # Monday lists Grace's new wait and, 3 days after Friday, Ada's again.
    assert weekend == 0
    assert monday == 2


def test_missed_runs_are_coalesced(gateway: RunningGateway) -> None:
    add_waiting(gateway, "ada@example.com", "Search ignores accented letters",
                since=TUESDAY_9 - timedelta(days=30))
    add_waiting(gateway, "grace@example.com", "Orders export button does nothing",
                since=TUESDAY_9 - timedelta(days=30))
    # Down from Tuesday 08:00 until Friday 11:00: Tue, Wed, Thu and Fri 09:00
    # passed without a run.
    gateway.clock.current = datetime(2026, 12, 4, 11, 0, tzinfo=UTC)

    first = send_digests(gateway)
    again = send_digests(gateway)

    assert first == 2
    assert again == 0
    assert len(digests(gateway)) == 2
    periods = gateway.sql("SELECT COUNT(*) FROM digest_runs")
    assert periods == [(1,)]


def test_opted_out_builder_gets_no_digest(gateway: RunningGateway) -> None:
    add_waiting(gateway, "ada@example.com", "Search ignores accented letters",
                since=TUESDAY_9 - timedelta(days=2))
    send_digests(gateway)
    [first] = digests(gateway)
    status = _one_click(gateway, first)

    gateway.clock.current = TUESDAY_9 + timedelta(days=3)
    sent = send_digests(gateway)

    assert status == 200
    assert sent == 0
    assert len(digests(gateway)) == 1


def test_unsubscribe_page_asks_before_acting(gateway: RunningGateway) -> None:
    add_waiting(gateway, "ada@example.com", "Search ignores accented letters",
                since=TUESDAY_9 - timedelta(days=2))
    send_digests(gateway)
    [first] = digests(gateway)
    path = urlsplit(first["List-Unsubscribe"].strip("<>")).path

    status, body = _http(gateway, "GET", path)

    assert status == 200
    assert '<form method="post"' in body
    assert "ada@example.com" in body
    assert gateway.sql("SELECT COUNT(*) FROM digest_opt_outs") == [(0,)]


@pytest.mark.parametrize("token", ["garbage", "WzEsImFkYUBleGFtcGxlLmNvbSJd.bad"],
                         ids=["not-a-token", "bad-signature"])
def test_unsubscribe_with_bad_token_is_rejected(gateway: RunningGateway, token: str) -> None:
    get_status, _ = _http(gateway, "GET", f"/unsubscribe/{token}")
    post_status, body = _http(gateway, "POST", f"/unsubscribe/{token}")

    assert get_status == 400
    assert post_status == 400
    assert "invalid" in body
    assert gateway.sql("SELECT COUNT(*) FROM digest_opt_outs") == [(0,)]


def test_dry_run_lists_without_claiming(gateway: RunningGateway) -> None:
    add_waiting(gateway, "ada@example.com", "Search ignores accented letters",
                since=TUESDAY_9 - timedelta(days=2))

    async def preview() -> list[object]:
        return [plan async for plan in work(gateway).digests.preview()]

    plans = gateway.call(preview)

    assert [p.builder.email for p in plans] == ["ada@example.com"]
    assert gateway.sql("SELECT COUNT(*) FROM digest_claims") == [(0,)]
    assert gateway.sql("SELECT COUNT(*) FROM outbox WHERE kind = 'digest'") == [(0,)]


def test_run_by_hand_ignores_schedule(gateway: RunningGateway) -> None:
    add_waiting(gateway, "ada@example.com", "Search ignores accented letters",
                since=TUESDAY_9 - timedelta(days=2))
    gateway.clock.current = datetime(2026, 12, 5, 15, 0, tzinfo=UTC)  # Saturday

    first = gateway.call(work(gateway).digests.run_now)
    again = gateway.call(work(gateway).digests.run_now)

    assert first == 1
    assert again == 0


@pytest.mark.parametrize(
    ("waited", "expected"),
    [(timedelta(hours=5), "5 hours"), (timedelta(hours=25), "1 day, 1 hour"),
     (timedelta(days=2), "2 days"), (timedelta(days=9, hours=4), "9 days")],
    ids=["hours", "day-and-hour", "days", "many-days"],
)
def test_describe_wait(waited: timedelta, expected: str) -> None:
    assert describe_wait(waited) == expected


def test_excerpt_cuts_at_word() -> None:
    text = "Could you send a screenshot " * 20

    cut = excerpt(text, limit=40)

    assert cut == "Could you send a screenshot Could you …"
    assert excerpt(None) is None


def _http(gateway: RunningGateway, method: str, path: str, **kwargs: object) -> tuple[int, str]:
    async def run() -> tuple[int, str]:
        async with aiohttp.ClientSession() as session:
            async with session.request(method, gateway.web_url + path, **kwargs) as response:
                return response.status, await response.text()

    return gateway.call(run)


def _one_click(gateway: RunningGateway, digest: EmailMessage) -> int:
    path = urlsplit(digest["List-Unsubscribe"].strip("<>")).path
    status, _ = _http(gateway, "POST", path, data={"List-Unsubscribe": "One-Click"})
    return status


def test_cli_dry_run_prints_and_sends_nothing(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from gateway.cli import cli

    clock = FakeClock(datetime.now(UTC))
    config = make_config(tmp_path)
    with running_gateway(config, clock) as gateway:
        add_waiting(gateway, "ada@example.com", "Search ignores accented letters",
                    since=clock() - timedelta(days=2))
    config_file = tmp_path / "gateway.toml"
    config_file.write_text(f'[database]\nurl = "{config.database.url}"\n'
                           f'[outbound]\nmaildir = "{config.outbound.maildir}"\n')

    dry = CliRunner().invoke(cli, ["--config", str(config_file), "digest", "--dry-run"])
    sent = CliRunner().invoke(cli, ["--config", str(config_file), "digest"])

    assert dry.exit_code == 0, dry.output
    assert "ada@example.com: 1 ticket(s)" in dry.output
    assert "Search ignores accented letters" in dry.output
    assert "1 digest(s) would be sent" in dry.output
    assert sent.exit_code == 0, sent.output
    assert "1 digest(s) queued" in sent.output


def test_suppressed_address_gets_no_digest(gateway: RunningGateway) -> None:
    add_waiting(gateway, "ada@example.com", "Search ignores accented letters",
                since=TUESDAY_9 - timedelta(days=2))
    gateway.sql(
        "INSERT INTO suppressed_addresses (address, suppressed_until, reason, created_at) "
        "VALUES ('ada@example.com', :until, '5.1.1 mailbox unknown', :now)",
        until=TUESDAY_9 + timedelta(days=7), now=TUESDAY_9,
    )

    assert send_digests(gateway) == 0
    assert digests(gateway) == []


def test_digest_is_composed_when_sent(gateway: RunningGateway) -> None:
    number = add_waiting(gateway, "ada@example.com", "Search ignores accented letters",
                         since=TUESDAY_9 - timedelta(days=2))

    queued = send_digests(gateway)
    before = gateway.sql(
        "SELECT LENGTH(payload), message_id FROM outbox WHERE kind = 'digest'")
    listed_before = gateway.sql("SELECT COUNT(*) FROM digest_claim_tickets")
    [digest] = digests(gateway)
    after = gateway.sql("SELECT LENGTH(payload), state FROM outbox WHERE kind = 'digest'")
    [(claim_message_id,)] = gateway.sql("SELECT message_id FROM digest_claims")

    assert queued == 1
    assert [length for length, _ in before] == [0]
    assert listed_before == [(1,)]
    assert after[0][0] > 0
    assert after[0][1] == "sent"
    assert digest["Message-ID"] == f"<{claim_message_id}>"
    assert before[0][1] == claim_message_id
    assert listed_numbers(digest) == [number]
    assert gateway.sql("SELECT ticket_id FROM mail_index WHERE message_id = :m",
                       m=claim_message_id) == [(1,)]
    assert gateway.sql("SELECT COUNT(*) FROM digest_claim_tickets") == [(0,)]


def test_answered_ticket_is_left_out_at_send(gateway: RunningGateway) -> None:
    answered = add_waiting(gateway, "ada@example.com", "Search ignores accented letters",
                           since=TUESDAY_9 - timedelta(days=2))
    waiting = add_waiting(gateway, "ada@example.com", "Orders export button does nothing",
                          since=TUESDAY_9 - timedelta(days=3))
    send_digests(gateway)
    gateway.sql("UPDATE tickets SET status = 'open' WHERE number = :n", n=answered)

    [digest] = digests(gateway)

    assert listed_numbers(digest) == [waiting]
    assert digest["Subject"] == "Reminder: [#2] Orders export button does nothing"
    assert digest["Reply-To"].addresses[0].addr_spec.startswith(f"support+{waiting}.")


def test_new_wait_left_out_at_send(gateway: RunningGateway) -> None:
    number = add_waiting(gateway, "ada@example.com", "Search ignores accented letters",
                         since=TUESDAY_9 - timedelta(days=2))
    send_digests(gateway)
    # The builder replied and support asked again: a new wait, not yet due.
    gateway.sql("UPDATE tickets SET status_changed_at = :at WHERE number = :n",
                at=TUESDAY_9, n=number)

    assert digests(gateway) == []
    assert gateway.sql("SELECT state FROM outbox WHERE kind = 'digest'") == [("cancelled",)]


def test_nothing_waiting_at_send_cancels_digest(gateway: RunningGateway) -> None:
    number = add_waiting(gateway, "ada@example.com", "Search ignores accented letters",
                         since=TUESDAY_9 - timedelta(days=2))
    assert send_digests(gateway) == 1
    gateway.sql("UPDATE tickets SET status = 'resolved' WHERE number = :n", n=number)

    delivered = digests(gateway)

    rows = gateway.sql("SELECT state, last_error, LENGTH(payload) FROM outbox "
                       "WHERE kind = 'digest'")
    assert delivered == []
    assert rows == [("cancelled", "no listed ticket waits on the builder any more", 0)]


def test_opt_out_after_run_cancels_digest(gateway: RunningGateway) -> None:
    add_waiting(gateway, "ada@example.com", "Search ignores accented letters",
                since=TUESDAY_9 - timedelta(days=2))
    send_digests(gateway)

    async def opt_out() -> None:
        async with gateway.gateway.store.write() as tx:
            builder = await tx.find_builder("ada@example.com")
            assert await tx.opt_out_of_digests(builder.id, now=TUESDAY_9)

    gateway.call(opt_out)

    assert digests(gateway) == []
    assert gateway.sql("SELECT state FROM outbox WHERE kind = 'digest'") == [("cancelled",)]


def test_bounce_after_run_cancels_digest(gateway: RunningGateway) -> None:
    add_waiting(gateway, "ada@example.com", "Search ignores accented letters",
                since=TUESDAY_9 - timedelta(days=2))
    send_digests(gateway)
    gateway.sql(
        "INSERT INTO suppressed_addresses (address, suppressed_until, reason, created_at) "
        "VALUES ('ada@example.com', :until, '5.1.1 mailbox unknown', :now)",
        until=TUESDAY_9 + timedelta(days=7), now=TUESDAY_9,
    )

    assert digests(gateway) == []
    assert gateway.sql("SELECT state FROM outbox WHERE kind = 'digest'") == [("cancelled",)]


@pytest.mark.parametrize("address", ["noreply@example.com", "support+7@localhost"],
                         ids=["robot", "own-address"])
def test_address_that_never_reads_mail_gets_no_digest(
    gateway: RunningGateway, address: str
) -> None:
    add_waiting(gateway, address, "Search ignores accented letters",
                since=TUESDAY_9 - timedelta(days=2))
    add_waiting(gateway, "ada@example.com", "Orders export button does nothing",
                since=TUESDAY_9 - timedelta(days=2))

    send_digests(gateway)

    recipients = [d["To"].addresses[0].addr_spec for d in digests(gateway)]
    assert recipients == ["ada@example.com"]
    assert gateway.flush_outbox() == 0


def test_digest_coming_back_is_own_mail(ada: RunningGateway) -> None:
    _two_tickets_wait_a_day(ada)
    send_digests(ada)
    [digest] = digests(ada)
    # A forwarding rule that strips the automatic-mail headers but keeps the
    # Message-ID sends the digest back to support.
    returned = b"\r\n".join(
        line for line in digest.as_bytes(policy=policy.SMTP).split(b"\r\n")
        if not line.lower().startswith((b"x-loop:", b"auto-submitted:",
                                         b"x-auto-response-suppress:"))
    )

    code, text = ada.send(returned)

    [(outcome, detail)] = ada.sql(
        "SELECT outcome, detail FROM inbound_messages ORDER BY id DESC LIMIT 1")
    assert code == 250, text
    assert outcome == "dropped_own_mail"
    assert "Message-ID" in detail


def test_digest_ends_with_builder_link(ada: RunningGateway) -> None:
    _two_tickets_wait_a_day(ada)
    send_digests(ada)

    [digest] = digests(ada)

    text = text_of(digest)
    assert "See all your tickets: " in text
    assert "/b/" in text
    html = digest.get_body(("html",)).get_content()
    assert "/b/" in html


def test_one_ticket_digest_threads_into_ticket(ada: RunningGateway) -> None:
    raw = sample("thunderbird.eml")
    builder_message_id = email.message_from_bytes(raw, policy=policy.default)["Message-ID"]
    assert ada.send(raw)[0] == 250
    _ask(ada, 1, "Which language is the search box set to?")
    ada.flush_outbox()
    ada.clock.current = datetime(2026, 12, 2, 9, 5, tzinfo=UTC)
    send_digests(ada)

    [digest] = digests(ada)

    references = digest["References"].split()
    assert builder_message_id.strip() in references
    assert digest["In-Reply-To"].strip() == references[-1]
    assert digest["Reply-To"].addresses[0].addr_spec.startswith("support+1.")


def _waiting_longer_than_the_bound(gateway: RunningGateway) -> list[int]:
    """Store MAX_LISTED_TICKETS + 5 waiting tickets of Ada; return them oldest first."""
    numbers = [
        add_waiting(gateway, "ada@example.com", f"Orders export {index} does nothing",
                    since=TUESDAY_9 - timedelta(days=2, hours=index))
        for index in range(MAX_LISTED_TICKETS + 5)
    ]
    return numbers[::-1]


def test_digest_lists_at_most_the_bound(gateway: RunningGateway) -> None:
    oldest_first = _waiting_longer_than_the_bound(gateway)

    queued = send_digests(gateway)

    [digest] = digests(gateway)
    text = " ".join(text_of(digest).split())
    html = digest.get_body(("html",)).get_content()
    assert queued == 1
    assert listed_numbers(digest) == oldest_first[:MAX_LISTED_TICKETS]
    total = len(oldest_first)
    assert digest["Subject"] == f"Reminder: {total} tickets wait for your answer"
    assert ("5 more tickets wait for your answer. The link to all your tickets is at "
            "the end of this email.") in text
    assert "See all your tickets: http://127.0.0.1:8080/b/" in text
    assert "5 more tickets wait for your answer" in html


def test_left_out_tickets_are_not_reminded(gateway: RunningGateway) -> None:
    oldest_first = _waiting_longer_than_the_bound(gateway)

    send_digests(gateway)

    reminded = gateway.sql("SELECT t.number FROM ticket_reminders r "
                           "JOIN tickets t ON t.id = r.ticket_id ORDER BY t.number")
    listed = sorted(oldest_first[:MAX_LISTED_TICKETS])
    assert [number for (number,) in reminded] == listed


def test_next_digest_lists_tickets_left_out(gateway: RunningGateway) -> None:
    oldest_first = _waiting_longer_than_the_bound(gateway)
    listed = oldest_first[:MAX_LISTED_TICKETS]
    left_out = oldest_first[MAX_LISTED_TICKETS:]
    send_digests(gateway)
    digests(gateway)
    answered = [*listed[:3], *left_out[:2]]
    for number in answered:
        gateway.sql("UPDATE tickets SET status = 'open' WHERE number = :n", n=number)

    gateway.clock.current = datetime(2026, 12, 2, 9, 1, tzinfo=UTC)  # Wednesday
    wednesday = send_digests(gateway)
    *_, second = digests(gateway)
    gateway.clock.current = datetime(2026, 12, 4, 9, 1, tzinfo=UTC)  # Friday
    friday = send_digests(gateway)
    *_, third = digests(gateway)

    assert wednesday == 1
    assert listed_numbers(second) == left_out[2:]
    assert "more ticket" not in text_of(second)
    assert friday == 1
    assert listed_numbers(third) == listed[3:]
    assert "more ticket" not in text_of(third)


def test_dry_run_lists_at_most_the_bound(gateway: RunningGateway) -> None:
    oldest_first = _waiting_longer_than_the_bound(gateway)

    async def preview() -> list[DigestPlan]:
        return [plan async for plan in work(gateway).digests.preview()]

    [plan] = gateway.call(preview)

    assert [w.ticket.number for w in plan.tickets] == oldest_first[:MAX_LISTED_TICKETS]
    assert plan.more_waiting == 5


def test_more_line_counts_tickets_still_waiting(gateway: RunningGateway) -> None:
    oldest_first = _waiting_longer_than_the_bound(gateway)
    send_digests(gateway)
    for number in oldest_first[MAX_LISTED_TICKETS:][:2]:
        gateway.sql("UPDATE tickets SET status = 'open' WHERE number = :n", n=number)

    [digest] = digests(gateway)

    text = " ".join(text_of(digest).split())
    assert listed_numbers(digest) == oldest_first[:MAX_LISTED_TICKETS]
    assert "3 more tickets wait for your answer" in text
    total = len(oldest_first) - 2
    assert digest["Subject"] == f"Reminder: {total} tickets wait for your answer"


def test_dry_run_counts_tickets_left_out(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from gateway.cli import cli

    clock = FakeClock(datetime.now(UTC))
    config = make_config(tmp_path)
    with running_gateway(config, clock) as gateway:
        for day in range(MAX_LISTED_TICKETS + 3):
            add_waiting(gateway, "ada@example.com", f"Export number {day} fails on invoices",
                        since=clock() - timedelta(days=2 + day))
    config_file = tmp_path / "gateway.toml"
    config_file.write_text(f'[database]\nurl = "{config.database.url}"\n'
                           f'[outbound]\nmaildir = "{config.outbound.maildir}"\n')

    dry = CliRunner().invoke(cli, ["--config", str(config_file), "digest", "--dry-run"])

    assert dry.exit_code == 0, dry.output
    assert (f"ada@example.com: {MAX_LISTED_TICKETS + 3} ticket(s), the "
            f"{MAX_LISTED_TICKETS} most urgent listed") in dry.output
    assert "and 3 more, not listed" in dry.output
