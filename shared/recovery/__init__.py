"""The beat jobs, one module each: re-publish unclaimed approvals, rebroadcast signed transactions,
track confirmations, release orphaned coin locks."""
