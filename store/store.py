"""The Store: opens transactions and offers the queries the gateway needs."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager, nullcontext
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import aliased, defer

from gateway import fields
from gateway.errors import DuplicateDelivery, StorageUnavailable
from gateway.model import (
    App,
    AttachmentInfo,
    Builder,
    CheckedAttachment,
    InboundView,
    MessageView,
    OutgoingEmail,
    StagedRaw,
    TicketDetail,
    TicketFilter,
    TicketPage,
    TicketState,
)
from gateway.paging import PageCursor, PageRequest
from store.checkpoint import WalCheckpointer
from store.database import (
    SHORT_STATEMENT_MAX_PARAMETER_BYTES,
    SQLITE_BUSY_TIMEOUT_MS,
    create_engine,
    short_statements_on_loop,
    unavailable_error,
    upgrade_schema_async,
)
from store.digests import DigestQueries
from store.mail_safety import MailSafetyQueries
from store.models import (
    AppRow,
    AttachmentRow,
    BlobRow,
    BuilderRow,
    Counter,
    InboundRow,
    MailIndexRow,
    MessageRow,
    NoticeLogRow,
    OutboxRow,
    RawPartRow,
    SettingRow,
    TicketRow,
)
from store.outbox import claim_outbox_rows
from store.paging import count_matches, page_ids, read_order, slice_page
from store.slack import SlackQueries
from store.views import builder_view, inbound_view, ticket_summary
from store.web import WebQueries
from store.writer_queue import WriterQueue

log = logging.getLogger(__name__)

TICKET_COUNTER = "ticket_number"
# Named by the naming convention in store/models.py.
DEDUPE_CONSTRAINT = "uq_inbound_messages_dedupe_key"
# A ticket's state leaves out its description, which can be megabytes of pasted
# text. Loading it would hold up the event loop in every short transaction that
# locks the ticket, such as a reply's.
_NO_DESCRIPTION = defer(TicketRow.description)

# Size of each slice of a large raw message (see RawPartRow). In the benchmark
# of small mail during large updates, each slice kept SQLite's writer 40 to 60 ms.
RAW_PART_BYTES = 2 * 1024 * 1024


class Store:
    """The ticket store behind one SQLAlchemy async engine."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: AsyncEngine = create_engine(url)
        self.dialect = self._engine.dialect.name
        self._write_engine = self._engine.execution_options(sqlite_begin="IMMEDIATE")
        # SQLite has one writer at a time. Queue this process's writers here, so
        # they wait on the event loop instead of sleeping in SQLite's busy handler
        # (which backs off in steps of up to 100 ms) while holding a connection.
        self._sqlite_writers = WriterQueue() if self.dialect == "sqlite" else None
        self._checkpointer = _checkpointer(url) if self.dialect == "sqlite" else None
        self._counts = StatusCountCache()

    async def upgrade(self) -> None:
        """Bring the schema up to the newest migration."""
        await upgrade_schema_async(self.url)

    async def close(self) -> None:
        if self._checkpointer is not None:
            await self._checkpointer.close()
        await self._engine.dispose()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Transaction]:
        """Open a read-only transaction."""
        with short_statements_on_loop(False):
            async with AsyncSession(self._engine, expire_on_commit=False) as session:
                try:
                    yield Transaction(session, self.dialect, self._counts)
                # asyncpg raises OSError itself when it cannot connect to the server.
                except (OperationalError, InterfaceError, OSError) as exc:
                    explained = unavailable_error(exc, self.url)
                    raise explained or StorageUnavailable(
                        f"database read failed: {getattr(exc, 'orig', None) or exc}"
                    ) from exc

    @asynccontextmanager
    async def write(self, *, bulk: bool = False, short: bool = False) -> AsyncIterator[Transaction]:
        """Open a write transaction (BEGIN IMMEDIATE on SQLite) and commit it at the end.

        BULK marks a transaction that writes megabytes. On SQLite, waiting
        transactions without it go first (see store/writer_queue.py). SHORT
        marks a transaction of a few indexed statements, which SQLite then runs
        on the event loop thread (see short_statements_on_loop); never pass it
        for a statement that may scan many rows.
        """
        with short_statements_on_loop(short and self.dialect == "sqlite"):
            try:
                # The session is closed after the writer's turn ends: AsyncSession
                # closes in a task of its own, which takes a trip around the loop.
                async with (
                    AsyncSession(self._write_engine, expire_on_commit=False) as session,
                    self._writer_turn(bulk),
                ):
                    try:
                        async with session.begin():
                            tx = Transaction(session, self.dialect, self._counts)
                            yield tx
                            await tx.write_pending_raw()
                        self._counts.clear()
                    except DuplicateDelivery:
                        raise
                    except IntegrityError as exc:
                        # On PostgreSQL a second instance that applies the same message
                        # waits on the unique index and fails here once the first one
                        # commits. That is a redelivery, not an error.
                        if _is_dedupe_violation(exc):
                            raise DuplicateDelivery("inbound_messages.dedupe_key") from exc
                        raise
                    except (SQLAlchemyError, OSError) as exc:
                        explained = unavailable_error(exc, self.url)
                        raise explained or StorageUnavailable(
                            f"database write failed: {exc}"
                        ) from exc
            finally:
                # After the writer's turn, so that copying the log delays no writer.
                if self._checkpointer is not None:
                    self._checkpointer.after_write()

    @asynccontextmanager
    async def _writer_turn(self, bulk: bool) -> AsyncIterator[None]:
        if self._sqlite_writers is None:
            yield
            return
        try:
            async with asyncio.timeout(SQLITE_BUSY_TIMEOUT_MS / 1000):
                await self._sqlite_writers.acquire(bulk=bulk)
        except TimeoutError as exc:
            raise StorageUnavailable("timed out waiting for this process's turn to write") from exc
        try:
            yield
        finally:
            self._sqlite_writers.release()

    async def stage_raw(self, raw: bytes, *, now: datetime) -> StagedRaw:
        """Write a large message's raw bytes in slices, each in a write transaction of its own.

        Pass the result to Transaction.add_inbound, which then stores only the key.
        Slices that no inbound record refers to are deleted by
        Transaction.prune_unused_raw_parts once they are old enough.
        """
        key = uuid.uuid4().hex
        # Hashing 35 MB takes about 20 ms. hashlib releases the GIL, so on a thread
        # the loop goes on meanwhile.
        sha256 = (await asyncio.to_thread(hashlib.sha256, raw)).hexdigest()
        for start in range(0, len(raw), RAW_PART_BYTES):
            async with self.write(bulk=True) as tx:
                await tx.add_raw_part(key, start, raw[start : start + RAW_PART_BYTES], now=now)
        log.debug("stored a %d-byte message in slices under %s", len(raw), key)
        return StagedRaw(key=key, sha256=sha256, size=len(raw))

    async def discard_staged_raw(self, staged: StagedRaw) -> None:
        """Delete the slices under STAGED.key, unless an inbound record refers to them."""
        used = select(InboundRow.id).where(InboundRow.raw_parts_key == staged.key)
        async with self.write(bulk=True) as tx:
            result = await tx.session.execute(
                delete(RawPartRow)
                .where(RawPartRow.parts_key == staged.key, ~used.exists())
                .execution_options(synchronize_session=False)
            )
        log.info("deleted %d slice(s) of a message that was not recorded", result.rowcount or 0)

    async def ping(self) -> bool:
        """Return True when the database responds to a trivial query."""
        try:
            async with self.read() as tx:
                await tx.session.execute(select(1))
            return True
        except (StorageUnavailable, SQLAlchemyError, OSError):
            return False


class StatusCountCache:
    """Ticket counts per status, kept for a few seconds between requests.

    Counting every ticket costs time that grows with the store (about 8 ms for
    100,000 tickets on SQLite), so the status page and API reuse the counts for
    a few seconds. This process clears them after each of its writes, and
    another instance's changes show once the kept counts expire.
    """

    def __init__(self, seconds: float = 5.0) -> None:
        self._seconds = seconds
        self._value: dict[str, int] | None = None
        self._expires = 0.0

    def get(self) -> dict[str, int] | None:
        """Return the kept counts, or None when they are missing or too old."""
        if self._value is None or time.monotonic() >= self._expires:
            return None
        return self._value

    def put(self, counts: dict[str, int]) -> None:
        self._value = counts
        self._expires = time.monotonic() + self._seconds

    def clear(self) -> None:
        self._value = None


class Transaction(WebQueries, SlackQueries, MailSafetyQueries, DigestQueries):
    """The queries of one open transaction."""

    def __init__(
        self,
        session: AsyncSession,
        dialect: str,
        counts: StatusCountCache | None = None,
    ) -> None:
        self.session = session
        self.dialect = dialect
        self._counts = counts or StatusCountCache(seconds=0.0)
        # Raw messages that add_inbound stored as NULL, written at the end of a
        # write transaction by write_pending_raw.
        self._pending_raw: dict[int, bytes] = {}
        # The session refers to its rows weakly. Keep the tickets this transaction
        # opened, so that reading them back needs no query.
        self._opened: dict[int, TicketRow] = {}

    # Builders

    async def upsert_builder(
        self,
        email: str,
        *,
        name: str | None,
        timezone: str | None,
        apps: Sequence[App],
        now: datetime,
    ) -> Builder:
        """Create a builder or update its name, time zone and apps."""
        row = await self._builder_row(email)
        if row is None:
            row = BuilderRow(email=email, name=name or "", timezone=timezone or "UTC",
                             created_at=now)
            self.session.add(row)
            await self.session.flush()
        else:
            if name is not None:
                row.name = name
            if timezone is not None:
                row.timezone = timezone
        existing = {
            app.name: app
            for app in await self.session.scalars(
                select(AppRow).where(AppRow.builder_id == row.id)
            )
        }
        for app in apps:
            if app.name in existing:
                existing[app.name].uri = app.uri
            else:
                self.session.add(AppRow(builder_id=row.id, name=app.name, uri=app.uri))
        await self.session.flush()
        found = await self.find_builder(email)
        assert found is not None
        return found

    async def find_builder(self, email: str) -> Builder | None:
        """Return the builder with this normalised address, or None."""
        # One statement: the builder's row once per app, or once with no app.
        rows = (await self.session.execute(
            select(BuilderRow, AppRow)
            .outerjoin(AppRow, AppRow.builder_id == BuilderRow.id)
            .where(BuilderRow.email == email)
            .order_by(AppRow.name)
        )).all()
        if not rows:
            return None
        apps = [App(app.name, app.uri) for _, app in rows if app is not None]
        return builder_view(rows[0][0], apps)

    async def list_builders(self) -> list[Builder]:
        """Return every builder with its apps, by email."""
        rows = list(await self.session.scalars(select(BuilderRow).order_by(BuilderRow.email)))
        apps: dict[int, list[App]] = {}
        for app in await self.session.scalars(select(AppRow).order_by(AppRow.name)):
            apps.setdefault(app.builder_id, []).append(App(app.name, app.uri))
        return [builder_view(row, apps.get(row.id, [])) for row in rows]

    async def _builder_row(self, email: str) -> BuilderRow | None:
        return await self.session.scalar(select(BuilderRow).where(BuilderRow.email == email))

    # Settings

    async def get_or_create_setting(self, name: str, make_value: Callable[[], str]) -> str:
        """Return a stored setting, storing make_value() first when it is missing."""
        value = await self.session.scalar(select(SettingRow.value).where(SettingRow.name == name))
        if value is not None:
            return value
        try:
            async with self.session.begin_nested():
                self.session.add(SettingRow(name=name, value=make_value()))
                await self.session.flush()
        except IntegrityError:
            pass
        value = await self.session.scalar(select(SettingRow.value).where(SettingRow.name == name))
        assert value is not None
        return value

    # Inbound mail

    async def add_inbound(
        self,
        *,
        raw: bytes,
        mail_from: str,
        rcpt_tos: Sequence[str],
        peer: str,
        message_id: str | None,
        outcome: str,
        detail: str = "",
        now: datetime,
        staged: StagedRaw | None = None,
    ) -> int:
        """Store a received message's raw bytes and first outcome; return its id.

        STAGED names the slices that Store.stage_raw already wrote for RAW, and
        the record then refers to them. Should a slice be missing, RAW is stored
        here as for any other message.

        On SQLite the raw bytes are written by the last statement of the write
        transaction, because SQLite rewrites a whole row on every UPDATE: a 35 MB
        message written first would be written again by set_inbound_outcome.
        PostgreSQL keeps a large value out of line and does not copy it on UPDATE.
        """
        parts_key = None
        if staged is not None:
            if staged.size == len(raw) and await self._raw_parts_complete(staged):
                parts_key = staged.key
            else:
                log.warning("slices %s of a %d-byte message are incomplete, so the "
                            "message is stored whole", staged.key, len(raw))
        defer_raw = parts_key is None and self.dialect == "sqlite"
        row = InboundRow(
            received_at=now,
            mail_from=mail_from,
            rcpt_tos="\n".join(rcpt_tos),
            peer=peer,
            message_id=message_id,
            raw_sha256=staged.sha256 if staged else hashlib.sha256(raw).hexdigest(),
            size_bytes=len(raw),
            raw=None if defer_raw or parts_key else raw,
            raw_parts_key=parts_key,
            outcome=outcome,
            detail=detail,
        )
        self.session.add(row)
        await self.session.flush()
        if defer_raw:
            self._pending_raw[row.id] = raw
        return row.id

    async def add_raw_part(self, key: str, start: int, data: bytes, *, now: datetime) -> None:
        """Store one slice of a message's raw bytes (see Store.stage_raw)."""
        await self.session.execute(
            insert(RawPartRow).values(parts_key=key, start_byte=start, data=data, stored_at=now)
        )

    async def _raw_parts_complete(self, staged: StagedRaw) -> bool:
        """Return True when the slices under STAGED.key cover its bytes without a gap."""
        rows = await self.session.execute(
            select(RawPartRow.start_byte, func.length(RawPartRow.data))
            .where(RawPartRow.parts_key == staged.key)
        )
        lengths = {start: length for start, length in rows}
        position = 0
        while position < staged.size and lengths.get(position):
            position += lengths[position]
        return position == staged.size

    async def _read_raw_parts(self, row: InboundRow) -> bytes | None:
        """Join the slices of ROW's raw bytes, or return None when they do not match its hash."""
        data = await self.session.scalars(
            select(RawPartRow.data)
            .where(RawPartRow.parts_key == row.raw_parts_key)
            .order_by(RawPartRow.start_byte)
        )
        raw = b"".join(data.all())
        if hashlib.sha256(raw).hexdigest() != row.raw_sha256:
            log.error("the stored slices of inbound message %d do not match its "
                      "SHA-256 (%d of %d bytes found)", row.id, len(raw), row.size_bytes)
            return None
        return raw

    async def write_pending_raw(self) -> None:
        """Write the raw bytes of the messages that add_inbound added."""
        while self._pending_raw:
            inbound_id, raw = self._pending_raw.popitem()
            await self.session.execute(
                update(InboundRow)
                .where(InboundRow.id == inbound_id)
                .values(raw=raw)
                .execution_options(synchronize_session=False)
            )

    async def find_applied_inbound(self, dedupe_key: str) -> int | None:
        """Return the id of the inbound message already applied under this key."""
        return await self.session.scalar(
            select(InboundRow.id).where(InboundRow.dedupe_key == dedupe_key)
        )

    async def set_inbound_outcome(
        self,
        inbound_id: int,
        outcome: str,
        *,
        detail: str = "",
        ticket_id: int | None = None,
        dedupe_key: str | None = None,
    ) -> None:
        """Record what became of an inbound message."""
        values: dict[str, object] = {"outcome": outcome, "detail": detail, "ticket_id": ticket_id}
        if dedupe_key is not None:
            values["dedupe_key"] = dedupe_key
        try:
            await self.session.execute(
                update(InboundRow).where(InboundRow.id == inbound_id).values(**values)
            )
            if dedupe_key is not None:
                await self.session.flush()
        except IntegrityError as exc:
            if dedupe_key is not None and _is_dedupe_violation(exc):
                raise DuplicateDelivery(dedupe_key) from exc
            raise

    async def get_inbound_raw(self, inbound_id: int) -> tuple[InboundView, bytes | None] | None:
        """Return one inbound record and its raw bytes, or None."""
        row = await self.session.get(InboundRow, inbound_id)
        if row is None:
            return None
        number = None
        if row.ticket_id is not None:
            number = await self.session.scalar(
                select(TicketRow.number).where(TicketRow.id == row.ticket_id)
            )
        raw = row.raw
        if raw is None and row.raw_parts_key is not None:
            raw = await self._read_raw_parts(row)
        return inbound_view(row, number), raw

    async def inbound_recipients(self, inbound_id: int) -> tuple[str, ...]:
        """Return the envelope recipients of one inbound message."""
        value = await self.session.scalar(
            select(InboundRow.rcpt_tos).where(InboundRow.id == inbound_id)
        )
        return tuple(line for line in (value or "").split("\n") if line)

    async def list_inbound(
        self, *, limit: int = 50, outcome: str | None = None
    ) -> list[InboundView]:
        """Return recent inbound records, newest first."""
        query = (
            select(InboundRow, TicketRow.number)
            .outerjoin(TicketRow, TicketRow.id == InboundRow.ticket_id)
            .order_by(InboundRow.id.desc())
            .limit(limit)
        )
        if outcome:
            query = query.where(InboundRow.outcome == outcome)
        rows = await self.session.execute(query)
        return [inbound_view(row, number) for row, number in rows]

    # Tickets

    async def create_ticket(
        self,
        *,
        builder: Builder,
        title: str,
        description: str,
        app: App | None,
        category: str,
        severity: str,
        now: datetime,
    ) -> tuple[int, int]:
        """Create a ticket with the next number; return (id, number)."""
        number = await self._next_number()
        row = TicketRow(
            number=number,
            title=title,
            description=description,
            builder_id=builder.id,
            app_name=app.name if app else None,
            app_uri=app.uri if app else None,
            category=category,
            severity=severity,
            priority=fields.PRIORITY_FOR_SEVERITY[severity],
            status="new",
            assignee=None,
            resolution_summary=None,
            duplicate_of_id=None,
            created_at=now,
            last_activity_at=now,
            status_changed_at=now,
        )
        self.session.add(row)
        await self.session.flush()
        self._opened[row.id] = row
        return row.id, number

    async def _next_number(self) -> int:
        # One counter row, updated under its row lock: numbers stay unique and
        # increasing with several writers, on SQLite and PostgreSQL alike.
        value = await self.session.scalar(
            update(Counter)
            .where(Counter.name == TICKET_COUNTER)
            .values(value=Counter.value + 1)
            .returning(Counter.value)
        )
        if value is None:
            raise StorageUnavailable("the ticket number counter is missing; run `db upgrade`")
        return int(value)

    async def add_message(
        self,
        ticket_id: int,
        *,
        visibility: str,
        kind: str,
        author: str,
        body: str,
        now: datetime,
        attachments: Iterable[CheckedAttachment] = (),
        inbound_id: int | None = None,
    ) -> int:
        """Add a conversation entry with its attachments; return its id."""
        message = MessageRow(
            ticket_id=ticket_id,
            visibility=visibility,
            kind=kind,
            author=author,
            body=body,
            created_at=now,
            inbound_id=inbound_id,
        )
        self.session.add(message)
        await self.session.flush()
        for attachment in attachments:
            blob_id = await self._store_blob(attachment, now=now)
            self.session.add(
                AttachmentRow(
                    message_id=message.id,
                    blob_id=blob_id,
                    filename=attachment.filename,
                    content_type=attachment.content_type,
                )
            )
        await self.session.flush()
        return message.id

    async def store_blob(self, attachment: CheckedAttachment, *, now: datetime) -> int:
        """Store a file's bytes unless a blob with its SHA-256 exists; return the blob id."""
        return await self._store_blob(attachment, now=now)

    async def _store_blob(self, attachment: CheckedAttachment, *, now: datetime) -> int:
        existing = await self.session.scalar(
            select(BlobRow.id).where(BlobRow.sha256 == attachment.sha256)
        )
        if existing is not None:
            return existing
        # Another transaction may add the same bytes at once; a savepoint keeps
        # this one alive when the unique key shows the blob is already there.
        try:
            async with self.session.begin_nested():
                blob = BlobRow(
                    sha256=attachment.sha256,
                    size_bytes=len(attachment.data),
                    data=attachment.data,
                    stored_at=now,
                )
                self.session.add(blob)
                await self.session.flush()
                return blob.id
        except IntegrityError:
            found = await self.session.scalar(
                select(BlobRow.id).where(BlobRow.sha256 == attachment.sha256)
            )
            assert found is not None
            return found

    async def index_message_id(
        self, message_id: str, ticket_id: int, *, outbound: bool, now: datetime
    ) -> None:
        """Remember which ticket a Message-ID belongs to, unless it is known already."""
        # One statement: a Message-ID seen before keeps its first ticket.
        await self.session.execute(
            self._insert(MailIndexRow)
            .values(message_id=message_id, ticket_id=ticket_id, outbound=outbound,
                    created_at=now)
            .on_conflict_do_nothing(index_elements=["message_id"])
        )

    async def lock_ticket(self, number: int) -> TicketState | None:
        """Return a ticket's state and hold its row lock until the transaction ends."""
        # populate_existing: use the row as the previous lock holder committed
        # it, not a copy that this session loaded before it waited for the lock.
        row = await self.session.scalar(
            select(TicketRow)
            .options(_NO_DESCRIPTION)
            .where(TicketRow.number == number)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        if row is None:
            return None
        return await self._state(row)

    async def lock_ticket_by_id(self, ticket_id: int) -> TicketState | None:
        """Return a ticket's state by id and hold its row lock."""
        row = await self.session.scalar(
            select(TicketRow)
            .options(_NO_DESCRIPTION)
            .where(TicketRow.id == ticket_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        if row is None:
            return None
        return await self._state(row)

    def opened_ticket_state(self, ticket_id: int, builder: Builder) -> TicketState:
        """Return the state of a ticket that this transaction opened for BUILDER.

        Nothing else can have changed the new row yet, so this reads nothing from
        the database.
        """
        return _ticket_state_of(self._opened[ticket_id], builder, duplicate_of=None)

    async def _state(self, row: TicketRow) -> TicketState:
        builder_row = await self.session.get(BuilderRow, row.builder_id)
        assert builder_row is not None
        apps = await self.session.scalars(
            select(AppRow).where(AppRow.builder_id == builder_row.id).order_by(AppRow.name)
        )
        duplicate_of = None
        if row.duplicate_of_id is not None:
            duplicate_of = await self.session.scalar(
                select(TicketRow.number).where(TicketRow.id == row.duplicate_of_id)
            )
        builder = builder_view(builder_row, [App(a.name, a.uri) for a in apps])
        return _ticket_state_of(row, builder, duplicate_of=duplicate_of)

    async def update_ticket(
        self,
        ticket_id: int,
        *,
        now: datetime,
        status: str | None = None,
        duplicate_of: int | None = None,
        **values: object,
    ) -> None:
        """Change a ticket's fields and mark activity; a status change is timestamped."""
        changes: dict[str, object] = {"last_activity_at": now, **values}
        if status is not None:
            changes.update(status=status, status_changed_at=now)
        if duplicate_of is not None:
            changes["duplicate_of_id"] = await self.session.scalar(
                select(TicketRow.id).where(TicketRow.number == duplicate_of)
            )
        await self.session.execute(
            update(TicketRow).where(TicketRow.id == ticket_id).values(**changes)
        )

    async def ticket_for_message_ids(self, message_ids: Sequence[str]) -> int | None:
        """Return the ticket of the first Message-ID in MESSAGE_IDS that is indexed."""
        if not message_ids:
            return None
        rows = await self.session.execute(
            select(MailIndexRow.message_id, MailIndexRow.ticket_id).where(
                MailIndexRow.message_id.in_(list(message_ids))
            )
        )
        found = {message_id: ticket_id for message_id, ticket_id in rows}
        for message_id in message_ids:
            if message_id in found:
                return found[message_id]
        return None

    async def thread_message_ids(self, ticket_id: int, *, limit: int = 20) -> list[str]:
        """Return the newest LIMIT Message-IDs of a ticket, oldest first."""
        rows = await self.session.scalars(
            select(MailIndexRow.message_id)
            .where(MailIndexRow.ticket_id == ticket_id)
            .order_by(MailIndexRow.created_at.desc(), MailIndexRow.message_id.desc())
            .limit(limit)
        )
        return list(reversed(list(rows)))

    async def ticket_number_exists(self, number: int) -> bool:
        found = await self.session.scalar(select(TicketRow.id).where(TicketRow.number == number))
        return found is not None

    async def count_notices(self, recipient: str, *, since: datetime, kind: str | None = None) -> int:
        """Return how many notices went to RECIPIENT since a time, of one kind or all."""
        query = select(func.count()).select_from(NoticeLogRow).where(
            NoticeLogRow.recipient == recipient, NoticeLogRow.sent_at >= since
        )
        if kind is not None:
            query = query.where(NoticeLogRow.kind == kind)
        return await self.session.scalar(query) or 0

    async def log_notice(self, recipient: str, kind: str, *, now: datetime) -> None:
        """Record that a notice went to RECIPIENT."""
        self.session.add(NoticeLogRow(recipient=recipient, kind=kind, sent_at=now))
        await self.session.flush()

    async def list_tickets(
        self,
        where: TicketFilter,
        *,
        page: int = 1,
        per_page: int = 50,
        cursor: PageCursor | None = None,
    ) -> TicketPage:
        """Return one page of tickets, newest activity first, with the desk's counts.

        A CURSOR reads the page next to its boundary row and ignores PAGE.
        Without one, PAGE picks the page with OFFSET, which costs more the
        deeper the page.
        """
        counts = await self._status_counts()
        label_counts = {label: 0 for label in fields.BUILDER_LABELS}
        for status, count in counts.items():
            label_counts[fields.status_label(status)] += count
        total = sum(counts.values())
        open_count = sum(c for s, c in counts.items() if s in fields.OPEN_STATUSES)

        conditions = self._filter_conditions(where)
        matched, matched_exact = total, True
        if where.status and where == TicketFilter(status=where.status):
            # A filter on status alone is counted from the status counts.
            matched = sum(counts.get(s, 0) for s in _filter_statuses(where.status))
        elif conditions:
            matched, matched_exact = await count_matches(self.session, conditions)
        request = PageRequest(per_page=per_page, page=page, cursor=cursor)
        # Pick the page's ids from the tickets table alone, then load those rows.
        rows = await self.session.execute(
            select(TicketRow, BuilderRow)
            .join(BuilderRow, BuilderRow.id == TicketRow.builder_id)
            .where(TicketRow.id.in_(page_ids(conditions, request).scalar_subquery()))
            .order_by(*read_order(request))
        )
        found = slice_page(
            list(rows), request, lambda row: (row[0].last_activity_at, row[0].id)
        )
        return TicketPage(
            total=total,
            open=open_count,
            label_counts=label_counts,
            matched=matched,
            page=None if cursor is not None else page,
            per_page=per_page,
            tickets=tuple(ticket_summary(ticket, builder) for ticket, builder in found.rows),
            matched_exact=matched_exact,
            newer=found.newer,
            older=found.older,
        )

    async def _status_counts(self) -> dict[str, int]:
        kept = self._counts.get()
        if kept is not None:
            return kept
        rows = await self.session.execute(
            select(TicketRow.status, func.count()).group_by(TicketRow.status)
        )
        counts = {status: count for status, count in rows}
        self._counts.put(counts)
        return counts

    def _filter_conditions(self, where: TicketFilter) -> list[object]:
        conditions: list[object] = []
        if where.status:
            conditions.append(TicketRow.status.in_(_filter_statuses(where.status)))
        if where.category:
            conditions.append(TicketRow.category == where.category)
        if where.severity:
            conditions.append(TicketRow.severity == where.severity)
        if where.app:
            if where.app == fields.ACCOUNT_LEVEL_APP:
                conditions.append(TicketRow.app_name.is_(None))
            else:
                conditions.append(TicketRow.app_name == where.app)
        if where.builder:
            builder_ids = select(BuilderRow.id).where(BuilderRow.email == where.builder.lower())
            conditions.append(TicketRow.builder_id.in_(builder_ids.scalar_subquery()))
        return conditions

    async def get_ticket(self, number: int) -> TicketDetail | None:
        """Return a whole ticket with its conversation, or None."""
        found = (
            await self.session.execute(
                select(TicketRow, BuilderRow)
                .join(BuilderRow, BuilderRow.id == TicketRow.builder_id)
                .where(TicketRow.number == number)
            )
        ).first()
        if found is None:
            return None
        ticket, builder = found
        duplicate_of = None
        if ticket.duplicate_of_id is not None:
            other = aliased(TicketRow)
            duplicate_of = await self.session.scalar(
                select(other.number).where(other.id == ticket.duplicate_of_id)
            )

        messages = list(
            await self.session.scalars(
                select(MessageRow).where(MessageRow.ticket_id == ticket.id).order_by(MessageRow.id)
            )
        )
        attachments: dict[int, list[AttachmentInfo]] = {}
        if messages:
            rows = await self.session.execute(
                select(AttachmentRow, BlobRow.size_bytes, BlobRow.sha256)
                .join(BlobRow, BlobRow.id == AttachmentRow.blob_id)
                .where(AttachmentRow.message_id.in_([m.id for m in messages]))
                .order_by(AttachmentRow.id)
            )
            for attachment, size, sha256 in rows:
                attachments.setdefault(attachment.message_id, []).append(
                    AttachmentInfo(
                        id=attachment.id,
                        filename=attachment.filename,
                        content_type=attachment.content_type,
                        size_bytes=size,
                        sha256=sha256,
                    )
                )
        inbound = await self.session.execute(
            select(InboundRow).where(InboundRow.ticket_id == ticket.id).order_by(InboundRow.id)
        )
        return TicketDetail(
            summary=ticket_summary(ticket, builder),
            description=ticket.description,
            resolution_summary=ticket.resolution_summary,
            duplicate_of=duplicate_of,
            status_changed_at=ticket.status_changed_at,
            messages=tuple(
                MessageView(
                    id=m.id,
                    visibility=m.visibility,
                    kind=m.kind,
                    author=m.author,
                    body=m.body,
                    created_at=m.created_at,
                    attachments=tuple(attachments.get(m.id, ())),
                )
                for m in messages
            ),
            inbound=tuple(inbound_view(row, ticket.number) for row in inbound.scalars()),
        )

    async def get_attachment(self, attachment_id: int) -> tuple[AttachmentInfo, bytes] | None:
        """Return one attachment and its bytes, or None."""
        found = (
            await self.session.execute(
                select(AttachmentRow, BlobRow)
                .join(BlobRow, BlobRow.id == AttachmentRow.blob_id)
                .where(AttachmentRow.id == attachment_id)
            )
        ).first()
        if found is None:
            return None
        attachment, blob = found
        info = AttachmentInfo(
            id=attachment.id,
            filename=attachment.filename,
            content_type=attachment.content_type,
            size_bytes=blob.size_bytes,
            sha256=blob.sha256,
        )
        return info, blob.data

    # Outbox

    async def enqueue_email(
        self,
        *,
        kind: str,
        sender: str,
        recipient: str,
        data: bytes,
        message_id: str | None,
        ticket_id: int | None,
        now: datetime,
    ) -> int:
        """Put a rendered email in the outbox; return its id."""
        row = OutboxRow(
            channel="email",
            ticket_id=ticket_id,
            kind=kind,
            sender=sender,
            recipient=recipient,
            message_id=message_id,
            payload=data,
            state="pending",
            attempts=0,
            created_at=now,
            next_attempt_at=now,
        )
        self.session.add(row)
        await self.session.flush()
        return row.id

    async def claim_due_emails(
        self, *, worker: str, now: datetime, lease: timedelta, limit: int
    ) -> list[OutgoingEmail]:
        """Claim up to LIMIT due outbox emails for WORKER until the lease ends."""
        rows = await claim_outbox_rows(
            self.session,
            channel="email",
            worker=worker,
            now=now,
            lease=lease,
            limit=limit,
            order_by=(OutboxRow.next_attempt_at, OutboxRow.id),
        )
        return [
            OutgoingEmail(
                id=row.id,
                recipient=row.recipient,
                sender=row.sender,
                data=row.payload,
                attempts=row.attempts,
            )
            for row in rows
        ]

    async def finish_email(
        self,
        outbox_id: int,
        *,
        worker: str,
        now: datetime,
        error: str | None = None,
        retry_at: datetime | None = None,
        payload_bytes: int | None = None,
    ) -> bool:
        """Record one delivery attempt; return False when the claim was lost.

        PAYLOAD_BYTES is the size of the row's payload when the caller knows it.
        SQLite rewrites the whole row, payload included, so inside a short
        transaction a row that is large, or of unknown size, is updated on the
        connection's thread.
        """
        values: dict[str, object] = {
            "attempts": OutboxRow.attempts + 1,
            "claimed_by": None,
            "claimed_until": None,
            "last_error": error,
        }
        if error is None:
            values.update(state="sent", sent_at=now)
        elif retry_at is None:
            values.update(state="failed")
        else:
            values.update(next_attempt_at=retry_at)
        small = payload_bytes is not None and payload_bytes <= SHORT_STATEMENT_MAX_PARAMETER_BYTES
        with nullcontext() if small else short_statements_on_loop(False):
            result = await self.session.execute(
                update(OutboxRow)
                .where(
                    and_(
                        OutboxRow.id == outbox_id,
                        OutboxRow.claimed_by == worker,
                        OutboxRow.state == "pending",
                    )
                )
                .values(**values)
            )
        return result.rowcount == 1

    async def release_claims(self, outbox_ids: Sequence[int], *, worker: str) -> int:
        """Release WORKER's claims on OUTBOX_IDS without counting an attempt.

        Returns how many claims were released.
        """
        if not outbox_ids:
            return 0
        result = await self.session.execute(
            update(OutboxRow)
            .where(
                and_(
                    OutboxRow.id.in_(outbox_ids),
                    OutboxRow.claimed_by == worker,
                    OutboxRow.state == "pending",
                )
            )
            .values(claimed_by=None, claimed_until=None)
        )
        return result.rowcount or 0

    async def outbox_counts(self) -> dict[str, int]:
        """Return the number of outbox rows in each state."""
        rows = await self.session.execute(
            select(OutboxRow.state, func.count()).group_by(OutboxRow.state)
        )
        return {state: count for state, count in rows}


def _ticket_state_of(row: TicketRow, builder: Builder, *, duplicate_of: int | None) -> TicketState:
    return TicketState(
        id=row.id,
        number=row.number,
        title=row.title,
        status=row.status,
        category=row.category,
        severity=row.severity,
        priority=row.priority,
        assignee=row.assignee,
        resolution_summary=row.resolution_summary,
        duplicate_of=duplicate_of,
        app_name=row.app_name,
        builder=builder,
    )


def _checkpointer(url: str) -> WalCheckpointer | None:
    """Return the WAL checkpointer of the SQLite file at URL, or None for a memory database."""
    database = make_url(url).database
    if not database or database == ":memory:":
        return None
    return WalCheckpointer(Path(database), busy_timeout_seconds=SQLITE_BUSY_TIMEOUT_MS / 1000)


def _is_dedupe_violation(exc: IntegrityError) -> bool:
    # asyncpg names the violated constraint; SQLite names table.column in the text.
    cause = getattr(exc.orig, "__cause__", None)
    constraint = getattr(cause, "constraint_name", None)
    if constraint is not None:
        return constraint == DEDUPE_CONSTRAINT
    return "inbound_messages.dedupe_key" in str(exc.orig)


def _filter_statuses(status: str) -> list[str]:
    """Return the internal statuses that a status, label or "unfinished" filter selects."""
    if status in fields.BUILDER_LABELS:
        return list(fields.statuses_with_label(status))
    if status == fields.UNFINISHED_FILTER:
        # Every status that is not resolved, closed or duplicate.
        return sorted(fields.OPEN_STATUSES)
    return [status]
