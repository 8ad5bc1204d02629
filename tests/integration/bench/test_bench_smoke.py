"""`python -m bench.run` works end to end at a tiny size. No timing assertions: only that
every section ran, the five comparable summary lines are the last lines, and the JSON file came
out with the same numbers."""

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
BURST = 120
SUMMARY = {
    "throughput": re.compile(r"^throughput ratio \(pipeline/no-op\): (\d+\.\d+)$"),
    "cpu": re.compile(r"^pipeline CPU per payout: (\d+\.\d+) ms$"),
    "vbytes": re.compile(r"^vbytes per payout at batch 50: (\d+\.\d)$"),
    "burst": re.compile(rf"^burst {BURST} broadcast in: (\d+\.\d) s$"),
    "rss": re.compile(r"^worker RSS: (\d+) MB$"),
}


@pytest.fixture(scope="module")
def bench_run(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    problem = services.postgres_reachable()
    if problem:
        services.service_missing("PostgreSQL", problem)
    json_path = tmp_path_factory.mktemp("bench") / "results.json"
    argv = [
        sys.executable, "-m", "bench.run", "--payouts", "60", "--workers", "2",
        "--batch-sizes", "1,50,100", "--burst", str(BURST), "--burst-batch", "50",
        "--one-in-flight", "2", "--api-requests", "5",
        "--api-concurrency", "2", "--json", str(json_path),
        "--postgres-admin-url", services.POSTGRES_ADMIN_URL, "--redis-url", redis_url,
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_TIMEOUT_SECONDS,
                          check=False)
    assert done.returncode == 0, f"bench failed:\n{done.stdout}\n{done.stderr[-3000:]}"
    return done.stdout, json_path


def test_bench_ends_with_the_five_summary_lines(bench_run: tuple[str, Path]) -> None:
    stdout, _ = bench_run
    last = stdout.strip().splitlines()[-len(SUMMARY):]
    for (name, pattern), line in zip(SUMMARY.items(), last, strict=True):
        assert pattern.match(line), f"{name}: {line!r} is not the summary line; output:\n{stdout}"


def test_bench_table_has_every_section(bench_run: tuple[str, Path]) -> None:
    stdout, _ = bench_run
    for label in ("1. no-op task, burst drained", "1. no-op task, one in flight",
                  "| 2. pipeline approve→broadcast, burst drained | 2 | 1 | 60 |",
                  "| 2. pipeline approve→broadcast, burst drained | 2 | 50 | 60 |",
                  "| 2. pipeline approve→broadcast, one in flight | 1 | 100 | 2 |",
                  "3. Per batch size", f"| 50 (burst of {BURST}) |", "4. API create+approve",
                  "5. process", f"6. burst of {BURST}"):
        assert label in stdout, f"{label!r} missing from:\n{stdout}"
    assert "CPU cores" in stdout  # the machine's size is part of every result


def test_bench_writes_the_same_numbers_as_json(bench_run: tuple[str, Path]) -> None:
    stdout, json_path = bench_run
    results = json.loads(json_path.read_text())
    assert results["baseline"]["count"] == 60
    assert [r["batch_size"] for r in results["batches"]] == [1, 50, 100]
    for run in results["batches"]:
        assert run["drained"]["count"] == 60 and run["paid"]["payouts"] == 60
        assert run["paid"]["transactions"] == -(-60 // run["batch_size"])
    assert results["burst"]["drained"]["count"] == BURST
    assert results["api"]["requests"] == 10 and results["api"]["errors"] == {}
    lines = stdout.strip().splitlines()
    throughput = SUMMARY["throughput"].match(lines[-5])
    vbytes = SUMMARY["vbytes"].match(lines[-3])
    assert throughput is not None and vbytes is not None
    summary = results["summary"]
    assert f"{summary['throughput_ratio']:.2f}" == throughput.group(1)
    assert f"{summary['vbytes_per_payout']:.1f}" == vbytes.group(1)
    assert results["rss_mb"]["worker"] > 0 and results["rss_mb"]["api"] > 0
