"""Paying: the automatic route, the manual route, broadcasting persisted bytes, fees, and the
payment and signature rules both routes share."""
