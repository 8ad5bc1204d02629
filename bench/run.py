"""`make bench` / `python -m bench.run`: the whole benchmark in one run. See bench/README.md.

One fresh PostgreSQL database and one Redis database (10 unless told otherwise) serve every
section, so the no-op baseline and the pipeline are measured on the same services, broker
settings and worker flags; each pipeline run has a simulated node process of its own.
The five summary lines are the last lines printed (stdout, after everything on stderr).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.api_load import run_api_load
from bench.baseline import run_baseline
from bench.pipeline import REPEAT_MAX_TRANSACTIONS, PipelineResult, run_pipeline
from bench.report import RATIO_BATCH, Results, markdown, summary_lines, write_json
from bench.services import (
    DEFAULT_POSTGRES_ADMIN_URL,
    DEFAULT_REDIS_URL,
    empty_redis,
    fresh_postgres_database,
)

DEFAULT_JSON = Path(__file__).resolve().parent / "results.json"
# No payout of the bench may take the manual route for lack of daily automatic budget.
AUTO_DAILY_SATS = 10**15
# PAYOUTS_BATCH_WINDOW_SECONDS for the workers. Every burst is approved before any enqueue
# call, so its oldest approval is older than any window and the run claims at once; the window
# only holds up a lone payout (the one in flight rows), which the product's 2 s would turn
# into 2 s per payout of nothing but waiting.
BENCH_WINDOW_SECONDS = 0.2


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError("a comma-separated list like 1,10,50") from exc
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("a comma-separated list of sizes ≥ 1, like 1,10,50")
    return sorted(set(sizes))


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _window(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 3600:
        raise argparse.ArgumentTypeError("seconds between 0 and 3600")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="The batcher at several batch sizes vs a no-op Celery baseline, a big "
        "burst, API load, worker/API memory.",
    )
    p.add_argument("--payouts", type=_positive, default=2000,
                   help="payouts per burst at each batch size, and no-op tasks per baseline "
                   "burst (default 2000)")
    p.add_argument("--batch-sizes", type=_sizes, default=[1, 10, 50, 100, 250],
                   help="PAYOUTS_BATCH_MAX_PAYOUTS of each pipeline run (default "
                   "1,10,50,100,250)")
    p.add_argument("--burst", type=_non_negative, default=10_000,
                   help="payouts in the big burst, section 6 (default 10000; 0 skips it)")
    p.add_argument("--burst-batch", type=_positive, default=RATIO_BATCH,
                   help=f"PAYOUTS_BATCH_MAX_PAYOUTS of the big burst (default {RATIO_BATCH}, "
                   "the product's default)")
    p.add_argument("--batch-window", type=_window, default=BENCH_WINDOW_SECONDS,
                   help="PAYOUTS_BATCH_WINDOW_SECONDS of the workers (default "
                   f"{BENCH_WINDOW_SECONDS}; see bench/README.md)")
    p.add_argument("--workers", type=_positive, default=2,
                   help="W, worker processes of every run (default 2)")
    p.add_argument("--repeat", type=_positive, default=3,
                   help="repetitions of the no-op burst and of the pipeline burst at each batch "
                   f"size (once when that is over {REPEAT_MAX_TRANSACTIONS} transactions, e.g. "
                   "batch 1); the median one is reported (default 3)")
    p.add_argument("--one-in-flight", type=_non_negative, default=20,
                   help=f"items measured one at a time on an idle queue, the pipeline's at batch "
                   f"{RATIO_BATCH} or the largest size run (default 20; 0 skips the pipeline's)")
    p.add_argument("--api-requests", type=_positive, default=200,
                   help="create+approve pairs sent to the API (2 HTTP requests each; "
                   "default 200)")
    p.add_argument("--api-concurrency", type=_positive, default=8,
                   help="requests in flight from the load client (default 8)")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON,
                   help="where to write the results as JSON (default bench/results.json)")
    p.add_argument("--postgres-admin-url", default=DEFAULT_POSTGRES_ADMIN_URL,
                   help="PostgreSQL URL allowed to CREATE/DROP DATABASE (env "
                   "PAYOUTS_BENCH_POSTGRES_URL)")
    p.add_argument("--redis-url", default=DEFAULT_REDIS_URL,
                   help="a Redis database of the bench's own; it is emptied (env "
                   "PAYOUTS_BENCH_REDIS_URL, default db 10)")
    return p


def _environment(db_url: str, redis_url: str, window: float) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYOUTS_")}
    env.update(
        PAYOUTS_DATABASE_URL=db_url,
        PAYOUTS_REDIS_URL=redis_url,
        PAYOUTS_NETWORK="regtest",
        PAYOUTS_AUTO_DAILY_SATS=str(AUTO_DAILY_SATS),
        PAYOUTS_LOG_JSON="true",
        PAYOUTS_LOG_LEVEL="INFO",
        PAYOUTS_BATCH_WINDOW_SECONDS=str(window),
    )
    return env


def _use_environment(env: dict[str, str]) -> None:
    """The bench process talks to the same DB and broker as its children."""
    from cli.caches import reset_process_caches

    os.environ.update({k: v for k, v in env.items() if k.startswith("PAYOUTS_")})
    reset_process_caches()


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def light_batch(sizes: Sequence[int]) -> int:
    """The batch size whose run also measures payouts one at a time."""
    return RATIO_BATCH if RATIO_BATCH in sizes else max(sizes)


def run(args: argparse.Namespace, workdir: Path) -> Results:
    load_before = os.getloadavg()[0]
    steps = 2 + len(args.batch_sizes) + (1 if args.burst else 0)
    step = iter(range(1, steps + 1))
    with (
        fresh_postgres_database(args.postgres_admin_url) as db_url,
        empty_redis(args.redis_url) as redis_url,
    ):
        env = _environment(db_url, redis_url, args.batch_window)
        _use_environment(env)
        w = args.workers
        say(f"{next(step)}/{steps} no-op baseline: {args.payouts} tasks, W={w}")
        baseline, baseline_light, noop_rss = run_baseline(
            args.payouts, w, max(args.one_in_flight, 1), args.repeat, env, workdir
        )
        batches = []
        for size in args.batch_sizes:
            say(f"{next(step)}/{steps} pipeline: {args.payouts} payouts, batch {size}, W={w}")
            light = args.one_in_flight if size == light_batch(args.batch_sizes) else 0
            batches.append(run_pipeline(args.payouts, w, size, light, args.repeat, env,
                                        workdir))  # fmt: skip
            _said(batches[-1])
        burst = None
        if args.burst:
            say(f"{next(step)}/{steps} burst: {args.burst} payouts, batch {args.burst_batch}, "
                f"W={w}")
            burst = run_pipeline(args.burst, w, args.burst_batch, 0, 1, env, workdir)
            _said(burst)
        say(f"{next(step)}/{steps} API: {args.api_requests} create+approve pairs, concurrency "
            f"{args.api_concurrency}")
        # A database of its own: an approval sums the automatic approvals of the last 24 h,
        # so on the pipeline sections' database the API's numbers would depend on how many
        # payouts the bench approved before (--payouts, --burst), not only on the API.
        with fresh_postgres_database(args.postgres_admin_url) as api_db_url:
            api_env = {**env, "PAYOUTS_DATABASE_URL": api_db_url}
            _use_environment(api_env)
            api = run_api_load(args.api_requests, args.api_concurrency, api_env, workdir)
    return Results(
        machine=_machine(load_before),
        settings=_settings(args),
        baseline=baseline,
        baseline_light=baseline_light,
        baseline_rss_mb=noop_rss,
        batches=batches,
        burst=burst,
        api=api.load,
        api_rss_mb=api.api_rss_mb,
    )


def _said(result: PipelineResult) -> None:
    """Progress on stderr: a long run shows where it is."""
    d = result.drained
    say(f"    {d.count} payouts in {d.seconds:.2f} s ({d.per_second:.0f}/s) in "
        f"{result.paid.transactions} transactions; workers "
        f"{d.cpu_ms.get('workers', 0):.2f} ms CPU per payout; preparing took "
        f"{result.prepare_seconds:.0f} s")


def _machine(load_before: float) -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(terse=True),
        "python": platform.python_version(),
        # Other work on the machine inflates every number; a high load average says so.
        "load_average_1m_before": load_before,
        "load_average_1m_after": os.getloadavg()[0],
    }


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "payouts": args.payouts,
        "batch_sizes": args.batch_sizes,
        "burst": args.burst,
        "burst_batch": args.burst_batch,
        "batch_window_seconds": args.batch_window,
        "workers": args.workers,
        "repeat": args.repeat,
        "one_in_flight": args.one_in_flight,
        "one_in_flight_batch": light_batch(args.batch_sizes),
        "api_requests": args.api_requests,
        "api_concurrency": args.api_concurrency,
        "node": "simulated regtest node (payouts devnode), own process per pipeline run, "
                "no added latency",
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="payouts-bench-"))
    started = time.monotonic()
    say(f"bench: logs of every process in {workdir}")
    try:
        results = run(args, workdir)
    except Exception as exc:  # a readable failure with where to look, not a bare traceback
        say(f"bench FAILED: {type(exc).__name__}: {exc}\nlogs: {workdir}")
        return 1
    write_json(results, args.json)
    say(f"bench: done in {time.monotonic() - started:.0f}s; JSON in {args.json}")
    print(markdown(results))
    print()
    print(summary_lines(results), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
