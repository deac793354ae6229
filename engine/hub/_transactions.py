"""Transactions and their lines in the SQLite hub (a mixin of :class:`SqliteHub`)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from engine.errors import HubRecordError, Location
from engine.hub._bulk import OnStored, new_in_batch, taken, upsert_in_runs
from engine.hub._records import SQLITE_MAX, check_transaction
from engine.hub._util import dumps, iter_with_children, record_with_children, utc_now

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

_TX_COLUMNS = {
    "TransactionNumber": "transaction_number",
    "CustomerId": "customer_id",
    "EmailAddress": "email",
    "Total": "total",
    "TransactionDate": "transaction_date",
    "Status": "status",
}
_LINE_COLUMNS = {
    "Sku": "sku",
    "Description": "description",
    "Qty": "qty",
    "UnitPrice": "unit_price",
    "ExtendedPrice": "extended_price",
}
_INSERT_TX = (f"INSERT INTO transactions(id, {', '.join(_TX_COLUMNS.values())}, custom_fields, created_at, updated_at)"
              f" VALUES (?, {', '.join('?' * len(_TX_COLUMNS))}, ?, ?, ?)")
_INSERT_LINE = (f"INSERT INTO transaction_lines(transaction_id, position, {', '.join(_LINE_COLUMNS.values())})"
                f" VALUES (?, ?, {', '.join('?' * len(_LINE_COLUMNS))})")


class TransactionsMixin:
    """Transactions with their lines.

    A Transaction is matched by ``Id`` when it has one, else by
    ``TransactionNumber`` (unique in the hub).  Its ``CustomerId`` is not a
    foreign key: transactions may be imported before their customers.
    """

    _conn: sqlite3.Connection

    if TYPE_CHECKING:
        def transaction(self, *, enqueue: bool = True, flat: bool = False) -> AbstractContextManager[Any]: ...
        def _enqueue(self, entity: str, hub_id: int, op: str) -> None: ...
        def _reserve_ids(self, table: str, count: int) -> int: ...

    def upsert_transaction(self, record: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
        """Add or update a Transaction with its ``Lines``.

        Lines are reconciled, not appended: a line with an ``Id`` updates that
        line; lines without one take over the remaining existing lines in
        order (so their Ids, and the Klaviyo links on them, survive a
        re-import); existing lines left over are deleted.

        Returns:
            The stored record and ``"added"``, ``"updated"`` or ``"unchanged"``.

        Raises:
            HubRecordError: malformed record, or its number belongs to another Id.
        """
        check_transaction(record)
        with self.transaction():
            tx_id, outcome = self.upsert_checked_transaction(record)
        stored = self.get_transaction(tx_id)
        assert stored is not None
        return stored, outcome

    def upsert_checked_transaction(self, record: Mapping[str, Any]) -> tuple[int, str]:
        """:meth:`upsert_transaction` of a record :func:`~engine.hub._records.check_transaction`
        passed, inside the caller's transaction, without reading it back: ``(Id, outcome)``."""
        number = record["TransactionNumber"]
        owner = self._conn.execute(
            "SELECT id FROM transactions WHERE transaction_number = ?", (number,)
        ).fetchone()
        record_id: Any = record.get("Id")
        if record_id is not None and owner is not None and owner[0] != record_id:
            raise HubRecordError(
                f"Transaction number {number!r} already belongs to Transaction {owner[0]}",
                location=Location(record_id=str(record_id)),
            )
        row = None
        if record_id is not None:
            row = self._conn.execute("SELECT * FROM transactions WHERE id = ?", (record_id,)).fetchone()
        elif owner is not None:
            row = self._conn.execute("SELECT * FROM transactions WHERE id = ?", (owner[0],)).fetchone()
        now = utc_now()
        if row is None:
            cur = self._conn.execute(_INSERT_TX, _tx_row(record_id, record, now))
            tx_id = int(cur.lastrowid or record_id)
            lines = record.get("Lines") or []
            if any(line.get("Id") is not None for line in lines):
                self._reconcile_lines(tx_id, lines)
            elif lines:  # a new Transaction has no lines yet: nothing to reconcile
                self._conn.executemany(_INSERT_LINE, _line_rows(tx_id, lines))
            self._enqueue("Transaction", tx_id, "add")
            return tx_id, "added"
        tx_id = int(row["id"])
        sets = {
            col: record[key] for key, col in _TX_COLUMNS.items()
            if key in record and record[key] != row[col]
        }
        if "CustomFields" in record:
            old = json.loads(row["custom_fields"])
            merged = {**old, **(record["CustomFields"] or {})}
            if merged != old:
                sets["custom_fields"] = dumps(merged)
        changed = bool(sets)
        if "Lines" in record:
            changed = self._reconcile_lines(tx_id, record["Lines"] or []) or changed
        if not changed:
            return tx_id, "unchanged"
        sets["updated_at"] = now
        self._conn.execute(
            f"UPDATE transactions SET {', '.join(f'{c} = ?' for c in sets)} WHERE id = ?",
            (*sets.values(), tx_id),
        )
        self._enqueue("Transaction", tx_id, "update")
        return tx_id, "updated"

    def upsert_checked_transactions(self, records: Sequence[Mapping[str, Any]],
                                    on_stored: OnStored | None = None) -> list[str]:
        """:meth:`upsert_checked_transaction` of each record in order, inside the caller's transaction;
        returns the outcomes.  The plainly new records (see :mod:`engine.hub._bulk`) are inserted a run
        at a time; ``on_stored(index, Id)`` hears of each record once it is written."""
        held = taken(self._conn, "transactions", "transaction_number", (r["TransactionNumber"] for r in records))
        new = new_in_batch(records, "TransactionNumber", held, "Lines")
        return upsert_in_runs(records, new, self._insert_new_transactions, self.upsert_checked_transaction,
                              on_stored)

    def _insert_new_transactions(self, records: list[Mapping[str, Any]]) -> list[int] | None:
        """Insert Transactions without Ids whose numbers are free (and their Lines, none with an Id) in two
        statements; their new Ids, or None when the ids left past the largest are too few."""
        first = self._reserve_ids("transactions", len(records))
        if first + len(records) - 1 > SQLITE_MAX:
            return None
        ids = list(range(first, first + len(records)))
        rows, line_rows = [], []
        now = utc_now()  # the rows of one statement share one time stamp
        for tx_id, record in zip(ids, records, strict=True):
            rows.append(_tx_row(tx_id, record, now))
            if record.get("Lines"):
                line_rows.extend(_line_rows(tx_id, record["Lines"]))
        self._conn.executemany(_INSERT_TX, rows)
        if line_rows:
            self._conn.executemany(_INSERT_LINE, line_rows)
        for tx_id in ids:
            self._enqueue("Transaction", tx_id, "add")
        return ids

    def _reconcile_lines(self, tx_id: int, lines: list[Mapping[str, Any]]) -> bool:
        existing = {
            int(r["id"]): r
            for r in self._conn.execute(
                "SELECT * FROM transaction_lines WHERE transaction_id = ? ORDER BY position, id", (tx_id,)
            )
        }
        explicit = {line["Id"] for line in lines if line.get("Id") is not None}
        spare = [i for i in existing if i not in explicit]
        changed = False
        for position, line in enumerate(lines):
            line_id = line.get("Id")
            if line_id is None and spare:
                line_id = spare.pop(0)
            values = (position, *(line.get(k) for k in _LINE_COLUMNS))
            row = existing.get(line_id) if line_id is not None else None
            if row is not None:
                current = (row["position"], *(row[c] for c in _LINE_COLUMNS.values()))
                if current != values:
                    self._conn.execute(
                        "UPDATE transaction_lines SET position = ?, sku = ?, description = ?,"
                        " qty = ?, unit_price = ?, extended_price = ? WHERE id = ?",
                        (*values, line_id),
                    )
                    changed = True
                continue
            if line_id is not None:
                other = self._conn.execute(
                    "SELECT transaction_id FROM transaction_lines WHERE id = ?", (line_id,)
                ).fetchone()
                if other is not None:
                    raise HubRecordError(
                        f"TransactionLine {line_id} belongs to Transaction {other[0]}, not {tx_id}"
                    )
            self._conn.execute(
                "INSERT INTO transaction_lines(id, transaction_id, position, sku, description, qty,"
                " unit_price, extended_price) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (line_id, tx_id, *values),
            )
            changed = True
        for line_id in spare:
            self._conn.execute("DELETE FROM transaction_lines WHERE id = ?", (line_id,))
            self._conn.execute(
                "DELETE FROM links WHERE entity = 'TransactionLine' AND hub_id = ?", (line_id,)
            )
            changed = True
        return changed

    def get_transaction(self, transaction_id: int) -> dict[str, Any] | None:
        """The Transaction with its ``Lines`` (in order), or None."""
        row = self._conn.execute("SELECT * FROM transactions WHERE id = ?", (transaction_id,)).fetchone()
        if row is None:
            return None
        lines = self._conn.execute(
            "SELECT * FROM transaction_lines WHERE transaction_id = ? ORDER BY position, id",
            (transaction_id,),
        ).fetchall()
        return _tx_dict(row, [_line_dict(r) for r in lines])

    def find_transaction_by_number(self, number: str) -> dict[str, Any] | None:
        """The Transaction with this TransactionNumber, or None."""
        row = self._conn.execute(
            "SELECT id FROM transactions WHERE transaction_number = ?", (number,)
        ).fetchone()
        return None if row is None else self.get_transaction(row[0])

    def iter_transactions(self, *, batch: int = 500, after: int = 0) -> Iterator[dict[str, Any]]:
        """Every Transaction with its Lines, by Id, read in batches; ``after``: only larger Ids."""
        for row, lines in iter_with_children(self._conn, "transactions", "transaction_lines", "transaction_id",
                                             "transaction_id, position, id", batch, after):
            yield _tx_dict(row, [_line_dict(r) for r in lines])


    # -- sent versions (the history of what an order recorded in Klaviyo) ----------------

    def transaction_versions(self, transaction_id: int) -> list[dict[str, Any]]:
        """Every version of this Transaction sent to Klaviyo, oldest first.

        Each is ``{"TransactionId", "Version", "UniqueId", "Digest", "ProfileId", "Complete", "SentAt"}``;
        ``Digest`` is None for an order sent before the hub kept versions.
        """
        rows = self._conn.execute(
            "SELECT * FROM transaction_versions WHERE transaction_id = ? ORDER BY version", (transaction_id,)
        ).fetchall()
        return [_version_dict(r) for r in rows]

    def latest_transaction_version(self, transaction_id: int) -> dict[str, Any] | None:
        """The newest sent version of this Transaction (see :meth:`transaction_versions`), or None."""
        row = self._conn.execute(
            "SELECT * FROM transaction_versions WHERE transaction_id = ? ORDER BY version DESC LIMIT 1",
            (transaction_id,),
        ).fetchone()
        return None if row is None else _version_dict(row)

    def record_transaction_version(self, transaction_id: int, version: int, unique_id: str, digest: str | None,
                                   profile_id: str | None, complete: bool, sent_at: str | None = None) -> None:
        """Save (or, for a version sent again, update) one sent version of a Transaction.

        ``sent_at`` defaults to now; a version sent again keeps its first ``sent_at`` unless one is given.
        """
        if version < 1:
            raise HubRecordError(f"a transaction version starts at 1, got {version}")
        with self.transaction():
            self._conn.execute(
                "INSERT INTO transaction_versions(transaction_id, version, unique_id, digest, profile_id, complete,"
                " sent_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(transaction_id, version) DO UPDATE SET"
                " unique_id = excluded.unique_id, digest = excluded.digest,"
                " profile_id = COALESCE(excluded.profile_id, transaction_versions.profile_id),"
                " complete = excluded.complete, sent_at = COALESCE(?, transaction_versions.sent_at)",
                (transaction_id, version, unique_id, digest, profile_id, int(bool(complete)), sent_at or utc_now(),
                 sent_at),
            )


def _tx_row(tx_id: int | None, record: Mapping[str, Any], now: str) -> tuple[Any, ...]:
    """The ``_INSERT_TX`` parameters of a new Transaction record."""
    custom = record.get("CustomFields")
    return (tx_id, record.get("TransactionNumber"), record.get("CustomerId"), record.get("EmailAddress"),
            record.get("Total"), record.get("TransactionDate"), record.get("Status"),
            dumps(custom) if custom else "{}", now, now)


def _line_rows(tx_id: int, lines: list[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
    """The ``_INSERT_LINE`` rows of a new Transaction's Lines (none with an Id), in order."""
    return [(tx_id, position, line.get("Sku"), line.get("Description"), line.get("Qty"), line.get("UnitPrice"),
             line.get("ExtendedPrice")) for position, line in enumerate(lines)]


def _version_dict(row: sqlite3.Row) -> dict[str, Any]:
    return {"TransactionId": row["transaction_id"], "Version": row["version"], "UniqueId": row["unique_id"],
            "Digest": row["digest"], "ProfileId": row["profile_id"], "Complete": bool(row["complete"]),
            "SentAt": row["sent_at"]}


def _tx_dict(row: sqlite3.Row, lines: list[dict[str, Any]]) -> dict[str, Any]:
    return record_with_children(row, _TX_COLUMNS, "Lines", lines)


def _line_dict(row: sqlite3.Row) -> dict[str, Any]:
    record: dict[str, Any] = {"Id": row["id"], "TransactionId": row["transaction_id"]}
    for key, col in _LINE_COLUMNS.items():
        record[key] = row[col]
    return record
