"""The bench's pure parts: percentiles, summaries, the report's lines, funding, argument parsing,
worker argv, /proc reads."""

from __future__ import annotations

import argparse
import math
import os
import time

import pytest

from bench import procfs
from bench.pipeline import (
    CHAIN_DEPTH,
    PAYOUT_SATS,
    Paid,
    PipelineResult,
    batches_for,
    funding_for,
    repeats_for,
)
from bench.report import RATIO_BATCH, Results, markdown, summary_lines
from bench.run import light_batch, parser
from bench.stats import RunStats, median_run, percentile, summarize
from bench.workers import NOOP_APP, PIPELINE_APP, argv_for
from cli.processes import worker_argv
from shared.infra.settings import Settings


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


def _stats(count: int, seconds: float, *, workers_cpu: float | None = None) -> RunStats:
    cpu = {} if workers_cpu is None else {"workers": workers_cpu, "node": 0.5, "postgres": 0.25}
    return RunStats(count=count, workers=2, seconds=seconds, per_second=count / seconds,
                    p50_ms=5, p99_ms=10, cpu_ms=cpu)  # fmt: skip


def _run(batch: int, count: int, seconds: float, *, rss: float = 91.4,
         workers_cpu: float = 1.25, vbytes: int = 0) -> PipelineResult:  # fmt: skip
    transactions = -(-count // batch)
    return PipelineResult(
        batch_size=batch, drained=_stats(count, seconds, workers_cpu=workers_cpu),
        paid=Paid(payouts=count, transactions=transactions,
                  vbytes=vbytes or count * 31 + transactions * 110, fee_sats=count * 70),
        light=None, worker_rss_mb=rss, worker_rss_role="child pid 1",
        worker_rss_by_role={"child": rss, "main": rss - 4}, prepare_seconds=1.0,
    )  # fmt: skip


def _results(batches: list[PipelineResult], burst: PipelineResult | None) -> Results:
    baseline = _stats(2000, 8)  # 250 tasks/s
    return Results(
        machine={"cpus": 2, "platform": "x", "python": "3.11", "load_average_1m_before": 0.5,
                 "load_average_1m_after": 0.7},
        settings={"batch_window_seconds": 0.2}, baseline=baseline, baseline_light=baseline,
        baseline_rss_mb=60.0, batches=batches, burst=burst,
        api={"concurrency": 2, "requests": 10, "seconds": 1.0, "requests_per_second": 10.0,
             "all_p50_ms": 1.0, "all_p99_ms": 2.0, "errors": {}},
        api_rss_mb=99.0,
    )  # fmt: skip


class TestSummaryLines:
    def test_the_five_lines_have_the_issues_wording_and_come_last(self) -> None:
        batches = [
            _run(1, 2000, 100, workers_cpu=20.0),
            _run(50, 2000, 4, workers_cpu=1.234, vbytes=2000 * 33 + 40 * 50),
            _run(100, 2000, 2, rss=95.6),
        ]
        results = _results(batches, _run(100, 10_000, 12.34, rss=97.2))
        assert summary_lines(results).splitlines() == [
            "throughput ratio (pipeline/no-op): 4.00",  # batch 100: 1000/s over 250/s
            "pipeline CPU per payout: 1.23 ms",  # the workers' CPU at batch 50
            "vbytes per payout at batch 50: 34.0",  # (66,000 + 2,000) / 2,000
            "burst 10000 broadcast in: 12.3 s",
            "worker RSS: 97 MB",  # the largest worker of any run, the burst's here
        ]

    def test_sizes_not_run_say_so_instead_of_a_number(self) -> None:
        lines = summary_lines(_results([_run(10, 100, 1)], None)).splitlines()
        assert lines == [
            "throughput ratio (pipeline/no-op): not measured",
            "pipeline CPU per payout: not measured",
            "vbytes per payout at batch 50: not measured",
            "burst 0 broadcast in: not measured",
            "worker RSS: 91 MB",
        ]

    def test_the_ratio_reads_the_products_default_batch_size(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.delenv("PAYOUTS_BATCH_MAX_PAYOUTS", raising=False)
        assert Settings().batch_max_payouts == RATIO_BATCH == 100

    def test_markdown_names_every_batch_size_and_the_targets(self) -> None:
        batches = [_run(1, 2000, 100, workers_cpu=20.0), _run(50, 2000, 4, workers_cpu=2.5),
                   _run(100, 2000, 2, workers_cpu=1.5)]  # fmt: skip
        text = markdown(_results(batches, _run(100, 10_000, 25)))
        for size in ("| 1 |", "| 50 |", "| 100 |", "| 100 (burst of 10000) |"):
            assert size in text
        # Batch 1's 20 ms does not count against "≤ 2 ms at ≥ 50 per batch"; batch 50's does.
        assert "worker CPU per payout ≤ 2 ms at batch ≥ 50 (worst 2.50 ms): NOT met" in text
        assert "burst of 10000 broadcast in ≤ 20 s: NOT met" in text
        assert "throughput ≥ 3× the no-op (batch 100): met" in text


class TestFunding:
    def test_no_coin_chains_more_than_the_chain_depth(self) -> None:
        for batches, size in [(2000, 1), (200, 10), (100, 100), (8, 250)]:
            funding = funding_for(batches, size)
            assert math.ceil(batches / funding.coins) <= CHAIN_DEPTH

    def test_every_coin_pays_its_share_of_the_batches_with_room_to_spare(self) -> None:
        funding = funding_for(100, 250)
        per_coin = math.ceil(100 / funding.coins)
        assert funding.coin_sats > per_coin * 250 * PAYOUT_SATS * 1.5

    def test_batches_round_up(self) -> None:
        assert (batches_for(2000, 250), batches_for(2001, 250), batches_for(3, 10)) == (8, 9, 1)

    def test_bursts_of_thousands_of_transactions_run_once(self) -> None:
        assert [repeats_for(2000, size, 3) for size in (1, 10, 50)] == [1, 3, 3]


class TestArguments:
    def test_defaults_are_the_issues_run(self) -> None:
        args = parser().parse_args([])
        assert (args.payouts, args.batch_sizes, args.burst) == (2000, [1, 10, 50, 100, 250],
                                                                10_000)  # fmt: skip
        assert (args.burst_batch, args.workers, args.batch_window) == (RATIO_BATCH, 2, 0.2)
        assert args.repeat == 3
        assert args.json.name == "results.json" and args.json.parent.name == "bench"

    def test_batch_sizes_are_sorted_once_each(self) -> None:
        assert parser().parse_args(["--batch-sizes", "50,1,50"]).batch_sizes == [1, 50]

    @pytest.mark.parametrize("bad", ["0", "1,x", "", "2,-1"])
    def test_batch_sizes_must_be_positive(self, bad: str) -> None:
        with pytest.raises(SystemExit):
            parser().parse_args(["--batch-sizes", bad])

    def test_payouts_must_be_positive(self) -> None:
        with pytest.raises(SystemExit):
            parser().parse_args(["--payouts", "0"])

    def test_the_one_in_flight_run_is_the_default_batch_size_when_measured(self) -> None:
        assert light_batch([1, 50, RATIO_BATCH, 250]) == RATIO_BATCH
        assert light_batch([1, 10]) == 10


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
    from bench.run import _sizes

    with pytest.raises(argparse.ArgumentTypeError):
        _sizes("a,b")
