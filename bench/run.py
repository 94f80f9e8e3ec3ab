"""Run the gateway's benchmarks and write the report.

Usage: ``.venv/bin/python bench/run.py [--scale small|full] [--only L1,L3] [--out FILE]``,
or ``make bench`` (full scale, after the micro cases). Only a full-scale run of
every workload writes docs/benchmarks.md by default; other runs write
bench/.partial-benchmarks.md. Everything runs on 127.0.0.1 unless
$GATEWAY_BENCH_DATABASE_URL names another PostgreSQL server. Every load stops at
its message count or its time limit, whichever comes first.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import os
import re
import shlex
import shutil
import signal
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

FULL_REPORT = targets.ROOT / "docs" / "benchmarks.md"
# Git-ignored, so a quick check never changes the committed report.
PARTIAL_REPORT = targets.ROOT / "bench" / ".partial-benchmarks.md"
# Workloads measured inside another one's run, by the name of that run.
INCLUDED_IN = {"L4": "L3", "L5": "L2", "L7": "L6"}
PROFILE_SECONDS = 15
# More than the gateway takes in PROFILE_SECONDS at 8 sessions on 2 cores, which
# was about 110 a second in a full-scale run, so the load lasts the whole sampling
# window. The load's time limit ends it soon after the window.
PROFILE_MESSAGES = 4000
PROFILE_WARMUP_MESSAGES = 40
PROJECT_FOLDERS = ("gateway", "adapters", "store")


def main() -> None:
    """Parse options, run the chosen workloads and write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(workloads.SCALES), default="full")
    parser.add_argument("--only", default=",".join(workloads.WORKLOADS),
                        help="comma-separated workloads (L2 includes L5, L3 includes L4, "
                        "L6 includes L7; L4, L5 and L7 run the workload that includes them)")
    parser.add_argument("--out", type=Path,
                        help=f"report file (default: {FULL_REPORT.relative_to(targets.ROOT)} "
                        "for a full-scale run of every workload, else "
                        f"{PARTIAL_REPORT.relative_to(targets.ROOT)})")
    parser.add_argument("--micro-json", type=Path,
                        help="pytest-benchmark JSON to include in the report")
    parser.add_argument("--no-postgres", action="store_true",
                        help="measure SQLite only, even when PostgreSQL is reachable")
    parser.add_argument("--no-profile", action="store_true",
                        help="skip the py-spy profile of the gateway under L1")
    parser.add_argument("--keep", action="store_true",
                        help="keep the scratch folder with logs and databases")
    args = parser.parse_args()
    names = chosen_workloads(parser, args.only)
    out = report_path(parser, args.out, args.scale, names)
    backends = chosen_backends(parser, args.no_postgres)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    # Migrations run once per seeded database; their step-by-step lines are noise here.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("store").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)

    started = datetime.now(UTC)
    workdir = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    log.info("scratch folder with the servers' logs: %s", workdir)
    try:
        ctx, profile = run_workloads(args, names, backends, workdir)
        micro = []
        if args.micro_json and args.micro_json.exists():
            micro = json.loads(args.micro_json.read_text()).get("benchmarks", [])
        report.write(ctx, out, command=shown_command(), started=started, micro=micro,
                     profile=profile)
    finally:
        if args.keep:
            log.info("scratch folder kept at %s", workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
            log.info("scratch folder removed (--keep keeps it)")
    log.info("report written to %s", out)


def chosen_workloads(parser: argparse.ArgumentParser, only: str) -> list[str]:
    """Return the workloads that --only names, in order, or exit with an error."""
    names: list[str] = []
    for entry in only.split(","):
        name = entry.strip().upper()
        if not name:
            continue
        name = INCLUDED_IN.get(name, name)
        if name not in workloads.WORKLOADS:
            known = ", ".join(sorted([*workloads.WORKLOADS, *INCLUDED_IN]))
            parser.error(f"--only: unknown workload {entry.strip()!r}; use {known}")
        if name not in names:
            names.append(name)
    if not names:
        parser.error(f"--only: no workload given; use {', '.join(workloads.WORKLOADS)}")
    return names


def report_path(parser: argparse.ArgumentParser, out: Path | None, scale: str,
                names: list[str]) -> Path:
    """Return where the report goes, after checking that a file can be written there."""
    if out is None:
        complete = scale == "full" and set(names) == set(workloads.WORKLOADS)
        out = FULL_REPORT if complete else PARTIAL_REPORT
    out = out.resolve()
    if out.is_dir():
        parser.error(f"--out: {out} is a folder; give a file name")
    if not out.parent.is_dir():
        parser.error(f"--out: folder {out.parent} does not exist")
    try:
        with tempfile.NamedTemporaryFile(dir=out.parent, prefix=".bench-write-check-"):
            pass
    except OSError as exc:
        parser.error(f"--out: cannot create a file in {out.parent}: {exc.strerror}")
    if out.exists() and not os.access(out, os.W_OK):
        parser.error(f"--out: {out} is not writable")
    return out


def chosen_backends(parser: argparse.ArgumentParser, no_postgres: bool) -> list[str]:
    """Return the databases to measure; exit when PostgreSQL is expected but missing."""
    if no_postgres:
        return ["sqlite"]
    if os.environ.get(targets.DATABASE_URL_VARIABLE) == "":
        # As in `make test`, an empty URL means no PostgreSQL.
        return ["sqlite"]
    try:
        url = targets.postgres_url()
    except ValueError as exc:
        parser.error(str(exc))
    problem = targets.postgres_problem()
    if problem:
        parser.error(
            f"PostgreSQL at {url} did not accept a connection ({problem}). The "
            f"benchmarks need SQLite and PostgreSQL: set {targets.DATABASE_URL_VARIABLE} "
            "to a server where the harness may create and drop bench_* databases, or pass "
            "--no-postgres (make bench BENCH_ARGS=--no-postgres) to measure SQLite only."
        )
    return ["sqlite", "postgresql"]


def run_workloads(args: argparse.Namespace, names: list[str], backends: list[str],
                  workdir: Path) -> tuple[workloads.Context, list[str]]:
    """Run NAMES, then the profile; stop every server and drop every database after."""
    peer = targets.ROOT / "bench" / ".peer-venv" / "bin" / "python"
    ctx = workloads.Context(scale=workloads.SCALES[args.scale], workdir=workdir,
                            backends=backends, peer_python=peer if peer.exists() else None)
    if args.no_postgres:
        ctx.notes.append("PostgreSQL was left out on request (--no-postgres): SQLite only.")
    elif "postgresql" not in backends:
        ctx.notes.append(f"PostgreSQL was left out because {targets.DATABASE_URL_VARIABLE} "
                         "is empty: SQLite only.")
    profile: list[str] = []
    try:
        for name in names:
            began = time.perf_counter()
            included = [part for part, whole in INCLUDED_IN.items() if whole == name]
            log.info("%s started%s", name, f" (with {', '.join(included)})" if included else "")
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
    return ctx, profile


def shown_command() -> str:
    """Return this run's command line as a reader can paste it in the repository root.

    `make bench` installs the bench extras, psutil and py-spy among them, in
    .venv, so the command runs with that Python rather than the system one.
    """
    return shlex.join([".venv/bin/python", "bench/run.py", *sys.argv[1:]])


def profile_gateway(ctx: workloads.Context) -> list[str]:
    """Sample the gateway on each backend with py-spy while it takes new-ticket mail."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return ["py-spy is not installed; no profile taken."]
    lines: list[str] = []
    for backend in ctx.backends:
        lines += [f"### {backend}", "", *profile_backend(ctx, spy, backend), ""]
    return lines


def profile_backend(ctx: workloads.Context, spy: str, backend: str) -> list[str]:
    """Sample the gateway on BACKEND while it takes new-ticket mail at 8 sessions."""
    messages = workloads.CORPUS.small(200_000, PROFILE_WARMUP_MESSAGES + PROFILE_MESSAGES)
    server = ctx.track(workloads.start_seeded(ctx, backend, "profile", 0))
    output = ctx.workdir / f"profile-{backend}.txt"
    try:
        workloads.load(server, messages[:PROFILE_WARMUP_MESSAGES], 8, 60)
        log.info("profiling the gateway on %s for %d s", backend, PROFILE_SECONDS)
        # --gil samples only the thread that holds the GIL: where CPU time goes.
        sampler = subprocess.Popen(
            [spy, "record", "--pid", str(server.pid), "--format", "raw", "--gil",
             "--nonblocking", "--duration", str(PROFILE_SECONDS), "--output", str(output)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # py-spy takes a moment to attach. The load runs past the end of the
        # window, so every sample is taken under load.
        time.sleep(0.5)
        result = workloads.load(server, messages[PROFILE_WARMUP_MESSAGES:], 8,
                                PROFILE_SECONDS + 1)
        sampler.wait(timeout=PROFILE_SECONDS + 30)
    finally:
        ctx.release(server)
    if not output.exists():
        return ["py-spy could not attach (it needs ptrace permission); no profile taken."]
    if result.unsent == 0:
        log.warning("the profile load ran out of messages before the sampling window "
                    "ended; raise PROFILE_MESSAGES")
    return summarize_profile(output, backend, len(result.sent))


# A py-spy frame label: "function (path:line)", where path is relative to
# site-packages, the standard library or the working directory when it can be.
# Generated code has a path in angle brackets: "<frozen abc>", "<string>" or
# "<sqlalchemy generated _go() wrapper for ...>".
FRAME = re.compile(r"^(?P<function>.*?) \((?P<path>.*?)(?::(?P<line>\d+))?\)$")


def summarize_profile(path: Path, backend: str, sent: int) -> list[str]:
    """Return tables of the CPU samples by project function and by leaf frame's package."""
    inclusive: collections.Counter[str] = collections.Counter()
    packages: collections.Counter[tuple[str, str]] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        total += count
        frames = stack.split(";")
        # A function counts once per sample, however many of its lines are on the stack.
        functions = {_function(frame) for frame in frames}
        for function in functions:
            # The entry point and CLI frames appear in every sample, so they
            # carry no information.
            if "gateway/__main__.py" in function or "gateway/cli.py" in function:
                continue
            if _package(function)[0] == "project":
                inclusive[function] += count
        packages[_package(frames[-1])] += count
    if not total:
        return ["The profile holds no samples."]
    lines = [f"py-spy {PROFILE_SECONDS} s, `--gil` (CPU samples only), {total} samples, "
             f"gateway on {backend} taking new-ticket mail at 8 sessions "
             f"({sent} messages sent while it was sampled).", "",
             "| project function (inclusive) | share of CPU samples |", "| --- | --- |"]
    for function, count in inclusive.most_common(20):
        lines.append(f"| `{function}` | {count / total:.0%} |")
    lines += ["", "| where the CPU leaf frames are | share |", "| --- | --- |"]
    lines += _package_rows(packages, total)
    return lines


def _function(frame: str) -> str:
    """Return FRAME without its line number: "function (path)"."""
    match = FRAME.match(frame)
    return f"{match['function']} ({match['path']})" if match else frame


def _package(frame: str) -> tuple[str, str]:
    """Return the kind and the name of FRAME's module.

    The kind is "project", "stdlib", "package" (installed) or "unknown".
    """
    match = FRAME.match(frame)
    location = match["path"] if match else ""
    stdlib_folder = f"python{sys.version_info.major}.{sys.version_info.minor}/"
    for marker in ("site-packages/", stdlib_folder):
        if marker in location:
            location = location.rpartition(marker)[2]
    root = f"{targets.ROOT}/"
    if location.startswith(root):
        location = location[len(root):]
    if location.startswith("<"):
        words = location.strip("<>").split()
        # "<frozen abc>" is the standard library's abc; "<string>" has no module.
        location = words[1] if words[:1] == ["frozen"] and len(words) > 1 else words[0]
        if location == "string":
            return ("unknown", "")
    top = location.split("/")[0].removesuffix(".py")
    if not top:
        return ("unknown", "")
    if top in PROJECT_FOLDERS:
        return ("project", top)
    if top in sys.stdlib_module_names:
        return ("stdlib", top)
    return ("package", top)


def _package_rows(packages: collections.Counter[tuple[str, str]], total: int) -> list[str]:
    """Return one row per package of at least 1% of the samples, the rest pooled by kind."""
    pooled: collections.Counter[str] = collections.Counter()
    rows = []
    for (kind, name), count in packages.most_common():
        if kind == "unknown":
            pooled["unknown (no Python frame, or code made by exec)"] += count
        elif count / total < 0.01:
            kind_name = "standard library" if kind == "stdlib" else kind
            pooled[f"other {kind_name} modules"] += count
        else:
            label = {"project": f"{name}/ (project)", "stdlib": f"{name} (standard library)"}
            rows.append(f"| {label.get(kind, name)} | {count / total:.0%} |")
    rows += [f"| {name} | {count / total:.0%} |" for name, count in pooled.most_common()]
    return rows


def _stop_on_sigterm(signum: int, frame: object) -> None:
    # Raised in the main thread, so every finally block stops the servers,
    # drops the databases and removes the scratch folder, as on Ctrl-C.
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        main()
    except KeyboardInterrupt:
        log.error("interrupted; servers stopped and scratch data removed")
        sys.exit(130)
