"""Versioned schema migrations for the hub's SQLite file.

Each migration is ``(version, name, sql)``; versions only ever grow, and a
released migration is never edited: a later release appends a new one (for
example ``ALTER TABLE ... ADD COLUMN``).  :func:`migrate` applies the missing
ones in order, each in its own transaction, and records it in
``schema_migrations``, so a file written by an older release is upgraded in
place without losing data.  A file whose newest version is above what this
release knows is refused rather than touched.
"""

from __future__ import annotations

import sqlite3
import time

from engine.errors import HubVersionError

MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "customers, addresses, transactions, links, error log, sync state, queue, tokens",
        """
        CREATE TABLE customers (
            id              INTEGER PRIMARY KEY,
            email           TEXT NOT NULL,
            customer_number TEXT NOT NULL,
            first_name      TEXT,
            last_name       TEXT,
            company         TEXT,
            comment         TEXT,
            phone           TEXT,
            phone_e164      TEXT,
            number_e164     TEXT,
            custom_fields   TEXT NOT NULL DEFAULT '{}',
            created_at      TEXT NOT NULL,
            updated_at      TEXT NOT NULL
        );
        -- BINARY collation: uniqueness is case-sensitive and exact, as the seeds say.
        CREATE UNIQUE INDEX customers_email ON customers(email);
        CREATE INDEX customers_phone ON customers(phone_e164);
        CREATE INDEX customers_number ON customers(number_e164);

        CREATE TABLE customer_addresses (
            id                  INTEGER PRIMARY KEY,
            customer_id         INTEGER NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
            address1            TEXT,
            address2            TEXT,
            city                TEXT,
            region              TEXT,
            postal_code         TEXT,
            country             TEXT,
            is_primary_billing  INTEGER NOT NULL DEFAULT 0,
            is_primary_shipping INTEGER NOT NULL DEFAULT 0,
            created_at          TEXT NOT NULL,
            updated_at          TEXT NOT NULL
        );
        CREATE INDEX customer_addresses_customer ON customer_addresses(customer_id);

        -- Money and quantities are stored as given (no column affinity), so a JSON
        -- integer stays an integer and 19.99 stays 19.99 on export.
        CREATE TABLE transactions (
            id                 INTEGER PRIMARY KEY,
            transaction_number TEXT NOT NULL,
            customer_id        INTEGER,
            email              TEXT,
            total,
            transaction_date   TEXT,
            status             TEXT,
            custom_fields      TEXT NOT NULL DEFAULT '{}',
            created_at         TEXT NOT NULL,
            updated_at         TEXT NOT NULL
        );
        CREATE UNIQUE INDEX transactions_number ON transactions(transaction_number);
        CREATE INDEX transactions_customer ON transactions(customer_id);

        CREATE TABLE transaction_lines (
            id             INTEGER PRIMARY KEY,
            transaction_id INTEGER NOT NULL REFERENCES transactions(id) ON DELETE CASCADE,
            position       INTEGER NOT NULL,
            sku            TEXT,
            description    TEXT,
            qty,
            unit_price,
            extended_price
        );
        CREATE INDEX transaction_lines_tx ON transaction_lines(transaction_id, position);

        CREATE TABLE links (
            entity     TEXT NOT NULL,
            hub_id     INTEGER NOT NULL,
            klaviyo_id TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (entity, hub_id)
        );
        CREATE UNIQUE INDEX links_klaviyo ON links(entity, klaviyo_id);

        CREATE TABLE error_log (
            id          INTEGER PRIMARY KEY,
            at          TEXT NOT NULL,
            flow        TEXT NOT NULL,
            level       TEXT NOT NULL CHECK (level IN ('error', 'warning')),
            code        TEXT,
            message     TEXT NOT NULL,
            detail      TEXT,
            entity      TEXT,
            hub_id      INTEGER,
            klaviyo_id  TEXT,
            resolved_at TEXT
        );
        CREATE INDEX error_log_flow ON error_log(flow, id);

        CREATE TABLE sync_state (
            key        TEXT PRIMARY KEY,
            value      TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );

        -- One row per (entity, hub_id) not yet sent: a second change coalesces into
        -- the same row and bumps ``version`` so an in-flight send cannot ack it away.
        CREATE TABLE outbound_queue (
            id          INTEGER PRIMARY KEY,
            entity      TEXT NOT NULL,
            hub_id      INTEGER NOT NULL,
            op          TEXT NOT NULL CHECK (op IN ('add', 'update')),
            version     INTEGER NOT NULL DEFAULT 1,
            queued_at   TEXT NOT NULL,
            changed_at  TEXT NOT NULL,
            lease_until REAL,
            attempts    INTEGER NOT NULL DEFAULT 0,
            UNIQUE (entity, hub_id)
        );

        CREATE TABLE oauth_tokens (
            provider      TEXT PRIMARY KEY,
            access_token  TEXT,
            refresh_token TEXT,
            expires_at    REAL,
            scopes        TEXT,
            updated_at    TEXT NOT NULL
        );
        """,
    ),
    (
        2,
        "transaction_versions: what each send of an order recorded in Klaviyo",
        """
        -- One row per version of an order sent to Klaviyo as events (engine/flows/_outbound_orders.py):
        -- the Placed Order event's unique id (version 1 keeps the Transaction Id, later versions
        -- append -v<n>), the digest of the payloads sent, the profile, whether every line event
        -- was accepted too, and when.
        CREATE TABLE transaction_versions (
            transaction_id INTEGER NOT NULL,
            version        INTEGER NOT NULL CHECK (version >= 1),
            unique_id      TEXT NOT NULL,
            digest         TEXT,
            profile_id     TEXT,
            complete       INTEGER NOT NULL DEFAULT 1,
            sent_at        TEXT NOT NULL,
            PRIMARY KEY (transaction_id, version)
        );
        -- Orders sent before versions were kept: their first event, as the link recorded it
        -- (no digest: the next send compares the Transaction's last change with this time).
        INSERT INTO transaction_versions(transaction_id, version, unique_id, digest, profile_id, complete, sent_at)
            SELECT hub_id, 1, klaviyo_id, NULL, NULL, 1, updated_at FROM links WHERE entity = 'Transaction';
        """,
    ),
    (
        3,
        "customer emails ignoring letter case",
        """
        -- Case-only email differences are reviewed, never silently duplicated (seed 002,
        -- "Could Not Link"): this index finds them without a scan.
        CREATE INDEX customers_email_nocase ON customers(email COLLATE NOCASE);
        """,
    ),
]

def current_version(conn: sqlite3.Connection) -> int:
    """The newest migration applied to ``conn``'s file (0 for a new file)."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    row = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
    return int(row[0] or 0)


def migrate(conn: sqlite3.Connection, path: str, migrations: list[tuple[int, str, str]] | None = None) -> int:
    """Apply every migration newer than the file's version; return the resulting version.

    ``conn`` must be in autocommit mode (``isolation_level=None``): each
    migration runs inside its own ``BEGIN IMMEDIATE`` ... ``COMMIT`` so a
    failure leaves the file at the previous version.

    Raises:
        HubVersionError: the file was written by a newer release.
    """
    steps = MIGRATIONS if migrations is None else migrations
    known = steps[-1][0] if steps else 0
    have = current_version(conn)
    if have > known:
        raise HubVersionError(
            f"the hub file is at schema version {have}, newer than this release knows ({known}); "
            "upgrade klaviyo-sync to open it",
            detail=path,
        )
    for version, name, sql in steps:
        if version <= have:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _split(sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations(version, name, applied_at) VALUES (?, ?, ?)",
                (version, name, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())),
            )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        have = version
    return have


def _split(sql: str) -> list[str]:
    """Split a migration script into statements (executescript would commit implicitly)."""
    statements: list[str] = []
    buf = ""
    for line in sql.splitlines(keepends=True):
        if line.strip().startswith("--"):
            continue
        buf += line
        if sqlite3.complete_statement(buf):
            statements.append(buf.strip())
            buf = ""
    if buf.strip():
        statements.append(buf.strip())
    return statements
