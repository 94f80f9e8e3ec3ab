"""Perform queued Slack calls with slack-sdk: posts, updates, reactions, uploads."""

from __future__ import annotations

import logging
from typing import Any

from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from adapters import slack_blocks
from gateway.slack_delivery import SlackCallFailed
from store.slack import SlackJob

log = logging.getLogger(__name__)

# Slack errors that no retry can fix; the call is marked failed and logged.
PERMANENT_ERRORS = frozenset({
    "channel_not_found", "not_in_channel", "is_archived", "invalid_auth",
    "account_inactive", "token_revoked", "missing_scope", "msg_too_long",
    "invalid_blocks", "no_text", "message_not_found", "cant_update_message",
})
# Errors that show the call already took effect, such as a repeated reaction.
DONE_ERRORS = frozenset({"already_reacted"})


class SlackPoster:
    """Renders and sends one queued Slack call, reading the ticket from the store."""

    def __init__(self, *, client: AsyncWebClient, store: Any) -> None:
        self._client = client
        self._store = store

    async def perform(self, job: SlackJob) -> None:
        """Perform JOB; raise SlackCallFailed when Slack did not accept it."""
        try:
            await self._perform(job)
        except SlackApiError as exc:
            error = str(exc.response.get("error", "")) if exc.response is not None else ""
            status = exc.response.status_code if exc.response is not None else 0
            if error in DONE_ERRORS:
                return
            if status == 429:
                retry_after = float(exc.response.headers.get("Retry-After", "30") or 30)
                raise SlackCallFailed(f"{job.kind}: rate limited", retry_after=retry_after) from exc
            raise SlackCallFailed(f"{job.kind}: Slack returned HTTP {status} {error}",
                                  permanent=error in PERMANENT_ERRORS) from exc
        except (SlackClientError, OSError, TimeoutError) as exc:
            raise SlackCallFailed(f"{job.kind}: {type(exc).__name__}: {exc}") from exc

    async def _perform(self, job: SlackJob) -> None:
        handlers = {
            "root": self._post_root,
            "update_root": self._update_root,
            "message": self._post_message,
            "files": self._upload_files,
            "change": self._post_change,
            "reply_text": self._post_reply_text,
            "reply_marker": self._post_reply_marker,
            "react": self._react,
            "withdrawn": self._post_withdrawn,
        }
        handler = handlers.get(job.kind)
        if handler is None:
            raise SlackCallFailed(f"unknown Slack call kind {job.kind!r}", permanent=True)
        await handler(job)

    async def _post_root(self, job: SlackJob) -> None:
        thread = await self._thread(job)
        if thread is not None and thread[1]:
            return  # posted by an earlier attempt whose result was recorded
        ticket = await self._ticket(job)
        text, blocks = slack_blocks.root_message(ticket, alert=ticket.summary.severity == "sev1")
        response = await self._client.chat_postMessage(
            channel=job.channel, text=text, blocks=blocks, unfurl_links=False,
            unfurl_media=False,
        )
        async with self._store.write() as tx:
            await tx.set_slack_thread(job.ticket_id, str(response["channel"]),
                                      str(response["ts"]))
        log.info("ticket #%d posted to Slack %s at %s", ticket.summary.number,
                 response["channel"], response["ts"])

    async def _update_root(self, job: SlackJob) -> None:
        channel, ts = await self._root(job)
        ticket = await self._ticket(job)
        text, blocks = slack_blocks.root_message(ticket)
        await self._client.chat_update(channel=channel, ts=ts, text=text, blocks=blocks)

    async def _post_message(self, job: SlackJob) -> None:
        async with self._store.read() as tx:
            message = await tx.stored_message(int(job.payload["message_id"]))
        if message is None:
            return
        if message.kind == "builder":
            text = slack_blocks.builder_message(message.author, message.body,
                                                message.attachment_count)
        elif message.visibility == "public":
            text = slack_blocks.support_entry("reply", message.author, message.body)
        else:
            text = slack_blocks.support_entry("note", message.author, message.body)
        await self._post_in_thread(job, text)

    async def _upload_files(self, job: SlackJob) -> None:
        channel, ts = await self._root(job)
        async with self._store.read() as tx:
            files = await tx.message_files(int(job.payload["message_id"]))
        uploads = [
            {"content": f.data, "filename": f.filename, "title": f.filename}
            for f in files
            if f.content_type.startswith("image/") or f.content_type == "application/pdf"
        ]
        if not uploads:
            return
        await self._client.files_upload_v2(file_uploads=uploads, channel=channel,
                                           thread_ts=ts)
        log.info("uploaded %d file(s) into the thread of ticket id %d", len(uploads),
                 job.ticket_id)

    async def _post_change(self, job: SlackJob) -> None:
        text = slack_blocks.change_line(str(job.payload["actor"]), job.payload["changes"])
        await self._post_in_thread(job, text)

    async def _post_reply_text(self, job: SlackJob) -> None:
        async with self._store.read() as tx:
            message = await tx.stored_message(int(job.payload["message_id"]))
        if message is None:
            return
        await self._post_in_thread(
            job, slack_blocks.reply_text_line(str(job.payload["actor"]), message.body)
        )

    async def _post_reply_marker(self, job: SlackJob) -> None:
        text, blocks = slack_blocks.reply_marker(
            str(job.payload["actor"]), int(job.payload["undo_seconds"]),
            int(job.payload["reply_id"]),
        )
        await self._post_in_thread(job, text, blocks)

    async def _post_withdrawn(self, job: SlackJob) -> None:
        await self._post_in_thread(job, slack_blocks.withdrawn_line(str(job.payload["actor"])))

    async def _react(self, job: SlackJob) -> None:
        await self._client.reactions_add(channel=str(job.payload["channel"]),
                                         timestamp=str(job.payload["ts"]),
                                         name=str(job.payload["name"]))

    async def _post_in_thread(self, job: SlackJob, text: str,
                              blocks: list[dict] | None = None) -> None:
        channel, ts = await self._root(job)
        arguments: dict[str, Any] = {"channel": channel, "thread_ts": ts, "text": text,
                                     "unfurl_links": False, "unfurl_media": False}
        if blocks:
            arguments["blocks"] = blocks
        await self._client.chat_postMessage(**arguments)

    async def _thread(self, job: SlackJob) -> tuple[str, str | None] | None:
        async with self._store.read() as tx:
            return await tx.slack_thread(job.ticket_id)

    async def _root(self, job: SlackJob) -> tuple[str, str]:
        thread = await self._thread(job)
        if thread is None or not thread[1]:
            # The root call comes first in the queue, so it failed for good.
            raise SlackCallFailed(
                f"ticket id {job.ticket_id} has no Slack root message; its root post "
                "failed, see the outbox's failed rows", permanent=True,
            )
        return thread[0], thread[1]

    async def _ticket(self, job: SlackJob) -> Any:
        async with self._store.read() as tx:
            number = await tx.ticket_number_for_id(job.ticket_id)
            ticket = await tx.get_ticket(number) if number is not None else None
        if ticket is None:
            raise SlackCallFailed(f"ticket id {job.ticket_id} not found", permanent=True)
        return ticket

