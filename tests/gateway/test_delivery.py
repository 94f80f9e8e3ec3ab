"""Outbound delivery through a real SMTP relay: retries, backoff and restarts."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select

from conftest import FakeClock, make_config, running_gateway, sample, wait_until
from gateway.config import Config, OutboundConfig
from gateway.model import App
from ports import free_port
from store.models import OutboxRow


class RecordingRelay:
    """aiosmtpd handler that keeps each message, or rejects all with one reply."""

    def __init__(self, reply: str | None = None) -> None:
        self.reply = reply
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.reply:
            return self.reply
        self.messages.append(envelope)
        return "250 OK"


@pytest.fixture
def relay_port() -> int:
    return free_port()


@pytest.fixture
def relay_config(tmp_path: Path, relay_port: int) -> Config:
    config = make_config(tmp_path)
    outbound = OutboundConfig(
        relay_host="127.0.0.1",
        relay_port=relay_port,
        relay_starttls=False,
        relay_timeout_seconds=5.0,
        helo_hostname="gateway.example.com",
        retry_base_seconds=30.0,
        max_attempts=3,
    )
    return replace(config, outbound=outbound)


def _start_relay(port: int, reply: str | None = None) -> tuple[Controller, RecordingRelay]:
    handler = RecordingRelay(reply)
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    return controller, handler


@pytest.fixture
def relay(relay_port: int) -> Iterator[RecordingRelay]:
    controller, handler = _start_relay(relay_port)
    yield handler
    controller.stop()


def _open_ticket(gateway: Any) -> None:
    gateway.add_builder("ada@example.com", name="Ada Lovelace",
                        apps=(App("Client Portal", "https://portal.example.com"),))
    code, text = gateway.send(sample("gmail_plain_and_html.eml"))
    assert code == 250, text


def _outbox(gateway: Any) -> list[tuple[Any, ...]]:
    async def work() -> Any:
        async with gateway.gateway.store.read() as tx:
            rows = await tx.session.execute(
                select(OutboxRow.state, OutboxRow.attempts, OutboxRow.next_attempt_at,
                       OutboxRow.last_error).order_by(OutboxRow.id)
            )
            return [tuple(row) for row in rows]

    return gateway.call(work)


def test_relay_receives_acknowledgement(
    relay_config: Config, clock: FakeClock, relay: RecordingRelay
) -> None:
    with running_gateway(relay_config, clock) as gateway:
        _open_ticket(gateway)

        gateway.flush_outbox()

        [envelope] = relay.messages
        assert envelope.rcpt_tos == ["ada@example.com"]
        assert envelope.mail_from == "support@localhost"
        assert b"[#1] Client Portal shows a blank page after login" in envelope.content
        assert _outbox(gateway)[0][0] == "sent"


def test_relay_down_retries_with_backoff(
    relay_config: Config, clock: FakeClock, relay_port: int
) -> None:
    with running_gateway(relay_config, clock) as gateway:
        _open_ticket(gateway)

        gateway.flush_outbox()

        [(state, attempts, next_attempt_at, error)] = _outbox(gateway)
        assert state == "pending"
        assert attempts == 1
        assert "127.0.0.1" in error
        assert (next_attempt_at - clock()).total_seconds() == pytest.approx(30, abs=1)

        clock.advance(seconds=10)
        assert gateway.flush_outbox() == 0

        clock.advance(seconds=25)
        gateway.flush_outbox()
        [(state, attempts, next_attempt_at, _)] = _outbox(gateway)
        assert attempts == 2
        assert (next_attempt_at - clock()).total_seconds() == pytest.approx(60, abs=1)


def test_pending_mail_survives_restart(
    relay_config: Config, clock: FakeClock, relay_port: int
) -> None:
    with running_gateway(relay_config, clock) as gateway:
        _open_ticket(gateway)
        gateway.flush_outbox()
    controller, relay = _start_relay(relay_port)
    try:
        clock.advance(minutes=5)

        with running_gateway(relay_config, clock) as restarted:
            restarted.flush_outbox()

            assert len(relay.messages) == 1
            assert _outbox(restarted)[0][0] == "sent"
    finally:
        controller.stop()


def test_permanent_rejection_is_not_retried(
    relay_config: Config, clock: FakeClock, relay_port: int
) -> None:
    controller, _relay = _start_relay(relay_port, reply="550 5.1.1 No such user here")
    try:
        with running_gateway(relay_config, clock) as gateway:
            _open_ticket(gateway)

            gateway.flush_outbox()
            clock.advance(hours=2)
            attempted_later = gateway.flush_outbox()

            [(state, attempts, _, error)] = _outbox(gateway)
            assert state == "failed"
            assert attempts == 1
            assert "550" in error
            assert attempted_later == 0
    finally:
        controller.stop()


def test_gives_up_after_max_attempts(
    relay_config: Config, clock: FakeClock, relay_port: int
) -> None:
    with running_gateway(relay_config, clock) as gateway:
        _open_ticket(gateway)

        for _ in range(3):
            gateway.flush_outbox()
            clock.advance(hours=1)

        [(state, attempts, _, _)] = _outbox(gateway)
        assert state == "failed"
        assert attempts == 3


def test_worker_survives_unexpected_error(
    config: Config, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    with running_gateway(config, clock, background=True) as gateway:
        worker = gateway.gateway.worker
        assert worker is not None
        compose = worker._prepare
        assert compose is not None
        calls = []

        async def fail_once(*args: Any, **kwargs: Any) -> Any:
            calls.append(args)
            if len(calls) == 1:
                raise RuntimeError("composing broke")
            return await compose(*args, **kwargs)

        worker._prepare = fail_once
        _open_ticket(gateway)
        wait_until(lambda: any(record.getMessage().startswith("outbox worker failed")
                               for record in caplog.records), "the failure's log line")
        # The failed batch stays claimed until its lease ends.
        gateway.clock.advance(seconds=config.outbound.claim_lease_seconds + 1)
        wait_until(lambda: bool(gateway.outbox_files()), "the acknowledgement")

        assert len(gateway.outbox_files()) == 1
        assert len(calls) == 2
