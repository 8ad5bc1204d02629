"""shared/infra/log_setup.py: every `extra` field is written; the bound context reaches every
line logged inside it, from any logger; a caller's own field wins over the context's."""

from __future__ import annotations

import io
import json
import logging
import sys

import pytest

from shared.infra.log_setup import JsonFormatter, configure_logging, log_context


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord("some.logger", logging.INFO, __file__, 1, "hello %s", ("you",),
                               None)  # fmt: skip
    for name, value in extra.items():
        setattr(record, name, value)
    return record


def _parsed(buffer: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_an_arbitrary_extra_field_survives() -> None:
    line = json.loads(JsonFormatter().format(_record(actor="ops", batch_size=3, detail=None)))

    assert line["msg"] == "hello you"
    assert (line["level"], line["logger"]) == ("INFO", "some.logger")
    assert line["actor"] == "ops"
    assert line["batch_size"] == 3
    assert "detail" not in line  # None means "not applicable", as before


def test_extra_passed_through_the_logging_api_survives(log_lines: io.StringIO) -> None:
    logging.getLogger("tests.anything").info("moved", extra={"actor": "ops", "reason": "r"})

    [line] = _parsed(log_lines)
    assert (line["actor"], line["reason"]) == ("ops", "r")


def test_an_extra_named_like_a_base_field_cannot_overwrite_it() -> None:
    line = json.loads(JsonFormatter().format(_record(level="spoofed", ts="never")))

    assert line["level"] == "INFO"
    assert (line["extra.level"], line["extra.ts"]) == ("spoofed", "never")


def test_values_json_cannot_encode_are_written_as_text() -> None:
    line = json.loads(JsonFormatter().format(_record(inputs={"txid:0"})))

    assert line["inputs"] == "{'txid:0'}"


def test_standard_record_attributes_are_not_repeated_as_fields() -> None:
    line = json.loads(JsonFormatter().format(_record()))

    assert set(line) == {"ts", "level", "logger", "msg"}


def test_a_line_inside_a_context_carries_its_fields_from_any_logger(log_lines: io.StringIO) -> None:
    with log_context(payout_id="p-1", task_id="t-1", worker="w1@host/7"):
        logging.getLogger("shared.node.client").debug("node getbalance took 1.0 ms")
        with log_context(txid="ab"):
            logging.getLogger("shared.sending.broadcasting").info("sent")
    logging.getLogger("shared.node.client").debug("outside")

    inner, nested, outside = _parsed(log_lines)
    assert (inner["payout_id"], inner["task_id"], inner["worker"]) == ("p-1", "t-1", "w1@host/7")
    assert (nested["payout_id"], nested["txid"]) == ("p-1", "ab")
    assert not {"payout_id", "task_id", "worker", "txid"} & set(outside)


def test_a_field_passed_in_extra_wins_over_the_context(log_lines: io.StringIO) -> None:
    with log_context(worker="w1@host/7", payout_id="p-1"):
        logging.getLogger("shared.core.state_machine").info(
            "moved", extra={"worker": "worker:w1@host/7"}
        )

    [line] = _parsed(log_lines)
    assert (line["worker"], line["payout_id"]) == ("worker:w1@host/7", "p-1")


def test_configure_logging_installs_the_context_filter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    buffer = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buffer)
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        configure_logging("INFO", json_lines=True)
        with log_context(task_id="t-9"):
            logging.getLogger("tests.anything").info("inside")
    finally:
        root.handlers[:], root.level = saved[0], saved[1]

    [line] = _parsed(buffer)
    assert line["task_id"] == "t-9"
