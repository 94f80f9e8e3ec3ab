"""L7: Slack fan-out through a local fake Web API that enforces a per-channel rate.

The gateway's own Slack worker (SlackOutboxWorker with SlackPoster and slack-sdk's
AsyncWebClient) sends queued posts for a set of tickets to one channel. The fake
lets a short burst through, then one post per 1 / RATE seconds per channel, and
responds to the rest with 429 and Retry-After, as Slack's chat.postMessage does.
Slack allows about 1 post per second per channel; the benchmark scales the
fake's clock so that 1,000 posts fit the run's time budget, and Retry-After is
scaled the same way (fractional seconds instead of Slack's whole seconds).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack_poster import SlackPoster
from bench import targets
from gateway.slack_delivery import SlackOutboxWorker
from store import Store

log = logging.getLogger(__name__)

CHANNEL = "C0BENCH01"
TOKEN = "xoxb-bench-token-not-secret"
STEPS_PER_TICKET = 10
STEP = re.compile(r"changed step (\d+)")
ROOT = re.compile(r"#(\d+) ")


@dataclass
class RateLimitedSlack:
    """A fake chat.postMessage with a token bucket per channel."""

    rate: float
    burst: int
    accepted: list[tuple[float, str, str | None, str]] = field(default_factory=list)
    limited: int = 0
    _tokens: dict[str, float] = field(default_factory=dict)
    _stamp: dict[str, float] = field(default_factory=dict)
    _ts: int = 0

    def take(self, channel: str) -> float:
        """Take a token for CHANNEL; return 0, or the seconds until the next token."""
        now = time.monotonic()
        tokens = self._tokens.get(channel, float(self.burst))
        tokens = min(float(self.burst),
                     tokens + (now - self._stamp.get(channel, now)) * self.rate)
        self._stamp[channel] = now
        if tokens >= 1.0:
            self._tokens[channel] = tokens - 1.0
            return 0.0
        self._tokens[channel] = tokens
        return (1.0 - tokens) / self.rate

    async def handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"ok": False, "error": "invalid_auth"})
        if method != "chat.postMessage":
            return web.json_response({"ok": True})
        params = (await request.json() if request.content_type == "application/json"
                  else dict(await request.post()))
        channel = str(params.get("channel"))
        wait = self.take(channel)
        if wait > 0:
            self.limited += 1
            return web.json_response({"ok": False, "error": "ratelimited"}, status=429,
                                     headers={"Retry-After": f"{wait:.3f}"})
        self._ts += 1
        ts = f"1765000000.{self._ts:06d}"
        thread = params.get("thread_ts")
        self.accepted.append((time.monotonic(), channel, str(thread) if thread else None,
                              str(params.get("text", ""))))
        return web.json_response({"ok": True, "channel": channel, "ts": ts})


@dataclass(frozen=True)
class FanOut:
    """Outcome of one fan-out as the fake recorded it."""

    posts: int
    expected: int
    seconds: float
    steady_rate: float
    limited: int
    lost: int
    duplicated: int
    out_of_order: int
    failed_rows: int


async def fan_out(url: str, *, posts: int, rate: float, burst: int,
                  deadline_seconds: float) -> FanOut:
    """Queue POSTS posts for one channel and let the Slack worker send them."""
    fake = RateLimitedSlack(rate=rate, burst=burst)
    app = web.Application()
    app.router.add_route("*", "/api/{method}", fake.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    store = Store(url)
    client = AsyncWebClient(token=TOKEN, base_url=f"http://{host}:{port}/api/")
    tickets = posts // STEPS_PER_TICKET
    try:
        now = datetime.now(UTC)
        async with store.write() as tx:
            # Interleaved like a busy channel: step k of every ticket, then step k+1.
            for number in range(1, tickets + 1):
                await tx.set_slack_thread(number, CHANNEL, None)
                await tx.enqueue_slack(number, channel=CHANNEL, kind="root", payload={},
                                       now=now)
            for step in range(1, STEPS_PER_TICKET):
                for number in range(1, tickets + 1):
                    await tx.enqueue_slack(number, channel=CHANNEL, kind="change",
                                           payload={"actor": "bench",
                                                    "changes": [f"step {step}"]},
                                           now=now)
        worker = SlackOutboxWorker(store=store, poster=SlackPoster(client=client, store=store),
                                   retry_max_seconds=300.0)
        expected = tickets * STEPS_PER_TICKET
        task = asyncio.create_task(worker.run())
        started = time.monotonic()
        while len(fake.accepted) < expected and time.monotonic() - started < deadline_seconds:
            await asyncio.sleep(0.05)
        seconds = time.monotonic() - started
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        async with store.read() as tx:
            counts = await tx.outbox_counts()
    finally:
        await store.close()
        await runner.cleanup()
        if client.session is not None:
            await client.session.close()
    return check(fake, expected, seconds, failed_rows=counts.get("failed", 0))


def check(fake: RateLimitedSlack, expected: int, seconds: float, *,
          failed_rows: int) -> FanOut:
    """Match the accepted posts to tickets and steps: lost, repeated or out of order."""
    # The fake hands out ts in order of acceptance, so a root's ts is its position.
    ts_to_ticket: dict[str, int] = {}
    seen: dict[int, list[int]] = {}
    for position, (_, _, thread, text) in enumerate(fake.accepted, start=1):
        if thread is None:
            match = ROOT.search(text)
            if match:
                ts_to_ticket[f"1765000000.{position:06d}"] = int(match.group(1))
                seen.setdefault(int(match.group(1)), []).append(0)
            continue
        step = STEP.search(text)
        number = ts_to_ticket.get(thread)
        if step and number is not None:
            seen.setdefault(number, []).append(int(step.group(1)))
    wanted = list(range(STEPS_PER_TICKET))
    received = sum(len(v) for v in seen.values())
    duplicated = sum(len(v) - len(set(v)) for v in seen.values())
    out_of_order = sum(1 for v in seen.values() if v != sorted(v))
    lost = sum(len(set(wanted) - set(v)) for v in seen.values()) + \
        STEPS_PER_TICKET * (expected // STEPS_PER_TICKET - len(seen))
    after_burst = [moment for moment, *_ in fake.accepted][fake.burst:]
    steady = ((len(after_burst) - 1) / (after_burst[-1] - after_burst[0])
              if len(after_burst) > 1 and after_burst[-1] > after_burst[0] else float("nan"))
    return FanOut(posts=received, expected=expected, seconds=seconds, steady_rate=steady,
                  limited=fake.limited, lost=lost, duplicated=duplicated,
                  out_of_order=out_of_order, failed_rows=failed_rows)


def measure(ctx: Any, backend: str) -> dict[str, Any]:
    """Seed tickets on BACKEND, fan out the posts and return a report row."""
    scale = ctx.scale
    label = f"l7-{backend}"
    if backend == "sqlite":
        (ctx.workdir / label).mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{ctx.workdir / label / 'gateway.db'}"
    else:
        database = f"bench_{label}".replace("-", "_")
        url = asyncio.run(targets.create_postgres_database(database))
        ctx.databases.append(database)
    asyncio.run(targets.seed(url, tickets=scale.l7_posts // STEPS_PER_TICKET))
    # One INFO line per post and a warning per 429 go to the file, not the console.
    with targets.gateway_log_to(ctx.workdir / f"{label}.log"):
        result = asyncio.run(fan_out(url, posts=scale.l7_posts, rate=scale.l7_rate,
                                     burst=scale.l7_burst,
                                     deadline_seconds=scale.l7_posts / scale.l7_rate * 3 + 30))
    return {"backend": backend, "rate": scale.l7_rate, "burst": scale.l7_burst,
            **result.__dict__}

