"""`python -m bench.run` works end to end at a tiny size. No timing assertions: only that
every section ran and the comparable summary lines and the JSON file came out."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import services

pytestmark = pytest.mark.integration

# Generous: start-up of a dozen processes on a loaded 2-core machine, not a performance bound.
RUN_TIMEOUT_SECONDS = 300
SUMMARY = {
    "throughput": re.compile(r"^throughput ratio \(pipeline/no-op\): (\d+\.\d+)$", re.M),
    "latency": re.compile(r"^latency p99 ratio \(pipeline/no-op\): (\d+\.\d+)$", re.M),
    "rss": re.compile(r"^worker RSS: (\d+) MB$", re.M),
}


@pytest.fixture(scope="module")
def bench_run(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    problem = services.postgres_reachable()
    if problem:
        services.service_missing("PostgreSQL", problem)
    json_path = tmp_path_factory.mktemp("bench") / "results.json"
    argv = [
        sys.executable, "-m", "bench.run", "--payouts", "5", "--workers", "1",
        "--scaling", "1,2", "--one-in-flight", "2", "--api-requests", "5",
        "--api-concurrency", "2", "--json", str(json_path),
        "--postgres-admin-url", services.POSTGRES_ADMIN_URL, "--redis-url", redis_url,
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_TIMEOUT_SECONDS,
                          check=False)
    assert done.returncode == 0, f"bench failed:\n{done.stdout}\n{done.stderr[-3000:]}"
    return done.stdout, json_path


def test_bench_prints_the_three_comparable_summary_lines(bench_run: tuple[str, Path]) -> None:
    stdout, _ = bench_run
    for name, pattern in SUMMARY.items():
        assert pattern.search(stdout), f"no {name} summary line in:\n{stdout}"


def test_bench_table_has_every_section(bench_run: tuple[str, Path]) -> None:
    stdout, _ = bench_run
    for label in ("1. no-op task, burst drained", "2. pipeline approve→broadcast, burst drained",
                  "3. ratio pipeline / no-op", "4. API create+approve", "5. process",
                  "6. scaling: pipeline, W=1", "6. scaling: pipeline, W=2"):
        assert label in stdout, f"{label!r} missing from:\n{stdout}"
    assert "CPU cores" in stdout  # the machine's size is part of every result


def test_bench_writes_the_same_numbers_as_json(bench_run: tuple[str, Path]) -> None:
    stdout, json_path = bench_run
    results = json.loads(json_path.read_text())
    assert results["pipeline"]["count"] == 5 and results["baseline"]["count"] == 5
    assert [run["workers"] for run in results["scaling"]] == [1, 2]
    assert results["api"]["requests"] == 10 and results["api"]["errors"] == {}
    throughput = SUMMARY["throughput"].search(stdout)
    assert throughput is not None
    assert f"{results['ratios']['throughput']:.2f}" == throughput.group(1)
    assert results["rss_mb"]["worker"] > 0 and results["rss_mb"]["api"] > 0
