"""Simulated bitcoind regtest node: real HTTP JSON-RPC, real transactions, fault injection.

`devnode.server.start_devnode()` runs one in-process; `payouts devnode` runs one as its own
process. See devnode/README.md for the supported RPCs and the `devnode_*` fault injection.
"""
