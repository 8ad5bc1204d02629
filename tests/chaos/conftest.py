"""Chaos tier fixtures: one whole running system per scenario, and the summary lines.

Each scenario gets its own stack (devnode, API, Celery workers, beat) so one scenario's
faults — orphaned coin locks, a restarted node, a flushed broker — cannot leak into the
next one's verdict.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.harness import ChaosStack, chaos_stack
from tests.chaos.oracle import SUMMARY_LINES
from tests.chaos.redis_server import RestartableRedis
from tests.support.services import truncate_all


@pytest.fixture(autouse=True)
def _simulated_node_only() -> None:
    # Every scenario needs the simulated node's fault injection and ledger (devnode_* RPCs).
    if os.environ.get("PAYOUTS_TEST_BITCOIND_URL"):
        pytest.skip("the chaos tier needs the simulated node's fault injection")


@pytest.fixture(scope="session")
def summary_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.getbasetemp() / "chaos-summary.txt"
    path.write_text("")
    return path


@pytest.fixture
def seed(request: pytest.FixtureRequest) -> int:
    """Random fault timing, reproducible: PAYOUTS_CHAOS_SEED, else derived from the test."""
    fixed = os.environ.get("PAYOUTS_CHAOS_SEED")
    return int(fixed) if fixed else zlib.crc32(request.node.nodeid.encode())


@pytest.fixture
def start_chaos(
    postgres_url: str, redis_url: str, tmp_path: Path, summary_file: Path, seed: int
) -> Iterator[Callable[..., ChaosStack]]:
    """Starts the stack with a scenario's options (see `chaos_stack`); stops it after the
    test. Redis defaults to the machine's (PAYOUTS_TEST_REDIS_DB)."""
    with ExitStack() as running:

        def start(**options: Any) -> ChaosStack:
            truncate_all(postgres_url)
            options.setdefault("redis_url", redis_url)
            return running.enter_context(
                chaos_stack(postgres_url=postgres_url, workdir=tmp_path,
                            summary_file=summary_file, seed=seed, **options)
            )  # fmt: skip

        yield start


@pytest.fixture
def chaos(start_chaos: Callable[..., ChaosStack]) -> ChaosStack:
    return start_chaos()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RestartableRedis]:
    """A Redis of our own, for the scenario that flushes and restarts it (never the
    machine's shared one). Request it before `start_chaos`, so it outlives the stack."""
    server = RestartableRedis(tmp_path)
    try:
        yield server
    finally:
        server.stop()


# Scenario failures, kept so the run ends by saying plainly which scenario failed and why:
# clean summary lines do not mean a clean run (a fault-timing helper, a teardown or a scenario's
# own assertion can fail after the line was recorded), and pytest's long tracebacks and
# worker-log dumps bury the reason.
FAILURES: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.failed and "tests/chaos/" in report.nodeid:
        crash = getattr(report.longrepr, "reprcrash", None)
        reason = crash.message if crash is not None else str(report.longrepr)
        first = (reason.strip().splitlines() or ["(no message)"])[0][:300]
        FAILURES.append(f"{report.nodeid.split('::')[-1]} failed in {report.when}: {first}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    # So the lines show in a plain `pytest -q` run too, not only with -s.
    if SUMMARY_LINES:
        terminalreporter.section("chaos summary")
        for line in SUMMARY_LINES:
            terminalreporter.write_line(line)
    if SUMMARY_LINES or FAILURES:
        verdict = "FAILED" if FAILURES else "passed"
        terminalreporter.write_line(f"chaos verdict: {verdict}")
        for failure in FAILURES:
            terminalreporter.write_line(f"  {failure}")
