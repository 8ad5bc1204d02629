"""The per-payout Redis lock (docs/architecture.md §6 step 1).

The lock only cuts contention between duplicate messages; the DB compare-and-set is the
guarantee. So when Redis itself is unreachable we log and carry on without the lock rather
than stall payouts: correctness never depended on it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

import redis
from redis.exceptions import LockError, RedisError

log = logging.getLogger(__name__)


def payout_lock_name(payout_id: uuid.UUID | str) -> str:
    return f"payout:{payout_id}"


def payout_lock(
    client: redis.Redis, payout_id: uuid.UUID | str, ttl_seconds: int
) -> AbstractContextManager[bool]:
    """Yields True when this process holds the lock (or Redis is down), False when another does."""
    return named_lock(client, payout_lock_name(payout_id), ttl_seconds)


@contextmanager
def named_lock(client: redis.Redis, name: str, ttl_seconds: float) -> Iterator[bool]:
    """A non-blocking, token-owned redis-py Lock; see payout_lock for the Redis-down rule."""
    lock = client.lock(name, timeout=ttl_seconds, blocking=False)
    try:
        acquired = bool(lock.acquire())
    except RedisError as exc:
        log.warning("redis lock unavailable, relying on the DB claim alone: %s", exc)
        yield True
        return
    try:
        yield acquired
    finally:
        if acquired:
            try:
                lock.release()
            except (LockError, RedisError) as exc:
                # Expired (work outlived the TTL) or Redis flushed/restarted: nothing to undo,
                # the claim token in the DB fenced whatever happened after expiry.
                log.info("payout lock already gone at release: %s", exc)
