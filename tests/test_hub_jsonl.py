"""JSONL import and export of hub records."""

from __future__ import annotations

import io
import json
from pathlib import Path

from engine import catalog
from engine.hub import SqliteHub, export_jsonl, import_jsonl


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _customer(n: int, **extra: object) -> str:
    record = {"EmailAddress": f"c{n}@example.com", "CustomerNumber": f"N{n}", **extra}
    return json.dumps(record)


def test_bad_lines_are_reported_with_their_number_and_the_rest_imports(hub: SqliteHub, tmp_path: Path) -> None:
    """Each bad line is reported as FILE:LINE and skipped; every good line is stored."""
    path = _write(tmp_path / "customers.jsonl", [
        _customer(1, Addresses=[{"Address1": "1 Main St"}]),
        '{"EmailAddress": "broken@example.com", ',
        json.dumps({"CustomerNumber": "N3"}),
        "",
        _customer(5, FirstName=7),
        "[1, 2]",
        _customer(7),
        _customer(1, CustomerNumber="N8"),
    ])
    report = import_jsonl(hub, "customers", path)
    assert [
        f"{path}:2:40: H001 invalid JSON: Expecting property name enclosed in double quotes",
        f"{path}:3: H001 {catalog.EMAIL_REQUIRED}",
        f"{path}:5: H001 Customer.FirstName must be a string, got number",
        f"{path}:6: H001 each line must be a JSON object, got list",
    ] == [str(e) for e in report.errors]
    assert (2, 1, 0) == (report.added, report.updated, report.unchanged)
    assert ["c1@example.com", "c7@example.com"] == [c["EmailAddress"] for c in hub.iter_customers()]
    assert "N8" == hub.get_customer(1)["CustomerNumber"]
    assert 1 == len(hub.list_addresses(1))


def test_reimport_updates_instead_of_duplicating(hub: SqliteHub, tmp_path: Path) -> None:
    """Importing the same file twice leaves records unchanged; a changed line updates its record."""
    lines = [_customer(1, Id=10, Addresses=[{"Address1": "A"}]), _customer(2)]
    path = _write(tmp_path / "c.jsonl", lines)
    import_jsonl(hub, "customers", path)
    again = import_jsonl(hub, "customers", path)
    assert (0, 0, 2) == (again.added, again.updated, again.unchanged)
    _write(path, [_customer(1, Id=10, FirstName="Ann", Addresses=[{"Address1": "A"}])])
    changed = import_jsonl(hub, "customers", path)
    assert (0, 1) == (changed.added, changed.updated)
    assert ("Ann", 1) == (hub.get_customer(10)["FirstName"], len(hub.list_addresses(10)))


def test_duplicate_email_in_a_file_is_reported_not_merged_into_another_id(hub: SqliteHub, tmp_path: Path) -> None:
    """A line whose Id is new but whose email belongs to another customer is reported with that customer."""
    path = _write(tmp_path / "c.jsonl", [_customer(1, Id=1), _customer(1, Id=2)])
    report = import_jsonl(hub, "customers", path)
    [error] = report.errors
    assert (str(path), 2, "1") == (error.location.file, error.location.line, error.location.record_id)
    assert ("H002", catalog.EMAIL_ALREADY_EXISTS, 1) == (error.code, error.message, error.existing_id)


def test_transactions_import_with_lines(hub: SqliteHub, tmp_path: Path) -> None:
    """Transactions import with nested lines; a line with a wrong type is reported."""
    path = _write(tmp_path / "t.jsonl", [
        json.dumps({"Id": 5, "TransactionNumber": "T-5", "CustomerId": 1, "Total": 12.5,
                    "Lines": [{"Sku": "A", "Qty": 1, "UnitPrice": 12.5, "ExtendedPrice": 12.5}]}),
        json.dumps({"TransactionNumber": "T-6", "Lines": [{"Sku": "B", "Qty": "two"}]}),
        json.dumps({"Total": 1}),
    ])
    report = import_jsonl(hub, "transactions", path)
    assert [
        f"{path}:2: H001 TransactionLine Lines[0].Qty must be a number, got string",
        f"{path}:3: H001 A transaction number is required",
    ] == [str(e) for e in report.errors]
    assert ["A"] == [line["Sku"] for line in hub.get_transaction(5)["Lines"]]


def test_export_imports_back_unchanged(hub: SqliteHub, hub_factory, tmp_path: Path) -> None:
    """An export re-imported into a new hub reproduces the same records."""
    hub.add_customer({"EmailAddress": "a@example.com", "CustomerNumber": "1",
                      "CustomFields": {"Consent": "SUBSCRIBED"}, "Addresses": [{"Address1": "X"}]})
    hub.upsert_transaction({"TransactionNumber": "T-1", "Total": 3, "Lines": [{"Sku": "A"}]})
    copy = hub_factory("copy.db")
    for kind in ("customers", "transactions"):
        out = io.StringIO()
        assert 1 == export_jsonl(hub, kind, out)
        path = _write(tmp_path / f"{kind}.jsonl", out.getvalue().splitlines())
        assert [] == import_jsonl(copy, kind, path).errors
    strip = lambda r: {k: v for k, v in r.items() if k not in ("CreatedAt", "UpdatedAt")}  # noqa: E731
    assert strip(hub.get_customer(1)) == strip(copy.get_customer(1))
    assert strip(hub.get_transaction(1)) == strip(copy.get_transaction(1))
