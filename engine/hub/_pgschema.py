"""The hub's schema on PostgreSQL: the SQLite file's versioned migrations, put in PostgreSQL's words.

Each subscription lives in its own schema (``ks_<subscription>``), so one database holds many
subscriptions whose records, links, cursors, error log and queue never meet.  There is one
source of the schema, :data:`engine.hub._migrations.MIGRATIONS`: :func:`migrations` rewrites each
released migration for PostgreSQL (:func:`to_postgres`), so version ``n`` makes the same tables,
columns, keys and indexes on both; ``tests/test_hub_postgres.py`` compares them.

The rewrites, each for a reason:

- ids are ``bigint``; a trigger gives a row without an id the largest id plus one, exactly as
  SQLite's ``INTEGER PRIMARY KEY`` does (an imported Id is kept; a rolled-back insert leaves no
  gap).  No two writers race for an id: a subscription's writes are serialised (``_postgres.py``);
- money and quantities are ``numeric`` (SQLite stores them typeless): exact, and read back as
  written (see :mod:`engine.hub._pgconn`);
- ``REAL`` is ``DOUBLE PRECISION`` and ``INTEGER`` is ``BIGINT`` (SQLite's integers are 64-bit);
- the case-insensitive email index folds ASCII letters only, as SQLite's ``NOCASE`` does.

The registry table ``klaviyo_sync.subscriptions`` lists the subscriptions of the database.
"""

from __future__ import annotations

import re

from engine.hub._migrations import MIGRATIONS

REGISTRY_SCHEMA = "klaviyo_sync"

#: ASCII-only case folding, the same as SQLite's NOCASE collation
FOLD = "translate({col}, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')"

#: gives a row inserted without an id the next one (version 1 adds it, with a trigger per table below)
_ASSIGN_ID = """
CREATE FUNCTION assign_id() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE top BIGINT;
BEGIN
    IF NEW.id IS NULL THEN
        EXECUTE format('SELECT MAX(id) FROM %I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME) INTO top;
        IF top IS NULL THEN
            NEW.id := 1;
        ELSIF top < 9223372036854775807 THEN
            NEW.id := top + 1;
        ELSE  -- the largest id is taken: the lowest free one, as SQLite then picks a free one
            EXECUTE format('SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM %1$I.%2$I WHERE id = 1) THEN 1'
                           ' ELSE (SELECT MIN(t.id) + 1 FROM %1$I.%2$I t WHERE t.id < 9223372036854775807'
                           ' AND NOT EXISTS (SELECT 1 FROM %1$I.%2$I u WHERE u.id = t.id + 1)) END',
                           TG_TABLE_SCHEMA, TG_TABLE_NAME) INTO NEW.id;
        END IF;
    END IF;
    RETURN NEW;
END $$;
"""
_TYPELESS = re.compile(r"^(\s+)([a-z_]+)(,?)$", re.MULTILINE)  # a column without a type: money, quantities
_NOCASE = re.compile(r"\((\w+) COLLATE NOCASE\)")
_ID_COLUMN = re.compile(r"^\s+id\s+INTEGER PRIMARY KEY", re.MULTILINE)
_CREATE_TABLE = re.compile(r"CREATE TABLE (\w+) \(")


def to_postgres(sql: str) -> str:
    """One SQLite migration script in PostgreSQL's words (see the module docstring)."""
    text = _TYPELESS.sub(r"\1\2 NUMERIC\3", sql)
    text = _NOCASE.sub(lambda m: "((" + FOLD.format(col=m.group(1)) + "))", text)
    text = re.sub(r"\bINTEGER\b", "BIGINT", text)
    return re.sub(r"\bREAL\b", "DOUBLE PRECISION", text)


def _id_tables(sql: str) -> list[str]:
    """The tables a script creates whose ``id`` is their integer primary key."""
    found = []
    for match in _CREATE_TABLE.finditer(sql):
        body = sql[match.end():sql.find(";", match.end())]
        if _ID_COLUMN.search(body):
            found.append(match.group(1))
    return found


def migrations(schema: str = "") -> list[tuple[int, str, str]]:
    """The hub's migrations for one subscription's schema (the connection's ``search_path``)."""
    steps = []
    for version, name, sql in MIGRATIONS:
        text = to_postgres(sql)
        tables = _id_tables(sql)
        if tables:
            if version == 1:
                text = _ASSIGN_ID + text
            text += "".join(f"\nCREATE TRIGGER {t}_id BEFORE INSERT ON {t} FOR EACH ROW EXECUTE FUNCTION assign_id();"
                            for t in tables)
        steps.append((version, name, text))
    return steps


__all__ = ["migrations", "to_postgres", "REGISTRY_SCHEMA", "FOLD"]
