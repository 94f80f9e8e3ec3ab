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

from bench.workloads import Context

LIBRARIES = ("aiosmtpd", "aiohttp", "sqlalchemy", "aiosqlite", "asyncpg", "mail-parser",
             "jinja2", "psutil", "pytest-benchmark", "py-spy")
MB = 1024 * 1024


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
        "for every figure unless a row says otherwise",
        f"- Run: {started:%Y-%m-%d %H:%M} to {finished:%H:%M} UTC "
        f"({(finished - started).total_seconds() / 60:.1f} min)",
        *machine(),
        "- Databases: " + "; ".join(f"{k}: {v}" for k, v in ctx.settings.items()),
        "- Every server listens on 127.0.0.1 at a free port; the load generator "
        "(`bench/load.py`) runs in the harness process, each server in its own process.",
        "",
    ]
    if scale.name != "full":
        lines += ["> **Small scale**: counts are far below the issue's; use these numbers "
                  "to check the harness, not the gateway.", ""]
    summary, details = summarize(ctx)
    lines += ["## Targets", "", "| id | workload | target | measured | verdict |",
              "| --- | --- | --- | --- | --- |", *summary, ""]
    lines += details
    if profile:
        lines += ["## Profile of the gateway under L1 (8 sessions, first backend)", "",
                  *profile, ""]
    if micro:
        lines += ["## Micro benchmarks (pytest-benchmark)", "",
                  "| case | median | min | max | rounds |", "| --- | --- | --- | --- | --- |"]
        for bench in micro:
            stats = bench["stats"]
            lines.append(f"| {bench['name']} | {ms(stats['median'])} | {ms(stats['min'])} "
                         f"| {ms(stats['max'])} | {stats['rounds']} |")
        lines.append("")
    short = [name for name, reps in (("L3", scale.l3_reps), ("L4", scale.l4_reps),
                                     ("L8", scale.l8_reps)) if reps < 5]
    if short:
        ctx.notes.append(f"Fewer than 5 timed repetitions at this scale in: {', '.join(short)} "
                         "(to fit the time limit of the run).")
    if ctx.notes:
        lines += ["## Notes", "", *(f"- {note}" for note in ctx.notes), ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


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
    scaled = (f"{ctx.scale.reps} × {per_rep[8]} messages at 8 sessions "
              f"({ctx.scale.reps * per_rep[8]:,} timed instead of 10,000), "
              f"{ctx.scale.reps} × {per_rep[1]} at 1 and {ctx.scale.reps} × {per_rep[32]} "
              "at 32 sessions")
    text = ["## L1: new-ticket mail, 2 KB", "", f"Counts: {scaled}.", "",
            "| target | sessions | msgs/s (median) | min-max | p50 | p95 | p99 | replies |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        sessions = row["sessions"] or "-"
        text.append(f"| {row['target']} | {sessions} | {rate(row['rate'])} | "
                    f"{rate(row['rate_min'])}-{rate(row['rate_max'])} | {ms(row['p50'])} | "
                    f"{ms(row['p95'])} | {ms(row['p99'])} | {_codes(row)} |")
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
                f"| L1 | new tickets, {backend}, 8 sessions ({scaled}) | ≥ 0.3 × bare sink | "
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
            "threaded by In-Reply-To.", "",
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
                f"| L2 | replies, {backend}, {small:,} vs {large:,} tickets | "
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
    bare = _find(rows, target="bare aiosmtpd sink")
    summary = []
    for row in rows:
        growth = f"{row['growth'] / MB:.0f} MiB" if row.get("growth") is not None else "-"
        peak = (f"{row['concurrent_peak'] / MB:.0f} MiB"
                if row.get("concurrent_peak") is not None else "-")
        text.append(f"| {row['target']} | {ms(row['p50'])} | {ms(row['p99'])} | {growth} | "
                    f"{peak} | {row.get('concurrent_codes') or '-'} |")
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
                       f"{row['concurrent_peak'] / 1e6:.0f} MB peak RSS | "
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
    summary = []
    for row in rows:
        alone, loaded = row["alone"], row["loaded"]
        text.append(f"| {row['backend']} | {ms(alone['p50'])} | {ms(alone['p99'])} | "
                    f"{ms(loaded['p50'])} | {ms(loaded['p99'])} |")
        share = loaded["p99"] / alone["p99"]
        summary.append(f"| L4 | small mail during maximum updates, {row['backend']} | "
                       f"p99 ≤ 2 × alone | {ms(loaded['p99'])} vs {ms(alone['p99'])}: "
                       f"{ratio(share)} | {verdict(share <= 2)} |")
    text.append("")
    return summary, text


def _l5(ctx: Context) -> tuple[list[str], list[str]]:
    rows = ctx.rows.get("L5", [])
    if not rows:
        return ["| L5 | status page and API | - | not run | - |"], []
    small, large = ctx.scale.l2_sizes
    text = ["## L5: status page and /api/tickets", "",
            f"{ctx.scale.reps} × {ctx.scale.l5_requests} sequential requests per URL after "
            "3 warm-up requests. Queries are counted on an in-process copy of the web app "
            "on the same database. At 1,000 tickets page 500 is past the end (empty).", "",
            "| backend | tickets | request | p50 | p95 | p99 | queries |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    summary = []
    for row in rows:
        text.append(f"| {row['backend']} | {row['tickets']:,} | {row['request']} | "
                    f"{ms(row['p50'])} | {ms(row['p95'])} | {ms(row['p99'])} | "
                    f"{row['queries'] if row['queries'] is not None else '-'} |")
    for backend in ctx.backends:
        for row in [r for r in rows if r["backend"] == backend and r["tickets"] == large]:
            low = _find(rows, backend=backend, tickets=small, path=row["path"])
            if low is None:
                continue
            share = row["p95"] / low["p95"]
            same = row["queries"] == low["queries"] and row["queries"] is not None
            summary.append(
                f"| L5 | {row['request']}, {backend}, {small:,} vs {large:,} | p95 ≤ 2 ×; "
                f"same queries | {ms(row['p95'])} vs {ms(low['p95'])}: {ratio(share)}; "
                f"queries {row['queries']} vs {low['queries']} | "
                f"{verdict(share <= 2 and same)} |")
    text.append("")
    return summary, text


def _l6_l7(ctx: Context) -> tuple[list[str], list[str]]:
    summary = []
    for workload, name in (("L6", "digest over 10,000 builders"),
                           ("L7", "Slack fan-out, 1,000 posts")):
        rows = ctx.rows.get(workload, [])
        status = rows[0]["status"] if rows else "not run"
        summary.append(f"| {workload} | {name} | see issue | {status} | skipped |")
    return summary, []


def _l8(ctx: Context) -> tuple[list[str], list[str]]:
    rows = ctx.rows.get("L8", [])
    if not rows:
        return ["| L8 | hostile inputs | - | not run | - |"], []
    text = ["## L8: hostile inputs", "",
            f"Each input sent over SMTP to a running gateway ({rows[0]['backend']}), "
            f"{ctx.scale.l8_reps} times after one warm-up. CPU is the gateway process's "
            "user+system time during the delivery (its outbox worker included); memory is "
            "the peak RSS (VmHWM after a reset) minus the RSS before.", "",
            "| input | size | CPU max | CPU median | memory growth max | wall max | "
            "reply codes |", "| --- | --- | --- | --- | --- | --- | --- |"]
    summary = []
    for row in rows:
        text.append(f"| {row['input']} | {row['size'] / 1024:.0f} KiB | {row['cpu_max']:.2f} s "
                    f"| {row['cpu_median']:.2f} s | {row['memory_max'] / MB:.0f} MiB | "
                    f"{ms(row['wall_max'])} | {row['codes']} |")
        ok = row["cpu_max"] <= 1.0 and row["memory_max"] <= 100 * MB
        summary.append(f"| L8 | {row['input']} | ≤ 1 s CPU, ≤ 100 MB | "
                       f"{row['cpu_max']:.2f} s, {row['memory_max'] / 1e6:.0f} MB | "
                       f"{verdict(ok)} |")
    text.append("")
    return summary, text


def _codes(row: dict[str, Any]) -> str:
    codes = row.get("codes") or {}
    text = ", ".join(f"{count}×{code}" for code, count in sorted(codes.items())) or "-"
    if row.get("unsent"):
        text += f", {row['unsent']} unsent (time limit)"
    return text
