"""The hub on PostgreSQL: what only a shared database server adds to the hub's contract.

Every other hub and flow test runs on PostgreSQL too (the ``hub_backend`` fixture); these
check the schema against SQLite's, numbers as written, one schema per subscription, writers
serialised per subscription, a killed writer, a broken connection and the refusals.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest
from _hub_fixtures import POSTGRES_URL, subscription_name

from engine.connect import open_hub
from engine.errors import HubDatabaseError, HubLockedError, HubVersionError
from engine.hub import PostgresHub, SqliteHub
from engine.hub._postgres import drop_subscription, schema_for, subscriptions
from engine.settings import load_settings

BOTH = {"Customer", "Transaction"}


@pytest.fixture
def names() -> Any:
    """Fresh subscription names, dropped afterwards."""
    made: list[str] = []

    def make(label: str = "pg") -> str:
        made.append(subscription_name(label))
        return made[-1]

    yield make
    for name in made:
        drop_subscription(POSTGRES_URL, name)


def _customer(n: int, **extra: Any) -> dict[str, Any]:
    return {"EmailAddress": f"c{n}@example.com", "CustomerNumber": f"C{n}", **extra}


def test_the_schema_has_the_tables_and_columns_of_the_sqlite_file(names: Any, tmp_path: Path) -> None:
    """Each table of the SQLite hub exists on PostgreSQL with the same columns in the same order."""
    lite = SqliteHub(tmp_path / "hub.db")
    pg = PostgresHub(POSTGRES_URL, subscription=names())
    try:
        conn = sqlite3.connect(tmp_path / "hub.db")
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        expected = {t: [r[1] for r in conn.execute(f"PRAGMA table_info({t})")] for t in tables}
        conn.close()
        with psycopg.connect(POSTGRES_URL) as raw:
            got = {t: [r[0] for r in raw.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s"
                " ORDER BY ordinal_position", (pg.schema, t))] for t in tables}
        assert expected == got
        assert lite.schema_version == pg.schema_version
    finally:
        lite.close()
        pg.close()


def test_numbers_read_back_as_written(names: Any) -> None:
    """Money and quantities keep int or float and every digit: 20, 20.0, 19.99, 0.1 + 0.2, 2**62."""
    with PostgresHub(POSTGRES_URL, subscription=names()) as hub:
        values = [20, 20.0, 19.99, 0.1 + 0.2, 2**62, -0.5, 1e-07]
        lines = [{"Sku": str(i), "Qty": v, "UnitPrice": v, "ExtendedPrice": v} for i, v in enumerate(values)]
        tx, _ = hub.upsert_transaction({"TransactionNumber": "T-1", "Total": 0.30000000000000004, "Lines": lines})
        stored = hub.get_transaction(tx["Id"])
        assert stored is not None
        got = [(line["Qty"], type(line["Qty"])) for line in stored["Lines"]]
        assert [(v, type(v)) for v in values] == got
        assert 0.30000000000000004 == stored["Total"]
        assert "unchanged" == hub.upsert_transaction({"TransactionNumber": "T-1", "Total": 0.30000000000000004,
                                                      "Lines": lines})[1]


def test_subscriptions_in_one_database_never_meet(names: Any) -> None:
    """Records, links, cursors, state, the error log and the queue of one subscription are invisible to another."""
    a_name, b_name = names("a"), names("b")
    a = PostgresHub(POSTGRES_URL, subscription=a_name, outbound_triggers=BOTH)
    b = PostgresHub(POSTGRES_URL, subscription=b_name, outbound_triggers=BOTH)
    try:
        ca = a.add_customer(_customer(1, FirstName="Ada"))
        a.upsert_transaction({"TransactionNumber": "T-1", "Total": 5})
        a.set_link("Customer", ca["Id"], "01AAA")
        a.set_cursor("poll", "2024-01-01T00:00:00Z")
        a.errors.log("flow", "only in a")
        # the same email and number are free in b, and b's ids start afresh
        cb = b.add_customer(_customer(1, FirstName="Bob"))
        assert (1, 1) == (ca["Id"], cb["Id"])
        assert "Bob" == b.get_customer(1)["FirstName"] and "Ada" == a.get_customer(1)["FirstName"]
        assert b.find_transaction_by_number("T-1") is None
        assert (None, None, None) == (b.get_klaviyo_id("Customer", 1), b.get_hub_id("Customer", "01AAA"),
                                      b.get_cursor("poll"))
        assert (0, 1) == (b.errors.count(), a.errors.count())
        assert [("Customer", 1)] == [(c.entity, c.hub_id) for c in b.pending_changes(None)]
        assert 2 == a.queue_length()
        for change in b.claim_changes(10):
            b.ack_change(change)
        assert (0, 2) == (b.queue_length(), a.queue_length())
        assert {a_name, b_name} <= set(subscriptions(POSTGRES_URL))
    finally:
        a.close()
        b.close()
    assert drop_subscription(POSTGRES_URL, b_name)
    assert b_name not in subscriptions(POSTGRES_URL)
    with PostgresHub(POSTGRES_URL, subscription=a_name) as again:
        assert 1 == again.counts()["customers"]


def test_concurrent_writers_of_one_subscription_never_duplicate_or_double_claim(names: Any) -> None:
    """Four connections upserting the same emails at once store each Customer once, and their claims never overlap."""
    name = names()
    hubs = [PostgresHub(POSTGRES_URL, subscription=name, outbound_triggers=BOTH) for _ in range(4)]
    errors: list[BaseException] = []

    def write(hub: PostgresHub) -> None:
        try:
            for n in range(40):
                hub.upsert_customer(_customer(n, FirstName=f"F{n}"))
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(h,)) for h in hubs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [] == errors
    assert 40 == hubs[0].counts()["customers"]
    claimed: list[list[int]] = [[] for _ in hubs]

    def claim(i: int) -> None:
        while batch := hubs[i].claim_changes(3, lease_seconds=60):
            claimed[i].extend(c.id for c in batch)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [cid for ids in claimed for cid in ids]
    assert sorted(every) == sorted(set(every)) and 40 == len(every)
    for h in hubs:
        h.close()


def test_a_writer_killed_mid_transaction_leaves_nothing_and_frees_the_lock(names: Any) -> None:
    """SIGKILL inside a transaction: the server rolls it back and the next writer is not kept waiting."""
    name = names()
    PostgresHub(POSTGRES_URL, subscription=name).close()
    script = textwrap.dedent(f"""
        import sys, time
        from engine.hub import PostgresHub
        hub = PostgresHub({POSTGRES_URL!r}, subscription={name!r}, outbound_triggers={{"Customer"}})
        with hub.transaction():
            hub.add_customer({{"EmailAddress": "half@example.com", "CustomerNumber": "H"}})
            print("inside", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    try:
        assert proc.stdout is not None and "inside" == proc.stdout.readline().strip()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(10)
        assert proc.stdout is not None
        proc.stdout.close()
    with PostgresHub(POSTGRES_URL, subscription=name, busy_timeout=10, outbound_triggers={"Customer"}) as hub:
        assert (0, 0) == (hub.counts()["customers"], hub.queue_length())
        hub.add_customer(_customer(1))
        assert 1 == hub.queue_length()


def test_a_write_waiting_past_busy_timeout_is_refused_and_writes_nothing(names: Any) -> None:
    """While another writer holds the subscription, a write waits busy_timeout, then HubLockedError (H007)."""
    name = names()
    holder = PostgresHub(POSTGRES_URL, subscription=name)
    waiter = PostgresHub(POSTGRES_URL, subscription=name, busy_timeout=0.3)
    other = PostgresHub(POSTGRES_URL, subscription=names("other"), busy_timeout=0.3)
    try:
        with holder.transaction():
            with pytest.raises(HubLockedError) as info:
                waiter.add_customer(_customer(1))
            other.add_customer(_customer(1))  # another subscription never waits for it
        assert "H007" == info.value.code and name in info.value.message
        assert 0 == waiter.counts()["customers"]
        waiter.add_customer(_customer(2))
    finally:
        for h in (holder, waiter, other):
            h.close()


def test_a_broken_connection_is_opened_again_at_the_next_write(names: Any) -> None:
    """The server dropping the hub's connection fails the statement in hand; the next transaction reconnects."""
    with PostgresHub(POSTGRES_URL, subscription=names()) as hub:
        hub.add_customer(_customer(1))
        pid = hub._pg.raw.info.backend_pid
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(psycopg.OperationalError):
            hub.get_customer(1)
        hub.add_customer(_customer(2))
        assert 2 == hub.counts()["customers"]
        assert pid != hub._pg.raw.info.backend_pid


def test_secrets_never_reach_the_database(names: Any) -> None:
    """A secret in a logged message is masked before it is stored; a NUL is stored as \\x00."""
    secret = "pk_live_0123456789abcdef0123456789abcdef"
    with PostgresHub(POSTGRES_URL, subscription=names(), secrets=[secret]) as hub:
        hub.errors.log("flow", f"failed with {secret}\0 inside", detail=f"key={secret}")
        with psycopg.connect(POSTGRES_URL) as raw:
            rows = raw.execute(f"SELECT message, detail FROM {hub.schema}.error_log").fetchall()
        text = repr(rows)
        assert secret not in text and "\\x00 inside" in rows[0][0]


def test_refusals_name_the_problem_and_hide_the_password(names: Any) -> None:
    """An unreachable server, a bad subscription name and a newer schema are clear errors; no password is shown."""
    with pytest.raises(HubDatabaseError) as info:
        PostgresHub("postgresql://ks:s3cret-pass@127.0.0.1:1/test", subscription="x", connect_timeout=2)
    assert "s3cret-pass" not in str(info.value) and "127.0.0.1" in str(info.value) and "H008" == info.value.code
    with pytest.raises(HubDatabaseError, match="lower-case letters"):
        PostgresHub(POSTGRES_URL, subscription="Bad-Name")
    with pytest.raises(ValueError):
        schema_for("x" * 41)
    missing = names()
    with pytest.raises(HubDatabaseError, match=f"there is no subscription {missing} in the hub database"):
        PostgresHub(POSTGRES_URL, subscription=missing, create=False)
    assert missing not in subscriptions(POSTGRES_URL)
    name = names()
    hub = PostgresHub(POSTGRES_URL, subscription=name)
    hub._pg.execute("INSERT INTO schema_migrations(version, name, applied_at) VALUES (99, 'future', 'now')")
    hub.close()
    with pytest.raises(HubVersionError, match="newer than this release"):
        PostgresHub(POSTGRES_URL, subscription=name)


def test_settings_open_the_subscription_of_the_shared_hub(names: Any, tmp_path: Path) -> None:
    """``hub: postgresql://...`` with ``subscription:`` opens that subscription; $KLAVIYO_SYNC_HUB overrides the file."""
    name = names()
    config = tmp_path / "klaviyo-sync.yaml"
    config.write_text(f"hub: {POSTGRES_URL}\nsubscription: {name}\n", encoding="utf-8")
    settings = load_settings(config, env={})
    assert (POSTGRES_URL, name) == (settings.hub_url, settings.subscription)
    with open_hub(settings) as hub:
        assert isinstance(hub, PostgresHub) and name == hub.subscription
        hub.add_customer(_customer(1))
    other = load_settings(config, env={"KLAVIYO_SYNC_HUB": str(tmp_path / "local.db")})
    assert other.hub_url is None and tmp_path / "local.db" == other.hub_path
    masked = load_settings(config, env={"KLAVIYO_SYNC_HUB": "postgresql://ks:hunter22@db.example/x"})
    assert "hunter22" not in repr(masked.display()) and "hunter22" in masked.secrets()

