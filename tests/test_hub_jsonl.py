"""JSONL import and export of hub records."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

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


# -- hostile lines: each is reported where it is and costs only itself -------------------------

_GOOD_BEFORE = _customer(1).encode()
_GOOD_AFTER = _customer(2).encode()

HOSTILE_LINES = [
    pytest.param(b'{"Id": 9223372036854775808, "EmailAddress": "x@example.com", "CustomerNumber": "X"}',
                 "2: H001 Customer.Id must be between 1 and 9223372036854775807, got 9223372036854775808 "
                 "(record 9223372036854775808)", id="id-2**63"),
    pytest.param(b'{"Id": -4, "EmailAddress": "x@example.com", "CustomerNumber": "X"}',
                 "2: H001 Customer.Id must be between 1 and 9223372036854775807, got -4 (record -4)", id="id-negative"),
    pytest.param(b'{"EmailAddress": "x@example.com", "CustomerNumber": "X", "Addresses": [{"CustomerId": 0}]}',
                 "2: H001 Address Addresses[0].CustomerId must be between 1 and 9223372036854775807, got 0",
                 id="nested-id-zero"),
    pytest.param(b'{"EmailAddress": "x@example.com", "CustomerNumber": "X", "CustomFields": {"n": 18446744073709551616}}',
                 "2: H001 Customer.CustomFields.n must be between -9223372036854775808 and 9223372036854775807, "
                 "got 18446744073709551616", id="custom-field-int-2**64"),
    pytest.param(b'{"EmailAddress": "x@example.com", "CustomerNumber": "X", "FirstName": "\\ud800"}',
                 "2: H001 Customer.FirstName contains a lone surrogate (\\ud800), which is not valid text",
                 id="lone-surrogate"),
    pytest.param(b'{"EmailAddress": "x@example.com", "CustomerNumber": "X", "CustomFields": {"\\udfff": 1}}',
                 "2: H001 Customer.CustomFields key contains a lone surrogate (\\udfff), which is not valid text",
                 id="lone-surrogate-key"),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, "2: H001 invalid JSON: nested deeper than 64 levels",
                 id="nesting-100000"),
    pytest.param(b'{"EmailAddress": "x@example.com", "CustomerNumber": "X", "CustomFields": '
                 + b'{"a": ' * 70 + b"1" + b"}" * 71,
                 "2: H001 " + ("Customer.CustomFields" + ".a" * 64)[:117] + "... is nested deeper than 64 levels",
                 id="nesting-70"),
    pytest.param(b'{"EmailAddress": "x@example.com", "CustomerNumber": "\xff\xfeX"}',
                 "2:54: H001 not UTF-8 text: byte 0xff cannot be decoded", id="non-utf8"),
    pytest.param(b'{"EmailAddress": "x@example.com", "CustomerNumber": "X", "CustomFields": {"n": NaN}}',
                 "2: H001 invalid JSON: NaN is not a JSON number", id="nan"),
    pytest.param(b'{"EmailAddress": "x@example.com", "CustomerNumber": "X", "CustomFields": {"n": -Infinity}}',
                 "2: H001 invalid JSON: -Infinity is not a JSON number", id="infinity"),
    pytest.param(b'{"EmailAddress": "x@example.com", "CustomerNumber": "X", "CustomFields": {"n": 1e999}}',
                 "2: H001 Customer.CustomFields.n must be a finite number, got inf", id="float-overflow"),
    pytest.param(b'{"EmailAddress": "x@example.com", "CustomerNumber": "X", "CustomFields": {"n": 1' + b"0" * 5000
                 + b"}}", "2: H001 invalid JSON: an integer with too many digits", id="int-5001-digits"),
    pytest.param(b"42", "2: H001 each line must be a JSON object, got int", id="not-an-object"),
    pytest.param(b'{"EmailAddress": "' + b"x" * (1024 * 1024) + b'"}', "2: H001 line is longer than 1048576 bytes",
                 id="line-over-1MiB"),
]


@pytest.mark.parametrize(("line", "expected"), HOSTILE_LINES)
def test_a_hostile_line_is_located_and_every_good_line_is_stored(hub: SqliteHub, tmp_path: Path, line: bytes,
                                                                  expected: str) -> None:
    """A hostile line is reported as FILE:LINE with its reason; the good lines around it (same batch) are stored."""
    path = tmp_path / "c.jsonl"
    path.write_bytes(b"\n".join([_GOOD_BEFORE, line, _GOOD_AFTER]) + b"\n")
    report = import_jsonl(hub, "customers", path)
    assert [f"{path}:{expected}"] == [str(e) for e in report.errors]
    assert ["c1@example.com", "c2@example.com"] == [c["EmailAddress"] for c in hub.iter_customers()]


def test_hostile_lines_in_one_batch_do_not_undo_the_good_ones(hub: SqliteHub, tmp_path: Path) -> None:
    """Every hostile line at once, interleaved with good ones in a single batch: all good lines are stored."""
    lines: list[bytes] = []
    for i, param in enumerate(HOSTILE_LINES):
        lines += [_customer(100 + i).encode(), param.values[0]]
    path = tmp_path / "c.jsonl"
    path.write_bytes(b"\r\n".join(lines) + b"\r\n")
    report = import_jsonl(hub, "customers", path, batch=1000)
    assert [2 * (i + 1) for i in range(len(HOSTILE_LINES))] == [e.location.line for e in report.errors]
    assert [f"c{100 + i}@example.com" for i in range(len(HOSTILE_LINES))] == [
        c["EmailAddress"] for c in hub.iter_customers()]


def test_a_bad_transaction_id_is_refused_and_the_rest_import(hub: SqliteHub, tmp_path: Path) -> None:
    """A Transaction whose CustomerId or line Id is out of SQLite's range is skipped with the record id."""
    path = _write(tmp_path / "t.jsonl", [
        json.dumps({"Id": 3, "TransactionNumber": "T-3", "CustomerId": 2**63}),
        json.dumps({"TransactionNumber": "T-4", "Lines": [{"Id": 2**70, "Sku": "A"}]}),
        json.dumps({"TransactionNumber": "T-5", "Total": 2**63}),
        json.dumps({"TransactionNumber": "T-6", "Total": 1.5}),
    ])
    report = import_jsonl(hub, "transactions", path)
    assert [
        f"{path}:1: H001 Transaction.CustomerId must be between 1 and 9223372036854775807, got {2**63} (record 3)",
        f"{path}:2: H001 TransactionLine Lines[0].Id must be between 1 and 9223372036854775807, got {2**70}",
        f"{path}:3: H001 Transaction.Total must be between -9223372036854775808 and 9223372036854775807, got {2**63}",
    ] == [str(e) for e in report.errors]
    assert ["T-6"] == [t["TransactionNumber"] for t in hub.iter_transactions()]


def test_a_byte_order_mark_on_the_first_line_is_accepted(hub: SqliteHub, tmp_path: Path) -> None:
    """A file saved with a UTF-8 BOM imports its first line like any other."""
    path = tmp_path / "c.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + _GOOD_BEFORE + b"\n" + _GOOD_AFTER)
    assert [] == import_jsonl(hub, "customers", path).errors
    assert 2 == len(list(hub.iter_customers()))
