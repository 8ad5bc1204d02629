"""`payouts apikey create|revoke`: printing for humans and scripts around shared.intake.api_keys."""

from __future__ import annotations

import sys

from sqlalchemy.exc import SQLAlchemyError

from shared.infra.db import session_scope
from shared.intake.api_keys import ApiKeyError, create_api_key, parse_scopes, revoke_api_key


def cli_create(name: str, scopes_csv: str) -> int:
    """`payouts apikey create`: the secret goes to stdout alone (so scripts can capture it),
    the warning and description to stderr. Exit 2 for bad input, 1 for a database error."""
    try:
        with session_scope() as session:
            secret = create_api_key(session, name, scopes_csv)
    except ApiKeyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SQLAlchemyError as exc:
        print(
            f"error: could not store the key: {_first_line(exc)} (is the database "
            "reachable and migrated? run `payouts migrate`)",
            file=sys.stderr,
        )
        return 1
    print(secret)
    print(
        f"created API key {name.strip()!r} with scopes {','.join(parse_scopes(scopes_csv))}.\n"
        "WARNING: store the secret above now; it is not shown again (only its hash is kept).",
        file=sys.stderr,
    )
    return 0


def cli_revoke(name: str) -> int:
    """`payouts apikey revoke`: exit 0 when revoked (or already revoked), 2 if unknown."""
    try:
        with session_scope() as session:
            found = revoke_api_key(session, name)
    except SQLAlchemyError as exc:
        print(f"error: could not revoke the key: {_first_line(exc)}", file=sys.stderr)
        return 1
    if not found:
        print(f"error: no API key named {name!r}", file=sys.stderr)
        return 2
    print(f"revoked API key {name!r}", file=sys.stderr)
    return 0


def _first_line(exc: Exception) -> str:
    # Driver messages run to many lines (SQL, parameters); the first says what went wrong.
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
