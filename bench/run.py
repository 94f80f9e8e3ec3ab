"""Run the gateway's benchmarks and write docs/benchmarks.md.

Usage: ``python bench/run.py [--scale small|full] [--only L1,L3] [--out FILE]``.
Everything runs on 127.0.0.1; every load stops at its message count or its time
limit, whichever comes first. ``make bench`` runs this after the micro cases.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import report, targets, workloads  # noqa: E402

log = logging.getLogger("bench")

PROFILE_SECONDS = 15
PROFILE_MESSAGES = 600
PROJECT_FOLDERS = ("gateway/", "adapters/", "store/")


def main() -> None:
    """Parse options, run the chosen workloads and write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(workloads.SCALES), default="full")
    parser.add_argument("--only", default="L1,L2,L3,L6,L8",
                        help="comma-separated workloads (L2 includes L5, L3 includes L4, "
                        "L6 includes L7)")
    parser.add_argument("--out", type=Path, default=targets.ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--micro-json", type=Path,
                        help="pytest-benchmark JSON to include in the report")
    parser.add_argument("--no-postgres", action="store_true",
                        help="measure SQLite only, even when PostgreSQL is reachable")
    parser.add_argument("--no-profile", action="store_true",
                        help="skip the py-spy profile of the gateway under L1")
    parser.add_argument("--keep", action="store_true",
                        help="keep the scratch folder with logs and databases")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    # Migrations run once per seeded database; their step-by-step lines are noise here.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("store").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)

    started = datetime.now(UTC)
    workdir = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    backends = ["sqlite"]
    if not args.no_postgres and targets.postgres_available():
        backends.append("postgresql")
    peer = targets.ROOT / "bench" / ".peer-venv" / "bin" / "python"
    ctx = workloads.Context(scale=workloads.SCALES[args.scale], workdir=workdir,
                            backends=backends, peer_python=peer if peer.exists() else None)
    if "postgresql" not in backends:
        ctx.notes.append("PostgreSQL at 127.0.0.1:5432 did not answer (or --no-postgres): "
                         "SQLite only.")

    profile: list[str] = []
    try:
        for name in [n.strip().upper() for n in args.only.split(",") if n.strip()]:
            if name not in workloads.WORKLOADS:
                parser.error(f"unknown workload {name}; use {', '.join(workloads.WORKLOADS)}")
            began = time.perf_counter()
            log.info("%s started", name)
            try:
                workloads.WORKLOADS[name](ctx)
            except Exception as exc:  # noqa: BLE001 - one failed workload must not hide the rest
                log.exception("%s failed", name)
                ctx.notes.append(f"{name} failed: {type(exc).__name__}: {exc}; "
                                 f"{traceback.format_exc(limit=3).splitlines()[-2].strip()}")
            log.info("%s finished in %.0f s", name, time.perf_counter() - began)
        if not args.no_profile:
            profile = profile_gateway(ctx)
    finally:
        for server in list(ctx.servers):
            ctx.release(server)
        for database in ctx.databases:
            asyncio.run(targets.drop_postgres_database(database))

    micro = []
    if args.micro_json and args.micro_json.exists():
        micro = json.loads(args.micro_json.read_text()).get("benchmarks", [])
    command = "python bench/run.py " + " ".join(sys.argv[1:])
    report.write(ctx, args.out, command=command.strip(), started=started, micro=micro,
                 profile=profile)
    if args.keep:
        log.info("scratch folder kept at %s", workdir)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    log.info("report written to %s", args.out)


def profile_gateway(ctx: workloads.Context) -> list[str]:
    """Sample the gateway with py-spy while it takes new-ticket mail at 8 sessions."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return ["py-spy is not installed; no profile taken."]
    backend = ctx.backends[0]
    server = ctx.track(workloads.start_seeded(ctx, backend, "profile", 0))
    output = ctx.workdir / "profile.txt"
    try:
        messages = workloads.CORPUS.small(200_000, PROFILE_MESSAGES)
        workloads.load(server, messages[:40], 8, 60)
        # --gil samples only the thread that holds the GIL: where CPU time goes.
        sampler = subprocess.Popen(
            [spy, "record", "--pid", str(server.pid), "--format", "raw", "--gil",
             "--nonblocking", "--duration", str(PROFILE_SECONDS), "--output", str(output)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        workloads.load(server, messages[40:], 8, PROFILE_SECONDS - 2)
        sampler.wait(timeout=PROFILE_SECONDS + 30)
    finally:
        ctx.release(server)
    if not output.exists():
        return ["py-spy could not attach (it needs ptrace permission); no profile taken."]
    return summarize_profile(output, backend)


def summarize_profile(path: Path, backend: str) -> list[str]:
    """Return a table of the project functions that hold the most CPU samples."""
    inclusive: collections.Counter[str] = collections.Counter()
    libraries: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        total += count
        frames = stack.split(";")
        for frame in set(frames):
            # The entry point and CLI frames appear in every sample, so they
            # carry no information.
            if "gateway/__main__.py" in frame or "gateway/cli.py" in frame:
                continue
            if any(folder in frame for folder in PROJECT_FOLDERS):
                inclusive[frame] += count
        leaf = frames[-1]
        libraries[_library(leaf)] += count
    if not total:
        return ["The profile holds no samples."]
    lines = [f"py-spy {PROFILE_SECONDS} s, `--gil` (CPU samples only), {total} samples, "
             f"gateway on {backend} taking new-ticket mail at 8 sessions.", "",
             "| project function (inclusive) | share of CPU samples |", "| --- | --- |"]
    for frame, count in inclusive.most_common(20):
        lines.append(f"| `{frame}` | {count / total:.0%} |")
    lines += ["", "| where the CPU leaf frames are | share |", "| --- | --- |"]
    for name, count in libraries.most_common(8):
        lines.append(f"| {name} | {count / total:.0%} |")
    return lines


def _library(frame: str) -> str:
    location = frame.rpartition("(")[2]
    if "site-packages/" in location:
        return location.split("site-packages/")[1].split("/")[0]
    for folder in PROJECT_FOLDERS:
        if folder in location:
            return folder.rstrip("/")
    if "python3.11/" in location:
        return "stdlib " + location.split("python3.11/")[1].split("/")[0].split(".")[0]
    return location.rstrip(")") or frame


if __name__ == "__main__":
    main()
