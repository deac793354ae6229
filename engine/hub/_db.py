"""What the hub's stores may raise, whichever database is behind them.

Flows and the JSONL import catch these tuples instead of one driver's classes, so a
refusal by PostgreSQL is handled exactly like the same refusal by SQLite.
"""

from __future__ import annotations

import sqlite3

import psycopg

#: any error of a database driver the hub runs on
DB_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, psycopg.Error)
#: a constraint refused the write (unique, foreign key, check, not null)
INTEGRITY_ERRORS: tuple[type[Exception], ...] = (sqlite3.IntegrityError, psycopg.IntegrityError)
#: a value the database cannot store (out of range, wrong type, invalid text)
DATA_ERRORS: tuple[type[Exception], ...] = (sqlite3.DataError, sqlite3.ProgrammingError, psycopg.DataError,
                                            psycopg.ProgrammingError)


def describe(exc: BaseException) -> str:
    """``ClassName: message`` on one line: PostgreSQL's errors carry CONTEXT and HINT lines after the
    message, which belong in no log line (the first line is the server's primary message)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


__all__ = ["DB_ERRORS", "INTEGRITY_ERRORS", "DATA_ERRORS", "describe"]
