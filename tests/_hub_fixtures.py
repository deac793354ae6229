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
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
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


class OtherWriter:
    """Another process's hold on a hub, through a connection of its own (never the hub's).

    ``lock()`` takes the hub's write lock and keeps it until ``unlock()`` (SQLite: an exclusive
    transaction on the file; PostgreSQL: the subscription's advisory lock in an open transaction).
    ``refuse(table, when, message)`` makes the database refuse every UPDATE of ``table`` whose new
    row matches ``when`` (SQL over ``NEW``/``OLD``), as a full disk would; ``allow()`` lifts it.
    ``error_name`` is the driver's class name for that refusal.
    """

    def __init__(self, hub: SqliteHub) -> None:
        self.hub = hub
        self.postgres = isinstance(hub, PostgresHub)
        if isinstance(hub, PostgresHub):
            self.pg = psycopg.connect(hub.url, autocommit=True)
            self.pg.execute(f"SET search_path TO {hub.schema}")
            self.error_name = "RaiseException"
        else:
            self.lite = sqlite3.connect(hub.path, isolation_level=None, check_same_thread=False)
            self.error_name = "IntegrityError"

    def lock(self) -> None:
        if isinstance(self.hub, PostgresHub):
            self.pg.execute("BEGIN")
            self.pg.execute("SELECT pg_advisory_xact_lock(%s)", (self.hub._key,))
        else:
            self.lite.execute("BEGIN EXCLUSIVE")

    def unlock(self) -> None:
        (self.pg if self.postgres else self.lite).execute("ROLLBACK")

    def refuse(self, table: str, when: str, message: str) -> None:
        if self.postgres:
            self.pg.execute(f"CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                            f"RAISE EXCEPTION '{message}'; END $$")
            self.pg.execute(f"CREATE TRIGGER refuse BEFORE UPDATE ON {table} FOR EACH ROW WHEN ({when}) "
                            "EXECUTE FUNCTION refuse()")
        else:
            self.lite.execute(f"CREATE TRIGGER refuse BEFORE UPDATE ON {table} WHEN {when} "
                              f"BEGIN SELECT RAISE(ABORT, '{message}'); END")

    def allow(self) -> None:
        if self.postgres:
            self.pg.execute("DROP TRIGGER refuse ON " + self._table())
            self.pg.execute("DROP FUNCTION refuse()")
        else:
            self.lite.execute("DROP TRIGGER refuse")

    def _table(self) -> str:
        row = self.pg.execute("SELECT event_object_table FROM information_schema.triggers WHERE trigger_name = "
                              "'refuse' AND trigger_schema = current_schema() LIMIT 1").fetchone()
        assert row is not None
        return str(row[0])

    def close(self) -> None:
        (self.pg if self.postgres else self.lite).close()
