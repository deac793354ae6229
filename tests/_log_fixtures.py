"""Logging isolation: a CLI run inside the test process configures the ``engine`` loggers
(level, handler); undo that after every test so the next one's ``caplog`` sees every record."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from engine import logconfig


@pytest.fixture(autouse=True)
def engine_logging_reset() -> Iterator[None]:
    yield
    logconfig.reset()
