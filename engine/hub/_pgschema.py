"""The hub's schema on PostgreSQL: the same versioned migrations as the SQLite file, in PostgreSQL's words.

Each subscription lives in its own schema (``ks_<subscription>``), so one database holds many
subscriptions whose records, links, cursors, error log and queue never meet.  Version ``n`` here
makes the same tables, columns, keys and indexes as version ``n`` of
:data:`engine.hub._migrations.MIGRATIONS`; ``tests/test_hub_postgres.py`` compares them.

Differences, each for a reason:

- ids are ``bigint``; a trigger gives a row without an id the largest id plus one, exactly as
  SQLite's ``INTEGER PRIMARY KEY`` does (an imported Id is kept; a rolled-back insert leaves no
  gap).  No two writers race for an id: a subscription's writes are serialised (``_postgres.py``);
- money and quantities are ``numeric`` (SQLite stores them typeless): exact, and read back as
  written (see :mod:`engine.hub._pgconn`);
- the case-insensitive email index folds ASCII letters only, as SQLite's ``NOCASE`` does.

The registry table ``klaviyo_sync.subscriptions`` lists the subscriptions of the database.
"""

from __future__ import annotations

REGISTRY_SCHEMA = "klaviyo_sync"

#: ASCII-only case folding, the same as SQLite's NOCASE collation
FOLD = "translate({col}, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')"

def _ids(*tables: str) -> str:
    return "".join(f"CREATE TRIGGER {t}_id BEFORE INSERT ON {t} FOR EACH ROW EXECUTE FUNCTION assign_id();"
                   for t in tables)


def migrations(schema: str) -> list[tuple[int, str, str]]:
    """The migrations of one subscription's schema (``schema`` is already a safe identifier)."""
    return [
        (1, "customers, addresses, transactions, links, error log, sync state, queue, tokens", """
        CREATE FUNCTION assign_id() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.id IS NULL THEN
                EXECUTE format('SELECT COALESCE(MAX(id), 0) + 1 FROM %I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME)
                    INTO NEW.id;
            END IF;
            RETURN NEW;
        END $$;

        CREATE TABLE customers (
            id              BIGINT PRIMARY KEY,
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
        CREATE UNIQUE INDEX customers_email ON customers(email);
        CREATE INDEX customers_phone ON customers(phone_e164);
        CREATE INDEX customers_number ON customers(number_e164);

        CREATE TABLE customer_addresses (
            id                  BIGINT PRIMARY KEY,
            customer_id         BIGINT NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
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

        CREATE TABLE transactions (
            id                 BIGINT PRIMARY KEY,
            transaction_number TEXT NOT NULL,
            customer_id        BIGINT,
            email              TEXT,
            total              NUMERIC,
            transaction_date   TEXT,
            status             TEXT,
            custom_fields      TEXT NOT NULL DEFAULT '{}',
            created_at         TEXT NOT NULL,
            updated_at         TEXT NOT NULL
        );
        CREATE UNIQUE INDEX transactions_number ON transactions(transaction_number);
        CREATE INDEX transactions_customer ON transactions(customer_id);

        CREATE TABLE transaction_lines (
            id             BIGINT PRIMARY KEY,
            transaction_id BIGINT NOT NULL REFERENCES transactions(id) ON DELETE CASCADE,
            position       INTEGER NOT NULL,
            sku            TEXT,
            description    TEXT,
            qty            NUMERIC,
            unit_price     NUMERIC,
            extended_price NUMERIC
        );
        CREATE INDEX transaction_lines_tx ON transaction_lines(transaction_id, position);

        CREATE TABLE links (
            entity     TEXT NOT NULL,
            hub_id     BIGINT NOT NULL,
            klaviyo_id TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (entity, hub_id)
        );
        CREATE UNIQUE INDEX links_klaviyo ON links(entity, klaviyo_id);

        CREATE TABLE error_log (
            id          BIGINT PRIMARY KEY,
            at          TEXT NOT NULL,
            flow        TEXT NOT NULL,
            level       TEXT NOT NULL CHECK (level IN ('error', 'warning')),
            code        TEXT,
            message     TEXT NOT NULL,
            detail      TEXT,
            entity      TEXT,
            hub_id      BIGINT,
            klaviyo_id  TEXT,
            resolved_at TEXT
        );
        CREATE INDEX error_log_flow ON error_log(flow, id);

        CREATE TABLE sync_state (
            key        TEXT PRIMARY KEY,
            value      TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );

        CREATE TABLE outbound_queue (
            id          BIGINT PRIMARY KEY,
            entity      TEXT NOT NULL,
            hub_id      BIGINT NOT NULL,
            op          TEXT NOT NULL CHECK (op IN ('add', 'update')),
            version     INTEGER NOT NULL DEFAULT 1,
            queued_at   TEXT NOT NULL,
            changed_at  TEXT NOT NULL,
            lease_until DOUBLE PRECISION,
            attempts    INTEGER NOT NULL DEFAULT 0,
            UNIQUE (entity, hub_id)
        );

        CREATE TABLE oauth_tokens (
            provider      TEXT PRIMARY KEY,
            access_token  TEXT,
            refresh_token TEXT,
            expires_at    DOUBLE PRECISION,
            scopes        TEXT,
            updated_at    TEXT NOT NULL
        );
        """ + _ids("customers", "customer_addresses", "transactions", "transaction_lines", "error_log",
                   "outbound_queue")),
        (2, "transaction_versions: what each send of an order recorded in Klaviyo", """
        CREATE TABLE transaction_versions (
            transaction_id BIGINT NOT NULL,
            version        INTEGER NOT NULL CHECK (version >= 1),
            unique_id      TEXT NOT NULL,
            digest         TEXT,
            profile_id     TEXT,
            complete       INTEGER NOT NULL DEFAULT 1,
            sent_at        TEXT NOT NULL,
            PRIMARY KEY (transaction_id, version)
        );
        INSERT INTO transaction_versions(transaction_id, version, unique_id, digest, profile_id, complete, sent_at)
            SELECT hub_id, 1, klaviyo_id, NULL, NULL, 1, updated_at FROM links WHERE entity = 'Transaction';
        """),
        (3, "customer emails ignoring letter case", f"""
        CREATE INDEX customers_email_nocase ON customers(({FOLD.format(col="email")}));
        """),
    ]


__all__ = ["migrations", "REGISTRY_SCHEMA", "FOLD"]
