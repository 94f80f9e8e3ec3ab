"""The Slack app end to end: email in, Slack threads, and actions back to email."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import FakeClock, make_config, running_gateway, sample
from gateway.config import SlackConfig
from slack_fake import BOT_ID, BOT_TOKEN, BOT_USER_ID, RunningSlackFake, SlackFake
from slack_helpers import (
    ALAN,
    CHANNEL,
    EVE,
    GRACE,
    SIGNING_SECRET,
    SlackDeskUnderTest,
    plain_text,
    wait_until,
)

from adapters.slack import RECEIPT_LEASE
from gateway.model import App
from gateway.slack_mirror import RepeatedSlackRequest, handling_slack_request

PORTAL_BUG = sample("gmail_plain_and_html.eml")


@pytest.fixture
def slack_api() -> Iterator[SlackFake]:
    running = RunningSlackFake(SlackFake(
        users={GRACE: "Grace Hopper", ALAN: "Alan Turing", EVE: "Eve Outsider"},
        channel_members=[GRACE, ALAN, BOT_USER_ID],
    ))
    try:
        yield running.start()
    finally:
        running.stop()


def slack_config(slack_api: SlackFake, **overrides: object) -> SlackConfig:
    return replace(
        SlackConfig(bot_token=BOT_TOKEN, signing_secret=SIGNING_SECRET, channel=CHANNEL,
                    api_base_url=slack_api.api_url, undo_seconds=10),
        **overrides,
    )


@pytest.fixture
def desk(tmp_path: Path, clock: FakeClock, slack_api: SlackFake
         ) -> Iterator[SlackDeskUnderTest]:
    config = make_config(tmp_path, slack=slack_config(slack_api))
    with running_gateway(config, clock) as gateway:
        gateway.add_builder("ada@example.com", name="Ada Lovelace",
                            apps=(App("Client Portal", "https://portal.example.com"),))
        yield SlackDeskUnderTest(gateway, slack_api)


@pytest.fixture
def opened(desk: SlackDeskUnderTest) -> SlackDeskUnderTest:
    """The desk with ticket #1 opened by email and posted to Slack."""
    code, _ = desk.gateway.send(PORTAL_BUG)
    assert code == 250
    desk.root_ts(1)
    desk.mails()
    return desk


def _messages(desk: SlackDeskUnderTest, number: int = 1) -> list:
    return list(desk.ticket(number).messages)


def _emails_about(desk: SlackDeskUnderTest, words: str) -> list:
    return [m for m in desk.mails() if words in plain_text(m)]


# The path a ticket takes


def test_email_ticket_posts_root_message(desk: SlackDeskUnderTest) -> None:
    desk.gateway.send(PORTAL_BUG)

    desk.flush_slack()

    roots = [p for p in desk.slack.posts() if "thread_ts" not in p]
    assert len(roots) == 1
    assert roots[0]["channel"] == CHANNEL
    assert roots[0]["text"].startswith("#1 ")
    blocks = json.dumps(roots[0]["blocks"])
    assert "Ada Lovelace" in blocks
    assert "Client Portal" in blocks
    assert "In review" in blocks
    assert "ticket_reply" in blocks
    assert "<!here>" not in roots[0]["text"]


def test_thread_message_stays_internal_note(opened: SlackDeskUnderTest) -> None:
    root = opened.root_ts()
    posts_before = len(opened.slack.posts())

    status, _ = opened.thread_message(root, "I think the CDN cache is stale again.")
    wait_until(lambda: len(_messages(opened)) > 1)
    opened.flush_slack()

    note = _messages(opened)[-1]
    assert status == 200
    assert note.visibility == "internal"
    assert note.author == "Grace Hopper"
    assert note.body == "I think the CDN cache is stale again."
    assert _emails_about(opened, "CDN") == []
    assert len(opened.slack.posts()) == posts_before


def test_reply_modal_emails_builder_threaded(opened: SlackDeskUnderTest) -> None:
    acknowledgement = opened.mails()[0]

    status, _ = opened.submit("ticket_reply", 1, "Please clear the cache and reload.")
    wait_until(lambda: any(m.visibility == "public" and m.kind == "support"
                           for m in _messages(opened)))
    held = _emails_about(opened, "clear the cache")
    opened.gateway.clock.advance(seconds=11)
    sent = _emails_about(opened, "clear the cache")

    assert status == 200
    assert held == []
    assert len(sent) == 1
    assert sent[0]["To"] == "Ada Lovelace <ada@example.com>"
    assert sent[0]["In-Reply-To"] is not None
    assert acknowledgement["Message-ID"] in sent[0]["References"]
    assert "[#1]" in sent[0]["Subject"]


def test_reply_is_marked_in_thread(opened: SlackDeskUnderTest) -> None:
    root = opened.root_ts()

    opened.submit("ticket_reply", 1, "Please clear the cache and reload.")
    wait_until(lambda: len(_messages(opened)) > 1)
    opened.flush_slack()

    lines = [p["text"] for p in opened.thread_posts(root)]
    assert any("Grace Hopper" in line and "clear the cache" in line for line in lines)
    marker = [p for p in opened.thread_posts(root) if "sent a reply" in p["text"]]
    assert len(marker) == 1
    assert "reply_undo" in json.dumps(marker[0]["blocks"])


def test_resolve_command_reaches_builder_and_status_page(
    opened: SlackDeskUnderTest,
) -> None:
    root = opened.root_ts()

    status, _ = opened.command("1 resolve We cleared the CDN cache; the portal loads.")
    wait_until(lambda: opened.ticket().summary.status == "resolved")
    opened.flush_slack()
    with urllib.request.urlopen(f"{opened.gateway.web_url}/api/tickets", timeout=30) as r:
        listing = json.loads(r.read())

    assert status == 200
    assert listing["tickets"][0]["status_label"] == "Resolved"
    assert len(_emails_about(opened, "We cleared the CDN cache")) == 1
    lines = [p["text"] for p in opened.thread_posts(root)]
    assert any("Grace Hopper" in line and "resolved" in line for line in lines)
    updates = opened.slack.named("chat.update")
    assert updates[-1]["ts"] == root
    assert "Resolved" in json.dumps(updates[-1]["blocks"])


def test_status_menu_changes_ticket(opened: SlackDeskUnderTest) -> None:
    opened.press("ticket_status", "", selected="1:in_progress")

    wait_until(lambda: opened.ticket().summary.status == "in_progress")


@pytest.mark.parametrize(
    ("action_id", "selected", "field", "expected"),
    [
        ("ticket_severity", "1:sev2", "severity", "sev2"),
        ("ticket_category", "1:data_sync", "category", "data_sync"),
        ("ticket_priority", "1:P1", "priority", "P1"),
    ],
    ids=["severity", "category", "priority"],
)
def test_field_menus_change_ticket(opened: SlackDeskUnderTest, action_id: str,
                                   selected: str, field: str, expected: str) -> None:
    opened.press(action_id, "", selected=selected)

    wait_until(lambda: getattr(opened.ticket().summary, field) == expected)


def test_assignee_menu_uses_display_name(opened: SlackDeskUnderTest) -> None:
    opened.press("ticket_assignee", "", selected_user=ALAN)

    wait_until(lambda: opened.ticket().summary.assignee == "Alan Turing")


def test_escalate_button_changes_status(opened: SlackDeskUnderTest) -> None:
    opened.press("ticket_escalate", "1")

    wait_until(lambda: opened.ticket().summary.status == "escalated")


def test_resolve_button_opens_modal(opened: SlackDeskUnderTest) -> None:
    opened.press("ticket_resolve", "1")

    view = wait_until(lambda: opened.slack.named("views.open"))[0]["view"]
    view = json.loads(view) if isinstance(view, str) else view
    assert view["callback_id"] == "ticket_resolve"
    assert view["private_metadata"].startswith("1|")


def test_wait_modal_emails_question(opened: SlackDeskUnderTest) -> None:
    opened.submit("ticket_wait", 1, "Which browser and version do you use?")

    wait_until(lambda: opened.ticket().summary.status == "waiting_on_builder")
    assert len(_emails_about(opened, "Which browser and version")) == 1


def test_duplicate_needs_existing_ticket(opened: SlackDeskUnderTest) -> None:
    opened.submit("ticket_duplicate", 1, "#7")

    ephemeral = wait_until(lambda: opened.slack.named("chat.postEphemeral"))
    assert "#7 does not exist" in ephemeral[0]["text"]
    assert opened.ticket().summary.status == "new"


def test_show_and_list_commands(opened: SlackDeskUnderTest) -> None:
    opened.command("1")
    opened.command("list")

    answers = wait_until(lambda: (lambda e: e if len(e) == 2 else None)(
        opened.slack.named("chat.postEphemeral")))
    texts = sorted(a["text"] for a in answers)
    assert any(t.startswith("*#1 ") for t in texts)
    assert any("1 of 1 ticket(s)" in t for t in texts)


# Rules and permissions


def test_outsider_is_refused_privately(opened: SlackDeskUnderTest) -> None:
    opened.command("1 close", user=EVE)

    ephemeral = wait_until(lambda: opened.slack.named("chat.postEphemeral"))
    assert ephemeral[0]["user"] == EVE
    assert "Only members of the support channel" in ephemeral[0]["text"]
    assert opened.ticket().summary.status == "new"


def test_user_group_member_may_act(tmp_path: Path, clock: FakeClock,
                                   slack_api: SlackFake) -> None:
    slack_api.group_members["SSUPPORT1"] = [EVE]
    config = make_config(tmp_path, slack=slack_config(slack_api,
                                                      allowed_user_group="SSUPPORT1"))
    with running_gateway(config, clock) as gateway:
        gateway.add_builder("ada@example.com", name="Ada Lovelace")
        desk = SlackDeskUnderTest(gateway, slack_api)
        gateway.send(PORTAL_BUG)

        desk.command("1 escalate", user=EVE)

        wait_until(lambda: desk.ticket().summary.status == "escalated")


def test_invalid_transition_refused_with_reason(opened: SlackDeskUnderTest) -> None:
    opened.command("1 reopen")

    ephemeral = wait_until(lambda: opened.slack.named("chat.postEphemeral"))
    assert "only a resolved, closed or duplicate ticket can be reopened" in (
        ephemeral[0]["text"])
    assert opened.ticket().summary.status == "new"


def test_two_presses_give_one_change(opened: SlackDeskUnderTest) -> None:
    opened.press("ticket_close", "1", user=GRACE)
    opened.press("ticket_close", "1", user=ALAN)

    wait_until(lambda: opened.slack.named("chat.postEphemeral"))
    closes = [m for m in _messages(opened) if m.kind == "system" and "closed" in m.body]
    assert opened.ticket().summary.status == "closed"
    assert len(closes) == 1
    assert len(_emails_about(opened, "closed")) == 1


# Safety


def test_bad_signature_gets_401(opened: SlackDeskUnderTest) -> None:
    body = json.dumps({"type": "event_callback", "event_id": "Ev0BAD",
                       "event": {"type": "message", "text": "hi"}})

    status, _ = opened.post(body, "application/json", secret="wrong-secret")

    assert status == 401


def test_stale_timestamp_gets_401(opened: SlackDeskUnderTest) -> None:
    body = json.dumps({"type": "event_callback", "event_id": "Ev0OLD",
                       "event": {"type": "message", "text": "hi"}})

    status, _ = opened.post(body, "application/json", timestamp=int(time.time()) - 600)

    assert status == 401


def test_retried_event_applies_once(opened: SlackDeskUnderTest) -> None:
    root = opened.root_ts()
    event = {"type": "message", "user": GRACE, "text": "Checking the logs now.",
             "ts": "1765100000.424242", "thread_ts": root}

    opened.event(event, event_id="Ev0RETRY1")
    wait_until(lambda: len(_messages(opened)) == 2)
    status, _ = opened.event(event, event_id="Ev0RETRY1",
                             headers={"X-Slack-Retry-Num": "1",
                                      "X-Slack-Retry-Reason": "http_timeout"})
    opened.command("1")  # a later request, to know the retry was handled
    wait_until(lambda: opened.slack.named("chat.postEphemeral"))

    assert status == 200
    notes = [m for m in _messages(opened) if m.body == "Checking the logs now."]
    assert len(notes) == 1


def _claim(desk: SlackDeskUnderTest, key: str) -> bool:
    """Claim a receipt as an instance would that dies before the effect."""
    gateway = desk.gateway

    async def work() -> bool:
        async with gateway.gateway.store.write() as tx:
            return await tx.claim_slack_receipt(key, now=gateway.clock(), lease=RECEIPT_LEASE)

    return gateway.call(work)


def test_retry_after_crash_applies_once(opened: SlackDeskUnderTest) -> None:
    root = opened.root_ts()
    event = {"type": "message", "user": GRACE, "text": "Restarting the sync worker.",
             "ts": "1765100000.515151", "thread_ts": root}
    assert _claim(opened, "event:Ev0CRASH1")
    retry = {"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}

    opened.event(event, event_id="Ev0CRASH1", headers=retry)
    opened.command("1")  # a later request, to know the retry was handled
    wait_until(lambda: opened.slack.named("chat.postEphemeral"))
    skipped_in_lease = [m for m in _messages(opened) if m.body == event["text"]]
    opened.gateway.clock.advance(seconds=RECEIPT_LEASE.total_seconds() + 1)
    opened.event(event, event_id="Ev0CRASH1", headers={**retry, "X-Slack-Retry-Num": "2"})
    wait_until(lambda: any(m.body == event["text"] for m in _messages(opened)))
    opened.event(event, event_id="Ev0CRASH1", headers={**retry, "X-Slack-Retry-Num": "3"})
    opened.command("1")
    wait_until(lambda: len(opened.slack.named("chat.postEphemeral")) == 2)

    assert skipped_in_lease == []
    notes = [m for m in _messages(opened) if m.body == event["text"]]
    assert len(notes) == 1


def test_late_instance_note_rolled_back(opened: SlackDeskUnderTest) -> None:
    gateway = opened.gateway
    assert _claim(opened, "event:Ev0LATE1")

    async def finish_elsewhere_then_note() -> None:
        async with gateway.gateway.store.write() as tx:
            assert await tx.finish_slack_receipt("event:Ev0LATE1")
        with handling_slack_request() as receipt:
            receipt.key = "event:Ev0LATE1"
            await gateway.gateway.support_desk.note(1, "Second copy of the note.",
                                                    author="Grace Hopper")

    with pytest.raises(RepeatedSlackRequest):
        gateway.call(finish_elsewhere_then_note)

    assert [m for m in _messages(opened) if m.body == "Second copy of the note."] == []


def test_bot_messages_never_become_notes(opened: SlackDeskUnderTest) -> None:
    root = opened.root_ts()

    opened.thread_message(root, "Automated: deploy finished", bot_id="B0OTHER",
                          subtype="bot_message")
    opened.thread_message(root, "Echo of our own post", user=BOT_USER_ID, bot_id=BOT_ID)
    opened.command("1")
    wait_until(lambda: opened.slack.named("chat.postEphemeral"))

    assert len(_messages(opened)) == 1


def test_builder_text_escaped_in_slack(desk: SlackDeskUnderTest) -> None:
    raw = PORTAL_BUG.replace(
        b"Subject: ", b"Subject: <!channel> <@U0BOSS> <http://evil.example.com|Invoice> ", 1
    )
    desk.gateway.send(raw)

    desk.flush_slack()

    root = desk.slack.posts()[0]
    everything = root["text"] + json.dumps(root["blocks"])
    assert "&lt;!channel&gt;" in root["text"]
    assert "<!channel>" not in everything
    assert "<@U0BOSS>" not in everything
    assert "<http://evil" not in everything


def test_builder_reply_posted_escaped_in_thread(opened: SlackDeskUnderTest) -> None:
    root = opened.root_ts()
    acknowledgement = opened.mails()[0]
    reply = (
        f"From: Ada Lovelace <ada@example.com>\r\nTo: {acknowledgement['Reply-To']}\r\n"
        f"Subject: Re: {acknowledgement['Subject']}\r\n"
        f"In-Reply-To: {acknowledgement['Message-ID']}\r\n"
        "Message-ID: <reply-1@example.com>\r\n\r\n"
        "Still blank for me <!here> & <@U0BOSS>.\r\n"
    ).encode()

    code, _ = opened.gateway.send(reply)
    opened.flush_slack()

    posts = opened.thread_posts(root)
    assert code == 250
    assert len(posts) == 1
    assert "Still blank for me &lt;!here&gt; &amp; &lt;@U0BOSS&gt;." in posts[0]["text"]


def test_sev1_ticket_alerts_channel(desk: SlackDeskUnderTest) -> None:
    desk.gateway.send(_plain_mail(
        "Client Portal is down for every user since the deploy",
        "Severity: Sev 1\r\nApp: Client Portal\r\n\r\nEvery page of the portal "
        "answers 502 since 14:00; our customers cannot sign in at all.",
    ))

    desk.flush_slack()

    root = desk.slack.posts()[0]
    assert desk.ticket().summary.severity == "sev1"
    assert root["text"].startswith("<!here> Sev 1 ticket")
    assert root["blocks"][0]["text"]["text"].startswith(":rotating_light: <!here>")


def test_sev3_ticket_alerts_nobody(desk: SlackDeskUnderTest) -> None:
    desk.gateway.send(PORTAL_BUG)

    desk.flush_slack()

    assert "<!here>" not in json.dumps(desk.slack.posts()[0])


def test_mentions_resolved_before_email(opened: SlackDeskUnderTest) -> None:
    opened.submit("ticket_reply", 1,
                  "<@UALAN0001> fixed it; see <https://status.example.com|our status "
                  "page> and <https://files.slack.com/files-pri/T0/F1/log.txt|log.txt>.")
    wait_until(lambda: len(_messages(opened)) > 1)
    opened.gateway.clock.advance(seconds=11)

    body = plain_text(_emails_about(opened, "fixed it")[0])
    assert "@Alan Turing fixed it" in body
    assert "our status page (https://status.example.com)" in body
    assert "UALAN0001" not in body
    assert "files.slack.com" not in body


# The undo window


def test_undo_cancels_reply_email(opened: SlackDeskUnderTest) -> None:
    opened.submit("ticket_reply", 1, "Sorry, wrong ticket for this answer.")
    reply = wait_until(lambda: [m for m in _messages(opened) if m.kind == "support"])[0]

    opened.press("reply_undo", "1")
    wait_until(lambda: [m.visibility for m in _messages(opened) if m.id == reply.id]
               == ["internal"])
    opened.gateway.clock.advance(seconds=30)

    assert _emails_about(opened, "wrong ticket") == []
    assert [m.visibility for m in _messages(opened) if m.id == reply.id] == ["internal"]


def test_undo_after_sending_is_refused(opened: SlackDeskUnderTest) -> None:
    opened.submit("ticket_reply", 1, "Please clear the cache and reload.")
    wait_until(lambda: len(_messages(opened)) > 1)
    opened.gateway.clock.advance(seconds=11)
    assert len(_emails_about(opened, "clear the cache")) == 1

    opened.press("reply_undo", "1")

    ephemeral = wait_until(lambda: opened.slack.named("chat.postEphemeral"))
    assert "Too late to undo" in ephemeral[0]["text"]


def test_shortcut_sends_thread_message_once(opened: SlackDeskUnderTest) -> None:
    root = opened.root_ts()
    ts = "1765100000.777777"

    opened.shortcut(root, ts, "The fix is live; please reload the portal.")
    wait_until(lambda: len(_messages(opened)) > 1)
    opened.shortcut(root, ts, "The fix is live; please reload the portal.")
    wait_until(lambda: opened.slack.named("chat.postEphemeral"))
    opened.gateway.clock.advance(seconds=11)
    opened.flush_slack()

    assert len(_emails_about(opened, "The fix is live")) == 1
    reactions = opened.slack.named("reactions.add")
    assert reactions == [{"channel": CHANNEL, "timestamp": ts, "name": "outbox_tray"}]


def test_deleting_message_in_window_cancels(opened: SlackDeskUnderTest) -> None:
    root = opened.root_ts()
    ts = "1765100000.888888"
    opened.shortcut(root, ts, "Internal guess: it is the CDN, do not send.")
    reply = wait_until(lambda: [m for m in _messages(opened) if m.kind == "support"])[0]

    opened.event({"type": "message", "subtype": "message_deleted", "deleted_ts": ts,
                  "ts": "1765100001.000001", "hidden": True,
                  "previous_message": {"ts": ts, "user": GRACE, "thread_ts": root}})
    wait_until(lambda: [m.visibility for m in _messages(opened) if m.id == reply.id]
               == ["internal"])
    opened.gateway.clock.advance(seconds=30)

    assert _emails_about(opened, "do not send") == []


def test_editing_sent_message_sends_nothing(opened: SlackDeskUnderTest) -> None:
    root = opened.root_ts()
    ts = "1765100000.999999"
    opened.shortcut(root, ts, "Fixed on our side.")
    wait_until(lambda: len(_messages(opened)) > 1)
    opened.gateway.clock.advance(seconds=11)
    assert len(_emails_about(opened, "Fixed on our side")) == 1

    opened.event({"type": "message", "subtype": "message_changed", "ts": "1765100002.1",
                  "message": {"ts": ts, "user": GRACE, "text": "Fixed on our side (edit)",
                              "thread_ts": root},
                  "previous_message": {"ts": ts, "user": GRACE, "text": "Fixed on our side."}})
    opened.command("1")
    wait_until(lambda: opened.slack.named("chat.postEphemeral"))
    opened.gateway.clock.advance(seconds=30)

    assert len(_emails_about(opened, "Fixed on our side")) == 1


# Delivery to Slack


def test_rate_limit_waits_for_retry_after(desk: SlackDeskUnderTest) -> None:
    desk.slack.fail_next("chat.postMessage", status=429, retry_after=30)
    desk.gateway.send(PORTAL_BUG)

    desk.flush_slack()
    early = list(desk.slack.posts())
    desk.gateway.clock.advance(seconds=29)
    desk.flush_slack()
    still_early = list(desk.slack.posts())
    desk.gateway.clock.advance(seconds=2)
    desk.flush_slack()

    assert early == []
    assert still_early == []
    assert len(desk.slack.posts()) == 1


def test_thread_order_kept_after_failure(opened: SlackDeskUnderTest) -> None:
    root = opened.root_ts()
    opened.slack.fail_next("chat.postMessage", status=500, retry_after=None,
                           error="internal_error")
    support = opened.gateway.gateway.support_desk
    opened.gateway.call(lambda: support.note(1, "First note", author="grace"))
    opened.gateway.call(lambda: support.note(1, "Second note", author="grace"))

    opened.flush_slack()
    opened.gateway.clock.advance(minutes=5)
    opened.flush_slack()

    texts = [p["text"] for p in opened.thread_posts(root)]
    assert len(texts) == 2
    assert "First note" in texts[0]
    assert "Second note" in texts[1]


def test_slack_outage_keeps_email_working(desk: SlackDeskUnderTest) -> None:
    desk.slack.set_outage(True)

    code, _ = desk.gateway.send(PORTAL_BUG)
    desk.flush_slack()
    mails = desk.mails()
    desk.slack.set_outage(False)
    desk.gateway.clock.advance(minutes=10)
    desk.flush_slack()

    assert code == 250
    assert len(mails) == 1
    assert len(desk.slack.posts()) == 1


def test_builder_files_uploaded_into_thread(desk: SlackDeskUnderTest) -> None:
    desk.gateway.send(sample("apple_mail_png.eml"))

    root = desk.root_ts()

    completes = desk.slack.named("files.completeUploadExternal")
    assert len(completes) == 1
    assert completes[0]["thread_ts"] == root
    assert completes[0]["channel_id"] == CHANNEL
    assert list(desk.slack.uploads.values())[0].startswith(b"\x89PNG")


def test_shortcut_files_attached_to_email(opened: SlackDeskUnderTest) -> None:
    root = opened.root_ts()
    png = sample("apple_mail_png.eml")
    screenshot = _png_from(png)
    opened.slack.files["fix.png"] = screenshot
    url = f"{opened.slack.base_url}/files/fix.png"

    opened.shortcut(root, "1765100000.555555", "Here is the fixed chart.",
                    files=[{"id": "F1", "name": "fix.png", "mimetype": "image/png",
                            "url_private": url, "url_private_download": url}])
    wait_until(lambda: len(_messages(opened)) > 1)
    opened.gateway.clock.advance(seconds=11)

    sent = _emails_about(opened, "fixed chart")[0]
    files = [part.get_filename() for part in sent.iter_attachments()]
    assert files == ["fix.png"]
    assert "files.slack.com" not in plain_text(sent)


def test_shortcut_rejects_executable_file(opened: SlackDeskUnderTest) -> None:
    root = opened.root_ts()
    opened.slack.files["tool.png"] = b"MZ\x90\x00" + b"\x00" * 200
    url = f"{opened.slack.base_url}/files/tool.png"

    opened.shortcut(root, "1765100000.565656", "Run this tool.",
                    files=[{"id": "F2", "name": "tool.png", "mimetype": "image/png",
                            "url_private": url}])

    ephemeral = wait_until(lambda: opened.slack.named("chat.postEphemeral"))
    assert "tool.png" in ephemeral[0]["text"]
    assert len(_messages(opened)) == 1


def test_slack_off_without_bot_token(tmp_path: Path, clock: FakeClock) -> None:
    config = make_config(tmp_path)

    with running_gateway(config, clock) as gateway:
        listeners = gateway.gateway.slack

    assert config.slack.enabled is False
    assert listeners is None


def _plain_mail(subject: str, body: str) -> bytes:
    return (
        "From: Ada Lovelace <ada@example.com>\r\nTo: support@localhost\r\n"
        f"Subject: {subject}\r\nMessage-ID: <sev1-{subject[:6].replace(' ', '')}@example.com>"
        "\r\nDate: Tue, 01 Dec 2026 09:00:00 +0000\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    ).encode()


def _png_from(raw: bytes) -> bytes:
    import email
    from email import policy

    message = email.message_from_bytes(raw, policy=policy.default)
    for part in message.iter_attachments():
        return part.get_content()
    raise AssertionError("sample has no attachment")


def test_socket_mode_event_becomes_note(tmp_path: Path, clock: FakeClock,
                                        slack_api: SlackFake) -> None:
    config = make_config(tmp_path, slack=slack_config(
        slack_api, signing_secret=None, app_token="xapp-test-token"))
    with running_gateway(config, clock) as gateway:
        gateway.add_builder("ada@example.com", name="Ada Lovelace")
        desk = SlackDeskUnderTest(gateway, slack_api)
        gateway.send(PORTAL_BUG)
        root = desk.root_ts()
        wait_until(lambda: slack_api._socket is not None)

        slack_api.send_socket_envelope({
            "envelope_id": "env-1", "type": "events_api", "accepts_response_payload": False,
            "retry_attempt": 0, "retry_reason": "",
            "payload": {
                "team_id": "T0EXAMPLE", "api_app_id": "A0GATEWAY", "type": "event_callback",
                "event_id": "Ev0SOCKET1", "event_time": int(time.time()),
                "event": {"type": "message", "channel": CHANNEL, "user": GRACE,
                          "text": "Seen over the socket.", "ts": "1765100000.123123",
                          "thread_ts": root},
            },
        })
        wait_until(lambda: len(desk.ticket().messages) > 1)

        assert desk.ticket().messages[-1].body == "Seen over the socket."
        assert desk.ticket().messages[-1].visibility == "internal"
        assert {"envelope_id": "env-1"} in [
            {k: v for k, v in ack.items() if k == "envelope_id"} for ack in slack_api.socket_acks
        ]
        opened = [c for c in slack_api.calls if c.method == "apps.connections.open"]
        assert opened[0].headers["Authorization"] == "Bearer xapp-test-token"
