"""`RegtestNode`: the production `NodeClient` plus what only the demo, the tests, the bench and
the chaos suite do with a node — mine, fund, pay from the wallet directly, sign a PSBT as the
external signer would, and drive the simulated node's `devnode_*` faults.

None of this is called by the product (api/, workers/, shared/), which is why it is not on
`NodeClient`: a worker cannot mine, `sendtoaddress` around the claim, or `bumpfee` (which
broadcasts before anything could be stored; the product bumps only through `psbtbumpfee`, then
stores the new version, then sends it). The wallet and mining helpers work on a real bitcoind
regtest node too; the `devnode_*` helpers only on the simulated one (devnode/README.md
documents them).
"""

from __future__ import annotations

from typing import Any

from shared.node.amounts import sats_to_btc
from shared.node.client import NodeClient


class RegtestNode(NodeClient):
    def __repr__(self) -> str:
        return f"RegtestNode({self.safe_url!r}, timeout={self.timeout})"

    # ------------------------------------------------------------ chain and wallet

    def get_block_count(self) -> int:
        return int(self.call("getblockcount"))

    def get_new_address(self, address_type: str | None = None) -> str:
        if address_type is None:
            return str(self.call("getnewaddress"))
        return str(self.call("getnewaddress", "", address_type))

    def list_unspent(self, min_conf: int = 0) -> list[dict[str, Any]]:
        return list(self.call("listunspent", min_conf))

    def wallet_process_psbt(self, psbt: str, sign: bool = True) -> tuple[str, bool]:
        """Sign a PSBT with the wallet's keys: what the external signer of the manual route
        does with the PSBT it was handed."""
        result = self.call("walletprocesspsbt", psbt, sign)
        return str(result["psbt"]), bool(result["complete"])

    # ------------------------------------------------------------ mining

    def generate_to_address(self, n: int, address: str) -> list[str]:
        return [str(h) for h in self.call("generatetoaddress", n, address)]

    def mine(self, n: int = 1) -> list[str]:
        """Mine `n` blocks to a fresh wallet address."""
        return self.generate_to_address(n, self.get_new_address())

    def generate_block(self, address: str, txs: list[str], submit: bool = True) -> (
        dict[str, Any]
    ):
        """`generateblock`: one block to `address` with exactly `txs` (mempool txids or raw
        hex, in block order). Returns {"hash"} (and "hex" when not submitted)."""
        return dict(self.call("generateblock", address, txs, submit))

    # ------------------------------------------------------------ wallet sends

    def send_to_address(self, address: str, amount_sats: int, *,
                        fee_rate_sat_vb: int | None = None) -> str:
        if fee_rate_sat_vb is None:
            return str(self.call("sendtoaddress", address, sats_to_btc(amount_sats)))
        # Positional form of fee_rate (10th argument); the nulls mean "default".
        return str(self.call("sendtoaddress", address, sats_to_btc(amount_sats), "", "", False,
                             True, None, "unset", None, fee_rate_sat_vb))

    def send_many(self, amounts: dict[str, int], *, fee_rate_sat_vb: int | None = None) -> str:
        outs = {address: sats_to_btc(sats) for address, sats in amounts.items()}
        if fee_rate_sat_vb is None:
            return str(self.call("sendmany", "", outs))
        return str(self.call("sendmany", "", outs, None, "", [], True, None, "unset",
                             fee_rate_sat_vb))

    def bump_fee(self, txid: str, *, fee_rate_sat_vb: int | None = None) -> dict[str, Any]:
        options = {} if fee_rate_sat_vb is None else {"fee_rate": fee_rate_sat_vb}
        return dict(self.call("bumpfee", txid, options))

    def abandon_transaction(self, txid: str) -> None:
        self.call("abandontransaction", txid)

    # ------------------------------------------------------------ the simulated node only

    def fail_next(self, method: str, code: int, message: str, count: int = 1) -> None:
        """The next `count` calls of `method` answer with this JSON-RPC error."""
        self.call("devnode_fail_next", method, code, message, count)

    def drop_reply(self, method: str = "sendrawtransaction", count: int = 1) -> None:
        """The next `count` calls of `method` happen, but their reply is never sent."""
        self.call("devnode_drop_reply", method, count)

    def set_latency(self, method: str, seconds: float) -> None:
        self.call("devnode_set_latency", method, seconds)

    def clear_faults(self) -> None:
        self.call("devnode_clear_faults")

    def devnode_status(self) -> dict[str, Any]:
        return dict(self.call("devnode_status"))

    def restart(self) -> None:
        """A node restart: the mempool is reloaded, in-memory coin locks are forgotten."""
        self.call("devnode_restart")

    def reorg(self, depth: int, exclude: list[str] | None = None) -> dict[str, Any]:
        """Replace the top `depth` blocks; the txids in `exclude` do not come back."""
        return dict(self.call("devnode_reorg", depth, exclude or []))

    def double_spend(self, txid: str, address: str | None = None) -> dict[str, Any]:
        """Spend one of `txid`'s inputs elsewhere (to `address`, or back to the wallet)."""
        return dict(self.call("devnode_double_spend", txid, address))

    def evict(self, txid: str) -> list[str]:
        """Drop `txid` and its descendants from the mempool; returns what was evicted."""
        return [str(t) for t in self.call("devnode_evict", txid)]

    def ledger(self, address: str | None = None) -> list[dict[str, Any]]:
        """Every output (to `address`) in the active chain or the mempool: the node's view."""
        return list(self.call("devnode_ledger", address))

    def set_fee_estimate(self, sat_per_vb: int | None) -> None:
        """What `estimatesmartfee` answers from now on; None: "no estimate"."""
        self.call("devnode_set_fee_estimate", sat_per_vb)

    def set_mining_min_fee_rate(self, sat_per_vb: float | None) -> None:
        """Blocks mined from now on leave out packages paying less than `sat_per_vb` (a
        parent is mined when its child pays enough for both); None: mine everything."""
        self.call("devnode_set_mining_min_fee_rate", sat_per_vb)


__all__ = ["RegtestNode"]
