"""Run the Slack side of a gateway: the Bolt route or Socket Mode, and the worker."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from aiohttp import web
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack import SlackDesk, make_client
from adapters.slack_poster import SlackPoster
from gateway.config import SlackConfig
from gateway.slack_delivery import SlackOutboxWorker
from gateway.support import SupportDesk

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"


class SlackRuntime:
    """The Slack app, its outbox worker and, with an app token, its socket."""

    def __init__(
        self,
        *,
        config: SlackConfig,
        support: SupportDesk,
        store: Any,
        now: Callable[[], datetime],
        client: AsyncWebClient | None = None,
    ) -> None:
        self.config = config
        self.client = client or make_client(config)
        self.worker = SlackOutboxWorker(
            store=store,
            poster=SlackPoster(client=self.client, store=store),
            retry_max_seconds=config.retry_max_seconds,
            now=now,
        )
        self.desk = SlackDesk(config=config, support=support, store=store,
                              client=self.client, now=now, on_queued=self.worker.wake)
        self._socket: AsyncSocketModeHandler | None = None

    def add_routes(self, app: web.Application) -> None:
        """Mount Bolt at POST /slack/events on the gateway's web application."""
        app.router.add_post(EVENTS_PATH, self.desk.handle_http)

    async def start(self) -> None:
        """Connect to Slack over Socket Mode when an app token is configured."""
        if self.config.app_token:
            self._socket = AsyncSocketModeHandler(self.desk.app, self.config.app_token,
                                                  web_client=self.client)
            await self._socket.connect_async()
            log.info("Slack connected over Socket Mode for channel %s", self.config.channel)
        else:
            log.info("Slack events expected at %s for channel %s", EVENTS_PATH,
                     self.config.channel)

    async def stop(self, timeout_seconds: float) -> None:
        """Close Socket Mode, then wait up to TIMEOUT_SECONDS for listeners."""
        if self._socket is not None:
            await self._socket.close_async()
            self._socket = None
        await self.desk.drain(timeout_seconds=max(timeout_seconds, 0.0))
