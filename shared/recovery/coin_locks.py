"""Coin locks: release the ones no stored transaction or reserved manual PSBT explains, and
lock again the reserved ones a node restart forgot."""

from __future__ import annotations

import logging
from typing import Any, cast

import redis
from sqlalchemy import select

from shared.core.models import Payout, PayoutState, Transaction, TxState, utcnow
from shared.infra.db import session_scope
from shared.infra.settings import Settings
from shared.node import NodeClient
from shared.node.errors import InvalidParameter
from shared.recovery.common import as_text

log = logging.getLogger(__name__)
S = PayoutState


# Coins locked this long without a stored transaction or reservation are orphans. Twice the
# lease: a worker between funding and persisting holds its locks for at most about a lease.
ORPHAN_LOCK_AGE_FACTOR = 2
LOCK_FIRST_SEEN_KEY = "maintenance:locks:first-seen"


def release_orphaned_locks(node: NodeClient, settings: Settings, redis_client: redis.Redis) -> int:
    """Unlock wallet coins locked by a build that never got persisted.

    A fundrawtransaction whose reply was lost, or a worker killed between funding and
    persisting, leaves its coins locked until the node restarts; enough of those and the hot
    wallet looks empty. Protected: inputs of our unconfirmed stored transactions, and inputs
    reserved for a manual PSBT of a payout still in play. Anything else locked for longer than
    ORPHAN_LOCK_AGE_FACTOR leases is released. Unlocking never creates a transaction, so the
    worst a wrong guess can do is make two of our own transactions conflict — one then fails
    with a reason; nothing is paid twice.
    """
    now = utcnow().timestamp()
    locked = set(node.list_lock_unspent())
    locked |= relock_reserved_inputs(node, locked)
    seen = redis_client.hgetall(LOCK_FIRST_SEEN_KEY)
    first_seen = {as_text(k): float(v) for k, v in seen.items()}
    gone = [outpoint for outpoint in first_seen if outpoint not in locked]
    if gone:
        redis_client.hdel(LOCK_FIRST_SEEN_KEY, *gone)
    new = {outpoint: now for outpoint in locked if outpoint not in first_seen}
    if new:
        redis_client.hset(LOCK_FIRST_SEEN_KEY, mapping=cast(Any, new))
    max_age = ORPHAN_LOCK_AGE_FACTOR * settings.lease_seconds
    old = {o for o in locked if now - first_seen.get(o, now) > max_age}
    orphans = sorted(old - _protected_outpoints())
    if orphans:
        node.unlock_unspent(orphans)
        redis_client.hdel(LOCK_FIRST_SEEN_KEY, *orphans)
        log.warning("released %d orphaned coin locks: %s", len(orphans), ", ".join(orphans))
    return len(orphans)


def relock_reserved_inputs(node: NodeClient, locked: set[str]) -> set[str]:
    """Lock again the unspent coins reserved for a handed-out manual PSBT that the node no
    longer has locked (bitcoind keeps `lockUnspents` locks in memory: a restart drops them).

    Unlocked, a worker could fund with them: still safe (its transaction and the PSBT conflict,
    at most one confirms), but the payout would then be stuck on reserved inputs that are gone.
    Returns the outpoints it locked.
    """
    with session_scope() as session:
        reserved = session.execute(
            select(Payout.reserved_inputs).where(
                Payout.reserved_inputs.is_not(None),
                Payout.state.in_([S.APPROVED, S.CLAIMED]),
            )
        ).scalars()
        wanted = {o for group in reserved for o in (group or [])} - locked
    # Only coins still unspent (in a block and in the mempool): bitcoind refuses to lock others.
    candidates = sorted(o for o in wanted if node.get_tx_out(o) is not None)
    relocked = _lock_each_that_can_be(node, candidates)
    if relocked:
        log.warning("locked %d reserved coins again (node restart?): %s", len(relocked),
                    ", ".join(sorted(relocked)))  # fmt: skip
    return relocked


def _lock_each_that_can_be(node: NodeClient, outpoints: list[str]) -> set[str]:
    """Lock `outpoints`; one spent since we looked (bitcoind: -8 "expected unspent output")
    is skipped instead of failing the whole job, whose other half frees orphaned locks."""
    if not outpoints:
        return set()
    try:
        node.lock_unspent(outpoints)
        return set(outpoints)
    except InvalidParameter:
        pass  # bitcoind locks none of them if one is refused: go one by one
    locked = set()
    for outpoint in outpoints:
        try:
            node.lock_unspent([outpoint])
            locked.add(outpoint)
        except InvalidParameter as exc:
            log.info("reserved coin %s not locked again: %s", outpoint, exc.message)
    return locked


def _protected_outpoints() -> set[str]:
    with session_scope() as session:
        tx_inputs = session.execute(
            select(Transaction.inputs).where(
                Transaction.state.in_([TxState.SIGNED, TxState.BROADCAST])
            )
        ).scalars()
        reserved = session.execute(
            select(Payout.reserved_inputs).where(
                Payout.reserved_inputs.is_not(None),
                Payout.state.in_([S.APPROVED, S.CLAIMED, S.SIGNED]),
            )
        ).scalars()
        return {o for group in [*tx_inputs, *reserved] for o in (group or [])}
