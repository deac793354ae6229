"""Hub fixtures: a real SQLite hub file in ``tmp_path`` (never a mock)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engine.hub import SqliteHub


@pytest.fixture
def hub_factory(tmp_path: Path) -> Iterator[Callable[..., SqliteHub]]:
    """Open hubs on files in ``tmp_path`` (default ``hub.db``); all are closed afterwards."""
    opened: list[SqliteHub] = []

    def make(name: str = "hub.db", **kwargs: object) -> SqliteHub:
        store = SqliteHub(tmp_path / name, **kwargs)  # type: ignore[arg-type]
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def hub(hub_factory: Callable[..., SqliteHub]) -> SqliteHub:
    """A hub on a fresh SQLite file with both outbound triggers enabled."""
    return hub_factory(outbound_triggers={"Customer", "Transaction"})
