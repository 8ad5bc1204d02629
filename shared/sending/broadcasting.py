"""Sending persisted transactions, and deciding when one is provably dead (docs/architecture.md §5,
§6).

Only bytes stored in `transactions` are ever sent, so a retry by anyone re-sends the same txid. A
timeout or a dropped reply proves nothing: the transaction stays `signed` and the rebroadcast task
sends the same bytes again later.
"""

from __future__ import annotations

import enum
import logging
import uuid
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from shared.core.models import Payout, PayoutState, Route, Transaction, TxState, utcnow
from shared.core.state_machine import transition, transition_many, transition_tx
from shared.infra.settings import get_settings
from shared.node import NodeClient
from shared.node.amounts import btc_to_sats
from shared.node.errors import (
    AlreadyKnown,
    FeeTooHigh,
    InputsMissingOrSpent,
    NodeError,
    NodeUnavailable,
    TxConflict,
)
from shared.ops import metrics
from shared.sending import versions

log = logging.getLogger(__name__)
S = PayoutState


class BroadcastOutcome(enum.StrEnum):
    SENT = "sent"
    ALREADY_KNOWN = "already_known"
    UNKNOWN = "unknown"  # timeout / dropped reply: left `signed` for the rebroadcast task
    CONFLICT_UNPROVEN = "conflict_unproven"  # inputs spent elsewhere, not (yet) confirmed
    DEAD = "dead"  # proven dead: payouts re-queued, or failed with the reason
    DEAD_WAITING = "dead_waiting"  # proven dead; waiting for the conflict to be buried
    REJECTED = "rejected"  # the node refused it for another reason: failed with the reason
    REPLACED = "replaced"  # another version of the payment (fee bump or original) confirmed
    TRANSIENT = "transient"  # refused for a passing condition (mempool full, chain limit)


# Rejections that say "not now" rather than "never": the same bytes may be accepted later.
TRANSIENT_REJECTIONS = ("too-long-mempool-chain", "mempool full", "mempool min fee not met")


@dataclass(frozen=True)
class DeadProof:
    outpoint: str
    conflicts: list[str]
    # Set when `outpoint` is change of an unconfirmed parent that is itself proven dead.
    dead_parent: tuple[str, DeadProof] | None = None

    def reason(self, txid: str) -> str:
        return (
            f"transaction {txid} can never confirm: {self._why()}. Nothing was paid by it; a "
            "human must decide whether to create a new payout."
        )

    def _why(self) -> str:
        if self.dead_parent is not None:
            parent, proof = self.dead_parent
            return (
                f"its input {self.outpoint} is an output of transaction {parent}, which can "
                f"never confirm either: {proof._why()}"
            )
        by = f" by {', '.join(self.conflicts)}" if self.conflicts else ""
        return (
            f"its input {self.outpoint} was spent{by} in a confirmed transaction that is not "
            "this payout's"
        )


# bitcoind's default mempool ancestor limit: no chain of unconfirmed transactions is deeper.
MAX_UNCONFIRMED_ANCESTORS = 25


def prove_dead(
    node: NodeClient, txid: str, inputs: list[str], _depth: int = 0
) -> DeadProof | None:
    """Proof that `txid` can never confirm: one of its inputs is spent in the chain by another,
    or comes from an unconfirmed parent that is itself proven dead.

    Checked against the chain only (mempool excluded): a mempool conflict can still lose.
    """
    if _confirmations(node, txid) > 0:
        return None
    for outpoint in inputs:
        if node.get_tx_out(outpoint, include_mempool=False) is not None:
            continue
        # The input is gone from the chain's UTXO set. If our own tx confirmed in the meantime
        # that is why; otherwise someone else's confirmed spend took it.
        if _confirmations(node, txid) > 0:
            return None
        parent = outpoint.rsplit(":", 1)[0]
        if _confirmations(node, parent) <= 0:
            # Never in the chain: change of an unconfirmed parent (payouts chain on each
            # other's change). A parent dropped from the mempool is resent and the input comes
            # back, so this proves nothing unless the parent itself is dead.
            parent_proof = _prove_parent_dead(node, parent, _depth)
            if parent_proof is None:
                continue
            return DeadProof(outpoint, parent_proof.conflicts, (parent, parent_proof))
        info = node.get_transaction(txid) or {}
        conflicts = list(info.get("walletconflicts", [])) or _wallet_spenders(node, outpoint)
        return DeadProof(outpoint=outpoint, conflicts=conflicts)
    return None


def _prove_parent_dead(node: NodeClient, parent: str, depth: int) -> DeadProof | None:
    if depth >= MAX_UNCONFIRMED_ANCESTORS:
        return None
    # The wallet keeps its own transactions even after they left the mempool or lost a
    # conflict; an unknown parent proves nothing ("a missing txid is never proof").
    known = node.get_transaction(parent) or node.get_raw_transaction(parent) or {}
    if not known.get("hex"):
        return None
    parent_inputs = node.decode_raw_transaction(str(known["hex"])).inputs
    return prove_dead(node, parent, parent_inputs, depth + 1)


# How many recent confirmed wallet transactions to search for the spender of an input when
# the wallet never saw our transaction (it was refused before it reached any mempool).
SPENDER_SEARCH_LIMIT = 500


def _wallet_spenders(node: NodeClient, outpoint: str) -> list[str]:
    """Confirmed wallet transactions spending `outpoint` (rare path: only on a dead proof)."""
    txid, vout = outpoint.rsplit(":", 1)
    entries = node.list_since_block(None).get("transactions", [])
    candidates = [e["txid"] for e in entries if int(e.get("confirmations", 0)) > 0]
    for candidate in list(dict.fromkeys(reversed(candidates)))[:SPENDER_SEARCH_LIMIT]:
        raw = node.get_raw_transaction(candidate) or {}
        if any(
            vin.get("txid") == txid and str(vin.get("vout")) == vout for vin in raw.get("vin", [])
        ):
            return [candidate]
    return []


def chain_view(node: NodeClient, txid: str) -> dict[str, Any]:
    """What the node knows of `txid`: the wallet's view (confirmations, walletconflicts,
    blockhash), else the raw transaction's, else nothing ({})."""
    return node.get_transaction(txid) or node.get_raw_transaction(txid) or {}


def _confirmations(node: NodeClient, txid: str) -> int:
    return int(chain_view(node, txid).get("confirmations", 0))


def _mark_broadcast(session: Session, tx: Transaction, actor: str) -> None:
    # Only a `signed` row moves: a re-send of a `broadcast` (or reorged) row changes nothing.
    # The payouts' own CAS (`signed -> broadcast`) is what decides for each payout.
    transition_tx(
        session, tx.id, expected=TxState.SIGNED, target=TxState.BROADCAST,
        values={"last_error": None},
    )  # fmt: skip
    transition_many(
        session, payouts_of(session, tx.id), expected=S.SIGNED, target=S.BROADCAST,
        actor=actor, reason=f"broadcast {tx.txid}", log_fields={"txid": tx.txid},
    )  # fmt: skip


class DeadOutcome(enum.StrEnum):
    REQUEUED = "requeued"  # conflict buried DEAD_DEPTH deep: payouts back to `approved`
    FAILED = "failed"  # the spender is unknown, so its depth is too: a human decides
    WAITING = "waiting"  # proven dead, but a reorg could still revive it: nothing moves
    # A fee bump died by a coin it added; the version it replaced did not spend that coin and
    # is live again (the payouts name it).
    OLDER_VERSION_LIVE = "older_version_live"


def mark_dead(
    session: Session,
    node: NodeClient,
    tx: Transaction,
    proof: DeadProof,
    actor: str,
    dead_depth: int | None = None,
) -> DeadOutcome:
    """Act on a proven-dead transaction (docs/architecture.md §5.2).

    Its payouts are re-queued (`-> approved`, paid again by a later batch) only once the
    conflicting spend is DEAD_DEPTH blocks deep: a shallower reorg could bring the dead
    transaction back, and then both would pay. Before that they wait where they are. When the
    spender is unknown, its depth is too: the payouts fail with the reason, for a human.

    Before calling it a loss, look at what beat us: a conflicting transaction that pays the
    payout's destination the exact amount (e.g. a released manual PSBT someone broadcast
    themselves) means the payout WAS paid: it ends `failed` saying so, so nobody re-sends.
    """
    dead_depth = get_settings().dead_depth if dead_depth is None else dead_depth
    family = versions.versions_of(session, tx) if versions.has_versions(session, tx) else [tx]
    others = [v for v in family if v.id != tx.id]
    if any(_confirmations(node, v.txid) > 0 for v in others):
        # Beaten by another version of the same payment (a bump, or the original): that is a
        # payment, not a death. `versions.settle` adopts it on the next look.
        return DeadOutcome.WAITING
    # The other versions conflict with this one by construction (they share its inputs), so
    # the wallet lists them among the conflicts; only a spender outside the family kills.
    proof = replace(proof, conflicts=[c for c in proof.conflicts
                                      if c not in {v.txid for v in family}])  # fmt: skip
    survivors = [v for v in others if proof.outpoint not in v.inputs]
    if survivors:
        # A bump may add inputs, and the dead one is such an added coin: the versions before
        # it never spent it and can still confirm. The newest of them is live again.
        return _revive_older_version(session, tx, family, survivors[-1], proof, actor)
    dead_reason = proof.reason(tx.txid)
    depth = _conflict_depth(node, proof.conflicts)
    if depth is not None and depth < dead_depth:
        note = (
            f"proven dead ({dead_reason}); its payouts are re-queued once the conflict is "
            f"{dead_depth} blocks deep (now {depth})"
        )
        session.execute(
            update(Transaction).where(Transaction.id == tx.id)
            .values(last_error=note, updated_at=utcnow())
        )  # fmt: skip
        log.info("transaction %s: %s", tx.txid, note, extra={"txid": tx.txid})
        return DeadOutcome.WAITING
    # Already `conflicted` (another run recorded the proof): the payouts' CAS below then finds
    # them moved on and changes nothing either.
    transition_tx(
        session, tx.id, expected=[TxState.SIGNED, TxState.BROADCAST, TxState.CONFIRMED],
        target=TxState.CONFLICTED, values={"last_error": dead_reason},
    )  # fmt: skip
    for version in family:  # its other versions spend the same inputs: dead too
        if version.id != tx.id:
            transition_tx(
                session, version.id, expected=[TxState.REPLACED, TxState.SIGNED],
                target=TxState.CONFLICTED, values={"last_error": dead_reason},
            )  # fmt: skip
    requeue = depth is not None
    requeued = False
    for payout in session.execute(select(Payout).where(Payout.tx_id == tx.id)).scalars():
        paid_by = _conflict_paying(node, proof.conflicts, payout.destination, payout.amount_sats)
        if paid_by:
            reason = (
                f"transaction {tx.txid} lost to conflicting transaction {paid_by}, which pays "
                f"{payout.amount_sats} sats to {payout.destination}: this payout looks PAID by "
                f"{paid_by}. Verify it on chain; do not send it again."
            )
        elif requeue and payout.route == Route.AUTOMATIC:
            # Only our own batches: a manual payout's signer may hold other signed variants
            # of its PSBT outside this system, so a human decides (it fails with the reason).
            reason = (
                f"re-queued: {dead_reason.split('. Nothing was paid', 1)[0]}, and the conflict "
                f"is {depth} blocks deep. Nothing was paid by it; a new transaction will pay."
            )
            transition(
                session, payout.id, expected=[S.SIGNED, S.BROADCAST], target=S.APPROVED,
                actor=actor, reason=reason,
                values={"last_error": reason, "tx_id": None, "vout": None,
                        "fee_share_sats": None, "claimed_by": None, "claim_token": None,
                        "lease_until": None, "attempts": 0},
            )  # fmt: skip
            requeued = True
            continue
        else:
            reason = dead_reason
        transition(
            session,
            payout.id,
            expected=[S.SIGNED, S.BROADCAST],
            target=S.FAILED,
            actor=actor,
            reason=reason,
            values={"last_error": reason},
        )
    return DeadOutcome.REQUEUED if requeued else DeadOutcome.FAILED


def _revive_older_version(
    session: Session,
    tx: Transaction,
    family: list[Transaction],
    survivor: Transaction,
    proof: DeadProof,
    actor: str,
) -> DeadOutcome:
    """`tx` (and every version spending the dead outpoint) ends `replaced` with the proof; the
    newest version that does not spend it becomes live: its payouts move back to it."""
    reason = proof.reason(tx.txid).split(". Nothing was paid", 1)[0]
    for version in family:
        if version.id != survivor.id and proof.outpoint in version.inputs:
            transition_tx(
                session, version.id,
                expected=[TxState.SIGNED, TxState.BROADCAST, TxState.CONFIRMED],
                target=TxState.REPLACED, values={"last_error": reason},
            )  # fmt: skip
    transition_tx(session, survivor.id, expected=TxState.REPLACED, target=TxState.BROADCAST,
                  values={"last_error": None})  # fmt: skip
    versions.move_payouts(
        session, tx, survivor, actor=actor,
        reason=f"{reason}; the earlier version {survivor.txid} does not spend "
               f"{proof.outpoint} and is live again",
    )  # fmt: skip
    log.info("transaction %s: dead by an input only it spends; %s is live again", tx.txid,
             survivor.txid, extra={"txid": survivor.txid})  # fmt: skip
    return DeadOutcome.OLDER_VERSION_LIVE


def _conflict_depth(node: NodeClient, conflicts: list[str]) -> int | None:
    """How deep the confirmed conflicting spend is; None when no known conflict is confirmed."""
    depths = [int(chain_view(node, txid).get("confirmations", 0)) for txid in conflicts]
    confirmed = [d for d in depths if d > 0]
    return max(confirmed) if confirmed else None


def _conflict_paying(
    node: NodeClient, conflicts: list[str], destination: str, amount_sats: int
) -> str | None:
    for txid in conflicts:
        raw = node.get_raw_transaction(txid) or {}
        for vout in raw.get("vout", []):
            address = vout.get("scriptPubKey", {}).get("address")
            if address == destination and btc_to_sats(vout.get("value", 0)) == amount_sats:
                return txid
    return None


def payouts_of(session: Session, tx_row_id: uuid.UUID) -> list[uuid.UUID]:
    return list(session.execute(select(Payout.id).where(Payout.tx_id == tx_row_id)).scalars())


def _record_attempt(session: Session, tx: Transaction, error: str | None) -> None:
    session.execute(
        update(Transaction)
        .where(Transaction.id == tx.id)
        .values(
            broadcast_attempts=Transaction.broadcast_attempts + 1,
            last_error=error,
            updated_at=utcnow(),
        )
    )


def broadcast_persisted(
    session: Session, node: NodeClient, tx: Transaction, *, actor: str, max_fee_rate_sat_vb: int
) -> BroadcastOutcome:
    """Send the stored bytes once and record what we learned. The caller commits."""
    outcome = _send_persisted(session, node, tx, actor=actor, max_fee_rate=max_fee_rate_sat_vb)
    log.info("broadcast %s: %s", tx.txid, outcome.value,
             extra={"txid": tx.txid, "outcome": outcome.value})  # fmt: skip
    metrics.record_broadcast_outcome(outcome.value)
    return outcome


def _send_persisted(
    session: Session, node: NodeClient, tx: Transaction, *, actor: str, max_fee_rate: int
) -> BroadcastOutcome:
    try:
        node.send_raw_transaction(tx.raw_hex, max_fee_rate_sat_vb=max_fee_rate)
        outcome = BroadcastOutcome.SENT
    except AlreadyKnown:
        outcome = BroadcastOutcome.ALREADY_KNOWN
    except NodeUnavailable as exc:
        log.warning("broadcast of %s unconfirmed (%s); will resend the same bytes", tx.txid, exc)
        _record_attempt(session, tx, f"broadcast outcome unknown: {exc.message}")
        return BroadcastOutcome.UNKNOWN
    except (InputsMissingOrSpent, TxConflict) as exc:
        if versions.settle(session, node, tx, actor=actor).id != tx.id:
            return BroadcastOutcome.REPLACED  # another version of this payment is in a block
        proof = prove_dead(node, tx.txid, list(tx.inputs))
        if proof is None:
            if _confirmations(node, tx.txid) > 0:  # it was ours all along, already mined
                outcome = BroadcastOutcome.ALREADY_KNOWN
            else:
                _record_attempt(session, tx, f"rejected, conflict not proven: {exc.message}")
                return BroadcastOutcome.CONFLICT_UNPROVEN
        else:
            dead = mark_dead(session, node, tx, proof, actor)
            if dead == DeadOutcome.WAITING:
                return BroadcastOutcome.DEAD_WAITING  # mark_dead noted why on the row
            if dead == DeadOutcome.OLDER_VERSION_LIVE:
                return BroadcastOutcome.REPLACED
            return BroadcastOutcome.DEAD
    except (FeeTooHigh, NodeError) as exc:
        if any(marker in exc.message for marker in TRANSIENT_REJECTIONS):
            _record_attempt(session, tx, f"rejected for now: {exc.message}")
            return BroadcastOutcome.TRANSIENT
        # Anything else the node refuses (fee cap, non-standard, …) will be refused again:
        # stop and hand it to a human. The bytes were never accepted, so nothing was paid.
        reason = f"node rejected transaction {tx.txid}: {exc.message} (code {exc.code})"
        _record_attempt(session, tx, reason)
        if versions.revert_refused_bump(session, tx, reason, actor=actor):
            # A refused fee bump paid nothing; the version it replaced is live again and
            # still pays the payouts.
            return BroadcastOutcome.REJECTED
        for payout_id in payouts_of(session, tx.id):
            transition(
                session,
                payout_id,
                expected=S.SIGNED,
                target=S.FAILED,
                actor=actor,
                reason=reason,
                values={"last_error": reason},
            )
        return BroadcastOutcome.REJECTED
    _record_attempt(session, tx, None)
    _mark_broadcast(session, tx, actor)
    return outcome
