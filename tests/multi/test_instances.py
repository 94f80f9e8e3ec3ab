"""Once-only guarantees with several real gateway processes on one PostgreSQL database.

These tests start `python -m gateway serve` processes, so they run only in the
PostgreSQL half of the suite (GATEWAY_TEST_DATABASE_URL set).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster import (
    Cluster,
    Instance,
    new_ticket_mail,
    reply_mail,
    running_cluster,
    send_together,
)
from conftest import POSTGRES

pytestmark = pytest.mark.skipif(
    POSTGRES is None, reason="needs PostgreSQL: set GATEWAY_TEST_DATABASE_URL=postgresql://USER@HOST:PORT/DB"
)

# A builder may open only so many tickets an hour, so the load spreads over three.
BUILDERS = (
    "Ada Lovelace <ada@example.com>",
    "Grace Hopper <grace@example.com>",
    "Linus Pauling <linus@example.com>",
)
DESCRIPTION = (
    "Since this morning the Client Portal shows a blank page right after login. "
    "It happens for every user, in Chrome and in Firefox."
)


def _builder_added(cluster: Cluster) -> None:
    for builder in BUILDERS:
        name, _, address = builder.partition(" <")
        cluster.query(
            "insert into builders (email, name, timezone, created_at) "
            "values (:email, :name, 'UTC', now())",
            email=address.rstrip(">"), name=name,
        )


@pytest.fixture
def two(tmp_path: Path) -> Iterator[Cluster]:
    assert POSTGRES is not None
    with running_cluster(POSTGRES.create(), tmp_path, count=2) as cluster:
        _builder_added(cluster)
        yield cluster


@pytest.fixture
def three(tmp_path: Path) -> Iterator[Cluster]:
    assert POSTGRES is not None
    with running_cluster(POSTGRES.create(), tmp_path, count=3) as cluster:
        _builder_added(cluster)
        yield cluster


def test_same_message_twice_opens_one_ticket(two: Cluster) -> None:
    first, second = two.instances
    mails = [
        new_ticket_mail(f"race-{n}@example.com", f"Portal login page is blank ({n})",
                        DESCRIPTION)
        for n in range(5)
    ]

    replies = [send_together([(first, mail), (second, mail)]) for mail in mails]

    for pair in replies:
        assert [code for code, _ in pair] == [250, 250], pair
        assert sum("opened" in text for _, text in pair) == 1, pair
        assert sum("Already received" in text for _, text in pair) == 1, pair
    assert two.query("select count(*) from tickets") == [(5,)]
    created = two.query(
        "select message_id from inbound_messages where outcome = 'ticket_created'"
    )
    assert sorted(created) == [(f"race-{n}@example.com",) for n in range(5)]
    assert two.query("select outcome, count(*) from inbound_messages group by outcome") == [
        ("ticket_created", 5)
    ]


def test_concurrent_replies_all_kept_in_order(three: Cluster) -> None:
    opener = three.instances[0]
    code, text = opener.send(
        new_ticket_mail("open-1@example.com", "Portal login page is blank", DESCRIPTION)
    )
    assert code == 250, text
    three.query("update tickets set status = 'waiting_on_builder'")

    # Each instance gets its own stream of replies, sent one after another, and
    # the three streams run at the same time.
    streams = {instance.name: [] for instance in three.instances}
    errors: list[BaseException] = []

    def stream(instance: Instance) -> None:
        try:
            for n in range(6):
                body = f"Reply {n} through {instance.name}: the page is still blank."
                code, text = instance.send(reply_mail(
                    f"reply-{instance.name}-{n}@example.com", "open-1@example.com",
                    "Re: [#1] Portal login page is blank", body))
                assert code == 250, text
                assert "Added to ticket #1" in text, text
                streams[instance.name].append(body)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=stream, args=(i,)) for i in three.instances]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    bodies = [body for (body,) in three.query(
        "select body from messages where kind = 'builder' order by id")]
    assert bodies[0] == DESCRIPTION
    assert len(bodies) == 1 + 18
    assert Counter(bodies[1:]) == Counter(b for sent in streams.values() for b in sent)
    for name, sent in streams.items():
        assert [b for b in bodies if f"through {name}:" in b] == sent
    assert three.query("select status from tickets") == [("open",)]
    status_events = three.query(
        "select count(*) from messages where kind = 'system' and body like 'Status changed%'"
    )
    assert status_events == [(1,)]


def test_killed_instance_claims_are_sent_once(three: Cluster) -> None:
    doomed, *survivors = three.instances
    doomed.relay.stalling = True
    for n in range(4):
        code, text = doomed.send(new_ticket_mail(
            f"doomed-{n}@example.com", f"Invoice page crashes on open ({n})", DESCRIPTION))
        assert code == 250, text
    assert doomed.relay.stalled.wait(timeout=15), three.logs()

    doomed.kill()
    for n in range(4):
        instance = survivors[n % 2]
        code, text = instance.send(new_ticket_mail(
            f"later-{n}@example.com", f"Reports export times out ({n})", DESCRIPTION))
        assert code == 250, text

    three.wait_until(lambda: _unsent(three) == 0, 60, "every outbox row to be sent")
    sent = Counter(email.message_id for email in three.accepted)
    [(rows,)] = three.query("select count(*) from outbox where state = 'sent'")
    assert rows == 8
    assert len(sent) == 8
    assert max(sent.values()) == 1
    assert {email.instance for email in three.accepted} <= {i.name for i in survivors}


def test_mixed_load_with_a_kill_loses_nothing(three: Cluster) -> None:
    rng = random.Random(8)
    victim = three.instances[2]
    titles = [f"Data sync stops after relation change ({n})" for n in range(12)]
    def sender(n: int) -> str:
        return BUILDERS[n % len(BUILDERS)]

    for n, title in enumerate(titles[:4]):
        _deliver_to_any(three, new_ticket_mail(f"mix-{n}@example.com", title, DESCRIPTION,
                                               sender(n)), rng)

    # New tickets, each sent to two instances at once, and replies to the first
    # tickets, while one instance is killed in the middle.
    jobs: list[bytes] = []
    for n, title in enumerate(titles[4:], start=4):
        jobs.append(new_ticket_mail(f"mix-{n}@example.com", title, DESCRIPTION, sender(n)))
    for n in range(8):
        target = f"mix-{n % 4}@example.com"
        jobs.append(reply_mail(f"mix-reply-{n}@example.com", target,
                               f"Re: {titles[n % 4]}", f"Reply {n}: still failing.",
                               sender(n % 4)))
    errors: list[BaseException] = []

    def deliver(data: bytes, delay_seconds: float) -> None:
        try:
            time.sleep(delay_seconds)
            pair = rng.sample(three.instances, 2)
            results = []
            for instance in pair:
                results.append(_try_send(instance, data))
            if not any(code == 250 for code in results):
                _deliver_to_any(three, data, rng)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=deliver, args=(data, 0.1 * i))
               for i, data in enumerate(jobs)]
    # The victim's relay stalls on its first email, so the kill lands mid-send.
    victim.relay.stalling = True
    for thread in threads:
        thread.start()
    assert victim.relay.stalled.wait(timeout=15), three.logs()
    victim.kill()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    three.wait_until(lambda: _unsent(three) == 0, 60, "every outbox row to be sent")
    outcomes = three.query(
        "select message_id, count(*) from inbound_messages "
        "where outcome in ('ticket_created', 'reply_added') group by message_id"
    )
    assert len(outcomes) == 12 + 8, three.query(
        "select message_id, outcome, detail from inbound_messages order by id")
    assert all(count == 1 for _, count in outcomes)
    numbers = [number for (number,) in three.query("select number from tickets order by id")]
    assert numbers == list(range(1, 13))
    [(builder_messages,)] = three.query("select count(*) from messages where kind = 'builder'")
    assert builder_messages == 12 + 8
    sent = Counter(email.message_id for email in three.accepted)
    [(rows,)] = three.query("select count(*) from outbox")
    assert len(sent) == rows
    assert max(sent.values()) == 1


def _try_send(instance: Instance, data: bytes) -> int:
    # A sending server that loses the connection tries another MX later.
    try:
        code, _ = instance.send(data)
    except (OSError, ConnectionError):
        return 0
    return code


def _deliver_to_any(cluster: Cluster, data: bytes, rng: random.Random) -> None:
    for instance in rng.sample(cluster.instances, len(cluster.instances)):
        if instance.process is not None and instance.process.poll() is None:
            if _try_send(instance, data) == 250:
                return
    raise AssertionError("no instance accepted the message\n" + cluster.logs())


def _unsent(cluster: Cluster) -> int:
    [(count,)] = cluster.query("select count(*) from outbox where state <> 'sent'")
    return count
