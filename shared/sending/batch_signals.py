"""The Redis keys by which approvals, messages and the running batch find each other
(docs/architecture.md §6).

- `batch:<wallet>`: the batch run's lock (redis-py Lock, token-owned, TTL = one lease).
- `batch:<wallet>:wake`: set by the first approval publishing a message; while it is set,
  further approvals publish nothing, because a run is about to claim them anyway. The run
  deletes it right before each claim, so an approval after that publishes again. A lost
  message costs at most the key's TTL, and the sweeper republishes regardless.
- `batch:<wallet>:asked`: a message that found the lock held leaves this and returns. The
  holder takes it when it starts and again after releasing the lock; if it was set in
  between, the holder runs once more. Without it, an approval that lands after the holder's
  last (empty) claim but before its unlock would wait for the sweeper.

Every Redis failure is tolerated: the keys only save work, the DB claim is the guarantee.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import redis

from shared.infra.settings import Settings

log = logging.getLogger(__name__)
# How long an approval's wake-up stands in for the ones after it, at most.
WAKE_TTL_SECONDS = 10
ASKED_TTL_SECONDS = 120


def wallet_name(settings: Settings) -> str:
    """The hot wallet's name from PAYOUTS_BITCOIND_URL (`…/wallet/<name>`), else "default"."""
    path = urlsplit(settings.bitcoind_url.get_secret_value()).path
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[-2] == "wallet":
        return parts[-1]
    return "default"


class BatchSignals:
    def __init__(self, client: redis.Redis, wallet: str) -> None:
        self.client = client
        self.lock_key = f"batch:{wallet}"
        self.wake_key = f"batch:{wallet}:wake"
        self.asked_key = f"batch:{wallet}:asked"

    def should_publish(self) -> bool:
        """True for the approval that must publish a message (no wake-up is outstanding)."""
        try:
            return bool(self.client.set(self.wake_key, 1, nx=True, ex=WAKE_TTL_SECONDS))
        except redis.RedisError as exc:
            log.info("batch wake-up flag unavailable (%s); publishing anyway", exc)
            return True

    def publish_failed(self) -> None:
        self._delete(self.wake_key)

    def clear_wake(self) -> None:
        self._delete(self.wake_key)

    def ask(self) -> None:
        try:
            self.client.set(self.asked_key, 1, ex=ASKED_TTL_SECONDS)
        except redis.RedisError as exc:
            log.info("batch ask flag unavailable: %s", exc)

    def take_asked(self) -> bool:
        try:
            return self.client.getdel(self.asked_key) is not None
        except redis.RedisError:
            return False

    def _delete(self, key: str) -> None:
        try:
            self.client.delete(key)
        except redis.RedisError as exc:
            log.info("could not clear %s: %s", key, exc)
