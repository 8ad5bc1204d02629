"""Whether a block with given transactions is valid.

`check_block` is the part of TestBlockValidity that `generateblock` can fail (CheckBlock,
ContextualCheckBlock, ConnectBlock), with the BlockValidationState text Core 29 puts after
"TestBlockValidity failed: ".
"""

from __future__ import annotations

from embit.transaction import Transaction

from devnode.chain import COINBASE_MATURITY, Block, Chain, Coin
from devnode.policy import Reject, check_transaction, format_money, is_final
from devnode.scripts import ScriptFailure, verify_input
from devnode.txutil import Outpoint, is_coinbase, outpoints_of, txid_of, wtxid_of

MAX_BLOCK_WEIGHT = 4_000_000
WITNESS_SCALE_FACTOR = 4


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
