"""Wire the store, SMTP, web and outbox worker into one running gateway."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from adapters import outbound
from adapters.mail import parse_mail
from adapters.smtp import (
    ClientGuard,
    SessionCounts,
    SmtpListener,
    SupportHandler,
    start_smtp_server,
)
from gateway.addresses import ReplySigner, SupportAddresses
from gateway.builder_links import LINK_KEY_SETTING, BuilderLinks
from gateway.config import Config, is_loopback
from gateway.delivery import OutboxWorker
from gateway.errors import ConfigError
from gateway.events import EventFanout
from gateway.mailer import MailerSettings, NoticeMailer
from gateway.scheduler import Scheduler, make_scheduled_work
from gateway.slack_mirror import SlackMirror
from gateway.support import SupportDesk
from gateway.tickets import Desk, DeskSettings
from gateway.web import make_web_app
from store import Store

log = logging.getLogger(__name__)

REPLY_KEY_SETTING = "reply_signing_key"
# How long a stop waits for messages being received or stored, and for the
# workers' email or Slack call in hand. Container runtimes commonly send SIGKILL
# 10 s after SIGTERM (the default of docker stop and podman stop), and closing
# the web listener and the database after this wait needs part of that time.
STOP_GRACE_SECONDS = 8.0
# The tasks left after a stop are cancelled ones that still wait, such as a
# message's transaction in SQLite's busy wait for another process's write lock.
# Connection.interrupt does not end that wait (SQLite 3.40.1). Their messages got
# no reply, so their clients send them again. The process waits this long for
# them, then exits anyway.
LEFTOVER_TASK_SECONDS = 2.0


class Gateway:
    """One gateway process: SMTP in, web, and outbound delivery on one event loop."""

    def __init__(
        self,
        config: Config,
        *,
        now: Callable[[], datetime] | None = None,
        background: bool = True,
        stop_grace_seconds: float = STOP_GRACE_SECONDS,
    ) -> None:
        """Prepare a gateway; BACKGROUND=False leaves outbox delivery to the caller."""
        check_listen_addresses(config)
        self.config = config
        self._background = background
        self._stop_grace_seconds = stop_grace_seconds
        # Set by begin_stop: the loop time at which the grace period ends.
        self._stop_deadline: float | None = None
        self._sessions_at_stop = SessionCounts(sessions=0, messages=0)
        self._has_stopped = False
        self._now = now or (lambda: datetime.now(UTC))
        self.store = Store(config.database.url)
        self.desk: Desk | None = None
        self.mailer: NoticeMailer | None = None
        self.support_desk: SupportDesk | None = None
        self.worker: OutboxWorker | None = None
        self.scheduler: Scheduler | None = None
        self.smtp_address: tuple[str, int] | None = None
        self.web_address: tuple[str, int] | None = None
        self._smtp: SmtpListener | None = None
        self._web_runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.slack: Any = None

    async def start(self) -> None:
        """Apply migrations, then start every listener and background task."""
        config = self.config
        await self.store.upgrade()
        desks = await make_desks(config, self.store, self._now)
        self.mailer, self.desk, self.support_desk = desks.mailer, desks.desk, desks.support
        support = desks.addresses

        handler = SupportHandler(self.desk, support, on_accepted=self._wake_worker)
        self._smtp = await start_smtp_server(
            handler,
            host=config.smtp.host,
            port=config.smtp.port,
            data_size_limit=config.smtp.max_message_bytes,
            guard=ClientGuard.from_config(config.smtp),
        )
        self.smtp_address = self._smtp.address
        log.info("SMTP listening on %s:%d for %s", *self.smtp_address,
                 ", ".join(support.addresses))

        app = make_web_app(
            self.store,
            access_token=config.web.access_token,
            now=self._now,
            links=desks.links,
            secure_cookie=config.web.public_url.startswith("https://"),
        )
        if config.slack.enabled:
            # Imported here so that a gateway without Slack never loads slack-bolt.
            from adapters.slack_runtime import SlackRuntime

            self.slack = SlackRuntime(config=config.slack, support=self.support_desk,
                                      store=self.store, now=self._now)
            self.slack.add_routes(app)
        self._web_runner = web.AppRunner(app, access_log=None)
        await self._web_runner.setup()
        site = web.TCPSite(self._web_runner, config.web.host, config.web.port)
        await site.start()
        self.web_address = tuple(self._web_runner.addresses[0][:2])
        log.info("HTTP listening on http://%s:%d/", *self.web_address)

        work = await make_scheduled_work(config, desks, now=self._now,
                                         on_queued=self._wake_worker)
        self.worker = OutboxWorker(
            store=self.store,
            transport=outbound.transport_from_config(config.outbound),
            max_attempts=config.outbound.max_attempts,
            retry_base_seconds=config.outbound.retry_base_seconds,
            retry_max_seconds=config.outbound.retry_max_seconds,
            claim_lease_seconds=config.outbound.claim_lease_seconds,
            now=self._now,
            # Digest runs queue digests uncomposed; the worker composes them.
            prepare=work.digests.compose_queued,
        )
        if self._background:
            self._tasks.append(asyncio.create_task(self.worker.run(), name="outbox"))
        self.scheduler = Scheduler(work)
        if self._background:
            self.scheduler.start()
        if self.slack is not None:
            await self.slack.start()
            if self._background:
                self._tasks.append(asyncio.create_task(self.slack.worker.run(), name="slack"))
        target = (
            f"relay {config.outbound.relay_host}:{config.outbound.relay_port}"
            if config.outbound.relay_host
            else f"Maildir {config.outbound.maildir}"
        )
        log.info("outbound mail goes to %s", target)

    def begin_stop(self) -> None:
        """Stop taking mail, and ask sessions and workers to finish their work in hand.

        stop calls this first. A caller may call it earlier to act before the wait.
        """
        if self._stop_deadline is not None:
            return
        loop = asyncio.get_running_loop()
        self._stop_deadline = loop.time() + self._stop_grace_seconds
        if self._smtp is not None:
            self._sessions_at_stop = self._smtp.begin_stop()
        if self.worker is not None:
            self.worker.stop()
        if self.slack is not None:
            self.slack.worker.stop()
        if self.scheduler is not None:
            # A job already running goes on, but no new one starts.
            self.scheduler.shutdown()
        log.info("stopping: %d SMTP session(s) open, %d message(s) in flight; "
                 "waiting up to %.1f s for them and the workers",
                 self._sessions_at_stop.sessions, self._sessions_at_stop.messages,
                 self._stop_grace_seconds)

    async def stop(self) -> None:
        """Finish the work in hand within the grace period, then close everything.

        Messages still in flight at the end of the grace period are cancelled
        without a reply, so their clients send them again.
        """
        if self._has_stopped:
            return
        self.begin_stop()
        assert self._stop_deadline is not None
        remaining = self._stop_deadline - asyncio.get_running_loop().time()
        cancelled, _, _ = await asyncio.gather(
            self._finish_sessions(remaining),
            self._finish_workers(remaining),
            self._stop_slack(remaining),
        )
        # A cancelled message got no reply, so its client sends it again.
        log.log(logging.WARNING if cancelled else logging.INFO,
                "stopped taking mail: %d message(s) finished, %d cancelled",
                self._sessions_at_stop.messages - cancelled, cancelled)

        if self._web_runner is not None:
            await self._web_runner.cleanup()
        await self.store.close()
        self._has_stopped = True
        log.info("gateway stopped")

    async def serve_forever(self) -> None:
        """Run until SIGINT or SIGTERM."""
        await self.start()
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stopping.set)
        try:
            await stopping.wait()
        finally:
            await self.stop()

    async def _finish_sessions(self, timeout_seconds: float) -> int:
        """Wait for the SMTP sessions; return how many messages were cancelled."""
        if self._smtp is None:
            return 0
        return await self._smtp.finish_stop(timeout_seconds)

    async def _finish_workers(self, timeout_seconds: float) -> None:
        """Wait up to TIMEOUT_SECONDS for the workers to finish their item in hand."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(self._tasks, timeout=max(timeout_seconds, 0.0))
        for task in pending:
            log.warning("%s worker still busy after %.1f s; cancelling it, so the item "
                        "in hand may be sent again after the restart",
                        task.get_name(), self._stop_grace_seconds)
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def _stop_slack(self, timeout_seconds: float) -> None:
        if self.slack is not None:
            await self.slack.stop(timeout_seconds)

    def _wake_worker(self) -> None:
        if self.worker is not None:
            self.worker.wake()
        if self.slack is not None:
            self.slack.worker.wake()


@dataclass(frozen=True)
class Desks:
    """The ticket operations, wired to one store and one outbox."""

    store: Store
    addresses: SupportAddresses
    mailer: NoticeMailer
    desk: Desk
    support: SupportDesk
    # Channels that mirror tickets (Slack) add their listeners here.
    events: EventFanout
    links: BuilderLinks | None = None


def serve(gateway: Gateway) -> None:
    """Run GATEWAY until SIGINT or SIGTERM, then exit without waiting on stuck tasks.

    asyncio.run would wait for every cancelled task to finish, which can take
    as long as another process holds SQLite's write lock.
    """
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(gateway.serve_forever())
    finally:
        leftovers = _cancel_leftovers(loop)
    if leftovers:
        log.warning("exiting with %d cancelled task(s) still waiting after %.0f s: %s",
                    len(leftovers), LEFTOVER_TASK_SECONDS,
                    ", ".join(sorted(task.get_name() for task in leftovers)))
        logging.shutdown()
        # Closing the loop, or the interpreter's own exit, would wait for them.
        os._exit(0)
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.run_until_complete(loop.shutdown_default_executor())
    asyncio.set_event_loop(None)
    loop.close()


def _cancel_leftovers(loop: asyncio.AbstractEventLoop) -> list[asyncio.Task[Any]]:
    """Cancel the loop's unfinished tasks; return those still unfinished after the wait."""
    tasks = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.wait(tasks, timeout=LEFTOVER_TASK_SECONDS))
    return [task for task in tasks if not task.done()]


async def make_desks(config: Config, store: Store, now: Callable[[], datetime]) -> Desks:
    """Build the desk for inbound mail and the support operations on STORE."""
    support = SupportAddresses.of(config.smtp.support_addresses)
    signer = ReplySigner(await reply_signing_key(config, store), support)
    links = await builder_links(config, store)
    mailer = NoticeMailer(
        settings=MailerSettings(
            sender_address=config.sender_address,
            sender_name=config.outbound.from_name,
            notices_per_day=config.outbound.notices_per_day,
        ),
        signer=signer,
        compose=outbound.compose_email,
        make_message_id=outbound.make_message_id,
        is_own_address=support.is_own,
        links=links,
    )
    events = EventFanout()
    if config.slack.enabled:
        events.listeners.append(SlackMirror(channel=str(config.slack.channel), now=now))
    desk = Desk(
        store=store,
        events=events,
        settings=DeskSettings.from_config(config, support),
        signer=signer,
        mailer=mailer,
        parse=parse_mail,
        now=now,
    )
    support_desk = SupportDesk(store=store, mailer=mailer, events=events, now=now)
    return Desks(store, support, mailer, desk, support_desk, events, links=links)


async def reply_signing_key(config: Config, store: Store) -> bytes:
    """Return the configured reply-signing key, or the one kept in the database."""
    configured = config.security.reply_signing_key
    if configured:
        return configured.encode()
    async with store.write() as tx:
        key = await tx.get_or_create_setting(REPLY_KEY_SETTING, lambda: secrets.token_hex(32))
    return key.encode()


async def builder_links(config: Config, store: Store) -> BuilderLinks:
    """Return the builder-link signer, with its key shared through the database."""
    async with store.write() as tx:
        key = await tx.get_or_create_setting(LINK_KEY_SETTING, lambda: secrets.token_hex(32))
    return BuilderLinks(
        key.encode(),
        public_url=config.web.public_url,
        lifetime=timedelta(days=config.web.builder_link_days),
    )


def check_listen_addresses(config: Config) -> None:
    """Raise ConfigError when the web server would be public without a token."""
    if not is_loopback(config.web.host) and not config.web.access_token:
        raise ConfigError(
            f"web.host is {config.web.host}, which other machines can reach, but "
            "web.access_token is not set; set it (or GATEWAY_WEB_ACCESS_TOKEN) or "
            "listen on 127.0.0.1."
        )
