"""Judging a chaos run from the node's ledger, and the one-line summary per scenario.

Payment counts come from the node, never from our database: the simulated node's ledger
(every output to an address no wallet owns, in the chain or the mempool) and the wallet's own
`listsinceblock` view (`cli.ledger.judge`). The database only supplies what the ledger
cannot know: whether an unpaid payout was explicitly `failed` with a reason.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cli.ledger import judge
from cli.regtest_node import RegtestNode

# Every line printed this session, for the terminal summary (see conftest.py).
SUMMARY_LINES: list[str] = []


@dataclass(frozen=True)
class PayoutRef:
    id: str
    destination: str
    amount_sats: int
    route: str  # "automatic" | "manual"


@dataclass(frozen=True)
class DbRow:
    state: str
    last_error: str | None
    raw_hex: str | None = None  # the payout's stored signed transaction, if any


@dataclass
class Summary:
    scenario: str
    payouts: int
    faults: int
    paid_once: list[str] = field(default_factory=list)
    paid_twice: list[str] = field(default_factory=list)
    failed_with_reason: list[str] = field(default_factory=list)
    unpaid: list[str] = field(default_factory=list)
    # Paid on the ledger while the database says otherwise (e.g. `failed`): an operator
    # reading the database could pay it again by hand.
    db_disagrees: list[str] = field(default_factory=list)
    # Outputs to addresses that are no payout's destination (nor a wallet's): money that left
    # the hot wallet for nothing we asked for.
    stray_outputs: list[str] = field(default_factory=list)
    # `failed` although the stored transaction would still be accepted by the node.
    failed_but_alive: list[str] = field(default_factory=list)
    # Batches that break the batcher's rules (more payouts than PAYOUTS_BATCH_MAX_PAYOUTS), or
    # a run in which no transaction paid two payouts (then batching was not exercised at all).
    batching: list[str] = field(default_factory=list)
    details: dict[str, str] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)

    def line(self) -> str:
        return (
            f"scenario={self.scenario} payouts={self.payouts} paid_once={len(self.paid_once)} "
            f"paid_twice={len(self.paid_twice)} "
            f"failed_with_reason={len(self.failed_with_reason)} unpaid={len(self.unpaid)} "
            f"faults={self.faults}"
        )

    def failure_reasons(self, limit: int = 3) -> list[str]:
        """The recorded reasons of the failed payouts (for the run's notes)."""
        return [f"{i}: {self.reasons.get(i, '')}" for i in self.failed_with_reason[:limit]]

    def problems(self) -> str:
        """Empty when the run upheld exactly-once; else what went wrong, per payout."""
        bad = {
            "paid twice": self.paid_twice,
            "unpaid (neither paid nor failed with a reason)": self.unpaid,
            "paid on the ledger but the database disagrees": self.db_disagrees,
            "failed, but its transaction can still confirm": self.failed_but_alive,
            "output to an address no payout asked for": self.stray_outputs,
            "batching": self.batching,
        }
        lines = []
        for what, ids in bad.items():
            for payout_id in ids[:10]:  # or, for stray outputs, the output itself
                lines.append(f"{what}: {payout_id} {self.details.get(payout_id, '')}")
            if len(ids) > 10:
                lines.append(f"{what}: … and {len(ids) - 10} more")
        return "\n".join(lines)


def ledger_outputs(node: RegtestNode) -> dict[str, list[dict[str, Any]]]:
    """Address -> every output paying it (confirmed or in the mempool), from the node."""
    by_address: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for output in node.call("devnode_ledger"):
        by_address[output["address"]].append(output)
    return by_address


def judge_run(
    scenario: str,
    node: RegtestNode,
    payouts: list[PayoutRef],
    rows: dict[str, DbRow],
    faults: int,
    foreign_txids: frozenset[str] = frozenset(),
) -> Summary:
    """`foreign_txids`: transactions the test itself made pay elsewhere (a double-spend)."""
    summary = Summary(scenario=scenario, payouts=len(payouts), faults=faults)
    ledger = ledger_outputs(node)
    destinations = {p.destination for p in payouts}
    summary.stray_outputs = [
        f"{o['txid']}:{o['vout']} {o['value_sats']} sats to {address}"
        for address, outputs in ledger.items()
        if address not in destinations
        for o in outputs
        if o["txid"] not in foreign_txids
    ]
    wallet_view = judge(node, {p.id: (p.destination, p.amount_sats) for p in payouts})
    twice_in_wallet = set(wallet_view.paid_twice)
    for payout in payouts:
        outputs = ledger.get(payout.destination, [])
        row = rows.get(payout.id)
        state = row.state if row else "missing"
        reason = (row.last_error or "") if row else ""
        summary.details[payout.id] = f"state={state} outputs={outputs} last_error={reason!r}"
        confirmed_exact = [
            o for o in outputs if o["confirmations"] >= 1 and o["value_sats"] == payout.amount_sats
        ]
        # Any second output to the destination counts, even one still in the mempool: it is a
        # double payment waiting to happen.
        if len(outputs) >= 2 or payout.id in twice_in_wallet:
            summary.paid_twice.append(payout.id)
        elif len(outputs) == 1 and len(confirmed_exact) == 1:
            summary.paid_once.append(payout.id)
            if state != "confirmed":
                summary.db_disagrees.append(payout.id)
        elif not outputs and state == "failed" and reason.strip():
            if row and row.raw_hex and _could_still_confirm(node, row.raw_hex):
                # "Failed" is a promise that this transaction can never pay: a human may now
                # pay by other means. If the node would still take it, anyone holding the
                # bytes (the wallet itself rebroadcasts its transactions) can pay it again.
                summary.failed_but_alive.append(payout.id)
                summary.unpaid.append(payout.id)
            else:
                summary.failed_with_reason.append(payout.id)
                summary.reasons[payout.id] = reason
        else:
            summary.unpaid.append(payout.id)
    return summary


def batching_problems(sizes: dict[str, int], payouts: int, cap: int) -> list[str]:
    """`sizes`: txid -> how many of the run's automatic payouts it pays."""
    problems = [
        f"transaction {txid} pays {size} payouts, above PAYOUTS_BATCH_MAX_PAYOUTS={cap}"
        for txid, size in sizes.items()
        if size > cap
    ]
    if payouts > 1 and cap > 1 and sizes and max(sizes.values()) < 2:
        problems.append(f"{payouts} payouts in {len(sizes)} transactions, none paying two: "
                        "the scenario did not exercise batching")  # fmt: skip
    return problems


def _could_still_confirm(node: RegtestNode, raw_hex: str) -> bool:
    verdict = node.test_mempool_accept(raw_hex)
    reason = str(verdict.get("reject-reason", ""))
    return bool(verdict.get("allowed")) or "already" in reason


def record(summary: Summary, summary_file: Path, note: str = "") -> None:
    """Print the line now (pytest -s), keep it for the terminal summary, append it to a file.
    `note` (timings, what was killed) is printed below the line, not part of it."""
    line = summary.line()
    print(f"\n{line}" + (f"\n  {note}" if note else ""), flush=True)
    SUMMARY_LINES.append(line)
    with summary_file.open("a") as out:
        out.write(line + "\n")
