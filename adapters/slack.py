"""The Slack app (slack-bolt): thread messages, /ticket, buttons, menus and modals.

Every request is signature-checked by Bolt. Each event, command and action
is claimed by id in the store before it takes effect, and marked done in the
transaction of its ticket change (or right after a request that changes no
ticket). A retry or replay of a request that is done, or still being handled,
changes nothing. A claim left by an instance that died runs out after
RECEIPT_LEASE, and then a retry takes effect. Ticket work goes through
SupportDesk, so Slack applies the same rules and sends the same emails as the
command line.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from adapters import slack_blocks
from adapters.slack_commands import CommandError, parse_command
from gateway import fields
from gateway.attachments import check_attachments
from gateway.config import SlackConfig
from gateway.errors import GatewayError, InvalidChange, UnknownTicket
from gateway.model import MailAttachment, TicketFilter
from gateway.slack_mirror import (
    RepeatedSlackRequest,
    SlackOrigin,
    acting_from_slack,
    current_receipt,
    handling_slack_request,
)
from gateway.support import SupportDesk, TicketChange

log = logging.getLogger(__name__)

MEMBERS_CACHE_SECONDS = 60.0
NAME_CACHE_SECONDS = 600.0
MAX_DOWNLOAD_BYTES = 10 * 1024 * 1024
# How long a request stays claimed by the instance handling it. Slack retries
# an event right away, then after about 1 and 5 minutes: a retry within the
# lease is skipped, a later one takes over a request whose instance died.
RECEIPT_LEASE = timedelta(seconds=45)
ACTION_PATTERN = re.compile(r"^ticket_(status|severity|category|priority|assignee|reply|"
                            r"escalate|wait|resolve|close|duplicate)$")
MODAL_CALLBACKS = ("ticket_reply", "ticket_resolve", "ticket_wait", "ticket_duplicate")
NOT_ALLOWED = ("Only members of the support channel can change tickets or answer "
               "builders; ask a support lead to add you.")


def make_client(config: SlackConfig) -> AsyncWebClient:
    """Return the Web API client for the configured bot token and base URL."""
    base_url = config.api_base_url if config.api_base_url.endswith("/") else (
        config.api_base_url + "/")
    return AsyncWebClient(token=config.bot_token, base_url=base_url)


class SlackDesk:
    """The Bolt app of the support channel, wired to the support operations."""

    def __init__(
        self,
        *,
        config: SlackConfig,
        support: SupportDesk,
        store: Any,
        client: AsyncWebClient,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_queued: Callable[[], None] = lambda: None,
    ) -> None:
        self.config = config
        self.client = client
        self._support = support
        self._store = store
        self._now = now
        self._on_queued = on_queued
        self._names: dict[str, tuple[float, str]] = {}
        self._members: tuple[float, frozenset[str]] | None = None
        self._running = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.app = AsyncApp(
            client=client,
            signing_secret=config.signing_secret or "",
            # Socket Mode requests carry no signature; HTTP requests always do.
            request_verification_enabled=not config.app_token,
        )
        self._register()

    async def handle_http(self, request: web.Request) -> web.StreamResponse:
        """Serve POST /slack/events: events, commands and interactivity."""
        bolt_request = await to_bolt_request(request)
        bolt_response = await self.app.async_dispatch(bolt_request)
        return await to_aiohttp_response(bolt_response)

    async def drain(self, timeout_seconds: float = 10.0) -> None:
        """Wait until the listeners still running after their ack have finished."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=timeout_seconds)
        except TimeoutError:
            log.warning("%d Slack listener(s) still running at shutdown", self._running)

    def _register(self) -> None:
        app = self.app
        app.event("message")(self._tracked(self._on_message))
        app.command("/ticket")(self._tracked(self._on_command))
        app.action(ACTION_PATTERN)(self._tracked(self._on_action))
        app.action("reply_undo")(self._tracked(self._on_undo))
        app.shortcut("send_to_builder")(self._tracked(self._on_send_shortcut))
        for callback_id in MODAL_CALLBACKS:
            app.view(callback_id)(self._tracked(self._on_view))

    def _tracked(self, listener: Callable[..., Awaitable[None]]
                 ) -> Callable[..., Awaitable[None]]:
        # Bolt reads the argument names through functools.wraps' __wrapped__.
        @functools.wraps(listener)
        async def run(**kwargs: Any) -> None:
            self._running += 1
            self._idle.clear()
            try:
                with handling_slack_request() as receipt:
                    await listener(**kwargs)
                    if receipt.key:
                        # Requests that changed no ticket (a refusal, a list)
                        # are marked done here.
                        async with self._store.write() as tx:
                            await tx.finish_slack_receipt(receipt.key)
            finally:
                self._running -= 1
                if self._running == 0:
                    self._idle.set()

        return run

    # Thread messages

    async def _on_message(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        if not await self._first_time(f"event:{body.get('event_id', '')}"):
            return
        subtype = event.get("subtype")
        if subtype == "message_deleted":
            await self._on_deleted(event)
            return
        if event.get("bot_id") or subtype not in (None, "file_share", "thread_broadcast"):
            # Our own posts, other bots and edits never become notes or replies.
            return
        channel, thread_ts = event.get("channel", ""), event.get("thread_ts")
        if channel != self.config.channel or not thread_ts or thread_ts == event.get("ts"):
            return
        number = await self._ticket_for_thread(channel, thread_ts)
        if number is None:
            return
        user_id = str(event.get("user", ""))
        if not await self._is_allowed(user_id):
            await self._tell(user_id, channel, NOT_ALLOWED)
            return
        text = await self._plain(str(event.get("text", "")))
        if not text:
            return
        name = await self._name(user_id)
        with acting_from_slack(SlackOrigin(user_id, name, channel, str(event.get("ts")))):
            await self._attempt(user_id, channel,
                                self._support.note(number, text, author=name))
        log.info("internal note from Slack on #%d (%d characters)", number, len(text))

    async def _on_deleted(self, event: dict[str, Any]) -> None:
        previous = event.get("previous_message") or {}
        source_key = f"{event.get('channel', '')}/{previous.get('ts', event.get('deleted_ts'))}"
        async with self._store.read() as tx:
            held = await tx.find_slack_reply(source_key=source_key)
        if held is None:
            return
        if await self._withdraw(held.id, "the sender (message deleted)"):
            log.info("reply %d on #%d withdrawn: its Slack message was deleted", held.id,
                     held.ticket_number)

    # /ticket

    async def _on_command(self, ack: Callable[..., Awaitable[None]],
                          body: dict[str, Any]) -> None:
        await ack()
        if not await self._first_time(f"command:{body.get('trigger_id', '')}"):
            return
        user_id = str(body.get("user_id", ""))
        channel = str(body.get("channel_id", "")) or str(self.config.channel)
        try:
            command = parse_command(str(body.get("text", "")))
        except CommandError as exc:
            await self._tell(user_id, channel, str(exc))
            return
        if command.action == "help":
            await self._tell(user_id, channel, command.help_text)
            return
        if command.action == "list":
            await self._tell(user_id, channel, await self._list_text(command.argument))
            return
        if command.action == "show":
            await self._tell(user_id, channel, await self._show_text(command.number))
            return
        if not await self._is_allowed(user_id):
            await self._tell(user_id, channel, NOT_ALLOWED)
            return
        name = await self._name(user_id)
        number = command.number
        if command.action == "reply":
            text = await self._plain(command.argument)
            await self._send_reply(number, text, user_id, name, channel)
        elif command.action == "note":
            with acting_from_slack(SlackOrigin(user_id, name)):
                await self._attempt(user_id, channel, self._support.note(
                    number, await self._plain(command.argument), author=name))
        else:
            try:
                change = await self._command_change(command.action, command.argument)
            except InvalidChange as exc:
                await self._tell(user_id, channel, f"Not done: {slack_blocks.escape(str(exc))}")
                return
            await self._change(number, change, user_id, name, channel)

    async def _command_change(self, action: str, argument: str) -> TicketChange:
        if action == "assignee":
            return TicketChange(assignee=await self._assignee_name(argument))
        text = await self._plain(argument)
        return _change_for(action, text)

    # Buttons and menus on the root message

    async def _on_action(self, ack: Callable[..., Awaitable[None]], body: dict[str, Any],
                         action: dict[str, Any]) -> None:
        await ack()
        user_id = str(body.get("user", {}).get("id", ""))
        channel = str(body.get("channel", {}).get("id", "")) or str(self.config.channel)
        key = f"action:{user_id}:{action.get('action_id')}:{action.get('action_ts')}"
        if not await self._first_time(key):
            return
        if not await self._is_allowed(user_id):
            await self._tell(user_id, channel, NOT_ALLOWED)
            return
        name_of_action = str(action.get("action_id", "")).removeprefix("ticket_")
        number, value = _action_value(action)
        if number is None:
            number = _number_from_blocks(body)
        if number is None:
            log.warning("action %s without a ticket number ignored", name_of_action)
            return
        if name_of_action == "status" and value in slack_blocks.NEEDS_MODAL:
            name_of_action = slack_blocks.NEEDS_MODAL[value]
        view = _modal_for(name_of_action, number)
        if view is not None:
            await self._open_view(str(body.get("trigger_id", "")), view, user_id, channel)
            return
        name = await self._name(user_id)
        if name_of_action == "assignee":
            change = TicketChange(assignee=await self._name(str(action.get("selected_user"))))
        elif name_of_action in ("status", "severity", "category", "priority"):
            change = TicketChange(**{name_of_action: value})
        else:
            change = _change_for(name_of_action, "")
        await self._change(number, change, user_id, name, channel)

    async def _on_undo(self, ack: Callable[..., Awaitable[None]], body: dict[str, Any],
                       action: dict[str, Any]) -> None:
        await ack()
        user_id = str(body.get("user", {}).get("id", ""))
        channel = str(body.get("channel", {}).get("id", "")) or str(self.config.channel)
        if not await self._first_time(f"action:{user_id}:undo:{action.get('action_ts')}"):
            return
        if not await self._is_allowed(user_id):
            await self._tell(user_id, channel, NOT_ALLOWED)
            return
        reply_id = int(str(action.get("value", "0")) or 0)
        if not await self._withdraw(reply_id, await self._name(user_id)):
            await self._tell(user_id, channel, "Too late to undo: the reply was already "
                             "emailed to the builder, or withdrawn before.")

    # Modals

    async def _on_view(self, ack: Callable[..., Awaitable[None]], body: dict[str, Any],
                       view: dict[str, Any]) -> None:
        text_value = (view.get("state", {}).get("values", {}).get("text", {})
                      .get("value", {}).get("value") or "")
        if not text_value.strip():
            await ack(response_action="errors", errors={"text": "Write the text first."})
            return
        await ack()
        user_id = str(body.get("user", {}).get("id", ""))
        if not await self._first_time(f"view:{view.get('id')}:{view.get('hash')}"):
            return
        if not await self._is_allowed(user_id):
            await self._tell(user_id, str(self.config.channel), NOT_ALLOWED)
            return
        number_text, _, _ = str(view.get("private_metadata", "")).partition("|")
        number = int(number_text)
        name = await self._name(user_id)
        channel = str(self.config.channel)
        text = await self._plain(text_value)
        callback = view.get("callback_id")
        if callback == "ticket_reply":
            await self._send_reply(number, text, user_id, name, channel)
            return
        if callback == "ticket_resolve":
            change = TicketChange(status="resolved", summary=text)
        elif callback == "ticket_wait":
            change = TicketChange(status="waiting_on_builder", question=text)
        else:
            target = text.strip().lstrip("#")
            if not target.isdigit():
                await self._tell(user_id, channel, f"{slack_blocks.escape(target)!s} is not "
                                 "a ticket number; write it as 123 or #123.")
                return
            change = TicketChange(duplicate_of=int(target))
        await self._change(number, change, user_id, name, channel)

    # The "Send to builder" message shortcut

    async def _on_send_shortcut(self, ack: Callable[..., Awaitable[None]],
                                body: dict[str, Any]) -> None:
        await ack()
        user_id = str(body.get("user", {}).get("id", ""))
        channel = str(body.get("channel", {}).get("id", ""))
        message = body.get("message") or {}
        ts = str(message.get("ts", ""))
        if not await self._first_time(f"shortcut:{channel}/{ts}:{body.get('trigger_id')}"):
            return
        if not await self._is_allowed(user_id):
            await self._tell(user_id, channel, NOT_ALLOWED)
            return
        thread_ts = message.get("thread_ts")
        number = None
        if channel == self.config.channel and thread_ts and thread_ts != ts:
            number = await self._ticket_for_thread(channel, str(thread_ts))
        if number is None:
            await self._tell(user_id, channel, "Send to builder works on a message in a "
                             "ticket's thread in the support channel.")
            return
        if message.get("bot_id") or message.get("subtype") == "bot_message":
            await self._tell(user_id, channel, "Messages from apps cannot be sent to a "
                             "builder; write the reply yourself.")
            return
        async with self._store.read() as tx:
            already = await tx.slack_reply_sent_from(f"{channel}/{ts}")
        if already:
            await self._tell(user_id, channel, f"This message was already sent to the "
                             f"builder of #{number}.")
            return
        files = await self._download_files(message.get("files") or [], user_id, channel)
        if files is None:
            return
        text = await self._plain(str(message.get("text", "")))
        await self._send_reply(number, text, user_id, await self._name(user_id), channel,
                               ts=ts, attachments=files)

    # Shared steps

    async def _send_reply(self, number: int, text: str, user_id: str, name: str,
                          channel: str, *, ts: str = "",
                          attachments: tuple[Any, ...] = ()) -> None:
        undo = self.config.undo_seconds
        origin = SlackOrigin(user_id, name, self.config.channel or channel, ts,
                             undo_seconds=undo)
        with acting_from_slack(origin):
            done = await self._attempt(user_id, channel, self._support.reply(
                number, text, author=name, attachments=attachments,
                send_at=self._now() + timedelta(seconds=undo),
            ))
        if done:
            log.info("reply from Slack on #%d held %d s (%d characters, %d files)",
                     number, undo, len(text), len(attachments))

    async def _change(self, number: int, change: TicketChange, user_id: str, name: str,
                      channel: str) -> None:
        with acting_from_slack(SlackOrigin(user_id, name)):
            await self._attempt(user_id, channel,
                                self._support.change(number, change, actor=name))

    async def _attempt(self, user_id: str, channel: str, work: Awaitable[Any]) -> bool:
        """Await WORK; tell the person why when the ticket rules reject it."""
        try:
            await work
        except RepeatedSlackRequest as exc:
            log.info("Slack %s took effect on another instance first; rolled back", exc)
            return False
        except (InvalidChange, UnknownTicket) as exc:
            await self._tell(user_id, channel, f"Not done: {slack_blocks.escape(str(exc))}")
            return False
        except GatewayError as exc:
            log.error("ticket operation from Slack failed: %s", exc)
            await self._tell(user_id, channel, "Not done: the ticket store is unavailable; "
                             "try again in a minute.")
            return False
        self._on_queued()
        return True

    async def _withdraw(self, reply_id: int, actor: str) -> bool:
        now = self._now()
        receipt = current_receipt()
        try:
            async with self._store.write() as tx:
                held = await tx.find_slack_reply(reply_id=reply_id)
                if held is None or not await tx.cancel_slack_reply(reply_id, now=now):
                    return False
                await tx.enqueue_slack(held.ticket_id, channel=str(self.config.channel),
                                       kind="withdrawn", payload={"actor": actor}, now=now)
                if receipt is not None:
                    await receipt.finish_in(tx)
        except RepeatedSlackRequest:
            # The same request withdrew the reply on another instance.
            return True
        self._on_queued()
        log.info("reply %d on #%d withdrawn before sending", reply_id, held.ticket_number)
        return True

    async def _first_time(self, key: str) -> bool:
        """Claim the request KEY; return False when it is done or being handled."""
        async with self._store.write() as tx:
            fresh = await tx.claim_slack_receipt(key, now=self._now(), lease=RECEIPT_LEASE)
        if not fresh:
            log.info("repeated Slack delivery %s ignored", key.split(":")[0])
            return False
        receipt = current_receipt()
        if receipt is not None:
            receipt.key = key
        return True

    async def _ticket_for_thread(self, channel: str, thread_ts: str) -> int | None:
        async with self._store.read() as tx:
            return await tx.ticket_number_for_thread(channel, thread_ts)

    async def _show_text(self, number: int) -> str:
        async with self._store.read() as tx:
            ticket = await tx.get_ticket(number)
        if ticket is None:
            return f"No ticket #{number}; try /ticket list."
        return slack_blocks.ticket_text(ticket)

    async def _list_text(self, status: str) -> str:
        # Without a status the list shows every ticket that is not finished.
        status = status.strip() or fields.UNFINISHED_FILTER
        allowed = (*fields.STATUSES, fields.UNFINISHED_FILTER)
        if status not in allowed and status not in fields.BUILDER_LABELS:
            return (f"Unknown status {slack_blocks.escape(status)}; use one of: "
                    f"{', '.join(allowed)}.")
        async with self._store.read() as tx:
            page = await tx.list_tickets(TicketFilter(status=status), per_page=20)
        return slack_blocks.ticket_list_text(page.tickets, page.matched)

    async def _open_view(self, trigger_id: str, view: dict[str, Any], user_id: str,
                         channel: str) -> None:
        try:
            await self.client.views_open(trigger_id=trigger_id, view=view)
        except (SlackApiError, SlackClientError, OSError) as exc:
            log.warning("views.open failed: %s", type(exc).__name__)
            await self._tell(user_id, channel, "Could not open the form; try again.")

    async def _tell(self, user_id: str, channel: str, text: str) -> None:
        """Post an ephemeral message, visible to USER_ID only."""
        try:
            await self.client.chat_postEphemeral(channel=channel or str(self.config.channel),
                                                 user=user_id, text=text)
        except (SlackApiError, SlackClientError, OSError) as exc:
            log.warning("ephemeral message to %s failed: %s", user_id, type(exc).__name__)

    async def _is_allowed(self, user_id: str) -> bool:
        """Return True for members of the support channel or the allowed user group."""
        if not user_id:
            return False
        try:
            return user_id in await self._allowed_users()
        except (SlackApiError, SlackClientError, OSError) as exc:
            log.warning("could not read the support channel's members: %s",
                        type(exc).__name__)
            return False

    async def _allowed_users(self) -> frozenset[str]:
        clock = time.monotonic()
        if self._members is not None and clock - self._members[0] < MEMBERS_CACHE_SECONDS:
            return self._members[1]
        members: set[str] = set()
        cursor = None
        while True:
            response = await self.client.conversations_members(
                channel=str(self.config.channel), cursor=cursor, limit=1000)
            members.update(response.get("members") or [])
            cursor = (response.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                break
        if self.config.allowed_user_group:
            response = await self.client.usergroups_users_list(
                usergroup=self.config.allowed_user_group)
            members.update(response.get("users") or [])
        self._members = (clock, frozenset(members))
        return self._members[1]

    async def _name(self, user_id: str) -> str:
        """Return a person's display name, falling back to the user id."""
        cached = self._names.get(user_id)
        if cached is not None and time.monotonic() - cached[0] < NAME_CACHE_SECONDS:
            return cached[1]
        name = user_id
        try:
            response = await self.client.users_info(user=user_id)
            user = response.get("user") or {}
            profile = user.get("profile") or {}
            name = (profile.get("display_name") or profile.get("real_name")
                    or user.get("real_name") or user.get("name") or user_id)
        except (SlackApiError, SlackClientError, OSError) as exc:
            log.warning("users.info for %s failed: %s", user_id, type(exc).__name__)
        self._names[user_id] = (time.monotonic(), name)
        return name

    async def _plain(self, text: str) -> str:
        """Resolve mentions and links in Slack text into plain words."""
        ids = set(re.findall(r"<@([A-Z0-9]+)(?:\|[^>]*)?>", text))
        names = {user_id: await self._name(user_id) for user_id in ids}
        return slack_blocks.to_plain_text(text, lambda user_id: names.get(user_id, "someone"))

    async def _assignee_name(self, argument: str) -> str:
        mention = re.fullmatch(r"\s*<@([A-Z0-9]+)(?:\|[^>]*)?>\s*", argument)
        if mention:
            return await self._name(mention.group(1))
        text = argument.strip()
        return "" if text.lower() in ("none", "nobody", "-") else text

    async def _download_files(self, files: list[dict[str, Any]], user_id: str,
                              channel: str) -> tuple[Any, ...] | None:
        """Download a message's files and apply the attachment rules; None on failure."""
        if not files:
            return ()
        downloaded: list[MailAttachment] = []
        headers = {"Authorization": f"Bearer {self.config.bot_token}"}
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for item in files:
                url = str(item.get("url_private_download") or item.get("url_private") or "")
                name = str(item.get("name") or "file")
                try:
                    async with session.get(url, headers=headers) as response:
                        response.raise_for_status()
                        data = await response.content.read(MAX_DOWNLOAD_BYTES + 1)
                except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    log.warning("download of a Slack file failed: %s", type(exc).__name__)
                    await self._tell(user_id, channel, f"Not sent: could not download "
                                     f"{slack_blocks.escape(name)} from Slack; try again.")
                    return None
                downloaded.append(MailAttachment(filename=name, data=data,
                                                 declared_type=str(item.get("mimetype", ""))))
        checked = check_attachments(downloaded)
        if not checked.ok:
            problems = "; ".join(f"{p.filename}: {p.rule}" for p in checked.problems)
            await self._tell(user_id, channel,
                             f"Not sent: {slack_blocks.escape(problems)}")
            return None
        return tuple(checked.accepted)


def _change_for(action: str, text: str) -> TicketChange:
    simple = {"escalate": "escalated", "close": "closed", "reopen": "reopened",
              "progress": "in_progress", "triage": "triaged", "open": "open"}
    if action in simple:
        return TicketChange(status=simple[action])
    if action == "resolve":
        return TicketChange(status="resolved", summary=text)
    if action == "wait":
        return TicketChange(status="waiting_on_builder", question=text)
    # An unknown severity or category passes through as written, so that
    # SupportDesk rejects it with the list of valid values.
    if action == "severity":
        return TicketChange(severity=fields.match_severity(text) or text)
    if action == "category":
        return TicketChange(category=fields.match_category(text) or text)
    if action == "priority":
        return TicketChange(priority=text)
    if action == "duplicate":
        target = text.strip().lstrip("#")
        if not target.isdigit():
            raise InvalidChange(f"{target!r} is not a ticket number; write it as 123 or #123.")
        return TicketChange(duplicate_of=int(target))
    if action == "status":
        status, _, rest = text.strip().partition(" ")
        if status == "resolved":
            return TicketChange(status=status, summary=rest)
        if status == "waiting_on_builder":
            return TicketChange(status=status, question=rest)
        return TicketChange(status=status)
    raise InvalidChange(f"unknown action {action!r}.")


def _modal_for(action: str, number: int) -> dict[str, Any] | None:
    if action == "reply":
        return slack_blocks.text_modal("ticket_reply", number, f"Reply on #{number}",
                                       "Reply to the builder (emailed after the undo "
                                       "window)", "Send")
    if action == "resolve":
        return slack_blocks.text_modal("ticket_resolve", number, f"Resolve #{number}",
                                       "Resolution summary for the builder", "Resolve")
    if action == "wait":
        return slack_blocks.text_modal("ticket_wait", number, f"Ask on #{number}",
                                       "Question for the builder", "Send question")
    if action == "duplicate":
        return slack_blocks.duplicate_modal(number)
    return None


def _action_value(action: dict[str, Any]) -> tuple[int | None, str]:
    raw = str((action.get("selected_option") or {}).get("value") or action.get("value") or "")
    number_text, _, value = raw.partition(":")
    if number_text.isdigit():
        return int(number_text), value
    return None, value


def _number_from_blocks(body: dict[str, Any]) -> int | None:
    for action in body.get("actions") or []:
        block_id = str(action.get("block_id", ""))
        parts = block_id.split(":")
        if len(parts) >= 2 and parts[0] == "ticket" and parts[1].isdigit():
            return int(parts[1])
    return None
