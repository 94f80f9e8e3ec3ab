"""Large updates: raw bytes and files stored whole, blobs written first and shared."""

from __future__ import annotations

import hashlib

from sqlalchemy import func, select

from conftest import RunningGateway
from digest_support import work
from store.models import BlobRow
from test_hostile_mail import MIB, large_message, outcome, png_of_size, send_crlf


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
