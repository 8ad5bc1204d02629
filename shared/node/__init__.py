"""The bitcoind client the workers and the API use (docs/architecture.md §8): `NodeClient`, typed
errors in `shared.node.errors`, satoshi/BTC conversions in `shared.node.amounts`."""

from shared.node.client import DecodedTx, FundedPsbt, FundedTx, NodeClient, TxOutput

__all__ = ["DecodedTx", "FundedPsbt", "FundedTx", "NodeClient", "TxOutput"]
