"""HTTP API (DESIGN §10): translates requests into calls on `shared/`; no business rules."""
