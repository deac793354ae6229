"""Small helpers shared by the hub's modules."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Mapping
from typing import Any

_second: tuple[int, str] = (-1, "")  # the last second formatted, replaced whole (thread-safe)


def utc_now() -> str:
    """The current time as ISO 8601 UTC with microseconds (sorts correctly as text).

    The date and time of day are formatted once a second; a write stamps several rows, so
    this is on every import's path.
    """
    global _second
    sec, micro = divmod(time.time_ns() // 1000, 1_000_000)
    last = _second
    if last[0] != sec:
        last = _second = (sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)))
    return f"{last[1]}.{micro:06d}Z"


_ENCODER = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def dumps(value: Any) -> str:
    """Compact, key-sorted JSON (stable text, so equal values compare equal as strings)."""
    return _ENCODER.encode(value)


def iter_with_children(
    conn: sqlite3.Connection, table: str, children: str, parent_key: str, order: str, batch: int, after: int = 0
) -> Iterator[tuple[sqlite3.Row, list[sqlite3.Row]]]:
    """Every row of ``table`` by id with its rows in ``children`` (joined on ``parent_key``,
    sorted by ``order``), read in batches of ``batch`` parents (no long-held cursor); ``after``:
    only rows with a larger id."""
    last = after
    while True:
        rows = conn.execute(f"SELECT * FROM {table} WHERE id > ? ORDER BY id LIMIT ?", (last, batch)).fetchall()
        if not rows:
            return
        ids = [r["id"] for r in rows]
        kids: dict[int, list[sqlite3.Row]] = {i: [] for i in ids}
        marks = ",".join("?" * len(ids))
        for kid in conn.execute(f"SELECT * FROM {children} WHERE {parent_key} IN ({marks}) ORDER BY {order}", ids):
            kids[kid[parent_key]].append(kid)
        for r in rows:
            yield r, kids[r["id"]]
        last = ids[-1]


def record_with_children(row: sqlite3.Row, columns: Mapping[str, str], children_key: str,
                         children: list[dict[str, Any]]) -> dict[str, Any]:
    """A Customer or Transaction as the hub gives it: ``Id``, its ``columns`` (record key: column),
    ``CustomFields``, its children under ``children_key``, then ``CreatedAt`` and ``UpdatedAt``."""
    record: dict[str, Any] = {"Id": row["id"]}
    for key, col in columns.items():
        record[key] = row[col]
    record["CustomFields"] = json.loads(row["custom_fields"])
    record[children_key] = children
    record["CreatedAt"] = row["created_at"]
    record["UpdatedAt"] = row["updated_at"]
    return record
