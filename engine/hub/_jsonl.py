"""JSONL import and export of Customers and Transactions.

One JSON object per line in the PascalCase record shape (nested ``Addresses``
on a Customer, ``Lines`` on a Transaction).  A bad line (invalid JSON, not an
object, unknown field, wrong type, missing required field, duplicate email) is
reported as ``FILE:LINE: CODE message`` and skipped; every other line is kept.
Re-importing a record updates it: by ``Id`` when the line has one, else by
email (Customers) or transaction number (Transactions).

Lines are written in batches, one SQLite transaction per batch and a savepoint
per line, so a bad line undoes only itself and a large file imports quickly.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO, Any, Literal

from engine.errors import HubError, HubRecordError, Location
from engine.hub._records import check_customer, check_transaction
from engine.hub._sqlite import SqliteHub

Kind = Literal["customers", "transactions"]
KINDS: tuple[str, ...] = ("customers", "transactions")


@dataclass
class ImportReport:
    """What an import did: counts per outcome and every skipped line's error (with its location)."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[HubError] = field(default_factory=list)

    @property
    def imported(self) -> int:
        return self.added + self.updated + self.unchanged

    def summary(self, kind: str) -> str:
        text = (f"Imported {self.imported} {kind} ({self.added} added, {self.updated} updated, "
                f"{self.unchanged} unchanged)")
        if self.errors:
            text += f"; {len(self.errors)} line(s) skipped"
        return text


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise HubRecordError(f"unknown record kind {kind!r} (valid: {', '.join(KINDS)})")


def import_jsonl(
    hub: SqliteHub,
    kind: str,
    path: str | os.PathLike[str],
    *,
    batch: int = 1000,
    on_progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Import a JSONL file of ``customers`` or ``transactions`` into ``hub``.

    Args:
        hub: the store to write to (its outbound triggers apply to imported changes).
        kind: ``"customers"`` or ``"transactions"``.
        path: the JSONL file.
        batch: lines per SQLite transaction.
        on_progress: called with the number of lines read after each batch.

    Returns:
        An :class:`ImportReport`; skipped lines are in ``errors``, each located at
        ``path:line``.  Nothing raises for a bad line.
    """
    _check_kind(kind)
    name = os.fspath(path)
    report = ImportReport()
    with open(name, encoding="utf-8") as fh:
        pending: list[tuple[int, str]] = []
        lineno = 0
        for lineno, text in enumerate(fh, start=1):
            if text.strip():
                pending.append((lineno, text))
            if len(pending) >= batch:
                _import_batch(hub, kind, name, pending, report)
                pending = []
                if on_progress:
                    on_progress(lineno)
        if pending:
            _import_batch(hub, kind, name, pending, report)
        if on_progress:
            on_progress(lineno)
    return report


def _import_batch(
    hub: SqliteHub, kind: str, name: str, lines: Iterable[tuple[int, str]], report: ImportReport
) -> None:
    with hub.transaction():
        for lineno, text in lines:
            try:
                record = _parse(text)
                with hub.transaction():  # a savepoint: a bad line undoes only itself
                    if kind == "customers":
                        check_customer(record)
                        _, outcome = hub._upsert_customer(record)
                    else:
                        check_transaction(record)
                        _, outcome = hub._upsert_transaction(record)
            except HubError as err:
                report.errors.append(err.at(file=name, line=lineno))
                continue
            except sqlite3.IntegrityError as err:
                # A constraint we did not foresee: report it like any bad line.
                report.errors.append(HubRecordError(f"refused by the store: {err}",
                                                    location=Location(file=name, line=lineno)))
                continue
            setattr(report, outcome, getattr(report, outcome) + 1)


def _parse(text: str) -> dict[str, Any]:
    try:
        record = json.loads(text.rstrip("\r\n"))
    except json.JSONDecodeError as err:
        raise HubRecordError(f"invalid JSON: {err.msg}", location=Location(column=err.colno)) from None
    if not isinstance(record, dict):
        kind = type(record).__name__ if record is not None else "null"
        raise HubRecordError(f"each line must be a JSON object, got {kind}")
    return record


def export_jsonl(hub: SqliteHub, kind: str, out: IO[str]) -> int:
    """Write every Customer (with Addresses) or Transaction (with Lines) as JSONL; return the count.

    The output imports back unchanged (``import_jsonl`` ignores ``CreatedAt`` / ``UpdatedAt``).
    """
    _check_kind(kind)
    records = hub.iter_customers() if kind == "customers" else hub.iter_transactions()
    count = 0
    for record in records:
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
        count += 1
    return count
