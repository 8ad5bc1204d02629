"""The simulated node: chain, mempool and wallets behind one lock.

Every RPC handler runs with `Node.lock` held (see `devnode.registry`), so handlers and the
helpers below never lock themselves. Fault-injection state lives in `devnode.faults` with
its own lock, because latency sleeps must happen without holding this one.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from embit import ec
from embit.transaction import Transaction

from devnode.chain import Block, Chain, Mempool, block_subsidy, coinbase_tx, make_block
from devnode.errors import (
    RPC_INVALID_ADDRESS_OR_KEY,
    RPC_TRANSACTION_ALREADY_IN_CHAIN,
    RPC_TRANSACTION_ERROR,
    RPC_WALLET_ALREADY_EXISTS,
    RPCError,
)
from devnode.faults import Faults
from devnode.mining import check_block, select_for_block
from devnode.policy import Verdict, evaluate
from devnode.scriptcode import address_of
from devnode.scripts import p2wpkh_script
from devnode.txutil import fee_for, is_coinbase, outpoints_of, txid_of
from devnode.wallet import Wallet

DEFAULT_FALLBACK_FEE_SAT_KVB = 20_000  # -fallbackfee=0.0002, the usual regtest setting
MAX_FEE_EXCEEDED = "Fee exceeds maximum configured by user (e.g. -maxtxfee, maxfeerate)"


class Node:
    def __init__(self, *, fallback_fee_sat_kvb: int = DEFAULT_FALLBACK_FEE_SAT_KVB,
                 full_rbf: bool = True) -> None:
        self.lock = threading.RLock()
        self.chain = Chain()
        self.mempool = Mempool()
        self.wallets: dict[str, Wallet] = {}
        self.faults = Faults()
        self.fallback_fee_sat_kvb = fallback_fee_sat_kvb
        self.full_rbf = full_rbf
        self.fee_estimate_sat_kvb: int | None = None  # set by devnode_set_fee_estimate
        # devnode_set_mining_min_fee_rate: None mines every mempool transaction; a rate
        # leaves out packages paying less (Core's BlockAssembler by ancestor score).
        self.mining_min_fee_sat_kvb: int | None = None
        # The mempool's rolling minimum fee (GetMinFee): 0 until a full mempool evicts
        # something, which the devnode's never does; white-box tests may set it.
        self.mempool_min_fee_sat_kvb = 0
        self.started = time.time()
        self.restarts = 0
        # Reorg replacement blocks pay a key no wallet holds, so they add nobody's money.
        self._burn_script = p2wpkh_script(bytes(ec.PrivateKey(os.urandom(32)).sec()))

    # ------------------------------------------------------------ wallets

    def create_wallet(self, name: str) -> Wallet:
        if name in self.wallets:
            raise RPCError(
                RPC_WALLET_ALREADY_EXISTS,
                f"Wallet file verification failed. Failed to create database path "
                f"'{name}'. Database already exists.",
            )
        wallet = Wallet(name, self.chain, self.mempool)
        self.wallets[name] = wallet
        return wallet

    def owner_of(self, script: bytes) -> Wallet | None:
        for wallet in self.wallets.values():
            if wallet.is_mine(script):
                return wallet
        return None

    def _notify(self, tx: Transaction, replaced: list[str] | None = None) -> None:
        for wallet in self.wallets.values():
            wallet.sync_tx(tx, replaced)

    # ------------------------------------------------------------ transactions

    def find_tx(self, txid: str) -> tuple[Transaction, Any] | None:
        """(transaction, block or None) from the mempool or the active chain."""
        entry = self.mempool.entries.get(txid)
        if entry is not None:
            return entry.tx, None
        return self.chain.find_tx(txid)

    def test_accept(self, tx: Transaction) -> Verdict:
        return evaluate(self.chain, self.mempool, tx, full_rbf=self.full_rbf)

    def accept(self, tx: Transaction, verdict: Verdict | None = None, *,
               unbroadcast: bool = True, mark_replaced: bool = False) -> Verdict:
        """Add `tx` to the mempool (evicting what it replaces) or return the rejection.
        `unbroadcast`: submitted here (RPC or wallet) rather than relayed by a peer.
        `mark_replaced`: the wallet's bumpfee committing its replacement; only then does the
        original carry `replaced_by_txid` (Core's MarkReplaced), not after any replacement."""
        verdict = verdict or self.test_accept(tx)
        if not verdict.ok:
            return verdict
        for txid in reversed(verdict.replaced):
            self.mempool.remove(txid)
        self.mempool.add(tx, verdict.fee or 0, self.chain.height, unbroadcast=unbroadcast)
        self._notify(tx, verdict.replaced[:1] if verdict.replaced and mark_replaced else None)
        return verdict

    def broadcast(self, tx: Transaction, max_fee_sat_kvb: int) -> str:
        """sendrawtransaction's semantics (node/transaction.cpp BroadcastTransaction)."""
        txid = txid_of(tx)
        if any((txid, n) in self.chain.utxo for n in range(len(tx.vout))):
            raise RPCError(RPC_TRANSACTION_ALREADY_IN_CHAIN,
                           "Transaction outputs already in utxo set")
        if txid in self.mempool.entries:
            return txid  # already there: bitcoind just re-announces it
        verdict = self.test_accept(tx)
        if not verdict.ok:
            raise RPCError(verdict.error_code, verdict.reason or "rejected")
        if max_fee_sat_kvb and (verdict.fee or 0) > fee_for(max_fee_sat_kvb, verdict.vsize):
            raise RPCError(RPC_TRANSACTION_ERROR, MAX_FEE_EXCEEDED)
        self.accept(tx, verdict)
        return txid

    def evict(self, txid: str) -> list[str]:
        """Drop a mempool transaction and its descendants (expiry, or lost on restart)."""
        if txid not in self.mempool.entries:
            raise RPCError(RPC_INVALID_ADDRESS_OR_KEY, "Transaction not in mempool")
        removed = [txid, *self.mempool.descendants(txid)]
        for gone in reversed(removed):
            self.mempool.remove(gone)
        return removed

    # ------------------------------------------------------------ blocks

    def mine(self, count: int, script: bytes, *, exclude: set[str] | None = None) -> list[str]:
        hashes: list[str] = []
        for _ in range(count):
            hashes.append(self._mine_one(script, exclude or set()))
        return hashes

    def _mine_one(self, script: bytes, exclude: set[str]) -> str:
        blocked = set(exclude)
        for txid in exclude:
            if txid in self.mempool.entries:
                blocked.update(self.mempool.descendants(txid))
        chosen = select_for_block(self.mempool, blocked, self.mining_min_fee_sat_kvb)
        height = self.chain.height + 1
        block = self._build_block([e.tx for e in chosen], script,
                                  block_subsidy(height) + sum(e.fee for e in chosen))
        self._connect(block)
        return block.hash

    def generate_block(self, script: bytes, txs: list[Transaction], *, submit: bool = True) -> (
        Block
    ):
        """generateblock: exactly `txs`, in that order, after a coinbase paying `script` the
        subsidy alone (Core builds the template from an empty mempool and only regenerates
        the witness commitment, so the fees are not claimed). Raises BlockInvalid."""
        block = self._build_block(txs, script, block_subsidy(self.chain.height + 1))
        check_block(self.chain, block)
        if submit:
            self._connect(block)
        return block

    def _build_block(self, txs: list[Transaction], script: bytes, coinbase_value: int) -> Block:
        height = self.chain.height + 1
        coinbase = coinbase_tx(height, coinbase_value, script, txs)
        return make_block(self.chain.tip.hash, height, [coinbase, *txs],
                          self.chain.next_block_time())

    def _connect(self, block: Block) -> None:
        """Connect a valid block on the tip; the mempool drops what it mined and, like
        removeForBlock, whatever conflicts with it (with their descendants)."""
        self.chain.connect(block)
        for tx in block.txs[1:]:
            txid = txid_of(tx)
            self.mempool.remove(txid)
            for outpoint in outpoints_of(tx):
                spender = self.mempool.spends.get(outpoint)
                if spender is not None and spender != txid:
                    for gone in reversed([spender, *self.mempool.descendants(spender)]):
                        self.mempool.remove(gone)
        for tx in block.txs:
            self._notify(tx)

    def reorg(self, depth: int, exclude: set[str]) -> dict[str, Any]:
        """Disconnect `depth` blocks, return their transactions to the mempool, then mine
        `depth + 1` replacement blocks (paying nobody's wallet) so the new chain wins."""
        old_tip = self.chain.tip.hash
        disconnected = [self.chain.disconnect_tip() for _ in range(depth)]
        resurrect = [tx for block in reversed(disconnected) for tx in block.txs
                     if not is_coinbase(tx)]
        previous = [(entry.tx, entry.unbroadcast) for entry in self.mempool.entries.values()]
        self.mempool.clear()
        dropped: list[str] = []
        again = [(tx, False, True) for tx in resurrect]
        again += [(tx, unbroadcast, False) for tx, unbroadcast in previous]
        for tx, unbroadcast, from_block in again:
            # Fees were paid once already; like bitcoind's reorg path, skip fee policy. The
            # chain limits apply to the block's transactions as they come back (ATMP), not
            # to what was already in the mempool (Core re-links those without checking).
            verdict = evaluate(self.chain, self.mempool, tx, full_rbf=self.full_rbf,
                               check_fees=False, check_limits=from_block)
            if verdict.ok:
                self.mempool.add(tx, verdict.fee or 0, self.chain.height, unbroadcast=unbroadcast)
            else:
                dropped.append(verdict.txid)
        hashes = self.mine(depth + 1, self._burn_script, exclude=exclude)
        return {
            "old_tip": old_tip,
            "disconnected": [b.hash for b in disconnected],
            "new_blocks": hashes,
            "returned_to_mempool": [txid_of(tx) for tx in resurrect],
            "dropped": dropped,
        }

    # ------------------------------------------------------------ oracle

    def ledger(self, address: str | None) -> list[dict[str, Any]]:
        """Every output of a non-coinbase transaction to `address` (or to any address no
        loaded wallet owns), confirmed in the active chain or waiting in the mempool."""
        rows: list[dict[str, Any]] = []

        def visit(tx: Transaction, confirmations: int, block_hash: str | None) -> None:
            if is_coinbase(tx):
                return
            txid = txid_of(tx)
            for n, out in enumerate(tx.vout):
                script = bytes(out.script_pubkey.data)
                to = address_of(script)
                if to is None:
                    continue
                if address is not None and to != address:
                    continue
                if address is None and self.owner_of(script) is not None:
                    continue
                rows.append({
                    "address": to, "txid": txid, "vout": n, "value_sats": out.value,
                    "confirmations": confirmations, "blockhash": block_hash,
                    "spent": (txid, n) not in self.chain.utxo if confirmations else
                    (txid, n) in self.mempool.spends,
                })

        for block in self.chain.active[1:]:
            depth = self.chain.height - block.height + 1
            for tx in block.txs:
                visit(tx, depth, block.hash)
        for entry in self.mempool.entries.values():
            visit(entry.tx, 0, None)
        return rows

    def restart(self) -> None:
        """bitcoind stopped and started with its wallet and mempool.dat: in-memory coin
        locks are gone, persistent ones (lockunspent persistent=true) stay."""
        for wallet in self.wallets.values():
            wallet.locked = {op: True for op, persistent in wallet.locked.items() if persistent}
        self.started = time.time()
        self.restarts += 1
