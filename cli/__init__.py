"""The `payouts` command line."""
