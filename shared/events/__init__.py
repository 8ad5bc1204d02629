"""The outbox and its gap-free feed (README "Events (the outbox feed)")."""
