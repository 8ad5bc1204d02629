"""The simulated hot wallet: real BIP32 keys, the wallet's transactions and its coins.

Like bitcoind's wallet it remembers every transaction that pays it or spends its coins, and
derives each one's state from the chain and mempool on demand (confirmed, in mempool,
inactive, or conflicted by a confirmed spend of one of its inputs). A coin counts as spent
while any non-abandoned, non-conflicted wallet transaction spends it (CWallet::IsSpent), so
a transaction that fell out of the mempool keeps its inputs until `abandontransaction`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from embit import bip32, ec
from embit.descriptor.checksum import add_checksum
from embit.networks import NETWORKS
from embit.transaction import Transaction

from devnode.chain import COINBASE_MATURITY, Block, Chain, Mempool
from devnode.scriptcode import address_of
from devnode.scripts import p2pkh_script, p2sh_script, p2wpkh_script
from devnode.txutil import Outpoint, btc, is_coinbase, outpoints_of, signals_rbf, txid_of, wtxid_of

# address_type -> BIP purpose used for its derivation path.
ADDRESS_TYPES = {"bech32": 84, "p2sh-segwit": 49, "legacy": 44}


@dataclass
class KeyInfo:
    key: ec.PrivateKey
    pub: bytes
    script: bytes
    address: str
    addr_type: str
    path: str
    change: bool
    created: int

    def descriptor(self, fingerprint: str) -> str:
        origin = f"[{fingerprint}{self.path[1:]}]{self.pub.hex()}"
        return str(add_checksum(_wrap(self.addr_type, origin)))

    def parent_descriptor(self, root_xpub: str) -> str:
        """The wallet's ranged descriptor this key comes from (listunspent's parent_descs):
        the master tpub with the path to the key's chain, then `/*`."""
        chain = self.path[2:].rsplit("/", 1)[0]
        return str(add_checksum(_wrap(self.addr_type, f"{root_xpub}/{chain}/*")))


def _wrap(addr_type: str, key: str) -> str:
    return {"bech32": f"wpkh({key})", "p2sh-segwit": f"sh(wpkh({key}))",
            "legacy": f"pkh({key})"}[addr_type]


@dataclass
class WalletTx:
    tx: Transaction
    txid: str
    time_received: int
    abandoned: bool = False
    replaced_by: str | None = None
    replaces: str | None = None


@dataclass
class TxState:
    status: str  # confirmed | mempool | inactive | conflicted | mempool-conflicted
    confirmations: int
    block: Block | None = None
    position: int | None = None


@dataclass
class WalletCoin:
    outpoint: Outpoint
    value: int
    script: bytes
    key: KeyInfo
    confirmations: int
    coinbase: bool
    trusted: bool
    locked: bool

    @property
    def mature(self) -> bool:
        # CWalletTx::GetBlocksToMaturity: a coinbase is spendable from depth 101.
        return not self.coinbase or self.confirmations > COINBASE_MATURITY


class Wallet:
    def __init__(self, name: str, chain: Chain, mempool: Mempool, seed: bytes | None = None) -> (
        None
    ):
        self.name = name
        self.chain = chain
        self.mempool = mempool
        self.root = bip32.HDKey.from_seed(seed or os.urandom(32),
                                          version=NETWORKS["regtest"]["xprv"])
        self.fingerprint = bytes(self.root.my_fingerprint).hex()
        self.root_xpub = self.root.to_public().to_base58(version=NETWORKS["regtest"]["xpub"])
        self.created = int(time.time())
        self.keys: dict[bytes, KeyInfo] = {}
        self.next_index: dict[tuple[str, bool], int] = {}
        self.accounts: dict[tuple[str, bool], Any] = {}
        self.labels: dict[str, str] = {}
        self.locked: dict[Outpoint, bool] = {}  # outpoint -> persistent
        self.txs: dict[str, WalletTx] = {}
        self.spends: dict[Outpoint, set[str]] = {}

    # ------------------------------------------------------------ keys

    def new_key(self, addr_type: str = "bech32", change: bool = False, label: str = "") -> (
        KeyInfo
    ):
        slot = (addr_type, change)
        if slot not in self.accounts:
            purpose = ADDRESS_TYPES[addr_type]
            self.accounts[slot] = self.root.derive(f"m/{purpose}h/1h/0h/{int(change)}")
        index = self.next_index.get(slot, 0)
        self.next_index[slot] = index + 1
        child = self.accounts[slot].child(index)
        key = ec.PrivateKey(child.secret, network=NETWORKS["regtest"])
        pub = bytes(key.get_public_key().sec())
        if addr_type == "bech32":
            script = p2wpkh_script(pub)
        elif addr_type == "p2sh-segwit":
            script = p2sh_script(p2wpkh_script(pub))
        else:
            script = p2pkh_script(pub)
        address = address_of(script)
        assert address is not None
        info = KeyInfo(
            key=key, pub=pub, script=script, address=address, addr_type=addr_type,
            path=f"m/{ADDRESS_TYPES[addr_type]}h/1h/0h/{int(change)}/{index}", change=change,
            created=int(time.time()),
        )
        self.keys[script] = info
        if not change:
            self.labels[address] = label
        return info

    def key_for(self, script: bytes) -> KeyInfo | None:
        return self.keys.get(script)

    def is_mine(self, script: bytes) -> bool:
        return script in self.keys

    # ------------------------------------------------------------ transactions

    def prev_output(self, outpoint: Outpoint) -> tuple[int, bytes] | None:
        prev = self.txs.get(outpoint[0])
        if prev is None or outpoint[1] >= len(prev.tx.vout):
            return None
        out = prev.tx.vout[outpoint[1]]
        return out.value, bytes(out.script_pubkey.data)

    def debit(self, tx: Transaction) -> int:
        total = 0
        for outpoint in outpoints_of(tx):
            prev = self.prev_output(outpoint)
            if prev is not None and self.is_mine(prev[1]):
                total += prev[0]
        return total

    def all_inputs_mine(self, tx: Transaction) -> bool:
        for outpoint in outpoints_of(tx):
            prev = self.prev_output(outpoint)
            if prev is None or not self.is_mine(prev[1]):
                return False
        return bool(tx.vin)

    def is_relevant(self, tx: Transaction) -> bool:
        if any(self.is_mine(bytes(out.script_pubkey.data)) for out in tx.vout):
            return True
        return not is_coinbase(tx) and self.debit(tx) > 0

    def sync_tx(self, tx: Transaction, replaces: list[str] | None = None) -> bool:
        """Record a transaction seen in the mempool or a block; True when it is the wallet's."""
        txid = txid_of(tx)
        if txid not in self.txs:
            if not self.is_relevant(tx):
                return False
            self.txs[txid] = WalletTx(tx=tx, txid=txid, time_received=int(time.time()))
            if not is_coinbase(tx):
                for outpoint in outpoints_of(tx):
                    self.spends.setdefault(outpoint, set()).add(txid)
                    # bitcoind unlocks a locked coin once a wallet transaction spends it.
                    self.locked.pop(outpoint, None)
        for old in replaces or []:
            if old in self.txs:
                self.txs[old].replaced_by = txid
                self.txs[txid].replaces = old
        return True

    def state(self, wtx: WalletTx) -> TxState:
        where = self.chain.find_tx(wtx.txid)
        if where is not None:
            block = where[1]
            return TxState("confirmed", self.chain.height - block.height + 1, block,
                           self.chain.tx_index[wtx.txid][1])
        if wtx.txid in self.mempool.entries:
            return TxState("mempool", 0)
        if not is_coinbase(wtx.tx):
            for outpoint in outpoints_of(wtx.tx):
                spender = self.chain.spenders.get(outpoint)
                if spender is not None and spender != wtx.txid:
                    block = self.chain.blocks[self.chain.tx_index[spender][0]]
                    return TxState("conflicted", -(self.chain.height - block.height + 1))
            for outpoint in outpoints_of(wtx.tx):
                spender = self.mempool.spends.get(outpoint)
                if spender is not None and spender != wtx.txid:
                    return TxState("mempool-conflicted", 0)
        return TxState("inactive", 0)

    def is_spent(self, outpoint: Outpoint) -> bool:
        for txid in self.spends.get(outpoint, ()):
            wtx = self.txs[txid]
            status = self.state(wtx).status
            if status in ("confirmed", "mempool") or (status == "inactive" and not wtx.abandoned):
                return True
        return False

    def is_trusted(self, wtx: WalletTx, depth: int = 0) -> bool:
        """CachedTxIsTrusted: confirmed, or our own unconfirmed spend of trusted coins."""
        state = self.state(wtx)
        if state.confirmations >= 1:
            return True
        if state.status != "mempool" or depth > 100 or not self.all_inputs_mine(wtx.tx):
            return False
        for outpoint in outpoints_of(wtx.tx):
            if not self.is_trusted(self.txs[outpoint[0]], depth + 1):
                return False
        return True

    def coins(self, *, include_locked: bool = True, include_immature: bool = False) -> (
        list[WalletCoin]
    ):
        """Unspent outputs paying the wallet, in confirmed or mempool transactions."""
        found: list[WalletCoin] = []
        for wtx in self.txs.values():
            state = self.state(wtx)
            if state.status not in ("confirmed", "mempool"):
                continue
            trusted: bool | None = None
            for n, out in enumerate(wtx.tx.vout):
                key = self.keys.get(bytes(out.script_pubkey.data))
                if key is None or self.is_spent((wtx.txid, n)):
                    continue
                locked = (wtx.txid, n) in self.locked
                if locked and not include_locked:
                    continue
                if trusted is None:
                    trusted = self.is_trusted(wtx)
                coin = WalletCoin(
                    outpoint=(wtx.txid, n), value=out.value, script=bytes(out.script_pubkey.data),
                    key=key, confirmations=state.confirmations, coinbase=is_coinbase(wtx.tx),
                    trusted=trusted, locked=locked,
                )
                if coin.mature or include_immature:
                    found.append(coin)
        return found

    def balances(self) -> dict[str, int]:
        trusted = pending = immature = 0
        for coin in self.coins(include_immature=True):
            if not coin.mature:
                immature += coin.value
            elif coin.trusted:
                trusted += coin.value
            else:
                pending += coin.value
        return {"trusted": trusted, "untrusted_pending": pending, "immature": immature}

    # ------------------------------------------------------------ history (JSON shapes)

    def conflicts_of(self, wtx: WalletTx) -> list[str]:
        found: set[str] = set()
        if not is_coinbase(wtx.tx):
            for outpoint in outpoints_of(wtx.tx):
                found |= self.spends.get(outpoint, set())
        found.discard(wtx.txid)
        return sorted(found)

    def replaceable(self, wtx: WalletTx, state: TxState) -> str:
        if state.confirmations > 0:
            return "no"
        if state.status != "mempool":
            return "unknown"
        if signals_rbf(wtx.tx) or any(
            signals_rbf(self.mempool.entries[a].tx) for a in self.mempool.ancestors(wtx.txid)
        ):
            return "yes"
        return "no"

    def tx_common(self, wtx: WalletTx) -> dict[str, Any]:
        """WalletTxToJSON: the fields every gettransaction/listtransactions entry carries."""
        state = self.state(wtx)
        out: dict[str, Any] = {"confirmations": state.confirmations}
        if is_coinbase(wtx.tx):
            out["generated"] = True
        if state.block is not None:
            out.update(blockhash=state.block.hash, blockheight=state.block.height,
                       blockindex=state.position, blocktime=state.block.time)
        else:
            out["trusted"] = self.is_trusted(wtx)
        out.update(txid=wtx.txid, wtxid=wtxid_of(wtx.tx), walletconflicts=self.conflicts_of(wtx))
        mempool_conflicts = sorted({
            s for op in outpoints_of(wtx.tx)
            if (s := self.mempool.spends.get(op)) is not None and s != wtx.txid
        }) if not is_coinbase(wtx.tx) else []
        out["mempoolconflicts"] = mempool_conflicts
        if wtx.replaced_by:
            out["replaced_by_txid"] = wtx.replaced_by
        if wtx.replaces:
            out["replaces_txid"] = wtx.replaces
        block_time = state.block.time if state.block is not None else wtx.time_received
        out.update(time=min(wtx.time_received, block_time), timereceived=wtx.time_received)
        out["bip125-replaceable"] = self.replaceable(wtx, state)
        return out

    def fee_of(self, wtx: WalletTx) -> int | None:
        """Negative fee as bitcoind shows it, for transactions whose inputs are all ours."""
        if not self.all_inputs_mine(wtx.tx):
            return None
        return -(self.debit(wtx.tx) - sum(out.value for out in wtx.tx.vout))

    def entries(self, wtx: WalletTx, *, include_change: bool = False) -> list[dict[str, Any]]:
        """ListTransactions' per-output entries: sends (negative), then receives."""
        debit = self.debit(wtx.tx)
        fee = self.fee_of(wtx) if debit > 0 else None
        state = self.state(wtx)
        sends: list[dict[str, Any]] = []
        receives: list[dict[str, Any]] = []
        for n, out in enumerate(wtx.tx.vout):
            script = bytes(out.script_pubkey.data)
            key = self.keys.get(script)
            if debit > 0:
                if not include_change and key is not None and key.change:
                    continue
            elif key is None:
                continue
            address = address_of(script)
            if debit > 0:
                send: dict[str, Any] = {"address": address, "category": "send",
                                        "amount": -btc(out.value)}
                if address in self.labels:
                    send["label"] = self.labels[address]
                send["vout"] = n
                send["fee"] = btc(fee or 0)
                send["abandoned"] = wtx.abandoned
                sends.append(send)
            if key is not None:
                if is_coinbase(wtx.tx):
                    if state.status != "confirmed":
                        category = "orphan"
                    elif state.confirmations <= COINBASE_MATURITY:
                        category = "immature"
                    else:
                        category = "generate"
                else:
                    category = "receive"
                recv: dict[str, Any] = {"address": address, "category": category,
                                        "amount": btc(out.value)}
                if address in self.labels:
                    recv["label"] = self.labels[address]
                recv["vout"] = n
                receives.append(recv)
        if not sends and not receives:
            return []
        common = self.tx_common(wtx)
        return [{**entry, **common} for entry in sends + receives]

    def ordered_txs(self) -> list[WalletTx]:
        return sorted(self.txs.values(), key=lambda w: w.time_received)

