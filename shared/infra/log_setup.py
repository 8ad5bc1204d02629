"""One JSON object per log line, with every `extra` field and the work's context.

- `JsonFormatter` writes `ts`, `level`, `logger`, `msg` (and `exc` / `stack`), then every
  attribute a caller added to the record, whatever its name (`extra={"actor": …}` included):
  no list of known fields to forget one in. Fields whose value is None are left out.
- `log_context(**fields)` binds fields (a task's `payout_id`, `task_id`, `task`, `worker`) to
  the current context (contextvars), and `ContextFilter`, installed on the handler by
  `configure_logging`, copies them onto every record logged in it: a line from deep inside
  (the node client's debug lines) carries them without anyone passing them around. A field
  the caller passed in `extra` wins over the context's.

A field's value must never be a secret: the whole record is written (tests/integration/ops/
test_logs.py greps a full run's logs for every secret).
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

# The attributes every LogRecord has (and the two the formatting machinery adds): anything
# else on a record was put there by `extra=` or by a filter.
# uvicorn's `color_message` repeats `msg` with terminal colour codes: not worth a field.
STANDARD_ATTRIBUTES = frozenset(
    logging.LogRecord("", logging.INFO, "", 0, "", None, None).__dict__
) | {"message", "asctime", "taskName", "color_message"}
# Written by the formatter itself; an extra field of the same name is kept as `extra.<name>`.
BASE_FIELDS = ("ts", "level", "logger", "msg", "exc", "stack")

_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "payouts_log_context", default=MappingProxyType({})
)


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add `fields` to every line logged inside the block (nested blocks add to outer ones)."""
    token = _context.set(MappingProxyType({**_context.get(), **fields}))
    try:
        yield
    finally:
        _context.reset(token)


def current_log_context() -> dict[str, Any]:
    return dict(_context.get())


class ContextFilter(logging.Filter):
    """Copies the bound `log_context` fields onto each record that lacks them."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _context.get().items():
            if getattr(record, name, None) is None:
                setattr(record, name, value)
        return True


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """Every non-standard attribute of the record that is not None."""
    return {
        name: value
        for name, value in record.__dict__.items()
        if name not in STANDARD_ATTRIBUTES and not name.startswith("_") and value is not None
    }


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        for name, value in extra_fields(record).items():
            entry[f"extra.{name}" if name in BASE_FIELDS else name] = value
        return json.dumps(entry, default=str)


def configure_logging(level: str = "INFO", json_lines: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if json_lines else logging.Formatter("%(levelname)s %(name)s %(message)s")
    )
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
