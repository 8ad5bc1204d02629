"""The per-payout Redis lock (fakeredis): exclusive, released, and never a hard dependency."""

from __future__ import annotations

import fakeredis
import redis

from shared.infra.locks import payout_lock


def test_second_holder_is_refused_until_release() -> None:
    client = fakeredis.FakeRedis()
    with payout_lock(client, "p1", ttl_seconds=30) as first:
        assert first is True
        with payout_lock(client, "p1", ttl_seconds=30) as second:
            assert second is False
        with payout_lock(client, "p2", ttl_seconds=30) as other_payout:
            assert other_payout is True
    with payout_lock(client, "p1", ttl_seconds=30) as again:
        assert again is True


def test_lock_flushed_away_while_held_does_not_raise() -> None:
    client = fakeredis.FakeRedis()
    with payout_lock(client, "p1", ttl_seconds=30) as held:
        assert held
        client.flushall()  # Redis lost its data (FLUSHALL, restart): release must not crash


def test_unreachable_redis_falls_back_to_the_db_claim() -> None:
    client = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    with payout_lock(client, "p1", ttl_seconds=30) as held:
        assert held is True
