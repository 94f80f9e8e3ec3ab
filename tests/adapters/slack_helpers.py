"""Helpers for Slack tests: a gateway wired to the fake, and signed requests."""

from __future__ import annotations

import email
import hashlib
import hmac
import itertools
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from email import policy
from typing import Any

from conftest import RunningGateway
from slack_fake import TEAM_ID, SlackFake

SIGNING_SECRET = "test-signing-secret-0123456789"
CHANNEL = "CSUPPORT1"
GRACE = "UGRACE001"
ALAN = "UALAN0001"
EVE = "UEVE00001"
_ids = itertools.count(1)


@dataclass
class SlackDeskUnderTest:
    """A running gateway with Slack on, and the fake Slack it talks to."""

    gateway: RunningGateway
    slack: SlackFake

    def flush_slack(self) -> int:
        """Perform every due queued Slack call; return how many were attempted."""
        worker = self.gateway.gateway.slack.worker
        total = 0
        while attempted := self.gateway.call(worker.run_once):
            total += attempted
        return total

    def root_ts(self, number: int = 1) -> str:
        """Return the ts of ticket NUMBER's root message, posting it first."""
        self.flush_slack()

        async def work() -> str | None:
            async with self.gateway.gateway.store.read() as tx:
                ticket = await tx.get_ticket(number)
                thread = await tx.slack_thread(ticket.summary.id)
            return thread[1] if thread else None

        ts = self.gateway.call(work)
        assert ts, f"ticket #{number} has no root message in Slack"
        return ts

    def thread_posts(self, ts: str) -> list[dict[str, Any]]:
        return [p for p in self.slack.posts() if p.get("thread_ts") == ts]

    def mails(self) -> list[email.message.EmailMessage]:
        self.gateway.flush_outbox()
        return [
            email.message_from_bytes(p.read_bytes(), policy=policy.default)
            for p in self.gateway.outbox_files()
        ]

    # Signed requests to /slack/events

    def post(self, body: str, content_type: str, *, secret: str = SIGNING_SECRET,
             timestamp: int | None = None, headers: dict[str, str] | None = None
             ) -> tuple[int, str]:
        stamp = str(timestamp if timestamp is not None else int(time.time()))
        signature = "v0=" + hmac.new(secret.encode(), f"v0:{stamp}:{body}".encode(),
                                     hashlib.sha256).hexdigest()
        request = urllib.request.Request(
            f"{self.gateway.web_url}/slack/events",
            data=body.encode(),
            method="POST",
            headers={
                "Content-Type": content_type,
                "X-Slack-Request-Timestamp": stamp,
                "X-Slack-Signature": signature,
                **(headers or {}),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def event(self, event: dict[str, Any], *, event_id: str | None = None,
              headers: dict[str, str] | None = None) -> tuple[int, str]:
        body = json.dumps({
            "token": "unused", "team_id": TEAM_ID, "api_app_id": "A0GATEWAY",
            "type": "event_callback", "event_id": event_id or f"Ev{next(_ids):08d}",
            "event_time": int(time.time()), "event": {"channel": CHANNEL, **event},
        })
        return self.post(body, "application/json", headers=headers)

    def thread_message(self, thread_ts: str, text: str, *, user: str = GRACE,
                       ts: str | None = None, **extra: Any) -> tuple[int, str]:
        return self.event({"type": "message", "user": user, "text": text,
                           "ts": ts or f"1765100000.{next(_ids):06d}",
                           "thread_ts": thread_ts, **extra})

    def command(self, text: str, *, user: str = GRACE) -> tuple[int, str]:
        form = {
            "token": "unused", "team_id": TEAM_ID, "channel_id": CHANNEL,
            "user_id": user, "command": "/ticket", "text": text,
            "trigger_id": f"trigger.{next(_ids)}",
            "response_url": f"{self.slack.base_url}/respond",
        }
        return self.post(urllib.parse.urlencode(form), "application/x-www-form-urlencoded")

    def interaction(self, payload: dict[str, Any]) -> tuple[int, str]:
        payload = {"team": {"id": TEAM_ID}, "api_app_id": "A0GATEWAY", "token": "unused",
                   "trigger_id": f"trigger.{next(_ids)}", **payload}
        body = urllib.parse.urlencode({"payload": json.dumps(payload)})
        return self.post(body, "application/x-www-form-urlencoded")

    def press(self, action_id: str, value: str, *, user: str = GRACE,
              selected: str | None = None, selected_user: str | None = None,
              ) -> tuple[int, str]:
        action: dict[str, Any] = {"action_id": action_id, "block_id": "b",
                                  "action_ts": f"1765200000.{next(_ids):06d}"}
        if selected is not None:
            action.update(type="static_select", selected_option={"value": selected})
        elif selected_user is not None:
            action.update(type="users_select", selected_user=selected_user,
                          block_id="ticket:1:menus")
        else:
            action.update(type="button", value=value)
        return self.interaction({
            "type": "block_actions", "user": {"id": user}, "channel": {"id": CHANNEL},
            "container": {"type": "message"}, "actions": [action],
        })

    def submit(self, callback_id: str, number: int, text: str, *, user: str = GRACE,
               view_id: str | None = None) -> tuple[int, str]:
        return self.interaction({
            "type": "view_submission", "user": {"id": user},
            "view": {
                "id": view_id or f"V{next(_ids):08d}", "hash": "h1", "type": "modal",
                "callback_id": callback_id, "private_metadata": f"{number}||",
                "state": {"values": {"text": {"value": {"type": "plain_text_input",
                                                        "value": text}}}},
            },
        })

    def shortcut(self, thread_ts: str, ts: str, text: str, *, user: str = GRACE,
                 files: list[dict[str, Any]] | None = None) -> tuple[int, str]:
        message: dict[str, Any] = {"type": "message", "user": user, "text": text, "ts": ts,
                                   "thread_ts": thread_ts}
        if files:
            message["files"] = files
        return self.interaction({
            "type": "message_action", "callback_id": "send_to_builder",
            "user": {"id": user}, "channel": {"id": CHANNEL}, "message": message,
            "message_ts": ts,
        })

    def ticket(self, number: int = 1) -> Any:
        return self.gateway.ticket(number)


def wait_until(check: Callable[[], Any], *, timeout: float = 10.0) -> Any:
    """Poll CHECK until it returns a true value; Bolt finishes work after its ack."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def plain_text(message: email.message.EmailMessage) -> str:
    return message.get_body(("plain",)).get_content()
