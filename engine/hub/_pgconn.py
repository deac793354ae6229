"""A psycopg 3 connection that answers like the part of ``sqlite3.Connection`` the hub uses.

The hub's modules write their SQL once, in the dialect both databases share, with ``?``
placeholders.  :class:`PgConnection` runs that text on PostgreSQL:

- ``?`` becomes ``%s`` (and a literal ``%`` becomes ``%%``); ``LIKE`` becomes ``ILIKE``,
  as SQLite's ``LIKE`` ignores ASCII letter case;
- an ``INSERT`` into a table with an ``id`` gets ``RETURNING id``, which gives the
  cursor its ``lastrowid``;
- rows are read by name or by position, as ``sqlite3.Row`` allows;
- Python booleans are stored as the integers 0 and 1 (the hub's flag columns are
  integers, as in SQLite), and floats are sent as exact decimals, so the money and
  quantity columns (``numeric``) keep 19.99 as 19.99; they read back as ``int`` when
  integral as written (``20``) and as ``float`` otherwise (``20.0``, ``19.99``), as
  SQLite's typeless columns give them back.

The translation of each statement is computed once and cached.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import psycopg
from psycopg import pq
from psycopg.adapt import Dumper, Loader
from psycopg.postgres import types as pg_types

#: tables whose rows have an ``id`` the hub reads back after an INSERT
ID_TABLES = frozenset({"customers", "customer_addresses", "transactions", "transaction_lines", "error_log",
                       "outbound_queue"})
_INSERT = re.compile(r"\s*INSERT\s+INTO\s+([a-z_]+)", re.IGNORECASE)
_LIKE = re.compile(r"\bLIKE\b")
_NUMERIC_OID = pg_types["numeric"].oid
_INT2_OID = pg_types["int2"].oid


class _ExactFloatDumper(Dumper):
    """A Python float as the decimal text of its repr (the shortest exact form), typed numeric."""

    oid = _NUMERIC_OID

    def dump(self, obj: float) -> bytes:
        return repr(obj).encode()


class _FlagDumper(Dumper):
    """A Python bool as the integer 1 or 0."""

    oid = _INT2_OID

    def dump(self, obj: bool) -> bytes:
        return b"1" if obj else b"0"


class _NumberLoader(Loader):
    """A numeric value as int when written without a fraction, else float."""

    def load(self, data: Any) -> int | float:
        text = bytes(data)
        if b"." in text or b"e" in text or b"E" in text or b"N" in text or b"n" in text:
            return float(text)
        return int(text)


class PgRow(tuple[Any, ...]):
    """A row readable by position or by column name."""

    _index: dict[str, int] = {}

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        """The column names, in order."""
        return list(self._index)


_ROW_CLASSES: dict[tuple[str, ...], type[PgRow]] = {}


def _row_factory(cursor: Any) -> Any:
    names = tuple(c.name for c in cursor.description or ())
    cls = _ROW_CLASSES.get(names)
    if cls is None:
        cls = type("PgRow", (PgRow,), {"_index": {n: i for i, n in enumerate(names)}})
        _ROW_CLASSES[names] = cls
    return lambda values: cls(values)


class PgCursor:
    """What ``execute`` returns: rows, ``rowcount`` and ``lastrowid`` (after an INSERT with an id)."""

    def __init__(self, cursor: Any, returning: bool) -> None:
        self._cursor = cursor
        self.lastrowid: int | None = None
        self.rowcount: int = cursor.rowcount
        if returning:
            row = cursor.fetchone()
            self.lastrowid = None if row is None else int(row[0])

    def fetchone(self) -> Any:
        return None if self._cursor.description is None or self.lastrowid is not None else self._cursor.fetchone()

    def fetchall(self) -> list[Any]:
        if self._cursor.description is None or self.lastrowid is not None:
            return []
        return list(self._cursor.fetchall())

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())


class PgConnection:
    """One psycopg connection in autocommit mode; the hub opens its transactions itself."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.raw = conn
        conn.row_factory = _row_factory
        conn.adapters.register_dumper(float, _ExactFloatDumper)
        conn.adapters.register_dumper(bool, _FlagDumper)
        conn.adapters.register_loader("numeric", _NumberLoader)
        self._sql: dict[str, tuple[str, bool]] = {}

    def _translate(self, sql: str, many: bool = False) -> tuple[str, bool]:
        key = sql if not many else "\0" + sql
        found = self._sql.get(key)
        if found is None:
            text = _placeholders(sql)
            text = _LIKE.sub("ILIKE", text)
            match = _INSERT.match(text)
            returning = (not many and match is not None and match.group(1).lower() in ID_TABLES
                         and "RETURNING" not in text.upper())
            if returning:
                text += " RETURNING id"
            found = self._sql[key] = (text, returning)
        return found

    def execute(self, sql: str, params: Sequence[Any] = ()) -> PgCursor:
        text, returning = self._translate(sql)
        return PgCursor(self.raw.execute(text, tuple(params)), returning)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> PgCursor:
        text, _ = self._translate(sql, many=True)
        with self.raw.cursor() as cur:
            cur.executemany(text, [tuple(r) for r in rows])
            rowcount = cur.rowcount
        result = PgCursor.__new__(PgCursor)
        result._cursor, result.lastrowid, result.rowcount = _NoRows(), None, rowcount
        return result

    def script(self, sql: str) -> None:
        """Run several statements without parameters (a migration)."""
        self.raw.execute(sql.encode())  # bytes: no placeholder processing

    @property
    def in_transaction(self) -> bool:
        return self.raw.info.transaction_status != pq.TransactionStatus.IDLE

    def close(self) -> None:
        self.raw.close()


class _NoRows:
    description = None


def _placeholders(sql: str) -> str:
    """``?`` to ``%s`` and ``%`` to ``%%``, leaving ``?`` inside quoted text alone."""
    out: list[str] = []
    quote = ""
    for ch in sql:
        if quote:
            if ch == quote:
                quote = ""
            out.append("%%" if ch == "%" else ch)
        elif ch in "'\"":
            quote = ch
            out.append(ch)
        elif ch == "?":
            out.append("%s")
        elif ch == "%":
            out.append("%%")
        else:
            out.append(ch)
    return "".join(out)


__all__ = ["PgConnection", "PgCursor", "PgRow", "ID_TABLES"]
