"""Regtest chain state: blocks with real headers and proof of work, the UTXO set with undo
data for reorgs, a transaction index (like `-txindex=1`) and the mempool's storage.

Nothing here locks: the owning `Node` serialises every access under its one lock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from embit import compact
from embit.script import Script, Witness
from embit.transaction import Transaction, TransactionInput, TransactionOutput

from devnode.scriptcode import script_num
from devnode.txutil import (
    COIN,
    SEQUENCE_FINAL,
    Outpoint,
    dsha256,
    is_coinbase,
    outpoints_of,
    serialize_no_witness,
    txid_of,
    vsize_of,
    weight_of,
    wtxid_of,
)

COINBASE_MATURITY = 100
HALVING_INTERVAL = 150  # regtest's nSubsidyHalvingInterval
REGTEST_BITS = 0x207FFFFF
REGTEST_TARGET = 0x7FFFFF << (8 * (0x20 - 3))
BLOCK_VERSION = 0x20000000
MEMPOOL_HEIGHT = 0x7FFFFFFF
GENESIS_HASH = "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206"

_GENESIS_SCRIPT_SIG = bytes.fromhex(
    "04ffff001d0104455468652054696d65732030332f4a616e2f32303039204368616e63656c6c6f72206f6e2062"
    "72696e6b206f66207365636f6e64206261696c6f757420666f722062616e6b73"
)
_GENESIS_PUBKEY_SCRIPT = bytes.fromhex(
    "4104678afdb0fe5548271967f1a67130b7105cd6a828e03909a67962e0ea1f61deb649f6bc3f4cef38c4f355"
    "04e51ec112de5c384df7ba0b8d578a4c702b6bf11d5fac"
)


def block_subsidy(height: int) -> int:
    halvings = height // HALVING_INTERVAL
    return 0 if halvings >= 64 else (50 * COIN) >> halvings


@dataclass
class Coin:
    value: int
    script: bytes
    height: int  # MEMPOOL_HEIGHT for outputs of unconfirmed transactions
    coinbase: bool


@dataclass
class Block:
    hash: str
    height: int
    prev_hash: str
    header: bytes
    time: int
    nonce: int
    merkle_root: str
    txs: list[Transaction]
    txids: list[str]

    def serialize(self) -> bytes:
        body = b"".join(tx.serialize() for tx in self.txs)
        return self.header + compact.to_bytes(len(self.txs)) + body

    @property
    def size(self) -> int:
        return len(self.serialize())

    @property
    def stripped_size(self) -> int:
        body = b"".join(serialize_no_witness(tx) for tx in self.txs)
        return len(self.header) + len(compact.to_bytes(len(self.txs))) + len(body)

    @property
    def weight(self) -> int:
        return self.stripped_size * 3 + self.size


@dataclass
class MempoolEntry:
    tx: Transaction
    txid: str
    wtxid: str
    fee: int
    vsize: int
    weight: int
    time: int
    height: int  # chain height when it entered
    unbroadcast: bool = True  # submitted here (RPC/wallet), never announced to a peer
    order: int = 0  # when it entered, among the mempool's entries


def merkle_root(hashes: list[bytes]) -> bytes:
    layer = list(hashes)
    while len(layer) > 1:
        if len(layer) % 2:
            layer.append(layer[-1])
        layer = [dsha256(layer[i] + layer[i + 1]) for i in range(0, len(layer), 2)]
    return layer[0]


def _header(version: int, prev_hash: str, root: bytes, ts: int, bits: int, nonce: int) -> bytes:
    return (
        version.to_bytes(4, "little")
        + bytes.fromhex(prev_hash)[::-1]
        + root
        + ts.to_bytes(4, "little")
        + bits.to_bytes(4, "little")
        + nonce.to_bytes(4, "little")
    )


def _mine_header(version: int, prev_hash: str, root: bytes, ts: int, nonce: int = 0) -> (
    tuple[bytes, int]
):
    # Regtest's target accepts about half of all hashes, so this loop is a couple of tries.
    while True:
        header = _header(version, prev_hash, root, ts, REGTEST_BITS, nonce)
        if int.from_bytes(dsha256(header), "little") <= REGTEST_TARGET:
            return header, nonce
        nonce += 1


def make_block(prev_hash: str, height: int, txs: list[Transaction], ts: int, *,
               version: int = BLOCK_VERSION, nonce: int = 0) -> Block:
    root = merkle_root([bytes(tx.hash()) for tx in txs])
    header, nonce = _mine_header(version, prev_hash, root, ts, nonce)
    return Block(
        hash=dsha256(header)[::-1].hex(),
        height=height,
        prev_hash=prev_hash,
        header=header,
        time=ts,
        nonce=nonce,
        merkle_root=root[::-1].hex(),
        txs=txs,
        txids=[txid_of(tx) for tx in txs],
    )


def genesis_block() -> Block:
    """The real regtest genesis block (its hash is checked by the unit tests)."""
    coinbase = Transaction(
        version=1,
        vin=[TransactionInput(b"\x00" * 32, 0xFFFFFFFF, Script(_GENESIS_SCRIPT_SIG))],
        vout=[TransactionOutput(50 * COIN, Script(_GENESIS_PUBKEY_SCRIPT))],
        locktime=0,
    )
    return make_block("00" * 32, 0, [coinbase], 1296688602, version=1, nonce=2)


def coinbase_tx(height: int, value: int, script: bytes, others: list[Transaction]) -> (
    Transaction
):
    """BIP34 height, the reward, and the BIP141 witness commitment that Core always adds."""
    wtxids = [b"\x00" * 32] + [dsha256(tx.serialize()) for tx in others]
    commitment = dsha256(merkle_root(wtxids) + b"\x00" * 32)
    inp = TransactionInput(
        b"\x00" * 32, 0xFFFFFFFF, Script(script_num(height) + b"\x00"), SEQUENCE_FINAL,
        Witness([b"\x00" * 32]),
    )
    outs = [
        TransactionOutput(value, Script(script)),
        TransactionOutput(0, Script(b"\x6a\x24\xaa\x21\xa9\xed" + commitment)),
    ]
    return Transaction(version=2, vin=[inp], vout=outs, locktime=0)


class Chain:
    """The active chain, every block ever seen (stale ones too) and the UTXO set."""

    def __init__(self) -> None:
        genesis = genesis_block()
        self.blocks: dict[str, Block] = {genesis.hash: genesis}
        self.active: list[Block] = [genesis]
        self.utxo: dict[Outpoint, Coin] = {}
        self.undo: dict[str, list[tuple[Outpoint, Coin]]] = {}
        self.tx_index: dict[str, tuple[str, int]] = {}  # txid -> (block hash, position)
        self.spenders: dict[Outpoint, str] = {}  # outpoint -> txid spending it in the chain

    @property
    def tip(self) -> Block:
        return self.active[-1]

    @property
    def height(self) -> int:
        return len(self.active) - 1

    def in_active_chain(self, block_hash: str) -> bool:
        block = self.blocks.get(block_hash)
        return block is not None and block.height <= self.height and (
            self.active[block.height].hash == block_hash
        )

    def confirmations(self, block_hash: str) -> int:
        """Depth of a block in the active chain, -1 for a stale block (as getblock says)."""
        if not self.in_active_chain(block_hash):
            return -1
        return self.height - self.blocks[block_hash].height + 1

    def median_time_past(self, height: int | None = None) -> int:
        top = self.height if height is None else height
        times = sorted(b.time for b in self.active[max(0, top - 10) : top + 1])
        return times[len(times) // 2]

    def next_block_time(self) -> int:
        return max(self.median_time_past() + 1, int(time.time()))

    def find_tx(self, txid: str) -> tuple[Transaction, Block] | None:
        where = self.tx_index.get(txid)
        if where is None:
            return None
        block = self.blocks[where[0]]
        return block.txs[where[1]], block

    def connect(self, block: Block) -> None:
        """Apply a block that extends the tip (its transactions were validated by the caller)."""
        assert block.prev_hash == self.tip.hash and block.height == self.height + 1
        self.blocks[block.hash] = block
        spent: list[tuple[Outpoint, Coin]] = []
        for position, tx in enumerate(block.txs):
            txid = block.txids[position]
            coinbase = is_coinbase(tx)
            if not coinbase:
                for outpoint in outpoints_of(tx):
                    spent.append((outpoint, self.utxo.pop(outpoint)))
                    self.spenders[outpoint] = txid
            for n, out in enumerate(tx.vout):
                if out.script_pubkey.data[:1] == b"\x6a":
                    continue  # provably unspendable: never enters the UTXO set
                self.utxo[(txid, n)] = Coin(out.value, bytes(out.script_pubkey.data),
                                            block.height, coinbase)
            self.tx_index[txid] = (block.hash, position)
        self.undo[block.hash] = spent
        self.active.append(block)

    def disconnect_tip(self) -> Block:
        block = self.active.pop()
        for position in range(len(block.txs) - 1, -1, -1):
            txid = block.txids[position]
            for n in range(len(block.txs[position].vout)):
                self.utxo.pop((txid, n), None)
            self.tx_index.pop(txid, None)
        for outpoint, coin in reversed(self.undo.pop(block.hash)):
            self.utxo[outpoint] = coin
            self.spenders.pop(outpoint, None)
        return block


@dataclass
class Mempool:
    entries: dict[str, MempoolEntry] = field(default_factory=dict)  # insertion = topological
    spends: dict[Outpoint, str] = field(default_factory=dict)  # outpoint -> spending txid
    # txid -> the mempool transactions spending its outputs (the chain-limit walks need
    # children without scanning every output of a 250-output batch, again and again).
    spenders_of: dict[str, set[str]] = field(default_factory=dict)
    _added: int = 0

    def add(self, tx: Transaction, fee: int, height: int, *, unbroadcast: bool = True) -> (
        MempoolEntry
    ):
        entry = MempoolEntry(
            tx=tx, txid=txid_of(tx), wtxid=wtxid_of(tx), fee=fee, vsize=vsize_of(tx),
            weight=weight_of(tx), time=int(time.time()), height=height, unbroadcast=unbroadcast,
            order=self._added,
        )
        self._added += 1
        self.entries[entry.txid] = entry
        for outpoint in outpoints_of(tx):
            self.spends[outpoint] = entry.txid
            self.spenders_of.setdefault(outpoint[0], set()).add(entry.txid)
        return entry

    def remove(self, txid: str) -> MempoolEntry | None:
        entry = self.entries.pop(txid, None)
        if entry is not None:
            for outpoint in outpoints_of(entry.tx):
                if self.spends.get(outpoint) == txid:
                    del self.spends[outpoint]
                spenders = self.spenders_of.get(outpoint[0])
                if spenders is not None:
                    spenders.discard(txid)
                    if not spenders:
                        del self.spenders_of[outpoint[0]]
        return entry

    def clear(self) -> None:
        self.entries.clear()
        self.spends.clear()
        self.spenders_of.clear()

    def coin(self, outpoint: Outpoint) -> Coin | None:
        entry = self.entries.get(outpoint[0])
        if entry is None or outpoint[1] >= len(entry.tx.vout):
            return None
        out = entry.tx.vout[outpoint[1]]
        return Coin(out.value, out.script_pubkey.data, MEMPOOL_HEIGHT, False)

    def children(self, txid: str) -> list[str]:
        """The mempool transactions spending `txid`'s outputs, in mempool order."""
        if txid not in self.entries:
            return []
        found = [c for c in self.spenders_of.get(txid, ()) if c in self.entries]
        return sorted(found, key=lambda c: self.entries[c].order) if len(found) > 1 else found

    def parents(self, txid: str) -> list[str]:
        entry = self.entries[txid]
        return sorted({op[0] for op in outpoints_of(entry.tx) if op[0] in self.entries})

    def descendants(self, txid: str) -> list[str]:
        """`txid`'s in-mempool descendants, not including itself, parents before children."""
        seen: dict[str, None] = {}
        stack = self.children(txid)
        while stack:
            child = stack.pop(0)
            if child not in seen:
                seen[child] = None
                stack.extend(self.children(child))
        return [t for t in self.entries if t in seen]

    def descendant_totals(self, txid: str) -> tuple[int, int]:
        """(count, vsize) of `txid` with all its in-mempool descendants, as Core keeps them
        on each entry (GetCountWithDescendants / GetSizeWithDescendants)."""
        seen = {txid}
        stack = [txid]
        size = 0
        while stack:
            current = stack.pop()
            size += self.entries[current].vsize
            for child in self.children(current):
                if child not in seen:
                    seen.add(child)
                    stack.append(child)
        return len(seen), size

    def ancestors(self, txid: str) -> list[str]:
        seen: set[str] = set()
        stack = self.parents(txid)
        while stack:
            parent = stack.pop()
            if parent not in seen:
                seen.add(parent)
                stack.extend(self.parents(parent))
        return [t for t in self.entries if t in seen]
