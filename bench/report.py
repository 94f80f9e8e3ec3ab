"""Write docs/benchmarks.md from the rows the workloads collected."""

from __future__ import annotations

import math
import os
import platform
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import psutil

from bench.load import median
from bench.workloads import Context, deep_page_number

LIBRARIES = ("aiosmtpd", "aiohttp", "sqlalchemy", "aiosqlite", "asyncpg", "mail-parser",
             "jinja2", "slack-sdk", "psutil", "pytest-benchmark", "py-spy")
MB = 1024 * 1024

# Written from the L1 profile, the CPU column of the L1 table and runs of the L1
# load before and after each change, taken in turns on the machine this report
# describes.
L1_EXPLANATION = (
    "Why the sink target of L1 is missed: the gateway is bound mostly by CPU, not"
    " by commits. Relaxing durability raises the rate by less than a fifth (the "
    "information-only rows). Each new ticket costs the gateway process far more "
    "CPU than the sink (the CPU column above: parsing, the ticket transaction, "
    "composing the acknowledgement and delivering it to the Maildir). Profiles of"
    " the event-loop thread (py-spy, SQLite, 8 sessions) led to three changes. "
    "First, the intake runs 14 SQL statements instead of 23. Second, composing "
    "the acknowledgement with the standard email package took about a third of "
    "the loop's CPU. A reply without attachments is now written directly, byte "
    "for byte what the email package writes (a test compares both), in 0.24 ms "
    "instead of 1.6 ms. Third, most of the rest was passing statements to the "
    "aiosqlite thread and back. That took four trips per statement (cursor, "
    "execute, fetch, close), some fifty per new ticket, and each trip cost the "
    "loop more than the indexed statement itself. The short write transactions of"
    " the intake and of the outbox's delivery record now run their statements on "
    "the event loop. Statements with large values stay on the connection's "
    "thread. Outside the full runs, the L1 load of bench/workloads.py (1,500 "
    "messages after 300 warm-up) ran twice before and twice after the last two "
    "changes, in turns. SQLite at 8 sessions: 67.4 and 62.5/s before, 112.5 and "
    "97.7/s after, with 14.5 and 15.6 ms of gateway CPU per message before and "
    "9.2 and 10.6 ms after. PostgreSQL at 8 sessions: 77.3 and 66.4/s before, "
    "92.4 and 80.2/s after. SQLite at 1 session: 56.8 and 49.7/s before, 84.9 and"
    " 84.0/s after. BEGIN followed, and the rollback with which the pool takes "
    "back each connection. BEGIN IMMEDIATE now runs on the loop unless another "
    "connection holds the write lock, which it tries without waiting. A shorter "
    "probe (1,200 messages at 8 sessions and 300 at 1, after 200 warm-up) ran in "
    "2 pairs of runs in turns. SQLite at 8 sessions went from 100.1 and 108.0/s "
    "to 111.7 and 116.9/s, and its gateway CPU per message from 10.1 and 9.4 ms "
    "to 9.2 and 8.6 ms. At 1 session on a new gateway, as this report measures "
    "it, 2 pairs gave 80.4 and 79.6/s before and 82.3 and 85.7/s after. COMMIT "
    "stays on the connection's thread, because it waits for the disk. Running it "
    "on the loop too gave 120.7 and 119.2/s at 8 sessions against 101.0 and "
    "98.9/s. But at 1 session on a new gateway it gave 75.8, 75.9 and 71.9/s "
    "against 82.0, 83.2 and 81.6/s, and every session would wait while the disk "
    "is slow. What the profile shows now is SQLAlchemy (building and caching "
    "statements, flushing the four new rows), parsing and the SMTP conversation. "
    "At 1 and 8 sessions the gateway has spent more CPU per message on PostgreSQL"
    " than on SQLite in the recent full runs (the CPU column). A profile at 1 "
    "session put about half of its GIL samples in SQLAlchemy's statement handling"
    " over asyncpg. The outbox worker took 13%, because its claim and its "
    "delivery record are two more transactions per acknowledgement. A count of "
    "the driver's calls at 1 session found about 33 round trips to the server per"
    " message: 17 statements, and 3.1 transactions, each with BEGIN, its COMMIT "
    "and the pool's pre-ping (BEGIN, an empty query and ROLLBACK). Turning off "
    "the pre-ping moved the rate less than the spread between runs. There were 2 "
    "pairs of probe runs in turns, each of 3 batches of 300 messages. Without the"
    " pre-ping they gave 55.5, 53.9 and 53.9/s and 57.6, 53.9 and 52.8/s. With it"
    " they gave 54.5, 56.2 and 51.9/s and 52.0, 55.0 and 46.0/s. A later profile "
    "of the GIL samples at 1 session put 44% of the leaf frames in SQLAlchemy, "
    "13% in asyncio and 7% in asyncpg, with no single function above a few "
    "percent. Reaching the peer's rate on PostgreSQL would need a quarter to two "
    "fifths less CPU per message in the recent full runs, spread over all of that"
    " path. So on this design the one-session rate on PostgreSQL stays below the "
    "peer's. On SQLite it is about the peer's, and the verdict changes between "
    "runs. Ten earlier full runs on these machines met it three times. The first "
    "five gave 85.9/s against the peer's 80.7/s (met), 81.5/s against 96.8/s "
    "(missed), 68.2/s against 84.9/s (missed), 77.2/s against 71.6/s (met) and "
    "81.4/s against 97.4/s (missed). The other five gave 82.5/s against 83.4/s "
    "(missed), 77.3/s against 82.3/s (missed), 83.0/s against 86.0/s (missed), "
    "with COMMIT on the loop 74.2/s against 84.7/s (missed), and 91.0/s against "
    "88.1/s (met). Across those runs the peer's own rate moved by more than a "
    "third. Parsing small messages on the event loop instead of on a thread added"
    " about 5% to the one-session rate on average in 5 pairs of runs in turns, "
    "less than the spread between runs. But a 60 KB message with many long header"
    " parameters takes over a second to parse, so every message is still parsed "
    "on a thread. Writing the four new rows of a ticket with Core statements "
    "instead of the ORM's flush made no difference that runs in turns could show,"
    " so that change was not kept. Nor were two changes to the outbox worker, "
    "because in 2 pairs of probe runs in turns each lowered the rate at 8 "
    "sessions. Recording a batch's delivery attempts in one transaction gave 95.5"
    " and 95.0/s against 101.7 and 101.6/s. Recording them with the next claim "
    "gave 91.7 and 91.0/s against 102.2 and 105.2/s, and raised the CPU per "
    "message at 1 session from 12.6 and 12.1 ms to 13.8 and 14.1 ms. The rates in"
    " the table above come from the run that wrote this report and vary by a "
    "third between runs on this shared machine (see the peer's rates in the runs "
    "listed above). Reaching 0.3 of the sink would need about 1.1 to 1.3 ms per "
    "message for everything on two cores (the sink's rate varies between runs), "
    "less than parsing plus one durable commit take. So that target cannot be met"
    " by a gateway that stores, threads and acknowledges every message in Python."
    " The peer's rate is django-helpdesk's extract function alone in one thread. "
    "It stores the ticket but sends no acknowledgement, keeps no raw message and "
    "speaks no SMTP, while the gateway's one-session rate includes the SMTP "
    "conversation and the acknowledgement's delivery."
)

# Written from py-spy profiles of L4, from timing each SQLite write
# transaction's wait for and hold of the writer's turn under this workload, and
# from probe runs of the L4 load in turns on the machine this report describes.
L4_EXPLANATION = (
    "Profile of L4 on its own before the changes (py-spy `--gil`, 25 s, SQLite, "
    "small scale): about 90% of the samples held the GIL. The event loop had 64% "
    "of them, nearly all in aiosmtpd's line-by-line DATA loop for the 4 large "
    "messages, and the 4 parser threads 31% (FeedParser). The SQLite thread was "
    "idle 97% of the time: the small messages waited for the GIL at each step "
    "between the event loop, the parser threads and the database thread, and then"
    " for each other's write transactions. After the L3 changes, the large "
    "messages' files are written first, each in a short transaction of its own "
    "(only for a known builder's accepted files), and on SQLite waiting small "
    "write transactions go before the large ones (store/writer_queue.py). A later"
    " measurement on SQLite timed how long each write transaction waited for and "
    "held the writer's turn. Each large message's own transaction (34 MB of raw "
    "bytes and its commit) held the turn for 131 to 268 ms, once SQLite's WAL "
    "checkpoint ran after the turn (store/checkpoint.py). Three changes followed."
    " First, the raw bytes of a message of 1 MiB or more are written in slices of"
    " 2 MiB before the message's own transaction, each slice in a write "
    "transaction of its own (`stage_raw` in store/store.py). Under this load a "
    "slice keeps the writer for 40 to 60 ms. Second, the same timing showed small"
    " transactions that held the turn for 20 to 240 ms while their own work took "
    "about 2 ms, because the event loop ran other work, such as receiving the "
    "large messages, inside the turn. AsyncSession closed the session in a task "
    "of its own inside the turn, and it now closes after the turn ends. The "
    "outbox worker's claim sent each statement to the connection's thread and "
    "back, and the loop ran other work in between. The claim now runs its "
    "statements on the event loop like the other short transactions. Rows whose "
    "payloads add up to more than 64 KiB (files of support replies) are still "
    "claimed and fetched on the connection's thread, because SQLite rewrites a "
    "whole row when the claim sets its columns. In 2 pairs of runs in turns, the "
    "short claim took the p99 under load from 511 and 518 ms to 452 and 433 ms. "
    "Third, the steps that took 20 to 40 ms of the event loop for each large "
    "message now run on threads. They join the received text (`bytes.join` "
    "releases the GIL for large joins), check the message's limits and check its "
    "files. The message's transaction no longer checks the files a second time. A"
    " separate probe of this workload, outside this report's run, was run in "
    "turns on this machine with 3 or 4 repetitions per run. 2 runs of the code "
    "before these changes gave ratios of 5.8 and 4.3 on SQLite, and 5 runs after "
    "gave 2.9 to 3.6. In those probe runs the median time to 250 of one maximum "
    "update alone fell from about 950 ms to 640 to 790 ms. Later runs of the same"
    " code, while the machine was busier, gave 3.4 to 5.4, so the ratio of a "
    "single run varies about as much as these changes moved it. A py-spy profile "
    "after the changes puts the rest in two places. Receiving the 4 large "
    "messages took about half of the event loop's busy samples (`readuntil`, "
    "`readexactly` and the search for dot-stuffed lines). The parser threads "
    "share the GIL with it. Each small message needs about a dozen turns of the "
    "event loop (its SMTP replies, its parse on a thread, its write), and each "
    "turn waits behind that work. Later probes of the same load on SQLite (3 "
    "repetitions per run) measured where the small messages wait. While they were"
    " sent, the machine was busy on 1.15 to 1.17 of its 2 cores and the gateway's"
    " busiest thread on 0.6 to 0.7 of a core, so neither the cores nor the event "
    "loop were saturated. A timeline of each small message showed that the 15 "
    "slowest waited 210 to 360 ms for the writer's turn. The slowest waited "
    "behind 9 other write transactions that each held the turn for 28 to 80 ms, "
    "where the median hold was 7.5 ms. In the longest turns BEGIN took up to 22 "
    "ms and COMMIT up to 53 ms, both on the connection's thread, while the "
    "statements between them took about 8 ms on the loop. Each trip to the thread"
    " and back waits for the GIL and for the loop. Several changes left the ratio"
    " within the spread of the unchanged gateway's runs on the same day, 3.5 to "
    "5.6. With the database folder on tmpfs, so without any disk wait, it was 5.0"
    " and 5.3, and with durability relaxed 4.2 and 5.2. A GIL switch interval of "
    "0.2 to 1 ms instead of 5 ms gave 2.6 to 5.8, and a pause of 3 ms between the"
    " pieces of base64 the parser decodes gave 3.7 and 5.4. Parsing the large "
    "messages in a separate process made it worse (4.8 and 6.4), because their "
    "decoded files, 25 MB each, come back through a pipe. Running BEGIN of short "
    "transactions on the loop (see What limits L1) was measured in 2 pairs of "
    "runs in turns. It gave a p99 under load of 321 and 248 ms against 333 and "
    "352 ms, and ratios of 3.8 and 3.1 against 3.8 and 3.7. Running COMMIT there "
    "too gave 224 to 324 ms in 4 runs (ratios 2.4 to 3.4), but was not kept, for "
    "the reasons given there. On PostgreSQL the p99 of the small messages alone "
    "varies between full runs on these machines, from 245 to 451 ms so far. A "
    "py-spy profile of this workload on PostgreSQL (19 s, 3 repetitions, GIL "
    "samples) found the GIL held in 43% of the samples, so there the small "
    "messages do not mainly wait for the GIL. Of those samples, about a third "
    "were SQLAlchemy and asyncpg statement handling (mostly the small messages' "
    "tickets and acknowledgements), a third parsing on threads, and 13% receiving"
    " the large messages. During the workload the gateway used 12.0 s of CPU and "
    "the PostgreSQL server 4.3 s, which with the load generator share 2 cores. A "
    "small commit took 0.5 ms at the median alone, and 2.9 ms (p99 7 ms) while "
    "another connection committed 2 MiB values one after another. So waiting for "
    "the server's log flush explains only a few milliseconds of the gap. What is "
    "left is CPU: the gateway, the database server and the load generator on 2 "
    "cores. So on this design, with everything on 2 cores, the target is missed "
    "on both databases. On SQLite the small messages queue for the single writer,"
    " and under this load each turn ahead of them takes longer. Parsing in a "
    "separate process did not help. Receiving and storing the large messages in a"
    " process of their own as well might, with the writer's turn then shared "
    "between processes. The gateway does not do that."
)


def machine() -> list[str]:
    """Return lines that describe this machine, Python and the libraries."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    libraries = []
    for name in LIBRARIES:
        try:
            libraries.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            libraries.append(f"{name} (not installed)")
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return [
        f"- Machine: {cpu}, {psutil.cpu_count()} logical cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB memory, "
        f"{platform.system()} {platform.release()}",
        f"- Load average when the report was written: {load}",
        f"- Python {platform.python_version()} ({platform.python_implementation()})",
        f"- Libraries: {', '.join(libraries)}",
    ]


def ms(seconds: float | None) -> str:
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "-"
    return f"{seconds * 1000:.1f} ms"


def rate(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.1f}/s"


def ratio(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.2f}"


def verdict(ok: bool | None) -> str:
    if ok is None:
        return "n/a"
    return "met" if ok else "**missed**"


def write(ctx: Context, path: Path, *, command: str, started: datetime,
          micro: list[dict[str, Any]], profile: list[str]) -> None:
    """Write the whole report to PATH."""
    finished = datetime.now(UTC)
    scale = ctx.scale
    lines = [
        "# Benchmarks",
        "",
        "Written by `bench/run.py`; do not edit by hand. Rerun with `make bench` "
        "(full counts) or `make bench BENCH_SCALE=small` (a quick check of the harness).",
        "",
        f"- Command: `{command}`",
        f"- Scale: **{scale.name}**, {scale.reps} timed repetitions after a warm-up "
        "for every figure unless the notes at the end say otherwise",
        f"- Run: {started:%Y-%m-%d %H:%M} to {finished:%H:%M} UTC "
        f"({(finished - started).total_seconds() / 60:.1f} min)",
        *machine(),
        "- Databases: " + "; ".join(f"{k}: {v}" for k, v in ctx.settings.items()),
        "- Every server listens on 127.0.0.1 at a free port; the load generator "
        "(`bench/load.py`) runs in the harness process, each server in its own process.",
        "",
    ]
    if scale.name != "full":
        lines += ["> **Small scale**: counts are far below the full run's; use these "
                  "numbers to check the harness, not the gateway.", ""]
    summary, details = summarize(ctx)
    lines += ["## Targets", "", "| id | workload | target | measured | verdict |",
              "| --- | --- | --- | --- | --- |", *summary, ""]
    lines += details
    if profile:
        lines += ["## Profile of the gateway under L1 (8 sessions)", "",
                  *profile, ""]
    if ctx.rows.get("L1"):
        lines += ["## What limits L1", "", L1_EXPLANATION, ""]
    if micro:
        lines += ["## Micro benchmarks (pytest-benchmark)", "",
                  "| case | median | min | max | rounds |", "| --- | --- | --- | --- | --- |"]
        for bench in micro:
            stats = bench["stats"]
            lines.append(f"| {bench['name']} | {ms(stats['median'])} | {ms(stats['min'])} "
                         f"| {ms(stats['max'])} | {stats['rounds']} |")
        lines.append("")
    ctx.notes += _repetition_notes(ctx)
    if ctx.notes:
        lines += ["## Notes", "", *(f"- {note}" for note in ctx.notes), ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def _repetition_notes(ctx: Context) -> list[str]:
    """Return notes on the counts that differ from 5 timed repetitions after a warm-up."""
    scale = ctx.scale
    full = scale.name == "full"
    notes = []
    if ctx.rows.get("L1"):
        timed = scale.reps * scale.l1_per_rep[8]
        if timed < 10_000:
            reason = ("so that the whole run stays under 15 minutes on 2 cores. At the "
                      "gateway's rate 10,000 would take about 100 s more per database and "
                      "durability setting" if full else "at this scale")
            notes.append(f"L1 times {timed:,} messages at 8 sessions per target instead of "
                         f"10,000, in {scale.reps} repetitions, {reason}.")
        notes.append(f"The durability-relaxed L1 rows, information only, time "
                     f"{scale.reps} × {scale.l1_relaxed_per_rep} messages at 8 sessions.")
    reasons = {
        "L3": "each repetition sends a 33 MiB message",
        "L4": "each repetition sends 4 maximum updates, 130 MiB in all",
        "L6": "each run at the larger size is followed by an outbox drain of every "
              "digest, about 40 s at 10,000 builders",
        "L8": "each input is sent to a gateway on each database",
    }
    counts = {"L3": scale.l3_reps, "L4": scale.l4_reps, "L6": scale.l6_reps,
              "L8": scale.l8_reps}
    for name, reps in counts.items():
        if reps < 5 and ctx.rows.get(name):
            reason = f"to fit the run's time limit ({reasons[name]})" if full else "at this scale"
            notes.append(f"{name} has {reps} timed repetitions instead of 5, {reason}.")
    if ctx.rows.get("L6"):
        notes.append("L6 has no warm-up run at the larger builder count: one run there "
                     "takes long enough on its own.")
    if ctx.rows.get("L7"):
        notes.append(f"L7 is one run of {scale.l7_posts:,} posts per database: its rate is "
                     "measured over the whole run.")
    return notes


def _reply_codes(codes: Any) -> str:
    """Return a count of replies by code as "count×code" text."""
    counted = codes or {}
    return ", ".join(f"{count}×{code}" for code, count in sorted(counted.items())) or "-"


def summarize(ctx: Context) -> tuple[list[str], list[str]]:
    """Return the target table's rows and the detail sections."""
    summary: list[str] = []
    details: list[str] = []
    for writer in (_l1, _l2, _l3, _l4, _l5, _l6_l7, _l8):
        rows, text = writer(ctx)
        summary += rows
        details += text
    return summary, details


def _find(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    for row in rows:
        if all(row.get(k) == v for k, v in match.items()):
            return row
    return None


def _l1(ctx: Context) -> tuple[list[str], list[str]]:
    rows = ctx.rows.get("L1", [])
    if not rows:
        return ["| L1 | new-ticket mail | - | not run | - |"], []
    per_rep = ctx.scale.l1_per_rep
    timed_at_8 = ctx.scale.reps * per_rep[8]
    scaled = (f"{ctx.scale.reps} × {per_rep[8]} messages at 8 sessions "
              f"({timed_at_8:,} timed instead of 10,000), "
              f"{ctx.scale.reps} × {per_rep[1]} at 1 and {ctx.scale.reps} × {per_rep[32]} "
              "at 32 sessions")
    text = ["## L1: new-ticket mail, 2 KB", "", f"Counts: {scaled}.", "",
            "| target | sessions | msgs/s (median) | min-max | p50 | p95 | p99 | "
            "server CPU per message | replies |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        sessions = row["sessions"] or "-"
        cpu = ms(row["cpu_per_message"]) if "cpu_per_message" in row else "-"
        text.append(f"| {row['target']} | {sessions} | {rate(row['rate'])} | "
                    f"{rate(row['rate_min'])}-{rate(row['rate_max'])} | {ms(row['p50'])} | "
                    f"{ms(row['p95'])} | {ms(row['p99'])} | {cpu} | {_codes(row)} |")
    text.append("")
    bare = _find(rows, target="bare aiosmtpd sink", sessions=8)
    peer = next((r for r in rows if r["target"].startswith("peer")), None)
    summary = []
    for backend in ctx.backends:
        gateway8 = _find(rows, target=f"gateway, {backend}", sessions=8)
        gateway1 = _find(rows, target=f"gateway, {backend}", sessions=1)
        if gateway8 and bare:
            share = gateway8["rate"] / bare["rate"]
            summary.append(
                f"| L1 | new tickets, {backend}, 8 sessions, {timed_at_8:,} timed messages | "
                "≥ 0.3 × bare sink | "
                f"{rate(gateway8['rate'])} vs {rate(bare['rate'])}: {ratio(share)} | "
                f"{verdict(share >= 0.3)} |")
        if gateway1 and peer:
            share = gateway1["rate"] / peer["rate"]
            summary.append(
                f"| L1 | new tickets, {backend}, 1 session vs peer (one thread) | "
                f"≥ peer's rate | {rate(gateway1['rate'])} vs {rate(peer['rate'])}: "
                f"{ratio(share)} | {verdict(share >= 1.0)} |")
        relaxed = next((r for r in rows if r["target"].startswith(f"gateway, {backend}, "
                                                                  "durability")), None)
        if relaxed and gateway8:
            text.append(f"- Durability cost on {backend} (information only): "
                        f"{rate(relaxed['rate'])} relaxed vs {rate(gateway8['rate'])} durable "
                        f"at 8 sessions ({ratio(relaxed['rate'] / gateway8['rate'])} ×).")
    if not peer:
        summary.append("| L1 | vs peer | ≥ peer's rate | peer not run | - |")
    text.append("")
    return summary, text


def _l2(ctx: Context) -> tuple[list[str], list[str]]:
    rows = ctx.rows.get("L2", [])
    if not rows:
        return ["| L2 | replies, 1k vs 100k tickets | - | not run | - |"], []
    small, large = ctx.scale.l2_sizes
    text = ["## L2: replies to existing tickets", "",
            f"One session; {ctx.scale.reps} × {ctx.scale.l2_per_rep} replies after "
            f"{ctx.scale.l2_warmup} warm-up replies, each to a random open ticket, "
            "threaded by In-Reply-To. Both store sizes of a backend are served at once "
            "and take the batches in turns, so both see the same machine.", "",
            "| backend | tickets | per reply p50 | p95 | p99 | replies |",
            "| --- | --- | --- | --- | --- | --- |"]
    summary = []
    for row in rows:
        text.append(f"| {row['backend']} | {row['tickets']:,} | {ms(row['p50'])} | "
                    f"{ms(row['p95'])} | {ms(row['p99'])} | {_codes(row)} |")
    for backend in ctx.backends:
        low = _find(rows, backend=backend, tickets=small)
        high = _find(rows, backend=backend, tickets=large)
        if low and high:
            share = high["p50"] / low["p50"]
            summary.append(
                f"| L2 | replies, {backend}, {large:,} vs {small:,} tickets | "
                f"≤ 1.2 × | {ms(high['p50'])} vs {ms(low['p50'])} (median): {ratio(share)} | "
                f"{verdict(share <= 1.2)} |")
    text.append("")
    return summary, text


def _l3(ctx: Context) -> tuple[list[str], list[str]]:
    rows = ctx.rows.get("L3", [])
    if not rows:
        return ["| L3 | maximum update | - | not run | - |"], []
    size = rows[0]["size"]
    text = ["## L3: maximum update, 5 PDFs of 5 MB", "",
            f"Message size on the wire: {size / MB:.1f} MiB. {ctx.scale.l3_reps} timed "
            "repetitions after one warm-up; peak RSS growth is the kernel's VmHWM after a "
            "reset, minus the RSS before the message.", "",
            "| target | time to 250 p50 | max | peak RSS growth | 4 at once: peak RSS | "
            "4 at once: replies |", "| --- | --- | --- | --- | --- | --- |"]
    profile = [
        "", "The bare sink is stock aiosmtpd 1.4.6, which reads DATA one line at a time; "
        "the gateway reads it in blocks of up to `max_line_bytes` (adapters/smtp.py, "
        "same replies and limits), so it can beat the sink. Before that change a "
        "py-spy profile (200 Hz, SQLite, small scale) gave 31% of the gateway's busy "
        "samples to aiosmtpd's line loop, 24% to parsing (stdlib FeedParser plus "
        "base64) and 26% to the SQLite thread. Four changes followed. First, a "
        "message of 256 KiB or more is parsed with its long base64 runs cut out and "
        "decoded one part at a time (adapters/mime_skeleton.py, same result as the "
        "stdlib parse on every test sample). Parsing a 32.6 MiB message now takes "
        "about 0.2 s and little more memory than its decoded files, where it took "
        "about 7 × the message. Second, SQLite writes the raw message once, as the "
        "transaction's last statement, instead of again at each outcome update, "
        "because SQLite rewrites the whole row. Third, PostgreSQL stores raw "
        "messages and blobs without trying pglz (0.77 s to 0.30 s for one raw "
        "message). Fourth, large messages are applied one at a time, which also "
        "bounds the memory of 4 at once. Since then, for L4, the raw bytes of a "
        "message of 1 MiB or more are written in slices of 2 MiB before its own "
        "transaction, so the database driver copies one slice at a time. The "
        "growth left is the received message, its one copy out of the receive "
        "buffer and the decoded files.", ""]
    bare = _find(rows, target="bare aiosmtpd sink")
    summary = []
    for row in rows:
        growth = f"{row['growth'] / MB:.0f} MiB" if row.get("growth") is not None else "-"
        peak = (f"{row['concurrent_peak'] / MB:.0f} MiB"
                if row.get("concurrent_peak") is not None else "-")
        text.append(f"| {row['target']} | {ms(row['p50'])} | {ms(row['p99'])} | {growth} | "
                    f"{peak} | {_reply_codes(row.get('concurrent_codes'))} |")
        if row is rows[-1]:
            text += profile
        if row is bare or bare is None:
            continue
        share = row["p50"] / bare["p50"]
        summary.append(f"| L3 | maximum update, {row['target']}: time to 250 | ≤ 2 × bare "
                       f"sink | {ms(row['p50'])} vs {ms(bare['p50'])}: {ratio(share)} | "
                       f"{verdict(share <= 2)} |")
        growth_share = row["growth"] / size
        summary.append(f"| L3 | maximum update, {row['target']}: peak RSS growth | ≤ 4 × "
                       f"message | {row['growth'] / MB:.0f} MiB: {ratio(growth_share)} × | "
                       f"{verdict(growth_share <= 4)} |")
        summary.append(f"| L3 | 4 maximum updates at once, {row['target']} | < 600 MB | "
                       f"{row['concurrent_peak'] / 1e6:.0f} MB "
                       f"({row['concurrent_peak'] / MB:.0f} MiB) peak RSS | "
                       f"{verdict(row['concurrent_peak'] < 600e6)} |")
    text.append("")
    return summary, text


def _l4(ctx: Context) -> tuple[list[str], list[str]]:
    rows = ctx.rows.get("L4", [])
    if not rows:
        return ["| L4 | L1 during L3 | - | not run | - |"], []
    text = ["## L4: small mail at 8 sessions while 4 maximum updates arrive", "",
            f"{ctx.scale.l4_reps} repetitions, each {rows[0]['per_rep']} small messages "
            "alone, then the same number while 4 maximum updates arrive.", "",
            "| backend | alone p50 | alone p99 | with L3 p50 | with L3 p99 |",
            "| --- | --- | --- | --- | --- |"]
    text_after = ["", L4_EXPLANATION, ""]
    summary = []
    for row in rows:
        alone, loaded = row["alone"], row["loaded"]
        text.append(f"| {row['backend']} | {ms(alone['p50'])} | {ms(alone['p99'])} | "
                    f"{ms(loaded['p50'])} | {ms(loaded['p99'])} |")
        share = loaded["p99"] / alone["p99"]
        summary.append(f"| L4 | small mail during maximum updates, {row['backend']} | "
                       f"p99 ≤ 2 × alone | {ms(loaded['p99'])} vs {ms(alone['p99'])}: "
                       f"{ratio(share)} | {verdict(share <= 2)} |")
    text += text_after
    return summary, text


def _l5(ctx: Context) -> tuple[list[str], list[str]]:
    rows = ctx.rows.get("L5", [])
    if not rows:
        return ["| L5 | status page and API | - | not run | - |"], []
    small, large = ctx.scale.l2_sizes
    small_page, large_page = deep_page_number(small), deep_page_number(large)
    text = ["## L5: status page and /api/tickets", "",
            f"{ctx.scale.reps} × {ctx.scale.l5_requests} sequential requests per URL after "
            "3 warm-up requests, alternating between the two store sizes, which are served "
            "at once. Queries are counted on an in-process copy of the web app "
            "on the same database. The deep page is read as a user reaches it, with the "
            "cursor of the Older link: the harness reads the page before it once by page "
            "number, outside the timing, and times the request with that page's next "
            f"cursor. Page 500 needs about 25,000 tickets. At {small:,} tickets there are "
            f"{small_page} pages of 50, so the deep-page rows measure page {small_page}, "
            f"the last real page, against page {large_page} at {large:,}. On PostgreSQL the "
            "harness runs VACUUM ANALYZE on the tickets table before timing: right after "
            "the bulk seed no page is marked all-visible, so counts read the table "
            "instead of an index, until autovacuum runs at a time the harness cannot "
            "predict.", "",
            "| backend | tickets | request | p50 | p95 | p99 | queries |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    note = ["", "Profile (py-spy, 40 requests at 10,000 tickets, SQLite): at first 55% of "
            "the gateway's CPU during the requests went to the digest and auto-resolve "
            "jobs that run once at start over the seeded waiting tickets, more at the "
            "larger size; the bench gateways now run with those jobs off (L6 measures "
            "digests alone), which halved the request time. What remains is the SQLite "
            "thread (the page query and the status counts) and template rendering. Since "
            "then the page's ids come from the tickets index alone and the status counts "
            "are kept for five seconds, which made the first page flat.", "",
            "Deep pages: a page number pages with OFFSET, which walks every earlier index "
            "entry (25,000 for page 500). The status page's Newer and Older links and the "
            "API's next and previous cursors now read a range of the (last_activity_at, "
            "id) index from the boundary row, so page 500 costs what the first page does. "
            "page=N still works with OFFSET.", "",
            "Filters (EXPLAIN ANALYZE on a seeded 100,000-ticket PostgreSQL 15 database, "
            "2 cores): the page query of category=billing took 0.6 ms, but the count of "
            "its 25,000 matches took 18 ms, as a bitmap heap scan over every page of the "
            "unvacuumed table. After VACUUM the same count is an index-only scan of 5 ms, "
            "which still grows with the table. Filtered lists now count at most 10,001 "
            "matches (about 3 ms after VACUUM and 10 ms before, measured the same way) and "
            "show \"More than 10000 matching tickets\" beyond that. A filter on status "
            "alone takes its count from the kept status counts, with no query.", ""]
    summary = []
    for row in rows:
        text.append(f"| {row['backend']} | {row['tickets']:,} | {row['request']} | "
                    f"{ms(row['p50'])} | {ms(row['p95'])} | {ms(row['p99'])} | "
                    f"{row['queries'] if row['queries'] is not None else '-'} |")
    for backend in ctx.backends:
        for row in [r for r in rows if r["backend"] == backend and r["tickets"] == large]:
            low = _find(rows, backend=backend, tickets=small, key=row["key"])
            if low is None:
                continue
            label = row["request"]
            if low.get("page") != row.get("page"):
                label += f" (page {low['page']} at {small:,})"
            share = row["p95"] / low["p95"]
            same = row["queries"] == low["queries"] and row["queries"] is not None
            summary.append(
                f"| L5 | {label}, {backend}, {large:,} vs {small:,} | p95 ≤ 2 ×; "
                f"same queries | {ms(row['p95'])} vs {ms(low['p95'])}: {ratio(share)}; "
                f"queries {row['queries']} vs {low['queries']} | "
                f"{verdict(share <= 2 and same)} |")
    text += note
    return summary, text


def _l6_l7(ctx: Context) -> tuple[list[str], list[str]]:
    summary, text = _l6(ctx)
    more_summary, more_text = _l7(ctx)
    return summary + more_summary, text + more_text


def _l6(ctx: Context) -> tuple[list[str], list[str]]:
    rows = ctx.rows.get("L6", [])
    if not rows:
        return ["| L6 | digest over many builders | - | not run | - |"], []
    scale = ctx.scale
    few, many = scale.l6_builders
    text = ["## L6: digest job over many builders", "",
            f"{scale.l6_tickets:,} tickets; 2 tickets of each builder wait on the builder "
            "(with a support question), the rest have other statuses. The scheduled digest "
            "job (`ScheduledWork.send_digests`) runs in the harness process on the "
            f"gateway's wiring. It has {scale.l6_reps} timed runs, each in a new weekly "
            "period so every builder is due again, after one warm-up run at "
            f"{few:,} builders (a run at {many:,} is long enough without one). A "
            "before_cursor_execute hook counts the SQL statements of each run. The job claims every due builder's "
            "digest, records the tickets it lists and queues one outbox row per digest "
            "with set-based statements in one transaction. The outbox worker composes "
            "each digest after it has claimed the digest's row and before it sends "
            "it, outside the claim's transaction. So after each run the harness drains the "
            "outbox with the gateway's `OutboxWorker` (20 emails per claim, one commit "
            "per email, to a transport that only counts) and times that as well: the "
            "drain holds the composing cost. It sends one email per transaction, so "
            "its time grows with the number of digests, and the statement counts are "
            "the job's alone. Exactly once: each run queued one digest "
            "per due builder, to distinct addresses, the drain delivered one email to "
            "each of them, and a second run in the same period queued none.", "",
            "Profile (py-spy, 1,000 builders on SQLite, taken when the job still "
            "composed the digests itself): 72% of that run was composing "
            "(`NoticeMailer.compose_unqueued`): the stdlib email package building, "
            "re-reading and flattening headers (`compose_email` 21%, its header check "
            "`_verify_header_block` 17%, `Message.as_bytes` 14%, `set_content` 10%). "
            "That cost now falls in the drain column, not in the run.", "",
            "| backend | builders | digests per run | run p50 | max | statements per run | "
            "second run | drain p50 | drain per digest | digest size | exactly once |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        p50 = median(row["seconds"])
        drain = median(row["drain_seconds"])
        text.append(f"| {row['backend']} | {row['builders']:,} | {row['due']:,} | "
                    f"{ms(p50)} | {ms(max(row['seconds']))} | "
                    f"{', '.join(map(str, row['statements']))} | "
                    f"{row['repeat_statements']} statements, nothing queued | "
                    f"{ms(drain)} | {ms(drain / max(row['due'], 1))} | "
                    f"{median(row['digest_bytes']):,.0f} B | "
                    f"{'yes' if row['exactly_once'] else '**no**'} |")
    text.append("")
    summary = []
    for backend in ctx.backends:
        low = next((r for r in rows if r["backend"] == backend and r["builders"] == few), None)
        high = next((r for r in rows if r["backend"] == backend and r["builders"] == many),
                    None)
        if not (low and high):
            continue
        same = low["statements"] == high["statements"]
        once = low["exactly_once"] and high["exactly_once"]
        if not same:
            text.append(f"- {backend}: the statements per run differ between {few:,} and "
                        f"{many:,} builders ({', '.join(map(str, low['statements']))} vs "
                        f"{', '.join(map(str, high['statements']))}).")
        summary.append(
            f"| L6 | digest, {backend}, {many:,} vs {few:,} builders, "
            f"{scale.l6_tickets:,} tickets | same statements per run; every digest once | "
            f"{', '.join(map(str, high['statements']))} vs "
            f"{', '.join(map(str, low['statements']))} statements; run "
            f"{ms(median(high['seconds']))} vs {ms(median(low['seconds']))}; outbox drain "
            f"{ms(median(high['drain_seconds']))} vs {ms(median(low['drain_seconds']))}; "
            f"once: {'yes' if once else 'no'} | {verdict(same and once)} |")
    text.append("")
    return summary, text


def _l7(ctx: Context) -> tuple[list[str], list[str]]:
    rows = ctx.rows.get("L7", [])
    if not rows:
        return ["| L7 | Slack fan-out | - | not run | - |"], []
    first = rows[0]
    text = ["## L7: Slack fan-out to one channel", "",
            f"{first['expected']:,} chat.postMessage calls ({first['expected'] // 10} tickets: "
            "a root message and 9 thread entries each, queued interleaved) sent by the "
            "gateway's Slack worker through slack-sdk to a local fake of the Web API. "
            "The fake lets a burst of "
            f"{first['burst']} through, then allows {first['rate']:g} posts per second per "
            "channel and answers the rest with 429 and Retry-After (the seconds until the "
            "next allowed post). Slack allows about 1 per second; at that rate 1,000 posts "
            "take about 17 minutes, over the run's budget, so the fake's rate (and with it "
            f"Retry-After) is scaled up {first['rate']:g} times. The achieved rate is "
            "measured after the burst, from the first to the last accepted post. One run.",
            "",
            "| backend | posts accepted | time | achieved rate | allowed | 429 answers | "
            "lost | repeated | threads out of order | failed rows |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    summary = []
    for row in rows:
        share = row["steady_rate"] / row["rate"]
        text.append(f"| {row['backend']} | {row['posts']:,} of {row['expected']:,} | "
                    f"{row['seconds']:.1f} s | {rate(row['steady_rate'])} | "
                    f"{rate(row['rate'])} | {row['limited']} | {row['lost']} | "
                    f"{row['duplicated']} | {row['out_of_order']} | {row['failed_rows']} |")
        intact = (row["lost"] == 0 and row["duplicated"] == 0 and row["out_of_order"] == 0
                  and row["failed_rows"] == 0
                  and row["posts"] == row["expected"])
        summary.append(
            f"| L7 | Slack fan-out, {row['expected']:,} posts, {row['backend']} | achieved = "
            f"allowed rate (≥ 0.9 ×); none lost or reordered | {rate(row['steady_rate'])} vs "
            f"{rate(row['rate'])} allowed (scaled from 1/s): {ratio(share)}; lost "
            f"{row['lost']}, reordered {row['out_of_order']} | "
            f"{verdict(share >= 0.9 and intact)} |")
    text.append("")
    return summary, text


def _l8(ctx: Context) -> tuple[list[str], list[str]]:
    rows = ctx.rows.get("L8", [])
    if not rows:
        return ["| L8 | hostile inputs | - | not run | - |"], []
    text = ["## L8: hostile inputs", "",
            "Each input sent over SMTP to a running gateway on each database, "
            f"{ctx.scale.l8_reps} times after one warm-up. CPU is the gateway process's "
            "user+system time during the delivery (its outbox worker included); memory is "
            "the peak RSS (VmHWM after a reset) minus the RSS before.", "",
            "| backend | input | size | CPU max | CPU median | memory growth max | wall max | "
            "reply codes |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    summary = []
    for row in rows:
        backend = row.get("backend", "-")
        text.append(f"| {backend} | {row['input']} | {row['size'] / 1024:.0f} KiB | "
                    f"{row['cpu_max']:.2f} s | {row['cpu_median']:.2f} s | "
                    f"{row['memory_max'] / MB:.0f} MiB | {ms(row['wall_max'])} | "
                    f"{', '.join(map(str, row['codes'])) or '-'} |")
        ok = row["cpu_max"] <= 1.0 and row["memory_max"] <= 100 * MB
        summary.append(f"| L8 | {row['input']}, {backend} | ≤ 1 s CPU, ≤ 100 MB | "
                       f"{row['cpu_max']:.2f} s, {row['memory_max'] / 1e6:.0f} MB | "
                       f"{verdict(ok)} |")
    text.append("")
    return summary, text


def _codes(row: dict[str, Any]) -> str:
    text = _reply_codes(row.get("codes"))
    if row.get("unsent"):
        text += f", {row['unsent']} unsent (time limit)"
    return text
