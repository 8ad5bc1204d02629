"""Publishing `process_payout`: approvals share one wake-up message per batch run, and the
interval mode publishes nothing (docs/architecture.md §6)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator

import fakeredis
import pytest

from shared.infra.settings import get_settings, reset_settings_cache
from shared.infra.task_names import RUN_BATCHES
from shared.sending import dispatch
from shared.sending.batch_signals import BatchSignals, wallet_name


class Recorder:
    def __init__(self) -> None:
        self.sent: list[list[str]] = []
        self.fail = False

    def send_task(self, name: str, args: list[str]) -> None:
        if self.fail:
            raise ConnectionError("broker down")
        self.sent.append(args)


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Recorder, fakeredis.FakeRedis]]:
    recorder, flags = Recorder(), fakeredis.FakeRedis()
    monkeypatch.setattr(dispatch, "publisher", lambda: recorder)
    monkeypatch.setattr(dispatch, "_flag_redis", lambda: flags)
    yield recorder, flags


def signals(flags: fakeredis.FakeRedis) -> BatchSignals:
    return BatchSignals(flags, wallet_name(get_settings()))


def test_a_burst_of_approvals_publishes_one_message_until_the_run_claims(
    broker: tuple[Recorder, fakeredis.FakeRedis],
) -> None:
    recorder, flags = broker
    published = [dispatch.enqueue_process_payout(uuid.uuid4()) for _ in range(50)]
    assert published.count(True) == 1 and len(recorder.sent) == 1
    signals(flags).clear_wake()  # the run is about to claim: later approvals must wake it again
    assert dispatch.enqueue_process_payout(uuid.uuid4()) is True
    assert len(recorder.sent) == 2


def test_a_deliberate_duplicate_is_always_published(
    broker: tuple[Recorder, fakeredis.FakeRedis],
) -> None:
    recorder, _ = broker
    payout_id = uuid.uuid4()
    for _ in range(3):
        assert dispatch.enqueue_process_payout(payout_id, coalesce=False) is True
    assert recorder.sent == [[str(payout_id)]] * 3


def test_a_failed_publish_leaves_no_wake_up_behind(
    broker: tuple[Recorder, fakeredis.FakeRedis],
) -> None:
    recorder, _ = broker
    recorder.fail = True
    with pytest.raises(ConnectionError):
        dispatch.enqueue_process_payout(uuid.uuid4())
    recorder.fail = False
    # Had the flag stayed, this approval would have published nothing and waited for the sweeper.
    assert dispatch.enqueue_process_payout(uuid.uuid4()) is True


def test_redis_down_publishes_every_time(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = Recorder()
    dispatch.reset_publisher()  # the flag client points at the unit tier's unreachable Redis
    monkeypatch.setattr(dispatch, "publisher", lambda: recorder)
    assert dispatch.enqueue_process_payout(uuid.uuid4()) is True
    assert dispatch.enqueue_process_payout(uuid.uuid4()) is True
    assert len(recorder.sent) == 2


def test_interval_mode_publishes_nothing_and_a_message_defers_to_the_schedule(
    broker: tuple[Recorder, fakeredis.FakeRedis], monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.node import NodeClient
    from shared.sending.automatic import Outcome, process_payout

    recorder, flags = broker
    monkeypatch.setenv("PAYOUTS_BATCH_INTERVAL_SECONDS", "60")
    reset_settings_cache()
    assert dispatch.enqueue_process_payout(uuid.uuid4()) is False
    assert recorder.sent == []
    # A message already queued (or sent by hand) does no work: the scheduled run pays.
    node = NodeClient("http://u:p@127.0.0.1:1/wallet/hot", timeout=0.1)
    result = process_payout(
        uuid.uuid4(), worker_name="w", settings=get_settings(), node=node, redis_client=flags
    )
    assert result.outcome == Outcome.SCHEDULED


def test_interval_mode_puts_the_batch_run_on_beat() -> None:
    probe = (
        "from workers.celery_app import app; e = app.conf.beat_schedule.get('run-batches');"
        "print(e and (e['task'], e['schedule']))"
    )
    env = {"PAYOUTS_BATCH_INTERVAL_SECONDS": "45", "PATH": "/usr/bin:/bin"}
    on = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    off = subprocess.run([sys.executable, "-c", probe], env={"PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True)  # fmt: skip
    assert on.stdout.strip() == str((RUN_BATCHES.name, 45.0)), on.stderr
    assert off.stdout.strip() == "None", off.stderr


def test_the_wallet_name_comes_from_the_node_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYOUTS_BITCOIND_URL", "http://u:p@node:8332/wallet/payouts-hot")
    reset_settings_cache()
    assert wallet_name(get_settings()) == "payouts-hot"
    monkeypatch.setenv("PAYOUTS_BITCOIND_URL", "http://u:p@node:8332/")
    reset_settings_cache()
    assert wallet_name(get_settings()) == "default"
