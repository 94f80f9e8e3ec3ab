"""The gateway rides out a PostgreSQL server that goes away and comes back.

A loopback proxy plays the server's network: cutting it refuses new
connections and drops the pooled ones, as a restarted server does.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from adapters import smtp
from conftest import (
    POSTGRES,
    FakeClock,
    RunningGateway,
    make_config,
    running_gateway,
    sample,
    wait_until,
)
from tcp_proxy import TcpProxy

pytestmark = pytest.mark.skipif(
    POSTGRES is None, reason="needs PostgreSQL (GATEWAY_TEST_DATABASE_URL)"
)


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[TcpProxy]:
    """A proxy to a new test database on the PostgreSQL server."""
    url = make_url(make_config(tmp_path).database.url)
    running = TcpProxy(url.host or "127.0.0.1", url.port or 5432, database_url=url)
    running.start()
    yield running
    running.close()


def _gateway_behind(
    proxy: TcpProxy, tmp_path: Path, clock: FakeClock, **options: object
) -> AbstractContextManager[RunningGateway]:
    config = make_config(tmp_path)
    config = replace(config, database=replace(config.database, url=proxy.database_url))
    return running_gateway(config, clock, **options)


def test_mail_gets_451_while_database_down(
    tmp_path: Path, clock: FakeClock, proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with _gateway_behind(proxy, tmp_path, clock) as gateway:
        gateway.add_builder("ada@example.com", "Ada Lovelace")
        proxy.cut()

        down_code, down_text = gateway.send(sample("gmail_plain_and_html.eml"))
        proxy.restore()
        up_code, up_text = gateway.send(sample("gmail_plain_and_html.eml"))

    assert down_code == 451, down_text
    assert down_text.startswith("4.3.0")
    assert up_code == 250, up_text
    messages = [record.getMessage() for record in caplog.records]
    assert any(message.startswith("could not store a ") for message in messages)
    assert not any(message.startswith("unexpected error") for message in messages)
    assert not any(message.startswith("processing failed") for message in messages)


def test_outbox_worker_resumes_after_outage(
    tmp_path: Path, clock: FakeClock, proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with _gateway_behind(proxy, tmp_path, clock, background=True) as gateway:
        gateway.add_builder("ada@example.com", "Ada Lovelace")
        worker = gateway.gateway.worker
        assert worker is not None
        proxy.cut()

        async def wake() -> None:
            worker.wake()

        gateway.call(wake)
        wait_until(lambda: any(record.getMessage().startswith("outbox unavailable")
                               for record in caplog.records), "the worker to notice")
        proxy.restore()
        code, text = gateway.send(sample("gmail_plain_and_html.eml"))
        wait_until(lambda: len(gateway.outbox_files()) == 1, "the acknowledgement")

    assert code == 250, text


def test_mail_gets_451_when_database_hangs(
    tmp_path: Path, clock: FakeClock, proxy: TcpProxy, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(smtp, "STORE_TIMEOUT_SECONDS", 2)
    caplog.set_level(logging.INFO)
    with _gateway_behind(proxy, tmp_path, clock) as gateway:
        gateway.add_builder("ada@example.com", "Ada Lovelace")
        proxy.stall()

        code, text = gateway.send(sample("gmail_plain_and_html.eml"))
        proxy.cut()

    assert code == 451, text
    assert text.startswith("4.3.0")
    assert any(record.getMessage().endswith("took over 2 s; not accepted")
               for record in caplog.records)
