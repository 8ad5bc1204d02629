"""What goes into a block, and whether a block with given transactions is valid.

`select_for_block` is BlockAssembler's choice of mempool transactions: everything (the
devnode's default), or — once a test sets a minimum fee rate — packages by ancestor score,
the way Core's addPackageTxs picks them. `check_block` is the part of TestBlockValidity
that `generateblock` can fail (CheckBlock, ContextualCheckBlock, ConnectBlock), with the
BlockValidationState text Core 29 puts after "TestBlockValidity failed: ".
"""

from __future__ import annotations

import heapq
from fractions import Fraction

from embit.transaction import Transaction

from devnode.chain import COINBASE_MATURITY, Block, Chain, Coin, Mempool, MempoolEntry
from devnode.policy import Reject, check_transaction, format_money, is_final
from devnode.scripts import ScriptFailure, verify_input
from devnode.txutil import Outpoint, fee_for, is_coinbase, outpoints_of, txid_of, wtxid_of

MAX_BLOCK_WEIGHT = 4_000_000
WITNESS_SCALE_FACTOR = 4


# ---------------------------------------------------------------- block templates


def select_for_block(mempool: Mempool, blocked: set[str], min_fee_sat_kvb: int | None) -> (
    list[MempoolEntry]
):
    """The mempool transactions a new block carries, in block order (parents first).

    `min_fee_sat_kvb` None: every transaction not in `blocked`, in mempool order. Otherwise
    Core's package selection: repeatedly the transaction with the best ancestor score (its
    fee plus its not-yet-included unconfirmed ancestors' fees, over their vsize) goes in with
    those ancestors, as long as that package pays at least the minimum rate
    (`packageFees < blockMinFeeRate.GetFee(packageSize)` ends the block)."""
    eligible = [e for t, e in mempool.entries.items() if t not in blocked]
    if min_fee_sat_kvb is None:
        return eligible
    entries = {e.txid: e for e in eligible}
    ancestors = {t: set(mempool.ancestors(t)) for t in entries}
    descendants: dict[str, set[str]] = {t: set() for t in entries}
    for txid, found in ancestors.items():
        for ancestor in found:
            descendants[ancestor].add(txid)
    # (fee, vsize) of each transaction with its ancestors not in the block yet.
    package = {t: (entries[t].fee + sum(entries[a].fee for a in ancestors[t]),
                   entries[t].vsize + sum(entries[a].vsize for a in ancestors[t]))
               for t in entries}

    def key(txid: str) -> tuple[Fraction, int, str]:
        fee, size = package[txid]
        return -Fraction(fee, size), entries[txid].order, txid

    heap = [(*key(t), package[t]) for t in entries]
    heapq.heapify(heap)
    included: set[str] = set()
    chosen: list[MempoolEntry] = []
    while heap:
        _, _, txid, state = heapq.heappop(heap)
        if txid in included or state != package[txid]:
            continue  # already in the block, or a stale score (a newer one is queued)
        fee, size = state
        if fee < fee_for(min_fee_sat_kvb, size):
            break  # the best package left pays too little: so does everything else
        members = sorted((ancestors[txid] - included) | {txid}, key=lambda t: entries[t].order)
        for member in members:
            included.add(member)
            chosen.append(entries[member])
        for member in members:
            for child in descendants[member]:
                if child in included:
                    continue
                child_fee, child_size = package[child]
                package[child] = (child_fee - entries[member].fee,
                                  child_size - entries[member].vsize)
                heapq.heappush(heap, (*key(child), package[child]))
    return chosen


# ---------------------------------------------------------------- block validity


class BlockInvalid(Exception):
    """A BlockValidationState's ToString(): the reject reason, ", " and the debug text."""


def check_block(chain: Chain, block: Block) -> None:
    """TestBlockValidity for a block on the tip built by `generateblock` (its coinbase is
    ours and always right): raises BlockInvalid with Core 29's state text."""
    txs = block.txs
    # CheckBlock
    stripped = block.stripped_size
    if len(txs) * WITNESS_SCALE_FACTOR > MAX_BLOCK_WEIGHT or (
        stripped * WITNESS_SCALE_FACTOR > MAX_BLOCK_WEIGHT
    ):
        raise BlockInvalid("bad-blk-length, size limits failed")
    if any(is_coinbase(tx) for tx in txs[1:]):
        raise BlockInvalid("bad-cb-multiple, more than one coinbase")
    for tx in txs:
        try:
            check_transaction(tx)
        except Reject as rejected:
            # CheckTransaction's states carry no debug message of their own.
            raise BlockInvalid(f"{rejected.reason}, Transaction check failed (tx hash "
                               f"{txid_of(tx)}) ") from None
    # ContextualCheckBlock: finality against the height and the previous block's MTP.
    mtp = chain.median_time_past()
    for tx in txs:
        if not is_final(tx, block.height, mtp):
            raise BlockInvalid("bad-txns-nonfinal, non-final transaction")
    if block.weight > MAX_BLOCK_WEIGHT:
        raise BlockInvalid("bad-blk-weight, ContextualCheckBlock : weight limit failed")
    # ConnectBlock: BIP30 (regtest enforces it), then each transaction against the coins
    # the chain and the block's earlier transactions leave.
    for tx in txs:
        txid = txid_of(tx)
        if any((txid, n) in chain.utxo for n in range(len(tx.vout))):
            raise BlockInvalid("bad-txns-BIP30, tried to overwrite transaction")
    created: dict[Outpoint, Coin] = {}
    spent: set[Outpoint] = set()
    script_error: str | None = None  # parallel script checks report after the loop
    for tx in txs[1:]:
        txid = txid_of(tx)
        coins: list[Coin] = []
        for outpoint in outpoints_of(tx):
            coin = None if outpoint in spent else created.get(outpoint) or chain.utxo.get(
                outpoint)
            if coin is None:
                raise BlockInvalid("bad-txns-inputs-missingorspent, CheckTxInputs: inputs "
                                   f"missing/spent in transaction {txid}")
            coins.append(coin)
        for coin in coins:
            if coin.coinbase and block.height - coin.height < COINBASE_MATURITY:
                raise BlockInvalid("bad-txns-premature-spend-of-coinbase, tried to spend "
                                   f"coinbase at depth {block.height - coin.height} in "
                                   f"transaction {txid}")
        value_in = sum(c.value for c in coins)
        value_out = sum(o.value for o in tx.vout)
        if value_in < value_out:
            raise BlockInvalid(f"bad-txns-in-belowout, value in ({format_money(value_in)}) < "
                               f"value out ({format_money(value_out)}) in transaction {txid}")
        if script_error is None:
            script_error = _script_error(tx, txid, coins)
        spent.update(outpoints_of(tx))
        for n, out in enumerate(tx.vout):
            if out.script_pubkey.data[:1] != b"\x6a":
                created[(txid, n)] = Coin(out.value, bytes(out.script_pubkey.data),
                                          block.height, False)
    if script_error is not None:
        raise BlockInvalid(script_error)


def _script_error(tx: Transaction, txid: str, coins: list[Coin]) -> str | None:
    """CScriptCheck's failure as ConnectBlock reports it (Core 29, parallel checks): the
    script error, then which input of which transaction spends which outpoint."""
    for index, coin in enumerate(coins):
        try:
            verify_input(tx, index, coin.script, coin.value)
        except ScriptFailure as failure:
            prev = tx.vin[index]
            return (f"{failure}, input {index} of {txid} (wtxid {wtxid_of(tx)}), spending "
                    f"{bytes(prev.txid).hex()}:{prev.vout}")
    return None
