"""The bench's pure parts: percentiles, summaries, argument parsing, worker argv, /proc reads."""

from __future__ import annotations

import argparse
import os
import time

import pytest

from bench import procfs
from bench.report import Results, summary_lines
from bench.run import parser
from bench.stats import RunStats, median_run, percentile, summarize
from bench.workers import NOOP_APP, PIPELINE_APP, argv_for
from cli.processes import worker_argv


class TestPercentile:
    def test_nearest_rank_never_interpolates(self) -> None:
        values = list(range(1, 101))
        assert percentile(values, 50) == 50
        assert percentile(values, 99) == 99
        assert percentile([7.0], 99) == 7.0

    def test_no_values_is_an_error(self) -> None:
        with pytest.raises(ValueError):
            percentile([], 50)


class TestSummarize:
    def test_throughput_spans_first_start_to_last_end(self) -> None:
        stats = summarize([0.0, 1.0], [1.0, 2.0], workers=2)
        assert stats.seconds == 2.0 and stats.per_second == 1.0
        assert stats.p50_ms == 1000.0 and stats.workers == 2


def test_median_run_reports_one_whole_repetition_and_remembers_all() -> None:
    runs = [
        RunStats(count=1, workers=1, seconds=1, per_second=rate, p50_ms=rate, p99_ms=rate)
        for rate in (30.0, 10.0, 20.0)
    ]
    middle = median_run(runs)
    assert (middle.per_second, middle.p99_ms) == (20.0, 20.0)
    assert middle.repetitions == [30.0, 10.0, 20.0]


def _results(baseline: RunStats, pipeline: RunStats) -> Results:
    return Results(
        machine={}, settings={}, baseline=baseline, baseline_light=baseline,
        baseline_rss_mb=60.0, pipeline=pipeline, pipeline_light=None, worker_rss_mb=91.4,
        worker_rss_role="child pid 1", api={}, api_rss_mb=99.0,
    )  # fmt: skip


def test_summary_lines_have_fixed_wording_for_comparison_over_time() -> None:
    baseline = RunStats(count=10, workers=2, seconds=1, per_second=100, p50_ms=5, p99_ms=10)
    pipeline = RunStats(count=10, workers=2, seconds=4, per_second=25, p50_ms=20, p99_ms=45,
                        cpu_ms={"workers": 20.0, "node": 9.5})
    assert summary_lines(_results(baseline, pipeline)).splitlines() == [
        "throughput ratio (pipeline/no-op): 0.25",
        "latency p99 ratio (pipeline/no-op): 4.50",
        "worker RSS: 91 MB",
        "pipeline CPU per payout: 29.5 ms (workers 20.0, node 9.5)",
    ]


class TestArguments:
    def test_defaults_are_the_small_documented_run(self) -> None:
        args = parser().parse_args([])
        assert (args.payouts, args.workers, args.scaling) == (100, 2, [1, 2, 4])
        assert args.json.name == "results.json" and args.json.parent.name == "bench"

    @pytest.mark.parametrize("bad", ["0", "1,x", "", "2,-1"])
    def test_scaling_must_list_positive_worker_counts(self, bad: str) -> None:
        with pytest.raises(SystemExit):
            parser().parse_args(["--scaling", bad])

    def test_payouts_must_be_positive(self) -> None:
        with pytest.raises(SystemExit):
            parser().parse_args(["--payouts", "0"])


def test_noop_workers_get_the_real_workers_flags_with_only_the_app_swapped() -> None:
    real = worker_argv("x@%h")
    noop = argv_for(NOOP_APP, "x@%h")
    changed = [i for i, (a, b) in enumerate(zip(real, noop, strict=True)) if a != b]
    assert len(changed) == 1 and real[changed[0]] == PIPELINE_APP
    assert noop[changed[0]] == NOOP_APP


class TestProcfs:
    def test_reads_this_process_peak_rss_and_cpu(self) -> None:
        peaks = procfs.process_tree_peaks(os.getpid())
        assert peaks[0].role == "main" and peaks[0].mb > 1
        assert procfs.cpu_seconds(os.getpid()) > 0

    def test_a_vanished_process_reads_as_nothing(self) -> None:
        assert procfs.vm_hwm_kb(2**22 + 1) is None
        assert procfs.cpu_seconds(2**22 + 1) == 0.0

    def test_cpu_meter_counts_per_item(self) -> None:
        meter = procfs.CpuMeter({"me": lambda: [os.getpid()]})
        meter.start()
        started = time.process_time()
        while time.process_time() - started < 0.05:  # several clock ticks of CPU
            sum(i * i for i in range(1000))
        assert meter.per_item(2)["me"] > 0


def test_argparse_type_errors_are_argparse_errors() -> None:
    from bench.run import _worker_counts

    with pytest.raises(argparse.ArgumentTypeError):
        _worker_counts("a,b")
