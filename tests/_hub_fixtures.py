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


def store_legacy_email(hub_file: Path, customer_id: int, email: str, *, transaction_id: int | None = None) -> None:
    """Give a Customer (or a Transaction) an email the hub would refuse today, straight in the file.

    A hub file written before email validation, or by another tool, can hold such a value;
    Klaviyo then refuses it, which is how tests provoke a Klaviyo 400 for one record.
    """
    import sqlite3

    conn = sqlite3.connect(hub_file)
    try:
        with conn:
            if transaction_id is None:
                conn.execute("UPDATE customers SET email = ? WHERE id = ?", (email, customer_id))
            else:
                conn.execute("UPDATE transactions SET email = ? WHERE id = ?", (email, transaction_id))
    finally:
        conn.close()
