"""Taking payouts in: create, approve, cancel and list them; the API keys that may do so."""
