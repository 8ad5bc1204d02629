"""Fee bumping: a stuck transaction is replaced (RBF) or accelerated through its youngest
descendant, and still pays each payout once (docs/architecture.md §5.2, §6).

A bump is the one place a payout legitimately gets a second transaction, so the new version
must spend every input of the old one: then at most one of them can ever confirm. The steps:

1. `psbtbumpfee` builds the replacement (never `bumpfee`, which broadcasts before we could
   store it); `walletprocesspsbt` signs it.
2. The new version is decoded and checked (`check_replacement`): every original input present,
   every payout output unchanged, nothing else but change, and change may only shrink.
3. One DB transaction: the old version `broadcast -> replaced` (a compare-and-set: of two bumps
   racing for one version, one persists), the new one stored `signed`, the payouts moved to it
   with an audit row giving the old and new fee rate.
4. The stored bytes are broadcast; a lost reply leaves them for the rebroadcast job.

When the transaction's change is already spent by a later batch, bitcoind refuses to bump it
(it has descendants). Then the youngest descendant is bumped instead, with a fee that lifts the
whole package (it and its unconfirmed ancestors) to the target rate: miners pick packages by
ancestor fee rate, so the stuck parent is mined with it (CPFP through a replacement).

Who bumps: the beat job `bump_stuck` (a transaction unconfirmed for BUMP_AFTER_BLOCKS whose
rate is below the node's estimate), and operators through `POST /v1/transactions/{txid}/bump`.
Both are bounded by MAX_FEE_RATE_SAT_VB and MAX_BUMP_FEE_SATS.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.core.claims import SignedTx, persist_bump
from shared.core.errors import DomainError, ErrorKind
from shared.core.models import (
    Payout,
    PayoutState,
    Route,
    Transaction,
    TransactionPayout,
    TxState,
)
from shared.core.state_machine import note
from shared.infra.db import session_scope
from shared.infra.settings import Settings
from shared.node import NodeClient
from shared.node.amounts import btc_to_sats
from shared.node.client import BumpPsbt
from shared.node.coin_locks import unlock_quietly
from shared.node.errors import ChainLimitReached, InvalidParameter, NodeError, NodeUnavailable
from shared.ops import metrics
from shared.sending import versions
from shared.sending.broadcasting import BroadcastOutcome, broadcast_persisted
from shared.sending.mempool_packages import (
    effective_fee_rate,
    leaf_descendants,
    package_rate_after,
)
from shared.sending.replacement_check import check_replacement

log = logging.getLogger(__name__)
S = PayoutState

# Bitcoin Core's default incremental relay fee: a replacement pays at least this much more
# per vbyte than what it replaces (BIP125 rule 4).
INCREMENTAL_RELAY_SAT_VB = 1


class BumpRefused(DomainError):
    """Why a transaction was not bumped. CONFLICT: its state does not allow it (confirmed,
    already replaced, being spent, nothing to bump with); INVALID: the asked rate is wrong (not
    above the current one, over a cap)."""


def _conflict(code: str, message: str) -> BumpRefused:
    return BumpRefused(code, message, ErrorKind.CONFLICT)


def _invalid(code: str, message: str) -> BumpRefused:
    return BumpRefused(code, message, ErrorKind.INVALID)


BumpMethod = Literal["rbf", "cpfp"]


@dataclass(frozen=True)
class BumpResult:
    """A persisted bump. `bumped_txid` is the version that was replaced: the transaction asked
    about (RBF), or its youngest descendant (CPFP)."""

    txid: str  # the transaction asked about
    method: BumpMethod
    bumped_txid: str
    new_txid: str
    old_fee_sats: int
    new_fee_sats: int
    old_fee_rate_sat_vb: float
    new_fee_rate_sat_vb: float
    package_fee_rate_sat_vb: float
    broadcast: str  # BroadcastOutcome value


@dataclass
class BumpReport:
    """One run of the policy job."""

    looked_at: int = 0
    bumped: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    no_estimate: bool = False

    def skip(self, code: str) -> None:
        self.skipped[code] = self.skipped.get(code, 0) + 1


# ---------------------------------------------------------------------------------------------
# The policy job


def bump_stuck(node: NodeClient, settings: Settings, *, actor: str = "maintenance") -> BumpReport:
    """Bump every live transaction unconfirmed for BUMP_AFTER_BLOCKS whose effective fee rate
    (with any descendants that already lift it) is below the node's current estimate for
    FEE_CONF_TARGET, capped at MAX_FEE_RATE_SAT_VB. No estimate: nothing to compare with, so
    nothing is bumped (regtest without `devnode_set_fee_estimate`)."""
    report = BumpReport()
    if settings.bump_after_blocks <= 0:
        return report
    estimate = node.estimate_fee_rate_sat_vb(settings.fee_conf_target)
    if estimate is None:
        report.no_estimate = True
        return report
    target = min(estimate, settings.max_fee_rate_sat_vb)
    height = int(node.get_blockchain_info()["blocks"])
    with session_scope() as session:
        candidates = list(
            session.execute(
                select(Transaction.txid)
                .where(
                    Transaction.state == TxState.BROADCAST,
                    Transaction.id.in_(select(Payout.tx_id).where(Payout.state == S.BROADCAST)),
                )
                .order_by(Transaction.created_at)
                .limit(500)
            ).scalars()
        )
    for txid in candidates:
        report.looked_at += 1
        entry = node.get_mempool_entry(txid)
        if entry is None:
            report.skip("not_in_mempool")  # confirmed meanwhile, or the tracker resends it
            continue
        if height - int(entry.get("height", height)) < settings.bump_after_blocks:
            report.skip("not_stuck_yet")
            continue
        if effective_fee_rate(node, entry) >= target:
            report.skip("rate_ok")
            continue
        try:
            result = bump_transaction(node, settings, txid, fee_rate_sat_vb=target, actor=actor,
                                      clamp_to_caps=True)  # fmt: skip
        except DomainError as exc:
            # A refusal of this one transaction (BumpRefused), or a new version the check
            # refused (PaymentMismatch): skip it, never the ones after it.
            log.info("not bumping %s: %s", txid, exc.message,
                     extra={"txid": txid, "reason": exc.code})  # fmt: skip
            report.skip(exc.code)
            continue
        except NodeUnavailable:
            raise  # the whole run retries
        except NodeError as exc:
            log.warning("not bumping %s: the node refused (%s)", txid, exc,
                        extra={"txid": txid, "reason": "node_error"})  # fmt: skip
            report.skip("node_error")
            continue
        report.bumped.append(result.new_txid)
    return report


# ---------------------------------------------------------------------------------------------
# One bump


@dataclass(frozen=True)
class _Target:
    """The version to replace, and the rate that makes the package pay the asked rate."""

    row_id: uuid.UUID
    txid: str
    rate_sat_vb: int
    old_fee: int
    vsize: int
    method: BumpMethod
    inputs: tuple[str, ...]  # the stored version's, read once with its row


def bump_transaction(
    node: NodeClient,
    settings: Settings,
    txid: str,
    *,
    fee_rate_sat_vb: int,
    actor: str,
    clamp_to_caps: bool = False,
) -> BumpResult:
    """Make `txid` (the live version of a payment we stored) pay `fee_rate_sat_vb`, by RBF or,
    when it has descendants, through its youngest descendant. Raises `BumpRefused`.

    `clamp_to_caps` (the policy job): a rate over MAX_FEE_RATE_SAT_VB is lowered to it rather
    than refused; an operator's explicit request is refused instead, so they see why.
    """
    with session_scope() as session:
        stuck = _live_version(session, txid)
        stuck_payouts = _payout_ids(session, stuck.id)
        stuck_state = stuck.state
    entry = node.get_mempool_entry(txid)
    if entry is None:
        info = node.get_transaction(txid) or {}
        if int(info.get("confirmations", 0)) > 0:
            raise _conflict("already_confirmed", f"transaction {txid} is already confirmed")
        raise _conflict(
            "not_in_mempool",
            f"transaction {txid} is not in the node's mempool (state {stuck_state}); the "
            "rebroadcast job sends it again, then it can be bumped",
        )
    target = _choose_target(node, settings, txid, entry, fee_rate_sat_vb, clamp_to_caps)
    if target.txid != txid:
        with session_scope() as session:
            _live_version(session, target.txid)  # must be ours, live and automatic
    locked = _lock_change(node, target)
    try:
        bump = _psbt_bump_fee(node, target)
        if bump.fee_sats > settings.max_bump_fee_sats:
            raise _invalid(
                "over_cap",
                f"the bump would pay {bump.fee_sats} sats in fees, over PAYOUTS_MAX_BUMP_FEE_SATS "
                f"({settings.max_bump_fee_sats})",
            )
        raw_hex = node.sign_psbt_with_wallet(bump.psbt)
        decoded = node.decode_raw_transaction(raw_hex)
        # Coins the wallet added to pay the higher fee: locked like a batch's inputs, so no
        # batch funds itself from them before this version is in the mempool.
        added = sorted(set(decoded.inputs) - set(target.inputs))
        locked += _lock_added(node, target, added)
        with session_scope() as session:
            row, vouts = check_replacement(session, node, target.row_id, decoded, raw_hex)
            old_rate = round(target.old_fee / target.vsize, 2)
            new_rate = round(bump.fee_sats / decoded.vsize, 2)
            signed = SignedTx(txid=decoded.txid, raw_hex=raw_hex, fee_sats=bump.fee_sats,
                              inputs=decoded.inputs, vsize=decoded.vsize)  # fmt: skip
            reason = (
                f"fee bump: {row.txid} ({old_rate} sat/vB, fee {target.old_fee} sats) replaced "
                f"by {decoded.txid} ({new_rate} sat/vB, fee {bump.fee_sats} sats)"
            )
            new_row = persist_bump(session, row, signed, vouts, actor=actor, reason=reason)
            if new_row is None:
                raise _conflict(
                    "already_replaced",
                    f"transaction {row.txid} was replaced or confirmed meanwhile; nothing was "
                    "stored",
                )
            if target.txid != txid:
                reason = (
                    f"fee bump (CPFP): {txid} accelerated through its descendant "
                    f"{target.txid}, replaced by {decoded.txid} at {new_rate} sat/vB"
                )
                note(session, stuck_payouts, state=S.BROADCAST, actor=actor, reason=reason)
    except BaseException:
        unlock_quietly(node, locked)
        raise
    metrics.record_fee_bump(target.method)
    with session_scope() as session:
        fresh = session.get(Transaction, new_row.id)
        assert fresh is not None
        outcome = broadcast_persisted(
            session, node, fresh, actor=actor, max_fee_rate_sat_vb=settings.max_fee_rate_sat_vb
        )
    if outcome in (BroadcastOutcome.SENT, BroadcastOutcome.ALREADY_KNOWN,
                   BroadcastOutcome.REJECTED, BroadcastOutcome.REPLACED):  # fmt: skip
        # In the mempool (the old change is gone, the added coins spent), refused for good, or
        # another version confirmed: the locks have done their job. (Unknown outcome: kept
        # until the orphaned-lock job frees them.)
        unlock_quietly(node, locked)
    log.info("bumped %s via %s: %s -> %s (%s)", txid, target.method, target.txid, decoded.txid,
             outcome.value, extra={"txid": decoded.txid, "outcome": outcome.value})  # fmt: skip
    package_rate = package_rate_after(node, decoded.txid)
    return BumpResult(
        txid=txid, method=target.method, bumped_txid=target.txid, new_txid=decoded.txid,
        old_fee_sats=target.old_fee, new_fee_sats=bump.fee_sats,
        old_fee_rate_sat_vb=round(target.old_fee / target.vsize, 2),
        new_fee_rate_sat_vb=round(bump.fee_sats / decoded.vsize, 2),
        package_fee_rate_sat_vb=package_rate if package_rate is not None else 0.0,
        broadcast=outcome.value,
    )  # fmt: skip


def _psbt_bump_fee(node: NodeClient, target: _Target) -> BumpPsbt:
    """psbtbumpfee, with bitcoind's refusals as `BumpRefused` (a node outage propagates)."""
    try:
        return node.psbt_bump_fee(target.txid, fee_rate_sat_vb=target.rate_sat_vb)
    except NodeUnavailable:
        raise
    except ChainLimitReached as exc:
        raise _conflict(
            "chain_limit", f"the node cannot bump {target.txid} now: {exc.message}"
        ) from exc
    except NodeError as exc:
        text = exc.message.lower()
        if "already bumped" in text:
            raise _conflict("already_replaced", f"{target.txid}: {exc.message}") from exc
        if "descendants" in text:
            raise _conflict("has_descendants",
                            f"{target.txid} gained a descendant meanwhile ({exc.message}); try "
                            "again") from exc  # fmt: skip
        if "mined" in text or "conflicted" in text:
            raise _conflict("already_confirmed", f"{target.txid}: {exc.message}") from exc
        if "already spent" in text:
            # Core 29 looks the original's coins up first: mined, or beaten by a conflict.
            raise _conflict("inputs_spent",
                            f"{target.txid}'s inputs are spent already (it or a conflicting "
                            f"transaction is in a block): {exc.message}") from exc  # fmt: skip
        if "insufficient total fee" in text or "fee rate" in text:
            raise _invalid("rate_too_low", f"the node refuses that rate: {exc.message}") from exc
        if "insufficient funds" in text or "unable to create transaction" in text:
            raise _conflict("nothing_to_bump_with",
                            f"the hot wallet cannot pay the higher fee for {target.txid}: "
                            f"{exc.message}") from exc  # fmt: skip
        raise BumpRefused("node_refused", f"the node refused to bump {target.txid}: {exc.message}",
                          ErrorKind.NODE_REFUSED) from exc  # fmt: skip


def _live_version(session: Session, txid: str) -> Transaction:
    """The stored transaction `txid`, if it is the version its payouts name now, broadcast,
    and pays only automatic payouts that are all `broadcast`."""
    row = session.execute(select(Transaction).where(Transaction.txid == txid)).scalar_one_or_none()
    if row is None:
        raise BumpRefused("not_found", f"no stored transaction with txid {txid}",
                          ErrorKind.NOT_FOUND)  # fmt: skip
    if row.state == TxState.CONFIRMED:
        raise _conflict("already_confirmed", f"transaction {txid} is already confirmed")
    if row.state == TxState.REPLACED:
        newer = versions.versions_of(session, row)[-1].txid
        raise _conflict("already_replaced",
                        f"transaction {txid} was already replaced (by {newer}); bump the newest "
                        "version")  # fmt: skip
    if row.state != TxState.BROADCAST:
        raise _conflict("not_broadcast",
                        f"transaction {txid} is {row.state}; only a broadcast, unconfirmed "
                        "transaction can be bumped")  # fmt: skip
    payouts = list(
        session.execute(select(Payout.state, Payout.route).where(Payout.tx_id == row.id))
    )
    if not payouts:
        raise _conflict("nothing_to_bump", f"transaction {txid} pays no payout now")
    if any(p.route != Route.AUTOMATIC for p in payouts):
        raise _conflict("manual_payout",
                        f"transaction {txid} pays a manual payout: its signer holds the keys "
                        "and bumps it")  # fmt: skip
    if any(p.state != S.BROADCAST for p in payouts):
        raise _conflict("not_broadcast", f"transaction {txid}'s payouts are not all broadcast")
    return row


def _payout_ids(session: Session, tx_row_id: uuid.UUID) -> list[uuid.UUID]:
    return list(session.execute(select(Payout.id).where(Payout.tx_id == tx_row_id)).scalars())


def _choose_target(
    node: NodeClient,
    settings: Settings,
    txid: str,
    entry: Mapping[str, Any],
    rate: int,
    clamp: bool,
) -> _Target:
    """RBF `txid` itself when nothing spends it; else its youngest descendant. Either way the
    replacement's own rate is chosen so that it and its unconfirmed ancestors pay `rate`."""
    current = effective_fee_rate(node, entry)
    if rate <= current:
        raise _invalid("rate_too_low",
                       f"transaction {txid} already pays {current:.2f} sat/vB with its package; "
                       f"ask for more than that")  # fmt: skip
    method: BumpMethod = "rbf"
    bumped_txid, bumped = txid, dict(entry)
    leaves = leaf_descendants(node, entry)
    if leaves:
        # The youngest descendant (last into the mempool); bitcoind refuses to bump the others.
        bumped_txid, bumped = max(
            leaves, key=lambda item: (int(item[1].get("time", 0)), int(item[1]["ancestorsize"]))
        )
        method = "cpfp"
    vsize = int(bumped["vsize"])
    own_fee = btc_to_sats(bumped["fees"]["base"])
    others = btc_to_sats(bumped["fees"]["ancestor"]) - own_fee
    needed_fee = math.ceil(rate * int(bumped["ancestorsize"])) - others
    own_rate = math.ceil(needed_fee / vsize)
    # BIP125 rule 4: at least the old fee plus the incremental relay fee for its size.
    minimum = math.ceil((own_fee + INCREMENTAL_RELAY_SAT_VB * vsize) / vsize)
    own_rate = max(own_rate, minimum)
    cap = settings.max_fee_rate_sat_vb
    if own_rate > cap:
        if not clamp or minimum > cap:
            raise _invalid("over_cap",
                           f"reaching {rate} sat/vB needs {bumped_txid} to pay {own_rate} sat/vB, "
                           f"over PAYOUTS_MAX_FEE_RATE_SAT_VB ({cap})")  # fmt: skip
        own_rate = cap
    with session_scope() as session:
        row = session.execute(
            select(Transaction.id, Transaction.inputs).where(Transaction.txid == bumped_txid)
        ).one_or_none()
    if row is None:
        raise _conflict("nothing_to_bump_with",
                        f"transaction {txid}'s youngest descendant {bumped_txid} is not one of "
                        "ours; it cannot be bumped from here")  # fmt: skip
    return _Target(row.id, bumped_txid, own_rate, own_fee, vsize, method, tuple(row.inputs))


def _lock_added(node: NodeClient, target: _Target, added: list[str]) -> list[str]:
    try:
        node.lock_unspent(added)
    except InvalidParameter as exc:
        raise _conflict(
            "change_being_spent",
            f"the coins the wallet added to bump {target.txid} are locked by a batch being "
            f"built ({exc.message}); try again shortly",
        ) from exc
    return added


def _lock_change(node: NodeClient, target: _Target) -> list[str]:
    """Lock the wallet's outputs of the version being replaced, so no batch funds itself from
    change that the replacement is about to make disappear. Someone holding them already (a
    batch being built on that change) means: not now."""
    with session_scope() as session:
        row = session.get(Transaction, target.row_id)
        assert row is not None
        paid = set(
            session.execute(
                select(TransactionPayout.vout).where(TransactionPayout.tx_id == row.id)
            ).scalars()
        )
        spent_by_stored = any(
            any(o.startswith(f"{row.txid}:") for o in inputs)
            for inputs in session.execute(
                select(Transaction.inputs).where(Transaction.state == TxState.SIGNED)
            ).scalars()
        )
        raw_hex = row.raw_hex
    if spent_by_stored:
        raise _conflict("change_being_spent",
                        f"a stored batch not yet broadcast spends {target.txid}'s change; bump "
                        "it once that batch is in the mempool")  # fmt: skip
    outputs = node.decode_raw_transaction(raw_hex).outputs
    change = [f"{target.txid}:{o.n}" for o in outputs if o.n not in paid]
    try:
        node.lock_unspent(change)
    except InvalidParameter as exc:
        raise _conflict(
            "change_being_spent",
            f"{target.txid}'s change is locked by a batch being built ({exc.message}); try again "
            "shortly",
        ) from exc
    return change
