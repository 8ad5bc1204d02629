"""Fixtures shared by the ops unit tests."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from shared.infra.log_setup import ContextFilter, JsonFormatter


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """A root handler as configure_logging builds it (JSON lines plus the context fields),
    writing into a buffer; the root logger is restored afterwards."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    saved_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield buffer
    root.removeHandler(handler)
    root.setLevel(saved_level)
