"""The hub on PostgreSQL: many subscriptions in one database, one schema each.

:class:`PostgresHub` is the same store as :class:`~engine.hub.SqliteHub` (it inherits every
method and runs the same SQL through :class:`~engine.hub._pgconn.PgConnection`), on a
database server that many processes and hosts share.  It keeps the hub's contract
(:mod:`engine.hub._protocol`) with PostgreSQL's means:

- **One schema per subscription** (``ks_<subscription>``): records, links, cursors, error log,
  queue and tokens of one subscription live in tables no other subscription's hub reads, since
  each connection's ``search_path`` is its subscription's schema alone.  ``klaviyo_sync.subscriptions``
  lists them.
- **The same migrations** (:mod:`engine.hub._pgschema`), applied per schema under an advisory lock,
  so several processes opening a new subscription at once migrate it once.
- **Writes of one subscription are serialised** as they are on one SQLite file: the outermost
  ``transaction()`` takes a transaction-level advisory lock of the subscription (SQLite's
  ``BEGIN IMMEDIATE``), so a read-then-write (an upsert by email, a claim of queued changes) sees
  no other writer's half-done work, and a write and its queue row commit together or not at all.
  Waiting longer than ``busy_timeout`` raises :class:`~engine.errors.HubLockedError`; nothing is
  written.  Other subscriptions' writers never wait for it.
- **Crash safety** is the server's: a committed transaction survives a killed process; an
  uncommitted one is rolled back by the server when the connection drops.  A connection found
  broken is opened again at the next transaction.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterable
from typing import Any, cast

import psycopg

from engine.errors import HubDatabaseError, HubLockedError, HubVersionError, Location
from engine.hub._errorlog import ErrorLog
from engine.hub._pgconn import PgConnection
from engine.hub._pgschema import FOLD, REGISTRY_SCHEMA, migrations
from engine.hub._sqlite import SqliteHub
from engine.settings import mask_url

SUBSCRIPTION_NAME = re.compile(r"[a-z0-9][a-z0-9_]{0,39}")
_MIGRATE_LOCK = int.from_bytes(hashlib.sha256(b"klaviyo-sync:migrate").digest()[:8], "big", signed=True)


def schema_for(subscription: str) -> str:
    """The PostgreSQL schema of a subscription (``ks_<name>``); ValueError for a name that cannot be one."""
    if not SUBSCRIPTION_NAME.fullmatch(subscription or ""):
        raise ValueError(f"a subscription name is 1 to 40 lower-case letters, digits or underscores, "
                         f"starting with a letter or digit; got {subscription!r}")
    return f"ks_{subscription}"


def _lock_key(schema: str) -> int:
    return int.from_bytes(hashlib.sha256(f"klaviyo-sync:hub:{schema}".encode()).digest()[:8], "big", signed=True)


def connect(url: str, *, timeout: float = 10.0) -> psycopg.Connection[Any]:
    """An autocommit connection to ``url``; HubDatabaseError (password masked) when it cannot be made."""
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=max(1, int(timeout)))
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HubDatabaseError(f"cannot connect to the hub database {mask_url(url)}: {reason}",
                               location=Location(file=mask_url(url))) from None


class PostgresHub(SqliteHub):
    """The hub of one subscription in a shared PostgreSQL database.

    Args:
        url: ``postgresql://user[:password]@host[:port]/database`` (libpq's URL form).
        subscription: the subscription's name (its schema is ``ks_<name>``).
        outbound_triggers, secrets, default_region: as for :class:`SqliteHub`.
        busy_timeout: seconds a write waits for another writer of the same subscription.
        connect_timeout: seconds to wait for the server.
        create: make the subscription when the database has none of that name (else HubDatabaseError).

    Raises:
        HubDatabaseError: the server cannot be reached or refused us, or the name is unusable.
        HubVersionError: the subscription's schema was written by a newer release.
    """

    _SQL_EMAIL_IGNORING_CASE = (f"SELECT id FROM customers WHERE {FOLD.format(col='email')} = "
                                f"{FOLD.format(col='?')} AND email != ? ORDER BY id")
    SQL_NO_LIMIT = "LIMIT ALL"

    def __init__(
        self,
        url: str,
        *,
        subscription: str = "default",
        outbound_triggers: Iterable[str] = (),
        secrets: Iterable[str] = (),
        default_region: str = "US",
        busy_timeout: float = 30.0,
        connect_timeout: float = 10.0,
        create: bool = True,
    ) -> None:
        self.create = create
        try:
            self.schema = schema_for(subscription)
        except ValueError as exc:
            raise HubDatabaseError(str(exc)) from None
        self.url = url
        self.subscription = subscription
        self.connect_timeout = connect_timeout
        self._setup(outbound_triggers, default_region, busy_timeout)
        self._key = _lock_key(self.schema)
        self._pg = self._open()
        self._conn = cast(Any, self._pg)
        try:
            self.schema_version = self._migrate()
        except BaseException:
            self._conn.close()
            raise
        self.errors = ErrorLog(self, self._conn, secrets)

    # -- connection and schema ---------------------------------------------------------

    @property
    def target(self) -> str:
        """Where this hub lives, for people: the URL (password masked) and the subscription."""
        return f"{mask_url(self.url)} (subscription {self.subscription})"

    def __repr__(self) -> str:
        return f"PostgresHub({mask_url(self.url)!r}, subscription={self.subscription!r})"

    def _open(self) -> PgConnection:
        raw = connect(self.url, timeout=self.connect_timeout)
        try:
            raw.execute(f"SET lock_timeout = {int(self.busy_timeout * 1000)}")
            raw.execute("SET TIME ZONE 'UTC'")
        except psycopg.Error as exc:
            raw.close()
            raise HubDatabaseError(f"the hub database {mask_url(self.url)} refused the session settings: "
                                   f"{exc}") from None
        return PgConnection(raw)

    def _migrate(self) -> int:
        conn = self._pg
        steps = migrations(self.schema)
        known = steps[-1][0]
        try:
            conn.raw.execute("SELECT pg_advisory_lock(%s)", (_MIGRATE_LOCK,))
            try:
                conn.script(f"CREATE SCHEMA IF NOT EXISTS {REGISTRY_SCHEMA};"
                            f"CREATE TABLE IF NOT EXISTS {REGISTRY_SCHEMA}.subscriptions ("
                            " name TEXT PRIMARY KEY, schema_name TEXT NOT NULL, created_at TEXT NOT NULL)")
                if self.create:
                    conn.script(f"CREATE SCHEMA IF NOT EXISTS {self.schema}")
                elif conn.raw.execute("SELECT to_regnamespace(%s)", (self.schema,)).fetchone() == (None,):
                    raise HubDatabaseError(f"there is no subscription {self.subscription} in the hub database "
                                           f"{mask_url(self.url)}", location=Location(file=mask_url(self.url)))
                conn.script(f"SET search_path TO {self.schema};"
                            "CREATE TABLE IF NOT EXISTS schema_migrations ("
                            " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)")
                have = int(conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchall()[0][0])
                if have > known:
                    raise HubVersionError(
                        f"the hub subscription {self.subscription} is at schema version {have}, newer than this "
                        f"release knows ({known}); upgrade klaviyo-sync to open it", detail=mask_url(self.url))
                stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                for version, name, sql in steps:
                    if version <= have:
                        continue
                    conn.script("BEGIN")
                    try:
                        conn.script(sql)
                        conn.execute("INSERT INTO schema_migrations(version, name, applied_at) VALUES (?, ?, ?)",
                                     (version, name, stamp))
                    except BaseException:
                        conn.script("ROLLBACK")
                        raise
                    conn.script("COMMIT")
                    have = version
                conn.execute(f"INSERT INTO {REGISTRY_SCHEMA}.subscriptions(name, schema_name, created_at)"
                             " VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING", (self.subscription, self.schema, stamp))
            finally:
                conn.raw.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATE_LOCK,))
        except psycopg.Error as exc:
            raise HubDatabaseError(f"cannot prepare the hub subscription {self.subscription} in "
                                   f"{mask_url(self.url)}: {exc}") from None
        return have

    def _reopen(self) -> None:
        """A fresh connection after the old one broke (the server restarted, the network dropped)."""
        old = self._pg
        fresh = self._open()
        fresh.raw.execute(f"SET search_path TO {self.schema}")
        self._pg = fresh
        self._conn = cast(Any, fresh)
        self.errors._conn = self._conn  # noqa: SLF001 - the log shares the hub's connection
        try:
            old.close()
        except psycopg.Error:
            pass

    # -- transactions ------------------------------------------------------------------

    def _begin(self, savepoint: str | None) -> None:
        if savepoint is not None:
            self._conn.execute(f"SAVEPOINT {savepoint}")
            return
        if self._pg.raw.broken or self._pg.raw.closed:
            self._reopen()
        try:  # one round trip: BEGIN and the subscription's write lock (the key is an integer of ours)
            self._pg.script(f"BEGIN; SELECT pg_advisory_xact_lock({int(self._key)})")
        except psycopg.errors.LockNotAvailable:
            self._conn.execute("ROLLBACK")
            raise self.locked_error() from None
        except BaseException:
            if not self._pg.raw.broken:
                self._conn.execute("ROLLBACK")
            raise

    def locked_error(self) -> HubLockedError:
        return HubLockedError(f"the hub subscription {self.subscription} is locked by another process; retry later",
                              detail=f"waited {self.busy_timeout:g} s for its write lock; nothing was written",
                              location=Location(file=mask_url(self.url)))


def subscriptions(url: str, *, timeout: float = 10.0) -> list[str]:
    """The subscriptions kept in the database at ``url``, by name."""
    raw = connect(url, timeout=timeout)
    try:
        found = raw.execute("SELECT to_regclass(%s)", (f"{REGISTRY_SCHEMA}.subscriptions",)).fetchone()
        if found is None or found[0] is None:
            return []
        return [str(r[0]) for r in raw.execute(f"SELECT name FROM {REGISTRY_SCHEMA}.subscriptions ORDER BY name")]
    finally:
        raw.close()


def drop_subscription(url: str, subscription: str, *, timeout: float = 10.0) -> bool:
    """Delete a subscription's schema and everything in it; True if it existed."""
    schema = schema_for(subscription)
    raw = connect(url, timeout=timeout)
    try:
        with raw.transaction():
            raw.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            exists = raw.execute("SELECT to_regclass(%s)", (f"{REGISTRY_SCHEMA}.subscriptions",)).fetchone()
            if exists is None or exists[0] is None:
                return False
            cur = raw.execute(f"DELETE FROM {REGISTRY_SCHEMA}.subscriptions WHERE name = %s", (subscription,))
            return cur.rowcount > 0
    finally:
        raw.close()




def queues_and_state(conn: psycopg.Connection[Any], names: list[str], key: str) -> dict[str, tuple[int, Any]]:
    """For each subscription of ``names`` in the database of ``conn``: its queue length and its
    sync-state value under ``key`` (JSON-decoded), in one query; a subscription not made yet
    gives ``(0, None)``.  A worker's scheduler asks this of every subscription each tick without
    opening one connection per subscription."""
    found: dict[str, tuple[int, Any]] = {name: (0, None) for name in names}
    schemas = {schema_for(n): n for n in names}
    made = {str(r[0]) for r in conn.execute(
        "SELECT s FROM unnest(%s::text[]) AS s WHERE to_regclass(s || '.sync_state') IS NOT NULL", (list(schemas),))}
    present = [n for schema, n in schemas.items() if schema in made]
    if present:
        sql = " UNION ALL ".join(
            f"SELECT %s, (SELECT COUNT(*) FROM {schema_for(n)}.outbound_queue),"
            f" (SELECT value FROM {schema_for(n)}.sync_state WHERE key = %s)" for n in present)
        params = [p for n in present for p in (n, key)]
        for name, length, value in conn.execute(sql, params):
            found[str(name)] = (int(length), None if value is None else json.loads(value))
    return found


__all__ = ["PostgresHub", "schema_for", "subscriptions", "drop_subscription", "connect", "queues_and_state",
           "SUBSCRIPTION_NAME"]
