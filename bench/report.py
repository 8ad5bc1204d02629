"""The benchmark's output: a Markdown table on stdout, the three comparable summary lines,
and the same numbers as JSON."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.stats import RunStats

# The targets of issue 7; a miss is explained in bench/README.md, not hidden.
TARGET_THROUGHPUT_RATIO = 0.5
TARGET_LATENCY_P99_RATIO = 5.0
TARGET_WORKER_RSS_MB = 150.0


@dataclass
class Results:
    machine: dict[str, Any]
    settings: dict[str, Any]
    baseline: RunStats
    baseline_light: RunStats
    baseline_rss_mb: float
    pipeline: RunStats
    pipeline_light: RunStats | None
    worker_rss_mb: float
    worker_rss_role: str
    api: dict[str, Any]
    api_rss_mb: float
    scaling: list[RunStats] = field(default_factory=list)
    worker_rss_by_role: dict[str, float] = field(default_factory=dict)

    @property
    def throughput_ratio(self) -> float:
        return self.pipeline.per_second / self.baseline.per_second

    @property
    def latency_p99_ratio(self) -> float:
        return self.pipeline.p99_ms / self.baseline.p99_ms

    def as_dict(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "settings": self.settings,
            "baseline": self.baseline.as_dict(),
            "baseline_one_in_flight": self.baseline_light.as_dict(),
            "pipeline": self.pipeline.as_dict(),
            "pipeline_one_in_flight": self.pipeline_light.as_dict()
            if self.pipeline_light else None,
            "ratios": {
                "throughput": self.throughput_ratio,
                "latency_p50": self.pipeline.p50_ms / self.baseline.p50_ms,
                "latency_p99": self.latency_p99_ratio,
            },
            "api": self.api,
            "rss_mb": {
                "worker": self.worker_rss_mb,
                "worker_process": self.worker_rss_role,
                "worker_by_role": self.worker_rss_by_role,
                "noop_worker": self.baseline_rss_mb,
                "api": self.api_rss_mb,
            },
            "scaling": [s.as_dict() for s in self.scaling],
        }


def _row(label: str, s: RunStats, items: str = "") -> str:
    spread = ""
    if len(s.repetitions) > 1:
        spread = f" (of {', '.join(f'{x:.1f}' for x in sorted(s.repetitions))})"
    return (f"| {label} | {s.workers} | {items or s.count} | {s.seconds:.2f} | "
            f"{s.per_second:.1f}{spread} | {s.p50_ms:.1f} | {s.p99_ms:.1f} |")


def _cpu(s: RunStats) -> str:
    return ", ".join(f"{name} {ms:.1f}" for name, ms in s.cpu_ms.items()) or "not measured"


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def markdown(r: Results) -> str:
    m, api = r.machine, r.api
    lines = [
        f"Machine: {m['cpus']} CPU cores, {m['platform']}, Python {m['python']}. Redis, "
        "PostgreSQL, the simulated node, the workers, the API and the bench itself all share "
        f"these cores. Load average (1 min) {m['load_average_1m_before']:.1f} before the run, "
        f"{m['load_average_1m_after']:.1f} after: anything else running inflates every number.",
        "",
        "Burst runs: the median of the repetitions by throughput (all of them in brackets).",
        "",
        "| run | W | items | seconds | per second | p50 ms | p99 ms |",
        "|---|---|---|---|---|---|---|",
        _row("1. no-op task, burst drained", r.baseline),
        _row("1. no-op task, one in flight", r.baseline_light),
        _row("2. pipeline approve→broadcast, burst drained", r.pipeline),
    ]
    if r.pipeline_light:
        lines.append(_row("2. pipeline approve→broadcast, one in flight", r.pipeline_light))
    lines.append(
        f"| 3. ratio pipeline / no-op (burst) | | | | {r.throughput_ratio:.2f} | "
        f"{r.pipeline.p50_ms / r.baseline.p50_ms:.2f} | {r.latency_p99_ratio:.2f} |"
    )
    lines.append(
        f"| 4. API create+approve, concurrency {api['concurrency']} | | "
        f"{api['requests']} requests | {api['seconds']:.2f} | {api['requests_per_second']:.1f} | "
        f"{api['all_p50_ms']:.1f} | {api['all_p99_ms']:.1f} |"
    )
    lines += [_row(f"6. scaling: pipeline, W={s.workers}", s) for s in r.scaling]
    lines += ["", "CPU time per item (ms), burst runs: "
              + "; ".join(f"{label}: {_cpu(s)}" for label, s in [
                  ("no-op", r.baseline), (f"pipeline W={r.pipeline.workers}", r.pipeline),
                  *[(f"W={s.workers}", s) for s in r.scaling if s is not r.pipeline]])
              + "."]
    lines += [
        "",
        f"API latency by request: create p50 {api.get('create_p50_ms', math.nan):.1f} ms / "
        f"p99 {api.get('create_p99_ms', math.nan):.1f} ms; approve p50 "
        f"{api.get('approve_p50_ms', math.nan):.1f} ms / p99 "
        f"{api.get('approve_p99_ms', math.nan):.1f} ms; non-2xx or failed: "
        f"{api['errors'] or 'none'}; CPU ms per request: "
        + ", ".join(f"{k} {v:.1f}" for k, v in api.get("cpu_ms_per_request", {}).items())
        + ".",
        "",
        "| 5. process | peak RSS (VmHWM) |",
        "|---|---|",
        f"| pipeline worker: largest of main and pool child ({r.worker_rss_role}; "
        + ", ".join(f"{role} {mb:.1f} MB" for role, mb in sorted(r.worker_rss_by_role.items()))
        + f") | {r.worker_rss_mb:.1f} MB |",
        f"| no-op worker (largest of main and pool child) | {r.baseline_rss_mb:.1f} MB |",
        f"| API | {r.api_rss_mb:.1f} MB |",
        "",
        f"Targets: throughput ratio ≥ {TARGET_THROUGHPUT_RATIO}: "
        f"{_met(r.throughput_ratio >= TARGET_THROUGHPUT_RATIO)}; latency p99 ratio ≤ "
        f"{TARGET_LATENCY_P99_RATIO}: {_met(r.latency_p99_ratio <= TARGET_LATENCY_P99_RATIO)}; "
        f"worker RSS < {TARGET_WORKER_RSS_MB:.0f} MB: "
        f"{_met(r.worker_rss_mb < TARGET_WORKER_RSS_MB)}.",
    ]
    return "\n".join(lines)


def summary_lines(r: Results) -> str:
    """Fixed wording, so runs can be compared over time with grep. The last line is the
    steadiest on a shared machine: CPU time per payout moves far less than wall time."""
    lines = [
        f"throughput ratio (pipeline/no-op): {r.throughput_ratio:.2f}",
        f"latency p99 ratio (pipeline/no-op): {r.latency_p99_ratio:.2f}",
        f"worker RSS: {r.worker_rss_mb:.0f} MB",
    ]
    if r.pipeline.cpu_ms:
        lines.append(f"pipeline CPU per payout: {sum(r.pipeline.cpu_ms.values()):.1f} ms ("
                     + ", ".join(f"{k} {v:.1f}" for k, v in r.pipeline.cpu_ms.items()) + ")")
    return "\n".join(lines)


def write_json(r: Results, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(r.as_dict(), indent=2) + "\n")
