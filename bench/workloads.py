"""The workloads L1 to L8: each drives servers on loopback and returns report rows."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import event

from adapters.mail import parse_mail
from bench import corpus, targets
from bench.load import LoadResult, median, percentile, run_load, stuff

HOST = "127.0.0.1"
MB = 1024 * 1024


@dataclass(frozen=True)
class Scale:
    """Counts for one benchmark size; every load also has a time limit."""

    name: str
    reps: int
    l1_warmup: int
    l1_per_rep: dict[int, int]
    l1_relaxed_per_rep: int
    l2_sizes: tuple[int, int]
    l2_warmup: int
    l2_per_rep: int
    l3_reps: int
    l4_small_per_rep: int
    l4_reps: int
    l5_requests: int
    l8_reps: int
    deadline_seconds: float
    # L6: builder counts compared, tickets stored, timed digest runs.
    l6_builders: tuple[int, int] = (100, 10_000)
    l6_tickets: int = 100_000
    l6_reps: int = 5
    # L7: posts to one channel; the fake's allowed rate per second and its burst.
    l7_posts: int = 1000
    l7_rate: float = 20.0
    l7_burst: int = 10


SCALES = {
    "small": Scale("small", reps=5, l1_warmup=10, l1_per_rep={1: 20, 8: 40, 32: 40},
                   l1_relaxed_per_rep=30, l2_sizes=(1000, 10_000), l2_warmup=5,
                   l2_per_rep=10, l3_reps=2, l4_small_per_rep=40, l4_reps=2,
                   l5_requests=5, l8_reps=2, deadline_seconds=60,
                   l6_builders=(100, 1000), l6_tickets=10_000, l6_reps=3, l7_posts=200),
    # NOTE: sized to stay under 15 minutes on 2 cores: L1 times 2,000 messages at
    # 8 sessions instead of 10,000, and L6 has 2 timed runs. The report notes both.
    "full": Scale("full", reps=5, l1_warmup=30, l1_per_rep={1: 60, 8: 400, 32: 120},
                  l1_relaxed_per_rep=100, l2_sizes=(1000, 100_000), l2_warmup=20,
                  l2_per_rep=40, l3_reps=5, l4_small_per_rep=80, l4_reps=5,
                  l5_requests=20, l8_reps=5, deadline_seconds=120, l6_reps=2),
}


@dataclass
class Context:
    """Shared state of one run: scale, scratch folder, databases and collected rows."""

    scale: Scale
    workdir: Path
    backends: list[str]
    peer_python: Path | None
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    servers: list[targets.Server] = field(default_factory=list)
    databases: list[str] = field(default_factory=list)
    settings: dict[str, str] = field(default_factory=dict)

    def add(self, workload: str, **row: Any) -> None:
        self.rows.setdefault(workload, []).append(row)

    def track(self, server: targets.Server) -> targets.Server:
        self.servers.append(server)
        return server

    def release(self, server: targets.Server) -> None:
        server.stop()
        if server in self.servers:
            self.servers.remove(server)


def summarize(results: Sequence[LoadResult]) -> dict[str, Any]:
    """Return median rate and pooled latency quantiles over repetitions."""
    latencies = [s.seconds for r in results for s in r.sent if s.code == 250]
    codes: dict[int, int] = {}
    for r in results:
        for code, count in r.codes().items():
            codes[code] = codes.get(code, 0) + count
    return {
        "rate": median([r.rate for r in results]),
        "rate_min": min((r.rate for r in results), default=float("nan")),
        "rate_max": max((r.rate for r in results), default=float("nan")),
        "p50": median(latencies),
        "p95": percentile(latencies, 0.95),
        "p99": percentile(latencies, 0.99),
        "messages": sum(len(r.sent) for r in results),
        "unsent": sum(r.unsent for r in results),
        "codes": codes,
    }


class Corpus:
    """Pre-built, dot-stuffed messages by index, shared by every target."""

    def __init__(self) -> None:
        self._small: dict[int, bytes] = {}
        self._large: dict[int, bytes] = {}

    def small(self, start: int, count: int) -> list[bytes]:
        for index in range(start, start + count):
            if index not in self._small:
                self._small[index] = stuff(corpus.new_ticket(index))
        return [self._small[i] for i in range(start, start + count)]

    def large(self, index: int) -> bytes:
        if index not in self._large:
            self._large[index] = stuff(corpus.large_update(index))
        return self._large[index]


CORPUS = Corpus()


def load(server: targets.Server, messages: Sequence[bytes], sessions: int,
         deadline_seconds: float) -> LoadResult:
    """Send MESSAGES to SERVER and wait for the result."""
    return asyncio.run(run_load(HOST, server.smtp_port, messages, sessions=sessions,
                                deadline_seconds=deadline_seconds))


def repeat_small(ctx: Context, server: targets.Server, sessions: int, per_rep: int,
                 *, start: int, reps: int | None = None) -> tuple[dict[str, Any], int]:
    """Warm up, then send REPS batches of new-ticket mail; return summary and next index."""
    scale = ctx.scale
    load(server, CORPUS.small(start, scale.l1_warmup), sessions, scale.deadline_seconds)
    start += scale.l1_warmup
    results = []
    # The server's CPU time over the timed batches, its outbox worker included,
    # gives the cost of one message, which a busy machine changes less than the rate.
    cpu_before = server.cpu_seconds()
    for _ in range(reps or scale.reps):
        results.append(load(server, CORPUS.small(start, per_rep), sessions,
                            scale.deadline_seconds))
        start += per_rep
    cpu_seconds = server.cpu_seconds() - cpu_before
    summary = summarize(results)
    summary["cpu_per_message"] = cpu_seconds / max(1, summary["messages"])
    return summary, start


# L1


def run_l1(ctx: Context) -> None:
    """New-ticket mail at 1, 8 and 32 sessions against sinks, parser, gateway and peer."""
    scale = ctx.scale
    sessions_list = sorted(scale.l1_per_rep)
    subjects: list[tuple[str, Callable[[], targets.Server], bool]] = [
        ("bare aiosmtpd sink", lambda: targets.start_sink("bare", ctx.workdir), False),
        ("sink + parsing", lambda: targets.start_sink("parse", ctx.workdir), False),
    ]
    for backend in ctx.backends:
        subjects.append((f"gateway, {backend}",
                         lambda b=backend: start_seeded(ctx, b, "l1", 0), False))
    for backend in ctx.backends:
        subjects.append((f"gateway, {backend}, durability relaxed (information only)",
                         lambda b=backend: start_seeded(ctx, b, "l1r", 0, relaxed=True),
                         True))
    for name, start_server, relaxed in subjects:
        server = ctx.track(start_server())
        try:
            index = 0
            for sessions in ([8] if relaxed else sessions_list):
                per_rep = scale.l1_relaxed_per_rep if relaxed else scale.l1_per_rep[sessions]
                summary, index = repeat_small(ctx, server, sessions, per_rep, start=index)
                ctx.add("L1", target=name, sessions=sessions, per_rep=per_rep, **summary)
        finally:
            ctx.release(server)

    run_parser_alone(ctx)
    run_peer(ctx)


def run_parser_alone(ctx: Context) -> None:
    """Time parse_mail in this process over the same messages as the 8-session run."""
    scale = ctx.scale
    per_rep = scale.l1_per_rep[8]
    raw = [corpus.new_ticket(i) for i in range(scale.l1_warmup + scale.reps * per_rep)]
    for message in raw[:scale.l1_warmup]:
        parse_mail(message)
    rates, seconds = [], []
    for rep in range(scale.reps):
        batch = raw[scale.l1_warmup + rep * per_rep:][:per_rep]
        started = time.perf_counter()
        for message in batch:
            one = time.perf_counter()
            parse_mail(message)
            seconds.append(time.perf_counter() - one)
        rates.append(len(batch) / (time.perf_counter() - started))
    ctx.add("L1", target="parser alone (one thread)", sessions=0, per_rep=per_rep,
            rate=median(rates), rate_min=min(rates), rate_max=max(rates),
            p50=median(seconds), p95=percentile(seconds, 0.95),
            p99=percentile(seconds, 0.99), messages=len(seconds), unsent=0, codes={})


def run_peer(ctx: Context) -> None:
    """Run django-helpdesk's email-to-ticket function on the same messages."""
    scale = ctx.scale
    if ctx.peer_python is None or not ctx.peer_python.exists():
        ctx.notes.append("Peer not run: bench/.peer-venv is missing; `make bench` creates it.")
        return
    per_rep = scale.l1_per_rep[8]
    corpus_dir = ctx.workdir / "peer-corpus"
    corpus_dir.mkdir(exist_ok=True)
    count = scale.l1_warmup + scale.reps * per_rep
    for index in range(count):
        (corpus_dir / f"{index:06d}.eml").write_bytes(corpus.new_ticket(index))
    finished = subprocess.run(
        [str(ctx.peer_python), str(targets.ROOT / "bench" / "peer_helpdesk.py"),
         str(corpus_dir), str(ctx.workdir / "peer-state"), str(scale.l1_warmup),
         str(scale.reps), str(per_rep)],
        capture_output=True, timeout=max(120.0, scale.deadline_seconds * scale.reps),
    )
    if finished.returncode != 0:
        ctx.notes.append("Peer run failed: "
                         + finished.stderr.decode(errors="replace")[-500:])
        return
    output = json.loads(finished.stdout)
    rates = [len(r["seconds"]) / r["wall_seconds"] for r in output["repetitions"]]
    seconds = [s for r in output["repetitions"] for s in r["seconds"]]
    ctx.settings["peer"] = (f"django-helpdesk {output['helpdesk']} on Django "
                            f"{output['django']}, SQLite {output['sqlite']}")
    ctx.add("L1", target="peer: django-helpdesk extract_email_metadata (one thread)",
            sessions=0, per_rep=per_rep, rate=median(rates), rate_min=min(rates),
            rate_max=max(rates), p50=median(seconds), p95=percentile(seconds, 0.95),
            p99=percentile(seconds, 0.99), messages=len(seconds), unsent=0, codes={})


# Gateway instances


def start_seeded(ctx: Context, backend: str, name: str, tickets: int, *,
                 relaxed: bool = False) -> targets.Server:
    """Create a database for BACKEND, seed it and start a gateway on it."""
    label = f"{name}-{backend}-{tickets}"
    if backend == "sqlite":
        url = f"sqlite:///{ctx.workdir / label / 'gateway.db'}"
        (ctx.workdir / label).mkdir(parents=True, exist_ok=True)
    else:
        database = f"bench_{label}".replace("-", "_")
        url = asyncio.run(targets.create_postgres_database(database))
        ctx.databases.append(database)
    seeded = asyncio.run(targets.seed(url, tickets=tickets))
    key = f"{backend}{' relaxed' if relaxed else ''}"
    server = targets.start_gateway(ctx.workdir, label, url, relaxed=relaxed)
    if key not in ctx.settings:
        # Read from a connection set up as the gateway's own, relaxed hooks included.
        ctx.settings[key] = asyncio.run(targets.database_settings(url, relaxed=relaxed))
    server.seeded = seeded  # type: ignore[attr-defined]
    return server


# L2 and L5 share one seeded gateway per size


def run_l2_l5(ctx: Context) -> None:
    """Replies (L2) and list pages (L5) with the small and the large seeded store.

    Both stores of a backend are served at once and measured in turns, one batch
    or one request each, so a slow spell of this shared machine slows both sizes
    alike and the ratio between them stays meaningful.
    """
    for backend in ctx.backends:
        servers: dict[int, targets.Server] = {}
        try:
            for size in ctx.scale.l2_sizes:
                started = time.perf_counter()
                servers[size] = ctx.track(start_seeded(ctx, backend, "l2", size))
                ctx.notes.append(f"Seeding {size:,} tickets on {backend} and starting "
                                 f"the gateway took {time.perf_counter() - started:.1f} s.")
            run_l2(ctx, servers, backend)
            run_l5(ctx, servers, backend)
        finally:
            for server in servers.values():
                ctx.release(server)


def run_l2(ctx: Context, servers: dict[int, targets.Server], backend: str) -> None:
    scale = ctx.scale
    batches: dict[int, list[list[bytes]]] = {}
    for size, server in servers.items():
        replyable = server.seeded.reply_targets  # type: ignore[attr-defined]
        picker = random.Random(size)
        count = scale.l2_warmup + scale.reps * scale.l2_per_rep
        chosen = picker.sample(replyable, min(count, len(replyable)))
        messages = [
            stuff(corpus.reply(index, number, sender, message_id))
            for index, (number, sender, message_id) in enumerate(chosen)
        ]
        load(server, messages[:scale.l2_warmup], 1, scale.deadline_seconds)
        batches[size] = [
            messages[scale.l2_warmup + rep * scale.l2_per_rep:][:scale.l2_per_rep]
            for rep in range(scale.reps)
        ]
    results: dict[int, list[LoadResult]] = {size: [] for size in servers}
    for rep in range(scale.reps):
        for size, server in servers.items():
            results[size].append(load(server, batches[size][rep], 1, scale.deadline_seconds))
    for size in servers:
        ctx.add("L2", backend=backend, tickets=size, per_rep=scale.l2_per_rep,
                **summarize(results[size]))


# L5 requests: (key, label, path). The deep page's path is made per store size
# by deep_page_paths, because its cursor names a row of that store.
L5_FIXED = (
    ("status-first", "status page, first page", "/"),
    ("api-first", "API, first page", "/api/tickets"),
    ("api-status", "API, filter status=waiting_on_builder",
     "/api/tickets?status=waiting_on_builder"),
    ("status-category", "status page, filter category=billing", "/?category=billing"),
)
L5_DEEP_PAGE = 500
L5_PER_PAGE = 50


def deep_page_number(size: int) -> int:
    """Return page 500, or the last page when a store of SIZE tickets has fewer."""
    return min(L5_DEEP_PAGE, -(-size // L5_PER_PAGE))


def deep_page_paths(server: targets.Server, size: int) -> list[tuple[str, str, str]]:
    """Return the deep page's requests with the cursor a user holds on reaching it.

    The cursor is the "next" cursor of the page before, read once by page
    number (OFFSET) outside the timing, as if the user had clicked Older that
    many times.
    """
    number = deep_page_number(size)
    page = f"page {number}" if number == L5_DEEP_PAGE else f"page {number} (the last)"

    async def boundary() -> str:
        url = f"http://{HOST}:{server.web_port}/api/tickets?page={number - 1}"
        async with aiohttp.ClientSession() as client, client.get(url) as response:
            response.raise_for_status()
            listing = await response.json()
        if not listing.get("next"):
            raise RuntimeError(f"GET {url} returned no next cursor")
        return str(listing["next"])

    cursor = asyncio.run(boundary())
    return [
        ("status-deep", f"status page, {page} by cursor", f"/?cursor={cursor}"),
        ("api-deep", f"API, {page} by cursor", f"/api/tickets?cursor={cursor}"),
    ]


async def vacuum_postgres(url: str) -> None:
    """Run VACUUM ANALYZE, so the tickets table is as autovacuum keeps it in service.

    Right after the bulk seed no page of the table is marked all-visible, so
    PostgreSQL cannot count from an index alone and reads the table's pages.
    On a live desk autovacuum marks them after enough inserts (PostgreSQL 13
    and later), at a moment the benchmark cannot predict, so it runs here.
    """
    import asyncpg

    connection = await asyncpg.connect(url)
    try:
        await connection.execute("VACUUM (ANALYZE) tickets")
    finally:
        await connection.close()


def run_l5(ctx: Context, servers: dict[int, targets.Server], backend: str) -> None:
    scale = ctx.scale
    requests: dict[int, list[tuple[str, str, str]]] = {}
    counts: dict[int, dict[str, int | None]] = {}
    for size, server in servers.items():
        assert server.web_port is not None
        if backend == "postgresql":
            asyncio.run(vacuum_postgres(server.database_url or ""))
        fixed = list(L5_FIXED)
        requests[size] = [*fixed[:2], *deep_page_paths(server, size), *fixed[2:]]
        counts[size] = count_queries(server.database_url or "",
                                     [path for _, _, path in requests[size]])

    async def get(client: aiohttp.ClientSession, server: targets.Server, path: str) -> float:
        started = time.perf_counter()
        async with client.get(f"http://{HOST}:{server.web_port}{path}") as response:
            await response.read()
            if response.status != 200:
                raise RuntimeError(f"GET {path} returned {response.status}")
        return time.perf_counter() - started

    async def measure() -> dict[tuple[int, str], list[float]]:
        timings: dict[tuple[int, str], list[float]] = {}
        timeout = aiohttp.ClientTimeout(total=scale.deadline_seconds)
        async with aiohttp.ClientSession(timeout=timeout) as client:
            # Requests of the same kind at both sizes alternate.
            for index in range(len(L5_FIXED) + 2):
                for size, server in servers.items():
                    for _ in range(3):
                        await get(client, server, requests[size][index][2])
                for _ in range(scale.reps * scale.l5_requests):
                    for size, server in servers.items():
                        key = requests[size][index][0]
                        elapsed = await get(client, server, requests[size][index][2])
                        timings.setdefault((size, key), []).append(elapsed)
        return timings

    timings = asyncio.run(measure())
    for size in servers:
        for key, label, path in requests[size]:
            values = timings[(size, key)]
            ctx.add("L5", backend=backend, tickets=size, key=key, request=label, path=path,
                    page=deep_page_number(size) if key.endswith("-deep") else None,
                    requests=len(values), p50=median(values),
                    p95=percentile(values, 0.95), p99=percentile(values, 0.99),
                    queries=counts[size].get(path))


def count_queries(url: str, paths: Sequence[str]) -> dict[str, int | None]:
    """Return the SQL statements each PATH runs, counted on an in-process web app."""
    from aiohttp.test_utils import TestClient, TestServer

    from gateway.web import make_web_app
    from store import Store

    async def work() -> dict[str, int | None]:
        store = Store(url)
        statements = 0

        def count(*_args: Any) -> None:
            nonlocal statements
            statements += 1

        event.listen(store._engine.sync_engine, "before_cursor_execute", count)  # noqa: SLF001
        try:
            app = make_web_app(store, access_token=None)
        except TypeError as exc:
            await store.close()
            log_note = f"query count skipped: make_web_app needs other arguments ({exc})"
            return {path: None for path in paths} | {"_note": log_note}  # type: ignore[dict-item]
        found: dict[str, int | None] = {}
        async with TestClient(TestServer(app, host=HOST)) as client:
            for path in paths:
                await (await client.get(path)).read()
                statements = 0
                response = await client.get(path)
                await response.read()
                found[path] = statements if response.status == 200 else None
        await store.close()
        return found

    found = asyncio.run(work())
    note = found.pop("_note", None)
    if note:
        print(note)
    return found


# L3 and L4


def run_l3_l4(ctx: Context) -> None:
    """The largest update against the bare sink and the gateway, alone and under load."""
    scale = ctx.scale
    size = len(CORPUS.large(0))
    sink = ctx.track(targets.start_sink("bare", ctx.workdir))
    try:
        results = [load(sink, [CORPUS.large(i)], 1, scale.deadline_seconds)
                   for i in range(scale.l3_reps + 1)][1:]
        ctx.add("L3", target="bare aiosmtpd sink", size=size,
                **summarize(results), growth=None, concurrent_peak=None)
    finally:
        ctx.release(sink)

    for backend in ctx.backends:
        server = ctx.track(start_seeded(ctx, backend, "l3", 1000))
        try:
            run_l3_gateway(ctx, server, backend, size)
            run_l4(ctx, server, backend)
        finally:
            ctx.release(server)


def run_l3_gateway(ctx: Context, server: targets.Server, backend: str, size: int) -> None:
    scale = ctx.scale
    index = 100
    load(server, [CORPUS.large(index)], 1, scale.deadline_seconds)
    index += 1
    results, growth = [], []
    for _ in range(scale.l3_reps):
        before = server.rss_bytes()
        server.reset_peak_rss()
        results.append(load(server, [CORPUS.large(index)], 1, scale.deadline_seconds))
        growth.append(server.peak_rss_bytes() - before)
        index += 1
    server.reset_peak_rss()
    together = [CORPUS.large(index + i) for i in range(4)]
    concurrent = load(server, together, 4, scale.deadline_seconds * 2)
    ctx.add("L3", target=f"gateway, {backend}", size=size, **summarize(results),
            growth=max(growth), concurrent_peak=server.peak_rss_bytes(),
            concurrent_codes=concurrent.codes(),
            concurrent_p99=percentile([s.seconds for s in concurrent.sent], 0.99))


def run_l4(ctx: Context, server: targets.Server, backend: str) -> None:
    scale = ctx.scale
    index = 100_000
    alone_results, loaded_results = [], []
    load(server, CORPUS.small(index, scale.l1_warmup), 8, scale.deadline_seconds)
    index += scale.l1_warmup
    large_index = 1000
    for _ in range(scale.l4_reps):
        alone_results.append(load(server, CORPUS.small(index, scale.l4_small_per_rep), 8,
                                  scale.deadline_seconds))
        index += scale.l4_small_per_rep
        small = CORPUS.small(index, scale.l4_small_per_rep)
        large = [CORPUS.large(large_index + i) for i in range(4)]
        index += scale.l4_small_per_rep
        large_index += 4

        async def both() -> tuple[LoadResult, LoadResult]:
            heavy = asyncio.create_task(run_load(
                HOST, server.smtp_port, large, sessions=4,
                deadline_seconds=scale.deadline_seconds * 2))
            await asyncio.sleep(0.2)
            light = await run_load(HOST, server.smtp_port, small, sessions=8,
                                   deadline_seconds=scale.deadline_seconds)
            return light, await heavy

        light, _ = asyncio.run(both())
        loaded_results.append(light)
    ctx.add("L4", backend=backend, per_rep=scale.l4_small_per_rep,
            alone=summarize(alone_results), loaded=summarize(loaded_results))


# L6 and L7


def run_l6_l7(ctx: Context) -> None:
    """Digests over few and many builders (L6), then Slack fan-out to one channel (L7)."""
    from bench import digest_load, slack_load

    scale = ctx.scale
    for backend in ctx.backends:
        for builders in scale.l6_builders:
            ctx.add("L6", **digest_load.measure(ctx, backend, builders, scale.l6_tickets))
    for backend in ctx.backends:
        ctx.add("L7", **slack_load.measure(ctx, backend))


# L8


def run_l8(ctx: Context) -> None:
    """Send hostile messages to a gateway on each backend; record CPU time and peak memory."""
    for backend in ctx.backends:
        server = ctx.track(start_seeded(ctx, backend, "l8", 1000))
        try:
            for label, build in corpus.HOSTILE.items():
                run_l8_input(ctx, server, backend, label, build)
        finally:
            ctx.release(server)


def run_l8_input(ctx: Context, server: targets.Server, backend: str, label: str,
                 build: Callable[[str], bytes]) -> None:
    scale = ctx.scale
    load(server, [stuff(build("warm"))], 1, scale.deadline_seconds)
    cpu, memory, codes, walls = [], [], [], []
    for rep in range(scale.l8_reps):
        data = stuff(build(str(rep)))
        time.sleep(0.3)
        before_rss = server.rss_bytes()
        before_cpu = server.cpu_seconds()
        server.reset_peak_rss()
        result = load(server, [data], 1, scale.deadline_seconds)
        cpu.append(server.cpu_seconds() - before_cpu)
        memory.append(server.peak_rss_bytes() - before_rss)
        codes.extend(s.code for s in result.sent)
        walls.extend(s.seconds for s in result.sent)
    ctx.add("L8", backend=backend, input=label, size=len(data),
            cpu_max=max(cpu), cpu_median=median(cpu), memory_max=max(memory),
            wall_max=max(walls), codes=sorted(set(codes)))


WORKLOADS: dict[str, Callable[[Context], None]] = {
    "L1": run_l1,
    "L2": run_l2_l5,
    "L3": run_l3_l4,
    "L6": run_l6_l7,
    "L8": run_l8,
}
