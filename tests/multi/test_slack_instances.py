"""Slack events retried to other gateway processes, on one PostgreSQL database.

Slack retries an event that got no answer in time, and the retry may reach any
instance behind the load balancer. These tests send the same signed event to
several real `serve` processes and check that it takes effect once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster import Cluster, Instance, new_ticket_mail, running_cluster
from conftest import POSTGRES
from slack_fake import BOT_TOKEN, BOT_USER_ID, TEAM_ID, RunningSlackFake, SlackFake

pytestmark = pytest.mark.skipif(
    POSTGRES is None, reason="needs PostgreSQL: set GATEWAY_TEST_DATABASE_URL=postgresql://USER@HOST:PORT/DB"
)

SIGNING_SECRET = "multi-signing-secret-0123456789"
CHANNEL = "CSUPPORT1"
GRACE = "UGRACE001"
DESCRIPTION = (
    "Since this morning the Client Portal shows a blank page right after login. "
    "It happens for every user, in Chrome and in Firefox."
)


@pytest.fixture
def slack_api() -> Iterator[SlackFake]:
    running = RunningSlackFake(SlackFake(users={GRACE: "Grace Hopper"},
                                         channel_members=[GRACE, BOT_USER_ID]))
    try:
        yield running.start()
    finally:
        running.stop()


@pytest.fixture
def three(tmp_path: Path, slack_api: SlackFake) -> Iterator[Cluster]:
    assert POSTGRES is not None
    slack_section = f"""
[slack]
bot_token = "{BOT_TOKEN}"
signing_secret = "{SIGNING_SECRET}"
channel = "{CHANNEL}"
api_base_url = "{slack_api.api_url}"
retry_max_seconds = 2.0
"""
    with running_cluster(POSTGRES.create(), tmp_path, count=3,
                         extra_config=slack_section) as cluster:
        cluster.query(
            "insert into builders (email, name, timezone, created_at) "
            "values ('ada@example.com', 'Ada Lovelace', 'UTC', now())"
        )
        yield cluster


def test_event_sent_to_three_applies_once(three: Cluster) -> None:
    root = _ticket_with_thread(three)
    texts = [f"Looked at the login logs, round {n}: nothing unusual yet." for n in range(5)]

    answers = [
        _post_together(three.instances, _thread_message(f"Ev0SAME{n:04d}", root, text))
        for n, text in enumerate(texts)
    ]

    assert all(status == 200 for pair in answers for status in pair), answers
    three.wait_until(lambda: _notes(three, texts) == len(texts), 30, "every note")
    three.wait_until(lambda: _unfinished_receipts(three) == 0, 30,
                     "every receipt to be done")
    time.sleep(1.0)  # a late copy would land now
    counts = three.query(
        "select body, count(*) from messages where visibility = 'internal' "
        "and kind = 'support' group by body"
    )
    assert sorted(counts) == sorted((text, 1) for text in texts)


def test_retry_after_dead_instance_applies_once(three: Cluster) -> None:
    root = _ticket_with_thread(three)
    # One instance claimed each event and died before the note was stored: the
    # claim of the first has run out, the claim of the second has not.
    three.query(
        "insert into slack_receipts (key, received_at, state, lease_until) values "
        "('event:Ev0DEAD0001', now() - interval '2 minutes', 'processing', "
        " now() - interval '1 minute'), "
        "('event:Ev0LIVE0001', now(), 'processing', now() + interval '10 minutes')"
    )
    lapsed = "Restarted the sync worker; please check again."
    still_claimed = "Asked the platform team about the login service."

    for instance in three.instances:
        for event_id, text in (("Ev0DEAD0001", lapsed), ("Ev0LIVE0001", still_claimed)):
            status, _ = _post(instance, _thread_message(event_id, root, text), retry=1)
            assert status == 200
    three.wait_until(lambda: _notes(three, [lapsed]) == 1, 30, "the retried note")
    three.wait_until(lambda: _unfinished_receipts(three) == 1, 30,
                     "the retried receipt to be done")
    time.sleep(1.0)

    assert _notes(three, [lapsed]) == 1
    assert _notes(three, [still_claimed]) == 0
    assert three.query("select state from slack_receipts where key = 'event:Ev0LIVE0001'"
                       ) == [("processing",)]


def _ticket_with_thread(cluster: Cluster) -> str:
    """Open ticket #1 by email and return the ts of its root message in Slack."""
    code, text = cluster.instances[0].send(new_ticket_mail(
        "slack-open-1@example.com", "Portal login page is blank", DESCRIPTION))
    assert code == 250, text
    found: list[str] = []

    def posted() -> bool:
        rows = cluster.query("select root_ts from slack_threads where root_ts is not null")
        found[:] = [ts for (ts,) in rows]
        return bool(found)

    cluster.wait_until(posted, 30, "the root message in Slack")
    return found[0]


def _thread_message(event_id: str, thread_ts: str, text: str) -> str:
    return json.dumps({
        "token": "unused", "team_id": TEAM_ID, "api_app_id": "A0GATEWAY",
        "type": "event_callback", "event_id": event_id, "event_time": int(time.time()),
        "event": {"type": "message", "channel": CHANNEL, "user": GRACE, "text": text,
                  "ts": f"{time.time():.6f}", "thread_ts": thread_ts},
    })


def _post(instance: Instance, body: str, *, retry: int = 0) -> tuple[int, str]:
    """POST a signed event to one instance; RETRY > 0 marks it as Slack's retry."""
    stamp = str(int(time.time()))
    signature = "v0=" + hmac.new(SIGNING_SECRET.encode(), f"v0:{stamp}:{body}".encode(),
                                 hashlib.sha256).hexdigest()
    headers = {"Content-Type": "application/json", "X-Slack-Request-Timestamp": stamp,
               "X-Slack-Signature": signature}
    if retry:
        headers.update({"X-Slack-Retry-Num": str(retry),
                        "X-Slack-Retry-Reason": "http_timeout"})
    request = urllib.request.Request(f"http://127.0.0.1:{instance.web_port}/slack/events",
                                     data=body.encode(), method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _post_together(instances: list[Instance], body: str) -> list[int]:
    """POST BODY to every instance at once; all but the first carry a retry header."""
    barrier = threading.Barrier(len(instances))
    statuses = [0] * len(instances)

    def run(index: int, instance: Instance) -> None:
        barrier.wait(30)
        statuses[index], _ = _post(instance, body, retry=index)

    threads = [threading.Thread(target=run, args=(i, instance))
               for i, instance in enumerate(instances)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return statuses


def _notes(cluster: Cluster, texts: list[str]) -> int:
    [(count,)] = cluster.query(
        "select count(*) from messages where visibility = 'internal' and kind = 'support' "
        "and body = any(:texts)", texts=texts)
    return count


def _unfinished_receipts(cluster: Cluster) -> int:
    [(count,)] = cluster.query(
        "select count(*) from slack_receipts where state <> 'done'")
    return count
