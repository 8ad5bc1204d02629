"""API keys: creation, verification, revocation (docs/architecture.md §10).

A secret looks like `pp_<prefix>_<random>`. The 8-hex-char prefix is stored in clear and
used to find the row; only the SHA-256 of the whole secret is stored, so a database leak does
not leak usable keys. SHA-256 (not a slow password hash) is enough because the secret has
256 bits of entropy: there is nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.core.errors import DomainError, ErrorKind
from shared.core.models import ApiKey, utcnow

ADMIN_SCOPE = "admin"
SCOPES = frozenset(
    {"payouts:create", "payouts:read", "payouts:approve", "payouts:sign", ADMIN_SCOPE}
)

SECRET_MARKER = "pp_"
PREFIX_HEX_CHARS = 8
# 32 random bytes -> 43 urlsafe characters; 256 bits makes guessing hopeless.
SECRET_RANDOM_BYTES = 32
MAX_NAME_LENGTH = 128  # api_keys.name column


class ApiKeyError(DomainError):
    """A request to create or revoke a key that cannot be honoured (message is for humans)."""

    def __init__(
        self, message: str, code: str = "invalid_request", kind: ErrorKind = ErrorKind.INVALID
    ) -> None:
        super().__init__(code, message, kind)


class DuplicateKeyName(ApiKeyError):
    def __init__(self, message: str) -> None:
        super().__init__(message, "key_name_taken", ErrorKind.CONFLICT)


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's name (recorded as actor in audit rows) and its scopes."""

    name: str
    scopes: frozenset[str]

    def has_scope(self, scope: str) -> bool:
        return ADMIN_SCOPE in self.scopes or scope in self.scopes


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def generate_secret() -> tuple[str, str]:
    """Return (secret, prefix). The prefix is hex so it never contains the `_` separator."""
    prefix = secrets.token_hex(PREFIX_HEX_CHARS // 2)
    return f"{SECRET_MARKER}{prefix}_{secrets.token_urlsafe(SECRET_RANDOM_BYTES)}", prefix


def parse_scopes(scopes: str | Iterable[str]) -> list[str]:
    """Normalise a comma-separated string or an iterable of scopes; refuse unknown ones."""
    items = scopes.split(",") if isinstance(scopes, str) else list(scopes)
    cleaned = sorted({s.strip() for s in items if s.strip()})
    if not cleaned:
        raise ApiKeyError(
            f"at least one scope is required; choose from {', '.join(sorted(SCOPES))}"
        )
    unknown = [s for s in cleaned if s not in SCOPES]
    if unknown:
        raise ApiKeyError(
            f"unknown scope(s): {', '.join(unknown)}; valid scopes are {', '.join(sorted(SCOPES))}"
        )
    return cleaned


def _check_name(name: str) -> str:
    name = name.strip()
    if not name:
        raise ApiKeyError("the key name must not be empty")
    if len(name) > MAX_NAME_LENGTH:
        raise ApiKeyError(f"the key name must be at most {MAX_NAME_LENGTH} characters")
    return name


def create_api_key(session: Session, name: str, scopes: str | Iterable[str]) -> str:
    """Store a new key and return its secret. The caller must show it once and forget it."""
    name = _check_name(name)
    scope_list = parse_scopes(scopes)
    if session.scalar(select(ApiKey.id).where(ApiKey.name == name)) is not None:
        raise DuplicateKeyName(f"an API key named {name!r} already exists")
    secret, prefix = generate_secret()
    try:
        with session.begin_nested():
            session.add(
                ApiKey(name=name, prefix=prefix, secret_hash=hash_secret(secret), scopes=scope_list)
            )
    except IntegrityError as exc:
        # Someone created the same name between our check and insert. (A prefix collision,
        # 1 in 2**32 per existing key, would also land here; the caller may simply retry.)
        if session.scalar(select(ApiKey.id).where(ApiKey.name == name)) is not None:
            raise DuplicateKeyName(f"an API key named {name!r} already exists") from exc
        raise
    return secret


def verify_api_key(session: Session, secret: str) -> Principal | None:
    """The principal for a presented secret, or None if it is malformed, unknown or revoked."""
    if not secret.startswith(SECRET_MARKER):
        return None
    prefix = secret[len(SECRET_MARKER) : len(SECRET_MARKER) + PREFIX_HEX_CHARS]
    row = session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
    if row is None:
        return None
    # Constant-time comparison so response timing says nothing about how close a guess was.
    if not hmac.compare_digest(row.secret_hash, hash_secret(secret)):
        return None
    if row.revoked_at is not None:
        return None
    return Principal(name=row.name, scopes=frozenset(row.scopes))


def revoke_api_key(session: Session, name: str) -> bool:
    """Mark the key revoked. False if no such key; revoking twice keeps the first time."""
    row = session.scalar(select(ApiKey).where(ApiKey.name == name))
    if row is None:
        return False
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    return True
