"""The Slack worker: sends queued Slack calls in order per ticket, with retries."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from gateway.errors import GatewayError, StorageUnavailable, first_line

log = logging.getLogger(__name__)

CLAIM_LEASE = timedelta(minutes=2)
BATCH_SIZE = 20
RETRY_BASE_SECONDS = 5.0


class SlackCallFailed(GatewayError):
    """A Slack call failed on this attempt; RETRY_AFTER comes from a 429 response."""

    def __init__(
        self, message: str, *, retry_after: float | None = None, permanent: bool = False
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.permanent = permanent


class SlackPoster(Protocol):
    async def perform(self, job: Any) -> None: ...


class SlackOutboxWorker:
    """Claims due Slack calls and performs them until stopped.

    A failed call is retried with backoff, and later calls of the same ticket
    wait behind it, so a thread never shows entries out of order. A 429 response
    pauses the whole worker for its Retry-After, because Slack's limits apply
    to the channel and the workspace, not to one thread.
    """

    def __init__(
        self,
        *,
        store: Any,
        poster: SlackPoster,
        retry_max_seconds: float,
        poll_seconds: float = 1.0,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._poster = poster
        self._retry_max_seconds = retry_max_seconds
        self._poll_seconds = poll_seconds
        self._now = now
        self._paused_until: datetime | None = None
        self._wakeup = asyncio.Event()
        self._is_stop_requested = False
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:slack:{id(self):x}"

    def wake(self) -> None:
        """Make the worker look for due calls now instead of at its next poll."""
        self._wakeup.set()

    def stop(self) -> None:
        """Make run return once the call in hand is performed and recorded.

        The rest of a claimed batch is released untried, for the next worker.
        """
        self._is_stop_requested = True
        self._wakeup.set()

    async def run(self) -> None:
        """Perform due Slack calls until stop is called or the task is cancelled."""
        while not self._is_stop_requested:
            try:
                done = await self.run_once()
            except StorageUnavailable as exc:
                log.warning("outbox unavailable (%s); trying Slack calls again in %.0f s",
                            first_line(exc), self._poll_seconds)
                done = 0
            except Exception:
                # A bug or an unexpected library error must not end Slack delivery
                # for good: the task would stop without a trace until the next restart.
                log.exception("Slack worker failed; trying again in %.0f s",
                              self._poll_seconds)
                done = 0
            if done or self._is_stop_requested:
                continue
            self._wakeup.clear()
            timeout = self._poll_seconds
            if self._paused_until is not None:
                # Resume when the Retry-After ends, not at the next poll after it.
                remaining = (self._paused_until - self._now()).total_seconds()
                timeout = max(0.0, min(timeout, remaining))
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=timeout)
            except TimeoutError:
                pass

    async def run_once(self) -> int:
        """Perform one batch of due calls; return how many were attempted."""
        now = self._now()
        if self._paused_until is not None and now < self._paused_until:
            return 0
        self._paused_until = None
        async with self._store.write() as tx:
            batch = await tx.claim_due_slack(worker=self.worker_id, now=now,
                                             lease=CLAIM_LEASE, limit=BATCH_SIZE)
        attempted = 0
        for index, job in enumerate(batch):
            if self._is_stop_requested:
                await self._release_unstarted(batch[index:])
                break
            attempted += 1
            if not await self._perform(job):
                # Rate limited: give back the rest of the batch untouched.
                await self._release(batch[index + 1:])
                break
        return attempted

    async def _perform(self, job: Any) -> bool:
        error: str | None = None
        retry_at: datetime | None = None
        keep_going = True
        attempt = job.attempts + 1
        try:
            await self._poster.perform(job)
        except SlackCallFailed as exc:
            error = str(exc)
            if exc.retry_after is not None:
                retry_at = self._now() + timedelta(seconds=exc.retry_after)
                self._paused_until = retry_at
                keep_going = False
                log.warning("slack rate limit on outbox %d (%s); pausing %.0f s",
                            job.id, job.kind, exc.retry_after)
            elif exc.permanent:
                log.error("slack %s for outbox %d failed for good: %s", job.kind, job.id, exc)
            else:
                retry_at = self._now() + self._backoff(attempt)
                log.warning("slack %s for outbox %d failed (attempt %d); retrying at %s: %s",
                            job.kind, job.id, attempt, retry_at.isoformat(timespec="seconds"),
                            exc)
        except Exception as exc:
            # A bug or an unexpected response keeps the call queued.
            error = f"{type(exc).__name__}: {exc}"
            retry_at = self._now() + self._backoff(attempt)
            log.exception("slack %s for outbox %d raised; retrying", job.kind, job.id)
        else:
            log.info("slack %s for outbox %d done", job.kind, job.id)

        async with self._store.write() as tx:
            kept = await tx.finish_email(job.id, worker=self.worker_id, now=self._now(),
                                         error=error, retry_at=retry_at)
        if not kept:
            log.warning("outbox %d claim expired before the Slack call was recorded", job.id)
        return keep_going

    async def _release(self, jobs: list[Any]) -> None:
        if not jobs:
            return
        async with self._store.write() as tx:
            for job in jobs:
                await tx.finish_email(job.id, worker=self.worker_id, now=self._now(),
                                      error="waiting for the Slack rate limit",
                                      retry_at=self._paused_until)
        # finish_email counted an attempt for each; that only lengthens backoff.

    async def _release_unstarted(self, jobs: list[Any]) -> None:
        async with self._store.write() as tx:
            released = await tx.release_claims([job.id for job in jobs],
                                               worker=self.worker_id)
        log.info("Slack worker stopping; released %d claimed call(s) untried",
                 released)

    def _backoff(self, attempt: int) -> timedelta:
        seconds = min(RETRY_BASE_SECONDS * 2 ** (attempt - 1), self._retry_max_seconds)
        return timedelta(seconds=seconds)
