"""`payouts flower`: basic auth from settings, never on a command line; no password, no start."""

from __future__ import annotations

import pytest

from workers import flower


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Replace the gate and Celery's `app.start`; record the argv Flower would get."""
    from workers.celery_app import app

    calls: list[list[str]] = []
    monkeypatch.setattr(flower, "start_gate", lambda role, settings: 0)
    monkeypatch.setattr(app, "start", lambda argv: calls.append(list(argv)))
    return calls


def flower_basic_auth() -> object:
    from tornado.options import options

    return options.basic_auth


def test_without_a_password_it_refuses_with_exit_2_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch,
    started: list[list[str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("PAYOUTS_FLOWER_PASSWORD", "")

    assert flower.main([]) == 2

    assert started == []
    assert "PAYOUTS_FLOWER_PASSWORD" in capsys.readouterr().err


def test_credentials_reach_flower_in_process_and_never_its_argv(
    monkeypatch: pytest.MonkeyPatch, started: list[list[str]]
) -> None:
    monkeypatch.setenv("PAYOUTS_FLOWER_USER", "watcher")
    monkeypatch.setenv("PAYOUTS_FLOWER_PASSWORD", "s3cret,with:punctuation")

    assert flower.main(["--port", "5601", "--address", "0.0.0.0", "--read_only=true"]) == 0

    # One credential, commas kept (Flower would split a --basic-auth flag on them).
    assert flower_basic_auth() == ["watcher:s3cret,with:punctuation"]
    [argv] = started
    assert argv == ["flower", "--address=0.0.0.0", "--port=5601", "--read_only=true"]
    assert not any("s3cret" in arg for arg in argv)


def test_no_auth_must_be_asked_for_explicitly(
    monkeypatch: pytest.MonkeyPatch, started: list[list[str]]
) -> None:
    monkeypatch.setenv("PAYOUTS_FLOWER_PASSWORD", "")

    assert flower.main(["--no-auth"]) == 0

    assert flower_basic_auth() == []  # Flower's "no basic auth"
    assert started == [["flower", "--address=127.0.0.1", "--port=5555"]]


def test_a_refused_start_gate_exit_code_is_passed_on(
    monkeypatch: pytest.MonkeyPatch, started: list[list[str]]
) -> None:
    monkeypatch.setenv("PAYOUTS_FLOWER_PASSWORD", "pw")
    monkeypatch.setattr(flower, "start_gate", lambda role, settings: 4)

    assert flower.main([]) == 4
    assert started == []
