"""The outbox worker: delivers queued email with retries and backoff."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from gateway.errors import DeliveryFailed, StorageUnavailable, first_line
from gateway.model import OutgoingEmail

log = logging.getLogger(__name__)

BATCH_SIZE = 20


class Transport(Protocol):
    async def deliver(self, sender: str, recipient: str, data: bytes) -> None: ...


class Preparer(Protocol):
    """Fills in emails queued without a body (digests), after WORKER's claim commits.

    Opens its own transactions, and writes only to rows that WORKER still
    claims. Returns the emails to deliver and those that could not be
    prepared, with the error. Emails in neither list were finished without
    sending, or went to another worker whose claim replaced WORKER's.
    """

    async def __call__(
        self, emails: Sequence[OutgoingEmail], *, worker: str, now: datetime
    ) -> tuple[list[OutgoingEmail], list[tuple[OutgoingEmail, str]]]: ...


class OutboxWorker:
    """Claims due outbox emails and delivers them until stopped."""

    def __init__(
        self,
        *,
        store: Any,
        transport: Transport,
        max_attempts: int,
        retry_base_seconds: float,
        retry_max_seconds: float,
        claim_lease_seconds: float = 300.0,
        poll_seconds: float = 1.0,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        prepare: Preparer | None = None,
    ) -> None:
        self._store = store
        self._transport = transport
        self._prepare = prepare
        self._max_attempts = max_attempts
        self._retry_base_seconds = retry_base_seconds
        self._retry_max_seconds = retry_max_seconds
        self._claim_lease = timedelta(seconds=claim_lease_seconds)
        self._poll_seconds = poll_seconds
        self._now = now
        self._wakeup = asyncio.Event()
        self._is_stop_requested = False
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"

    def wake(self) -> None:
        """Make the worker look for due mail now instead of at its next poll."""
        self._wakeup.set()

    def stop(self) -> None:
        """Make run return once the email in hand is delivered and recorded.

        The rest of a claimed batch is released unsent, for the next worker.
        """
        self._is_stop_requested = True
        self._wakeup.set()

    async def run(self) -> None:
        """Deliver due mail until stop is called or the task is cancelled."""
        while not self._is_stop_requested:
            try:
                delivered = await self.run_once()
            except StorageUnavailable as exc:
                log.warning("outbox unavailable (%s); trying again in %.0f s",
                            first_line(exc), self._poll_seconds)
                delivered = 0
            except Exception:
                # A bug or an unexpected library error must not end delivery for
                # good: the task would stop without a trace until the next restart.
                log.exception("outbox worker failed; trying again in %.0f s",
                              self._poll_seconds)
                delivered = 0
            if delivered or self._is_stop_requested:
                continue
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=self._poll_seconds)
            except TimeoutError:
                pass

    async def run_once(self) -> int:
        """Deliver one batch of due mail; return how many outbox rows it handled."""
        failed: list[tuple[OutgoingEmail, str]] = []
        # The claim is short: a few indexed statements. Rows with large payloads
        # are still claimed and fetched on the connection's thread (see
        # claim_outbox_rows).
        async with self._store.write(short=True) as tx:
            claimed = await tx.claim_due_emails(
                worker=self.worker_id, now=self._now(), lease=self._claim_lease, limit=BATCH_SIZE
            )
        batch = claimed
        # Queued digests are composed after the claim commits, so SQLite's single
        # writer is not held while their tickets are read and their text rendered.
        # If this raises, the batch stays claimed until the lease ends.
        if claimed and self._prepare is not None:
            batch, failed = await self._prepare(claimed, worker=self.worker_id,
                                                now=self._now())
        for email, error in failed:
            await self._record_failure(email, error, permanent=False)
        for index, email in enumerate(batch):
            if self._is_stop_requested:
                await self._release_unstarted(batch[index:])
                break
            await self._deliver(email)
        return len(claimed)

    async def _deliver(self, email: Any) -> None:
        error: str | None = None
        retry_at: datetime | None = None
        try:
            await self._transport.deliver(email.sender, email.recipient, email.data)
        except DeliveryFailed as exc:
            await self._record_failure(email, str(exc), permanent=exc.permanent)
            return
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            retry_at = self._now() + self._backoff(email.attempts + 1)
            log.exception("outbox %d delivery raised; retrying", email.id)
        else:
            log.info("outbox %d delivered (%d bytes)", email.id, len(email.data))
        await self._finish(email, error, retry_at)

    async def _record_failure(self, email: Any, error: str, *, permanent: bool) -> None:
        retry_at: datetime | None = None
        attempt = email.attempts + 1
        if not permanent and attempt < self._max_attempts:
            retry_at = self._now() + self._backoff(attempt)
            log.warning("outbox %d attempt %d failed; retrying at %s: %s",
                        email.id, attempt, retry_at.isoformat(timespec="seconds"), error)
        else:
            log.error("outbox %d failed for good after %d attempts: %s",
                      email.id, attempt, error)
        await self._finish(email, error, retry_at)

    async def _finish(self, email: Any, error: str | None, retry_at: datetime | None) -> None:
        async with self._store.write(short=True) as tx:
            kept = await tx.finish_email(
                email.id, worker=self.worker_id, now=self._now(), error=error, retry_at=retry_at,
                payload_bytes=len(email.data),
            )
        if not kept:
            log.warning("outbox %d claim expired before the attempt was recorded", email.id)

    async def _release_unstarted(self, emails: Sequence[OutgoingEmail]) -> None:
        # Not short: SQLite rewrites each row with its payload, which may be large.
        async with self._store.write() as tx:
            released = await tx.release_claims([email.id for email in emails],
                                               worker=self.worker_id)
        log.info("outbox worker stopping; released %d claimed email(s) unsent",
                 released)

    def _backoff(self, attempt: int) -> timedelta:
        seconds = min(self._retry_base_seconds * 2 ** (attempt - 1), self._retry_max_seconds)
        return timedelta(seconds=seconds)
