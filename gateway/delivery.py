"""The outbox worker: delivers queued email with retries and backoff."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from gateway.errors import DeliveryFailed, StorageUnavailable

log = logging.getLogger(__name__)

BATCH_SIZE = 20


class Transport(Protocol):
    async def deliver(self, sender: str, recipient: str, data: bytes) -> None: ...


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
    ) -> None:
        self._store = store
        self._transport = transport
        self._max_attempts = max_attempts
        self._retry_base_seconds = retry_base_seconds
        self._retry_max_seconds = retry_max_seconds
        self._claim_lease = timedelta(seconds=claim_lease_seconds)
        self._poll_seconds = poll_seconds
        self._now = now
        self._wakeup = asyncio.Event()
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"

    def wake(self) -> None:
        """Make the worker look for due mail now instead of at its next poll."""
        self._wakeup.set()

    async def run(self) -> None:
        """Deliver due mail until cancelled."""
        while True:
            try:
                delivered = await self.run_once()
            except StorageUnavailable:
                log.warning("outbox unavailable; trying again in %.0f s", self._poll_seconds)
                delivered = 0
            if delivered:
                continue
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=self._poll_seconds)
            except TimeoutError:
                pass

    async def run_once(self) -> int:
        """Deliver one batch of due mail; return how many attempts were made."""
        async with self._store.write() as tx:
            batch = await tx.claim_due_emails(
                worker=self.worker_id, now=self._now(), lease=self._claim_lease, limit=BATCH_SIZE
            )
        for email in batch:
            await self._deliver(email)
        return len(batch)

    async def _deliver(self, email: Any) -> None:
        error: str | None = None
        retry_at: datetime | None = None
        try:
            await self._transport.deliver(email.sender, email.recipient, email.data)
        except DeliveryFailed as exc:
            error = str(exc)
            attempt = email.attempts + 1
            if not exc.permanent and attempt < self._max_attempts:
                retry_at = self._now() + self._backoff(attempt)
                log.warning("outbox %d attempt %d failed; retrying at %s: %s",
                            email.id, attempt, retry_at.isoformat(timespec="seconds"), exc)
            else:
                log.error("outbox %d failed for good after %d attempts: %s",
                          email.id, attempt, exc)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            retry_at = self._now() + self._backoff(email.attempts + 1)
            log.exception("outbox %d delivery raised; retrying", email.id)
        else:
            log.info("outbox %d delivered (%d bytes)", email.id, len(email.data))

        async with self._store.write() as tx:
            kept = await tx.finish_email(
                email.id, worker=self.worker_id, now=self._now(), error=error, retry_at=retry_at
            )
        if not kept:
            log.warning("outbox %d claim expired before the attempt was recorded", email.id)

    def _backoff(self, attempt: int) -> timedelta:
        seconds = min(self._retry_base_seconds * 2 ** (attempt - 1), self._retry_max_seconds)
        return timedelta(seconds=seconds)
