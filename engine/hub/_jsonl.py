"""JSONL import and export of Customers and Transactions.

One JSON object per line in the PascalCase record shape (nested ``Addresses``
on a Customer, ``Lines`` on a Transaction).  A bad line (invalid JSON, not an
object, unknown field, wrong type, missing required field, duplicate email) is
reported as ``FILE:LINE: CODE message`` and skipped; every other line is kept.
Re-importing a record updates it: by ``Id`` when the line has one, else by
email (Customers) or transaction number (Transactions).  An export carries each
record's Klaviyo link as ``"_links": {"klaviyo": id}``; an import restores it.

The file is read as bytes and each line decoded and parsed on its own, so a
non-UTF-8 byte, NaN/Infinity, nesting deeper than 64 levels, an integer SQLite
cannot hold (an ``Id`` from 2**63, or below 1) or a lone surrogate costs one
line; a line longer than 1 MiB is skipped without being read into memory.
Lines are written in batches, one SQLite transaction per batch; a line the store
refuses undoes only itself (the batch is then written again with a savepoint per
line), so a large file imports quickly and a bad line costs nothing else.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, Final

from engine._iter import chunks
from engine._json import nested_deeper_than
from engine.errors import HubError, HubRecordError, Location
from engine.hub._db import DATA_ERRORS, INTEGRITY_ERRORS
from engine.hub._records import MAX_DEPTH, check_customer, check_transaction, json_type
from engine.hub._sqlite import SqliteHub

KINDS: tuple[str, ...] = ("customers", "transactions")
MAX_LINE_BYTES: Final = 1024 * 1024  # a longer line is refused without being read into memory
_BATCH_BYTES: Final = 8 * 1024 * 1024  # a batch also ends when its lines reach this size
_CHUNK: Final = 64 * 1024


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
    on_progress: Callable[[int, ImportReport], None] | None = None,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> ImportReport:
    """Import a JSONL file of ``customers`` or ``transactions`` into ``hub``.

    The file is read as bytes and each line decoded on its own, so a bad byte, a
    line that is not JSON, or a value the hub cannot store (an ``Id`` of 2**63, a
    lone surrogate, NaN, nesting deeper than 64 levels) costs that line only.

    Args:
        hub: the store to write to (its outbound triggers apply to imported changes).
        kind: ``"customers"`` or ``"transactions"``.
        path: the JSONL file.
        batch: lines per SQLite transaction (fewer when the lines are large).
        on_progress: called after each batch with the number of lines read and the report so far.
        max_line_bytes: a longer line is skipped without being read into memory.

    Returns:
        An :class:`ImportReport`; skipped lines are in ``errors``, each located at
        ``path:line`` (and the record id when the line has one).  Nothing raises for a bad line.
    """
    _check_kind(kind)
    name = os.fspath(path)
    report = ImportReport()
    with open(name, "rb") as fh:
        pending: list[tuple[int, bytes]] = []
        pending_bytes = 0
        lineno = 0
        for lineno, raw in enumerate(_lines(fh, max_line_bytes), start=1):
            if raw is None:
                report.errors.append(HubRecordError(f"line is longer than {max_line_bytes} bytes",
                                                    location=Location(file=name, line=lineno)))
                continue
            if raw.strip():
                pending.append((lineno, raw))
                pending_bytes += len(raw)
            if len(pending) >= batch or pending_bytes >= _BATCH_BYTES:
                _import_batch(hub, kind, name, pending, report)
                pending, pending_bytes = [], 0
                if on_progress:
                    on_progress(lineno, report)
        if pending:
            _import_batch(hub, kind, name, pending, report)
        if on_progress:
            on_progress(lineno, report)
    report.errors.sort(key=lambda e: e.location.line or 0)  # over-long lines are reported as they are read
    return report


def _lines(fh: IO[bytes], limit: int) -> Iterator[bytes | None]:
    """Each line of ``fh`` without its newline, or None for a line longer than ``limit`` bytes
    (read past in chunks, never held whole)."""
    while True:
        raw = fh.readline(limit + 1)
        if not raw:
            return
        if len(raw) > limit and not (raw.endswith(b"\n") and len(raw) - 1 <= limit):
            while not raw.endswith(b"\n"):
                raw = fh.readline(_CHUNK)
                if not raw:
                    break
            yield None
            continue
        yield raw.rstrip(b"\r\n")


# What a line may fail with once parsed and checked: the store refusing it, or a value our
# checks did not foresee (every one costs only its own line).
_LINE_FAILURES: tuple[type[Exception], ...] = (*INTEGRITY_ERRORS, *DATA_ERRORS, OverflowError, ValueError,
                                                RecursionError)
_BAD_LINE: tuple[type[Exception], ...] = (HubError, *_LINE_FAILURES)


def _import_batch(
    hub: SqliteHub, kind: str, name: str, lines: Iterable[tuple[int, bytes]], report: ImportReport
) -> None:
    """Parse, check and store one batch of lines in one SQLite transaction.

    Every line is parsed and checked before anything is written (a line refused there
    writes nothing).  The checked records are then written together without a savepoint
    each (the plainly new ones a run at a time, see :mod:`engine.hub._bulk`); if the store
    refuses one of them, that attempt is rolled back whole and the batch is written again
    with a savepoint per line, so the bad line undoes only itself.
    """
    upsert = hub.upsert_checked_customer if kind == "customers" else hub.upsert_checked_transaction
    upsert_all = hub.upsert_checked_customers if kind == "customers" else hub.upsert_checked_transactions
    check = check_customer if kind == "customers" else check_transaction
    checked: list[tuple[int, dict[str, Any], dict[str, Any]]] = []
    for lineno, raw in lines:
        record: dict[str, Any] | None = None
        try:
            record = _parse(raw, first=lineno == 1)
            # Without a backslash every key is spelled out, so no "_links" bytes means no links.
            record, links = split_links(kind, record) if b"_links" in raw or b"\\" in raw else (record, {})
            check(record)
        except _BAD_LINE as err:
            report.errors.append(_line_error(err, name, lineno, record))
            continue
        checked.append((lineno, record, links))

    def store(record: dict[str, Any], links: dict[str, Any]) -> str:
        hub_id, outcome = upsert(record)
        if links:
            restore_links(hub, kind, hub_id, links)
        return outcome

    def stored(index: int, hub_id: int) -> None:
        if checked[index][2]:
            restore_links(hub, kind, hub_id, checked[index][2])

    outcomes: list[str] = []
    try:
        with hub.transaction(), hub.queue_at_end():
            outcomes = upsert_all([record for _, record, _ in checked], stored)
    except _BAD_LINE:
        outcomes = []
        with hub.transaction():
            for lineno, record, links in checked:
                try:
                    with hub.transaction():  # a savepoint: a bad line undoes only itself
                        outcomes.append(store(record, links))
                except _BAD_LINE as err:
                    report.errors.append(_line_error(err, name, lineno, record))
    for outcome in outcomes:
        setattr(report, outcome, getattr(report, outcome) + 1)


def _line_error(err: Exception, name: str, lineno: int, record: dict[str, Any] | None) -> HubError:
    """The error to report for a skipped line, located at ``name:lineno`` and the record's Id."""
    if isinstance(err, HubError):
        return err.at(file=name, line=lineno, record_id=_record_id(record))
    # A refusal we did not foresee: report it like any bad line.
    return HubRecordError(f"refused by the store: {_cut(str(err))}",
                          location=Location(file=name, line=lineno, record_id=_record_id(record)))


def _record_id(record: dict[str, Any] | None) -> str | None:
    """The line's ``Id`` as text for error locations (None when it has none)."""
    value = record.get("Id") if isinstance(record, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return None
    if isinstance(value, int):
        return str(value) if abs(value) < 10**40 else None
    return _cut(value.encode("utf-8", "backslashreplace").decode("utf-8"))


def _cut(text: str, size: int = 200) -> str:
    return text if len(text) <= size else text[: size - 3] + "..."


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


#: nesting refused before parsing (shallower records are parsed, and the check names the path)
PARSE_DEPTH = 500
_DECODER = json.JSONDecoder(parse_constant=_no_constant)  # made once: json.loads makes one a call


def _parse(raw: bytes, *, first: bool = False) -> dict[str, Any]:
    """Decode and parse one line; HubRecordError (with the column where known) when it is not a JSON object."""
    try:
        text = raw.decode("utf-8-sig" if first else "utf-8")
    except UnicodeDecodeError as err:
        raise HubRecordError(f"not UTF-8 text: byte 0x{raw[err.start]:02x} cannot be decoded",
                             location=Location(column=err.start + 1)) from None
    try:
        if text.startswith("\ufeff"):  # as json.loads says it
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        if nested_deeper_than(text, PARSE_DEPTH):  # refused before the parser recurses that deep
            raise RecursionError
        record = _DECODER.decode(text)
    except json.JSONDecodeError as err:
        raise HubRecordError(f"invalid JSON: {err.msg}", location=Location(column=err.colno)) from None
    except RecursionError:
        raise HubRecordError(f"invalid JSON: nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as err:  # NaN/Infinity, or an integer of more than 4300 digits
        text = str(err) if "is not a JSON number" in str(err) else "an integer with too many digits"
        raise HubRecordError(f"invalid JSON: {text}") from None
    if not isinstance(record, dict):
        kind = type(record).__name__ if record is not None else "null"
        raise HubRecordError(f"each line must be a JSON object, got {kind}")
    return record


def export_jsonl(hub: SqliteHub, kind: str, out: IO[str]) -> int:
    """Write every Customer (with Addresses) or Transaction (with Lines) as JSONL; return the count.

    Each record carries its Klaviyo link as ``"_links": {"klaviyo": "<id>"}`` (``null`` when it
    has none): a Customer its profile id, a Transaction and each of its Lines the id of their
    event link.  The underscore keeps the key apart from every hub field.  The output imports
    back unchanged: ``import_jsonl`` ignores ``CreatedAt`` / ``UpdatedAt`` and restores the links.
    """
    _check_kind(kind)
    records = hub.iter_customers() if kind == "customers" else hub.iter_transactions()
    count = 0
    for chunk in chunks(records, 500):
        linked = hub.klaviyo_ids(_ENTITY[kind], [int(r["Id"]) for r in chunk])
        line_ids = [int(line["Id"]) for r in chunk for line in r.get("Lines") or []]
        lines_linked = hub.klaviyo_ids("TransactionLine", line_ids) if line_ids else {}
        for record in chunk:
            if "Lines" in record:
                record["Lines"] = [{**line, LINKS: {"klaviyo": lines_linked.get(int(line["Id"]))}}
                                   for line in record["Lines"] or []]
            record[LINKS] = {"klaviyo": linked.get(int(record["Id"]))}
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


# -- the Klaviyo links of an export -------------------------------------------------------

LINKS: Final = "_links"
_LINK_KEYS: Final = ("klaviyo",)
_ENTITY: Final = {"customers": "Customer", "transactions": "Transaction"}
_MAX_LINK: Final = 200  # a Klaviyo id is at most a few dozen characters


def _link_of(value: Any, where: str) -> str | None:
    """The Klaviyo id of one ``_links`` object (None when it holds none), or HubRecordError."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise HubRecordError(f'{where} must be an object such as {{"klaviyo": "01H8TV..."}}, got {json_type(value)}')
    for key in value:
        if key not in _LINK_KEYS:
            shown = key if len(key) <= 40 else key[:37] + "..."
            raise HubRecordError(f"{where}: unknown key {shown!r} (valid: {', '.join(_LINK_KEYS)})")
    link = value.get("klaviyo")
    if link is None:
        return None
    if not isinstance(link, str):
        raise HubRecordError(f"{where}.klaviyo must be a string (a Klaviyo id) or null, got {json_type(link)}")
    text = link.strip()
    if not text:
        return None
    if len(text) > _MAX_LINK or not text.isprintable():
        raise HubRecordError(f"{where}.klaviyo is not a Klaviyo id (printable text of at most {_MAX_LINK} characters)")
    return text


def split_links(kind: str, record: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(record without "_links", the links)`` of an imported line; a malformed ``_links`` is a
    HubRecordError.  The links are ``{"record": id or None, "lines": {line position: id}}``
    (empty when the line carries none)."""
    entity = _ENTITY[kind]
    found: dict[str, Any] = {}
    if LINKS in record:
        record = dict(record)
        found["record"] = _link_of(record.pop(LINKS), f"{entity}.{LINKS}")
    lines = record.get("Lines")
    if kind == "transactions" and isinstance(lines, list) and any(
            isinstance(line, dict) and LINKS in line for line in lines):
        kept, by_position = [], {}
        for i, line in enumerate(lines):
            if isinstance(line, dict) and LINKS in line:
                line = dict(line)
                link = _link_of(line.pop(LINKS), f"TransactionLine Lines[{i}].{LINKS}")
                if link is not None:
                    by_position[i] = link
            kept.append(line)
        record = {**record, "Lines": kept}
        found["lines"] = by_position
    return record, {k: v for k, v in found.items() if v}


def restore_links(hub: SqliteHub, kind: str, hub_id: int, links: dict[str, Any]) -> None:
    """Link the imported record (and its lines, by position) to the Klaviyo ids of its export.

    A link ``null`` in the file leaves whatever link the hub has; a Klaviyo id another record of
    the same entity held moves to this one (one record per Klaviyo id).
    """
    if links.get("record"):
        hub.set_link(_ENTITY[kind], hub_id, links["record"])
    if links.get("lines"):
        stored = (hub.get_transaction(hub_id) or {}).get("Lines") or []
        for position, link in links["lines"].items():
            if position < len(stored):
                hub.set_link("TransactionLine", int(stored[position]["Id"]), link)
