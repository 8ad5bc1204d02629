"""Building and signing the one transaction that pays a batch (docs/architecture.md §6 step 3).

createrawtransaction (one output per payout) → fundrawtransaction (inputs locked, explicit fee
rate) → signrawtransactionwithwallet → the decoded result must pay every payout exactly once,
exactly its amount, and nothing else but change → testmempoolaccept. Nothing here is stored or
sent: on any failure the funded inputs are unlocked again.

The errors say what the batch run should do next: wait (`WaitForCoins`), fail one payout
(`PayoutRefused`), or retry later (`BuildError`, node errors).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from shared.core.batch_claims import Member, SignedBatch
from shared.core.claims import SignedTx, fee_shares
from shared.infra.db import session_scope
from shared.infra.settings import Settings
from shared.node import NodeClient
from shared.node.coin_locks import unlock_quietly
from shared.node.errors import (
    ChainLimitReached,
    InsufficientFunds,
    InvalidAddress,
    NodeError,
    NodeUnavailable,
    WalletError,
)
from shared.sending.broadcasting import TRANSIENT_REJECTIONS
from shared.sending.fees import choose_fee_rate_sat_vb
from shared.sending.payment_check import PaymentMismatch, check_against_wallet
from shared.sending.signature_check import check_signatures_cover_everything

log = logging.getLogger(__name__)

# Wallet refusals that are about one output, not about the wallet: the payout is at fault.
OUTPUT_REFUSALS = ("amount too small", "dust")
# The wallet's refusal when the outputs alone are too heavy for a standard transaction.
TOO_HEAVY = ("maximum transaction weight", "maximum weight", "transaction too large", "tx-size")


class BuildError(Exception):
    """Building failed in a way that says: give the claim back and retry later."""


class WaitForCoins(Exception):
    """The wallet cannot fund this now (no funds, or its coins are at the unconfirmed-chain
    limit). Not a fault of any payout: wait for a block or a deposit."""

    def __init__(self, reason: str, *, smaller_may_fit: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        # Funding refusals: fewer payouts may fit. The mempool's chain limit: no batch fits.
        self.smaller_may_fit = smaller_may_fit


class PayoutRefused(Exception):
    """The node refuses the transaction because of the payouts' own outputs (bad address,
    dust, non-standard). `members` are the ones at fault, when they could be told apart."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TooHeavy(Exception):
    """The outputs alone exceed what the wallet will put in one standard transaction."""


def build_and_sign_batch(
    node: NodeClient, settings: Settings, members: Sequence[Member], *, lock: bool = True
) -> SignedBatch:
    """One funded, signed and checked transaction paying every member once."""
    fee_rate = choose_fee_rate_sat_vb(node, settings)
    expected = {m.destination: m.amount_sats for m in members}
    try:
        raw = node.create_raw_transaction(expected)
        funded = node.fund_raw_transaction(raw, fee_rate_sat_vb=fee_rate, lock_unspents=lock)
    except InsufficientFunds as exc:
        raise WaitForCoins(f"hot wallet has insufficient funds: {exc.message}") from exc
    except ChainLimitReached as exc:
        raise WaitForCoins(
            f"waiting for a block: the hot wallet's coins are at the unconfirmed-chain limit "
            f"({exc.message})"
        ) from exc
    except InvalidAddress as exc:
        raise PayoutRefused(f"the node rejected the destination address: {exc.message}") from exc
    except WalletError as exc:
        text = exc.message.lower()
        if any(marker in text for marker in TOO_HEAVY):
            raise TooHeavy(exc.message) from exc
        if any(marker in text for marker in OUTPUT_REFUSALS):
            raise PayoutRefused(f"the node refused the payment: {exc.message}") from exc
        raise
    locked: list[str] = []
    try:
        locked = node.decode_raw_transaction(funded.hex).inputs if lock else []
        signed_hex = node.sign_raw_transaction_with_wallet(funded.hex)
        decoded = node.decode_raw_transaction(signed_hex)
        vouts = _check_pays_exactly(node, signed_hex, decoded.outputs, expected)
        _check_mempool_accepts(node, signed_hex)
    except BaseException:
        # Unsent, unpersisted: give the coins back so other batches can use them.
        unlock_quietly(node, locked)
        raise
    ids = [m.payout_id for m in members]
    return SignedBatch(
        tx=SignedTx(
            txid=decoded.txid, raw_hex=signed_hex, fee_sats=funded.fee_sats,
            inputs=decoded.inputs, vsize=decoded.vsize,
        ),
        vouts={m.payout_id: vouts[m.destination] for m in members},
        fee_shares=fee_shares(funded.fee_sats, ids),
    )  # fmt: skip


def _check_pays_exactly(
    node: NodeClient, signed_hex: str, outputs: Sequence[object], expected: dict[str, int]
) -> dict[str, int]:
    """The same rule the manual route applies to a signer's transaction. A mismatch here would
    be a wallet bug; never persist past it."""
    try:
        check_signatures_cover_everything(signed_hex)
        with session_scope() as session:
            return check_against_wallet(session, node, outputs, expected)  # type: ignore[arg-type]
    except PaymentMismatch as exc:
        raise BuildError(f"refusing to sign the funded transaction: {exc.message}") from exc


def _check_mempool_accepts(node: NodeClient, signed_hex: str) -> None:
    """Ask the mempool before the bytes are stored: once persisted they are sent as they are,
    so a payout the node will never relay must be found now, while the batch can be rebuilt
    without it."""
    verdict = node.test_mempool_accept(signed_hex)
    if verdict.get("allowed"):
        return
    reason = str(verdict.get("reject-reason") or "rejected")
    details = str(verdict.get("reject-details") or reason)
    if any(marker in details for marker in TRANSIENT_REJECTIONS) or "too-long-mempool-chain" in (
        reason
    ):
        raise WaitForCoins(
            f"the mempool refuses the batch for now: {details}", smaller_may_fit=False
        )
    if reason in ("dust", "scriptpubkey") or reason.startswith("dust"):
        raise PayoutRefused(f"the node refuses to relay the payment: {details}")
    raise BuildError(f"the mempool refused the batch: {details}")


def fundable_now(node: NodeClient, settings: Settings, members: Sequence[Member]) -> list[Member]:
    """The members to pay now, oldest first, when the batch as a whole could not be funded.

    The longest run of the oldest that the wallet can fund. When even the oldest alone is more
    than it can fund, that payout waits and the others are paid as far as they fit, smallest
    first: one large payout must not hold up every payout behind it (the large one is paid as
    soon as funds arrive, since it stays the oldest). Empty when nothing fits. Node errors
    other than a funding refusal propagate: the caller gives the claim back."""
    fits = largest_fundable_prefix(node, settings, members)
    if fits:
        return list(members[:fits])
    by_amount = sorted(members[1:], key=lambda m: m.amount_sats)
    if not by_amount or not _fundable(node, settings, by_amount[:1]):
        return []  # not even the smallest fits: nothing to do but wait
    count = 1 + largest_fundable_prefix(
        node, settings, by_amount[1:], whole_known_unfit=False, already=by_amount[:1]
    )
    chosen = {m.payout_id for m in by_amount[:count]}
    return [m for m in members if m.payout_id in chosen]


def largest_fundable_prefix(
    node: NodeClient, settings: Settings, members: Sequence[Member], *,
    whole_known_unfit: bool = True, already: Sequence[Member] = (),
) -> int:
    """How many of `members` (in order) the wallet can fund now together with `already`, by
    bisection with unlocked trial fundings. With `whole_known_unfit` the caller has seen all
    of them refused, so the answer is at most len-1."""
    low, high = 0, len(members) - (1 if whole_known_unfit else 0)
    while low < high:
        middle = (low + high + 1) // 2
        if _fundable(node, settings, [*already, *members[:middle]]):
            low = middle
        else:
            high = middle - 1
    return low


def _fundable(node: NodeClient, settings: Settings, members: Sequence[Member]) -> bool:
    fee_rate = choose_fee_rate_sat_vb(node, settings)
    try:
        raw = node.create_raw_transaction({m.destination: m.amount_sats for m in members})
        node.fund_raw_transaction(raw, fee_rate_sat_vb=fee_rate, lock_unspents=False)
    except (InsufficientFunds, ChainLimitReached):
        return False
    return True


def payouts_at_fault(node: NodeClient, settings: Settings, members: Sequence[Member]) -> list[
    Member
]:
    """The members the node refuses on their own: each is tried alone (create, fund unlocked,
    sign, testmempoolaccept). Rare path: only after the whole batch was refused for an output."""
    at_fault: list[Member] = []
    for member in members:
        try:
            build_and_sign_batch(node, settings, [member], lock=False)
        except PayoutRefused:
            at_fault.append(member)
        except (WaitForCoins, TooHeavy, BuildError, NodeUnavailable):
            continue
        except NodeError as exc:
            log.info("payout %s alone: %s", member.payout_id, exc)
    return at_fault
