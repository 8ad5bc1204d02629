"""`make bench` / `python -m bench.run`: the whole benchmark in one run. See bench/README.md.

One fresh PostgreSQL database, one Redis database (10 unless told otherwise) and one
simulated node process serve every section, so the no-op baseline and the pipeline are
measured on the same services, broker settings and worker flags.
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
from bench.pipeline import run_pipeline
from bench.report import Results, markdown, summary_lines, write_json
from bench.services import (
    DEFAULT_POSTGRES_ADMIN_URL,
    DEFAULT_REDIS_URL,
    empty_redis,
    fresh_postgres_database,
)

DEFAULT_JSON = Path(__file__).resolve().parent / "results.json"
# No payout of the bench may take the manual route for lack of daily automatic budget.
AUTO_DAILY_SATS = 10**15


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _worker_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError("a comma-separated list like 1,2,4") from exc
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("a comma-separated list of counts ≥ 1, like 1,2,4")
    return counts


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Pipeline vs no-op Celery baseline, API load, worker/API memory, scaling.",
    )
    p.add_argument("--payouts", type=_positive, default=100,
                   help="payouts per pipeline run, and no-op tasks in the baseline (default 100)")
    p.add_argument("--workers", type=_positive, default=2,
                   help="W, worker processes for sections 1-2 (default 2)")
    p.add_argument("--scaling", type=_worker_counts, default=[1, 2, 4],
                   help="worker counts for the scaling runs (default 1,2,4)")
    p.add_argument("--repeat", type=_positive, default=3,
                   help="repetitions of every burst run; the median one is reported (default 3)")
    p.add_argument("--one-in-flight", type=int, default=20,
                   help="items measured one at a time on an idle queue (default 20; 0 skips)")
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


def _environment(db_url: str, redis_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYOUTS_")}
    env.update(
        PAYOUTS_DATABASE_URL=db_url,
        PAYOUTS_REDIS_URL=redis_url,
        PAYOUTS_NETWORK="regtest",
        PAYOUTS_AUTO_DAILY_SATS=str(AUTO_DAILY_SATS),
        PAYOUTS_LOG_JSON="true",
        PAYOUTS_LOG_LEVEL="INFO",
    )
    return env


def _use_environment(env: dict[str, str]) -> None:
    """The bench process talks to the same DB and broker as its children."""
    from cli.caches import reset_process_caches

    os.environ.update({k: v for k, v in env.items() if k.startswith("PAYOUTS_")})
    reset_process_caches()


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run(args: argparse.Namespace, workdir: Path) -> Results:
    load_before = os.getloadavg()[0]
    with (
        fresh_postgres_database(args.postgres_admin_url) as db_url,
        empty_redis(args.redis_url) as redis_url,
    ):
        env = _environment(db_url, redis_url)
        _use_environment(env)
        w = args.workers
        say(f"1/4 no-op baseline: {args.payouts} tasks, W={w}")
        baseline, baseline_light, noop_rss = run_baseline(
            args.payouts, w, max(args.one_in_flight, 1), args.repeat, env, workdir
        )
        say(f"2/4 pipeline: {args.payouts} payouts, W={w}")
        main = run_pipeline(args.payouts, w, args.one_in_flight, args.repeat, env, workdir)
        scaling = []
        for count in args.scaling:
            say(f"3/4 scaling: {args.payouts} payouts, W={count}")
            result = main if count == w else run_pipeline(args.payouts, count, 0, args.repeat,
                                                          env, workdir)
            scaling.append(result.drained)
        say(f"4/4 API: {args.api_requests} create+approve pairs, concurrency "
            f"{args.api_concurrency}")
        api = run_api_load(args.api_requests, args.api_concurrency, env, workdir)
    return Results(
        machine=_machine(load_before),
        settings=_settings(args),
        baseline=baseline,
        baseline_light=baseline_light,
        baseline_rss_mb=noop_rss,
        pipeline=main.drained,
        pipeline_light=main.light,
        worker_rss_mb=main.worker_rss_mb,
        worker_rss_role=main.worker_rss_role,
        worker_rss_by_role=main.worker_rss_by_role,
        api=api.load,
        api_rss_mb=api.api_rss_mb,
        scaling=scaling,
    )


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
        "workers": args.workers,
        "scaling": args.scaling,
        "repeat": args.repeat,
        "one_in_flight": args.one_in_flight,
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
    print(markdown(results))
    print()
    print(summary_lines(results))
    write_json(results, args.json)
    say(f"bench: done in {time.monotonic() - started:.0f}s; JSON in {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
