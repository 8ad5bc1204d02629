"""HTTP API (docs/architecture.md §10): translates requests into calls on `shared/`; no business
rules."""
