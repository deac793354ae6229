"""Hub fixtures: a real hub, never a mock, on each backend the product ships.

``hub_backend`` is parametrised, so every test that takes ``hub``, ``hub_factory`` (or a
fixture built on them: ``inbound``, ``outbound``) runs twice: on a SQLite file in ``tmp_path``
and on the PostgreSQL server (``$KLAVIYO_SYNC_TEST_POSTGRES``, default the local server's
database ``test``), each hub in a subscription of its own that is dropped afterwards.  A
PostgreSQL server that cannot be reached fails those tests; it never skips them.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.hub import PostgresHub, SqliteHub
from engine.hub._postgres import drop_subscription

POSTGRES_URL = os.environ.get("KLAVIYO_SYNC_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(params=BACKENDS)
def hub_backend(request: pytest.FixtureRequest) -> str:
    """The hub store under test: ``sqlite`` or ``postgresql``."""
    return str(request.param)


def subscription_name(label: str = "hub.db") -> str:
    """A fresh subscription name for one test's hub (unique across runs and workers)."""
    return f"t{uuid.uuid4().hex[:12]}_{re.sub('[^a-z0-9]+', '_', label.lower()).strip('_')[:20]}"


@pytest.fixture
def hub_factory(tmp_path: Path, hub_backend: str) -> Iterator[Callable[..., SqliteHub]]:
    """Open hubs named ``name`` (default ``hub.db``): the same name opens the same store again;
    all are closed (and the PostgreSQL subscriptions dropped) afterwards."""
    opened: list[SqliteHub] = []
    names: dict[str, str] = {}

    def make(name: str = "hub.db", **kwargs: Any) -> SqliteHub:
        store: SqliteHub
        if hub_backend == "postgresql":
            subscription = names.setdefault(name, subscription_name(name))
            store = PostgresHub(POSTGRES_URL, subscription=subscription, **kwargs)
        else:
            store = SqliteHub(tmp_path / name, **kwargs)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()
    for subscription in names.values():
        drop_subscription(POSTGRES_URL, subscription)


@pytest.fixture
def hub(hub_factory: Callable[..., SqliteHub]) -> SqliteHub:
    """A fresh hub with both outbound triggers enabled."""
    return hub_factory(outbound_triggers={"Customer", "Transaction"})


def store_legacy_email(hub: SqliteHub | Path, customer_id: int, email: str, *, transaction_id: int | None = None) -> None:
    """Give a Customer (or a Transaction) an email the hub would refuse today, straight in the store.

    A hub written before email validation, or by another tool, can hold such a value;
    Klaviyo then refuses it, which is how tests provoke a Klaviyo 400 for one record.
    ``hub``: an open store, or the path of a SQLite hub file.
    """
    if isinstance(hub, Path):
        with SqliteHub(hub) as store:
            store_legacy_email(store, customer_id, email, transaction_id=transaction_id)
        return
    with hub.transaction(enqueue=False):
        if transaction_id is None:
            hub._conn.execute("UPDATE customers SET email = ? WHERE id = ?", (email, customer_id))
        else:
            hub._conn.execute("UPDATE transactions SET email = ? WHERE id = ?", (email, transaction_id))
