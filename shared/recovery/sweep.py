"""Re-publish approved automatic payouts nobody claimed, and claims whose lease ran out:
a lost message delays a payout but never loses it (docs/architecture.md §6)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

import redis
from sqlalchemy import or_, select

from shared.core.models import Payout, PayoutState, Route, utcnow
from shared.infra.db import session_scope
from shared.infra.settings import Settings
from shared.recovery.common import BATCH

log = logging.getLogger(__name__)
S = PayoutState
# With a backlog in the payouts queue, how many sweep windows an approved payout may sit
# before we assume its message was lost.
BACKLOG_PATIENCE = 10


def payouts_needing_a_worker(settings: Settings, idle_seconds: float | None = None) -> list[str]:
    """Automatic payouts that no live worker holds: approved and idle, or lease expired."""
    now = utcnow()
    idle_since = now - timedelta(seconds=idle_seconds or settings.sweep_after_seconds)
    with session_scope() as session:
        rows = session.execute(
            select(Payout.id)
            .where(
                Payout.route == Route.AUTOMATIC,
                or_(
                    (Payout.state == S.APPROVED) & (Payout.updated_at < idle_since),
                    (Payout.state == S.CLAIMED) & (Payout.lease_until < now),
                    # Signed but not yet sent: the worker's process_payout broadcasts it too.
                    (Payout.state == S.SIGNED) & (Payout.updated_at < idle_since),
                ),
            )
            .order_by(Payout.updated_at)
            .limit(BATCH)
        ).scalars()
        return [str(payout_id) for payout_id in rows]


def republish_unclaimed(
    settings: Settings,
    redis_client: redis.Redis,
    publish: Callable[[str], object],
    queue_backlog: int = 0,
) -> int:
    """Re-publish `process_payout` for payouts no worker holds, at most once per payout per
    SWEEP_AFTER_SECONDS.

    Without that limit a backlog feeds itself: payouts waiting behind a long queue look idle,
    each sweep adds another message for every one of them, and the queue grows faster than
    workers drain it. A Redis key per payout (SET NX EX) remembers the last re-publish, and
    while the queue holds messages an approved payout must wait BACKLOG_PATIENCE times longer
    before it counts as lost (its message is most likely still queued).
    """
    idle = settings.sweep_after_seconds * (BACKLOG_PATIENCE if queue_backlog > 0 else 1)
    published = 0
    for payout_id in payouts_needing_a_worker(settings, idle_seconds=idle):
        try:
            fresh = redis_client.set(
                f"sweep:{payout_id}", 1, nx=True, ex=settings.sweep_after_seconds
            )
        except redis.RedisError:
            fresh = True  # without Redis there is no broker either; publishing will tell
        # A publisher may decline (a batch wake-up is already outstanding): count real ones.
        if fresh and publish(payout_id) is not False:
            published += 1
    return published
