"""Large updates: raw bytes in slices, files written first and shared, clean-up of both."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config as AlembicConfig
from click.testing import CliRunner
from sqlalchemy import func, select

from conftest import RunningGateway
from digest_support import work
from gateway.cli import cli
from gateway.config import Config
from gateway.errors import StorageUnavailable
from store.database import MIGRATIONS_DIR, upgrade_schema
from store.models import BlobRow, RawPartRow
from store.store import RAW_PART_BYTES
from test_hostile_mail import (
    MIB,
    _config_file,
    large_message,
    outcome,
    png_of_size,
    send_crlf,
)


def blob_count(gateway: RunningGateway) -> int:
    async def work() -> int:
        async with gateway.gateway.store.read() as tx:
            return await tx.session.scalar(select(func.count()).select_from(BlobRow))

    return gateway.call(work)


def stored_raw(gateway: RunningGateway, inbound_id: int) -> bytes | None:
    async def work() -> bytes | None:
        async with gateway.gateway.store.read() as tx:
            found = await tx.get_inbound_raw(inbound_id)
            return found[1] if found else None

    return gateway.call(work)


def stored_files(gateway: RunningGateway, number: int) -> list[bytes]:
    detail = gateway.ticket(number)

    async def work() -> list[bytes]:
        async with gateway.gateway.store.read() as tx:
            found = []
            for entry in detail.messages:
                for attachment in entry.attachments:
                    _, data = await tx.get_attachment(attachment.id)
                    found.append(data)
            return found

    return gateway.call(work)


def test_large_update_stores_raw_and_files(ada: RunningGateway) -> None:
    files = [(f"shot{n}.png", png_of_size(2 * MIB + n)) for n in range(3)]
    data = large_message(files)

    code, text = send_crlf(ada, data)

    assert code == 250, text
    record = outcome(ada)
    assert record.outcome == "ticket_created"
    raw = stored_raw(ada, record.id)
    assert raw is not None
    assert hashlib.sha256(raw).hexdigest() == hashlib.sha256(data).hexdigest()
    assert stored_files(ada, 1) == [content for _, content in files]
    assert blob_count(ada) == 3


def test_large_updates_share_blobs(ada: RunningGateway) -> None:
    files = [("shot.png", png_of_size(2 * MIB))]
    first = large_message(files)
    second = first.replace(b"Message-ID: <large.1@", b"Message-ID: <large.2@")

    assert send_crlf(ada, first)[0] == 250
    assert send_crlf(ada, second)[0] == 250

    assert outcome(ada).outcome == "ticket_created"
    assert stored_files(ada, 2) == [files[0][1]]
    assert blob_count(ada) == 1


def test_large_update_from_stranger_writes_no_blob(ada: RunningGateway) -> None:
    data = large_message([("shot.png", png_of_size(2 * MIB))]).replace(
        b"From: Ada Lovelace <ada@example.com>", b"From: Mallory <mallory@example.net>"
    )

    code, _ = send_crlf(ada, data)

    assert code == 550
    assert outcome(ada).outcome == "rejected_unknown_sender"
    assert blob_count(ada) == 0


def test_large_update_with_bad_file_writes_no_blob(ada: RunningGateway) -> None:
    files = [("shot.png", png_of_size(2 * MIB)), ("big.png", png_of_size(10 * MIB + 1))]

    code, _ = send_crlf(ada, large_message(files))

    assert code == 250
    assert outcome(ada).outcome == "rejected_attachments"
    assert blob_count(ada) == 0


def _rejected_title(data: bytes) -> bytes:
    return data.replace(b"Subject: Client Portal screenshots of the blank page",
                        b"Subject: hi")


def test_rejected_large_update_files_deleted_next_day(ada: RunningGateway) -> None:
    code, _ = send_crlf(ada, _rejected_title(large_message([("shot.png", png_of_size(2 * MIB))])))
    assert code == 250
    assert outcome(ada).outcome == "rejected_title"
    stored = blob_count(ada)

    ada.call(work(ada).prune_raw_inbound)
    kept_same_day = blob_count(ada)
    ada.clock.advance(days=1, minutes=1)
    ada.call(work(ada).prune_raw_inbound)

    assert stored == 1
    assert kept_same_day == 1
    assert blob_count(ada) == 0


def test_used_files_survive_clean_up(ada: RunningGateway) -> None:
    files = [("shot.png", png_of_size(2 * MIB))]
    assert send_crlf(ada, large_message(files))[0] == 250
    ada.clock.advance(days=2)

    ada.call(work(ada).prune_raw_inbound)

    assert blob_count(ada) == 1
    assert stored_files(ada, 1) == [files[0][1]]


def slice_lengths(gateway: RunningGateway) -> list[int]:
    rows = gateway.sql("SELECT length(data) FROM raw_message_parts ORDER BY parts_key, start_byte")
    return [length for (length,) in rows]


def test_large_raw_stored_in_slices(ada: RunningGateway) -> None:
    data = large_message([(f"shot{n}.png", png_of_size(2 * MIB + n)) for n in range(3)])

    assert send_crlf(ada, data)[0] == 250

    record = outcome(ada)
    [(raw_gone, has_key, size)] = ada.sql(
        "SELECT raw IS NULL, raw_parts_key IS NOT NULL, size_bytes "
        "FROM inbound_messages WHERE id = :id", id=record.id)
    assert raw_gone
    assert has_key
    assert size == len(data)
    lengths = slice_lengths(ada)
    assert sum(lengths) == len(data)
    assert len(lengths) == -(-len(data) // RAW_PART_BYTES)
    assert max(lengths) == RAW_PART_BYTES
    assert stored_raw(ada, record.id) == data


def test_small_raw_stored_whole(ada: RunningGateway) -> None:
    data = large_message([("shot.png", png_of_size(64 * 1024))])

    assert send_crlf(ada, data)[0] == 250

    record = outcome(ada)
    assert slice_lengths(ada) == []
    assert stored_raw(ada, record.id) == data


def test_redelivery_writes_no_slices(ada: RunningGateway) -> None:
    data = large_message([("shot.png", png_of_size(2 * MIB))])
    assert send_crlf(ada, data)[0] == 250
    first = slice_lengths(ada)

    code, text = send_crlf(ada, data)

    assert (code, text) == (250, "2.0.0 Already received")
    assert slice_lengths(ada) == first


def test_unused_slices_deleted_next_day(ada: RunningGateway) -> None:
    data = large_message([("shot.png", png_of_size(2 * MIB))])
    assert send_crlf(ada, data)[0] == 250
    used = slice_lengths(ada)
    store = ada.gateway.store
    # Slices that a message wrote before its process stopped.
    ada.call(lambda: store.stage_raw(b"x" * (RAW_PART_BYTES + 10), now=ada.clock()))
    assert len(slice_lengths(ada)) == len(used) + 2

    ada.call(work(ada).prune_raw_inbound)
    kept_same_day = slice_lengths(ada)
    ada.clock.advance(days=1, minutes=1)
    ada.call(work(ada).prune_raw_inbound)

    assert len(kept_same_day) == len(used) + 2
    assert slice_lengths(ada) == used
    assert stored_raw(ada, outcome(ada).id) == data


def test_closed_ticket_prune_deletes_slices(ada: RunningGateway) -> None:
    from gateway.support import TicketChange

    data = large_message([("shot.png", png_of_size(2 * MIB))])
    assert send_crlf(ada, data)[0] == 250
    record = outcome(ada)
    support = ada.gateway.support_desk
    assert support is not None
    ada.call(lambda: support.change(1, TicketChange(status="closed"), actor="grace"))
    ada.clock.advance(days=91)

    pruned = ada.call(work(ada).prune_raw_inbound)

    assert pruned == 1
    assert slice_lengths(ada) == []
    assert stored_raw(ada, record.id) is None
    assert stored_files(ada, 1) == [png_of_size(2 * MIB)]


def test_missing_slice_stores_whole(ada: RunningGateway) -> None:
    store = ada.gateway.store
    raw = b"Subject: slices\r\n\r\n" + b"y" * (2 * RAW_PART_BYTES)

    async def record_with_a_slice_gone() -> int:
        staged = await store.stage_raw(raw, now=ada.clock())
        async with store.write() as tx:
            await tx.session.execute(
                RawPartRow.__table__.delete().where(RawPartRow.start_byte == RAW_PART_BYTES)
            )
        async with store.write() as tx:
            return await tx.add_inbound(
                raw=raw, mail_from="ada@example.com", rcpt_tos=["support@localhost"],
                peer="test", message_id=None, outcome="failed", now=ada.clock(),
                staged=staged,
            )

    inbound_id = ada.call(record_with_a_slice_gone)

    [(raw_gone, key)] = ada.sql(
        "SELECT raw IS NULL, raw_parts_key FROM inbound_messages WHERE id = :id", id=inbound_id)
    assert not raw_gone
    assert key is None
    assert stored_raw(ada, inbound_id) == raw


def test_damaged_slices_read_as_missing(
    ada: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    data = large_message([("shot.png", png_of_size(2 * MIB))])
    assert send_crlf(ada, data)[0] == 250
    record = outcome(ada)
    ada.sql("UPDATE raw_message_parts SET data = :data WHERE start_byte = 0",
            data=b"z" * RAW_PART_BYTES)

    assert stored_raw(ada, record.id) is None
    assert "do not match its SHA-256" in caplog.text


def fail_apply(ada: RunningGateway, monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    """Make the desk raise ERROR where it would apply a message in its transaction."""
    desk = ada.gateway.desk
    assert desk is not None

    async def failing(*args: Any) -> Any:
        raise error

    monkeypatch.setattr(desk, "_apply", failing)


def test_failed_large_update_retried_from_slices(
    ada: RunningGateway, config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = large_message([("shot.png", png_of_size(2 * MIB))])
    fail_apply(ada, monkeypatch, RuntimeError("desk bug"))
    code, _ = send_crlf(ada, data)
    monkeypatch.undo()
    failed = outcome(ada)
    [(key,)] = ada.sql("SELECT raw_parts_key FROM inbound_messages WHERE id = :id", id=failed.id)

    retried = CliRunner().invoke(cli, ["--config", str(_config_file(config, tmp_path)),
                                       "inbound", "retry", str(failed.id)])

    assert code == 250
    assert failed.outcome == "failed"
    assert key is not None
    assert retried.exit_code == 0, retried.output
    assert "Ticket #1 opened" in retried.output
    assert stored_files(ada, 1) == [png_of_size(2 * MIB)]


def test_failed_transaction_deletes_its_slices(
    ada: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = large_message([("shot.png", png_of_size(2 * MIB))])
    fail_apply(ada, monkeypatch, StorageUnavailable("database write failed: disk I/O error"))
    codes = [send_crlf(ada, data)[0] for _ in range(2)]
    monkeypatch.undo()

    assert codes == [451, 451]
    assert slice_lengths(ada) == []


def test_downgrade_puts_slices_back_into_raw(ada: RunningGateway) -> None:
    data = large_message([("shot.png", png_of_size(2 * MIB))])
    assert send_crlf(ada, data)[0] == 250
    record = outcome(ada)
    url = ada.gateway.store.url
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["database_url"] = url

    command.downgrade(config, "0007")
    [(raw,)] = ada.sql("SELECT raw FROM inbound_messages WHERE id = :id", id=record.id)
    tables = ada.sql("SELECT count(*) FROM information_schema.tables "
                     "WHERE table_name = 'raw_message_parts'"
                     if ada.gateway.store.dialect == "postgresql" else
                     "SELECT count(*) FROM sqlite_master WHERE name = 'raw_message_parts'")
    upgrade_schema(url)

    assert bytes(raw) == data
    assert tables == [(0,)]
    assert stored_raw(ada, record.id) == data
