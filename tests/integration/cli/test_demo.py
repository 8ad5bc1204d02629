"""`payouts demo` — the README's first command — really shows what it promises."""

from __future__ import annotations

import subprocess
import sys

from tests.support.services import REDIS_BASE_URL, redis_reachable, service_missing


def test_demo_pays_every_payout_once_and_refuses_the_manual_claim() -> None:
    # The demo embeds a Redis only when none is reachable; here we use the machine's.
    problem = redis_reachable(f"{REDIS_BASE_URL}/15")
    if problem:
        service_missing("Redis", problem)
    run = subprocess.run(
        [sys.executable, "-m", "cli.main", "demo", "--payouts", "3"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = run.stdout
    assert run.returncode == 0, out + run.stderr
    assert "HTTP 409 claimed_by_worker" in out
    assert "all consumed, every txid unchanged: True" in out
    assert "HTTP 202 rbf:" in out  # the operator's fee bump
    assert "bumping the old version again: HTTP 409 already_replaced" in out
    assert "HTTP 409 invalid_state" in out  # the second signer
    assert "paid once: 4  paid twice: 0  unpaid: 0  stray outputs: 0" in out
    assert "RESULT: every payout paid exactly once" in out
