"""Writing a batch of checked records with a few statements instead of a few per record.

A JSONL import hands the hub a batch of records (a thousand, say) inside one transaction.
Most of them, on a first import, are plainly new: no ``Id``, no nested ``Id``, a key
(email, transaction number) that neither the hub nor an earlier record of the batch holds.
Such records are inserted together, their ids reserved up front
(:meth:`~engine.hub.SqliteHub._reserve_ids`) and their rows written with ``executemany``;
every other record goes through the one-by-one upsert.  The batch is still written in its
order: a run of new records is written just before the next record that is not new, so ids,
outcomes and queue rows are what the one-by-one rule gives.

The SQL here is portable (SQLite and PostgreSQL): plain ``IN`` lists, no dialect functions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final, Protocol

from engine._iter import chunks

#: ``on_stored(index in the batch, hub id)``: called once per record written, in batch order
OnStored = Callable[[int, int], None]
_IN_LIST: Final = 500  # values per IN (...) list: well under SQLite's and PostgreSQL's limits


class _Connection(Protocol):
    def execute(self, sql: str, parameters: Sequence[Any], /) -> Any: ...


def taken(conn: _Connection, table: str, column: str, values: Iterable[str]) -> set[str]:
    """The ``values`` that some row of ``table`` holds in ``column`` (a few statements, one per 500)."""
    found: set[str] = set()
    for chunk in chunks(list(dict.fromkeys(values)), _IN_LIST):
        marks = ", ".join("?" * len(chunk))
        found.update(row[0] for row in conn.execute(
            f"SELECT {column} FROM {table} WHERE {column} IN ({marks})", chunk).fetchall())
    return found


def new_in_batch(records: Sequence[Mapping[str, Any]], key: str, held: set[str], children: str) -> list[bool]:
    """Which records are plainly new: no ``Id``, no ``Id`` on any of their ``children``, and a ``key``
    value that is not in ``held`` (the values the hub holds) nor on any earlier record of the batch."""
    seen = set(held)
    new: list[bool] = []
    for record in records:
        value = record[key]
        plain = value not in seen and record.get("Id") is None
        if plain:
            for child in record.get(children) or ():
                if child.get("Id") is not None:
                    plain = False
                    break
        new.append(plain)
        seen.add(value)
    return new


def upsert_in_runs(
    records: Sequence[Mapping[str, Any]],
    new: Sequence[bool],
    insert_new: Callable[[list[Mapping[str, Any]]], list[int] | None],
    upsert_one: Callable[[Mapping[str, Any]], tuple[int, str]],
    on_stored: OnStored | None = None,
) -> list[str]:
    """Write ``records`` in order: each run of ``new`` ones with one ``insert_new`` call (it returns
    their ids, or None when it cannot take them together, and then they go one by one), every other
    record with ``upsert_one``.  Returns each record's outcome (``"added"``, ``"updated"`` or
    ``"unchanged"``), in order; ``on_stored`` hears of each record once its run is written."""
    outcomes: list[str] = []
    run: list[int] = []

    def one(index: int) -> None:
        hub_id, outcome = upsert_one(records[index])
        outcomes.append(outcome)
        if on_stored:
            on_stored(index, hub_id)

    def flush() -> None:
        ids = insert_new([records[i] for i in run]) if run else []
        if ids is None:
            for index in run:
                one(index)
        else:
            outcomes.extend("added" for _ in ids)
            if on_stored:
                for index, hub_id in zip(run, ids, strict=True):
                    on_stored(index, hub_id)
        run.clear()

    for index, is_new in enumerate(new):
        if is_new:
            run.append(index)
        else:
            flush()
            one(index)
    flush()
    return outcomes
