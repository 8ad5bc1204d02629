"""The payout's rules that every other package builds on: models, the state machine, claims, input
validation and the one domain error type."""
