"""A batch's plainly new records are written a run at a time, and give what one-by-one upserts give.

An import inserts the records of a batch that are plainly new (no Id, no nested Id, a key no
earlier record holds) together: their ids reserved up front, their rows, addresses and lines
written with one statement each.  Every other record goes through the one-by-one upsert, in
order.  Each test holds that to the one-by-one rule on real SQLite hubs: the same rows, ids,
outcomes, refusals and queue rows.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from engine.errors import HubError
from engine.hub import SqliteHub, import_jsonl
from engine.hub._db import DATA_ERRORS, INTEGRITY_ERRORS
from engine.hub._records import SQLITE_MAX

_HYPOTHESIS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
_REFUSED = (HubError, *INTEGRITY_ERRORS, *DATA_ERRORS)


def _write(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _queued(hub: SqliteHub) -> list[tuple[str, int, str, int]]:
    return [(c.entity, c.hub_id, c.op, c.version) for c in hub.pending_changes(None)]


def _stored(hub: SqliteHub, kind: str) -> list[dict[str, Any]]:
    """Every record as stored, without its time stamps (two hubs never share those)."""
    records = hub.iter_customers() if kind == "customers" else hub.iter_transactions()
    return [{k: v for k, v in r.items() if k not in ("CreatedAt", "UpdatedAt")} for r in records]


def _one_by_one(hub: SqliteHub, kind: str, records: list[dict[str, Any]]) -> tuple[list[str], int]:
    """Upsert each record in its own transaction, as the API does: the outcomes and the refusals."""
    upsert: Callable[[dict[str, Any]], tuple[dict[str, Any], str]] = (
        hub.upsert_customer if kind == "customers" else hub.upsert_transaction)
    outcomes, refused = [], 0
    for record in records:
        try:
            outcomes.append(upsert(record)[1])
        except _REFUSED:
            refused += 1
    return outcomes, refused


def _same_as_one_by_one(kind: str, seed: list[dict[str, Any]], batch_records: list[dict[str, Any]],
                        batch: int) -> None:
    """Import ``seed`` then ``batch_records`` into one hub, upsert them one by one into another;
    assert both hubs hold the same and the import counted what the upserts did."""
    triggers = {"Customer", "Transaction"}
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        with SqliteHub(base / "import.db", outbound_triggers=triggers) as imported, \
                SqliteHub(base / "upsert.db", outbound_triggers=triggers) as upserted:
            import_jsonl(imported, kind, _write(base / "seed.jsonl", seed))
            _one_by_one(upserted, kind, seed)
            report = import_jsonl(imported, kind, _write(base / "batch.jsonl", batch_records), batch=batch)
            outcomes, refused = _one_by_one(upserted, kind, batch_records)
            assert _stored(upserted, kind) == _stored(imported, kind)
            assert _queued(upserted) == _queued(imported)
            assert (outcomes.count("added"), outcomes.count("updated"), outcomes.count("unchanged"), refused) == (
                report.added, report.updated, report.unchanged, len(report.errors))


_NUMBERS = st.sampled_from(["T-1", "T-2", "T-3", "T-4"])
_LINE = st.fixed_dictionaries({"Sku": st.sampled_from(["A", "B"])}, optional={"Id": st.integers(1, 8)})
_TRANSACTION = st.fixed_dictionaries(
    {"TransactionNumber": _NUMBERS, "Total": st.integers(0, 2)},
    optional={"Id": st.integers(1, 6), "Lines": st.lists(_LINE, max_size=3),
              "CustomFields": st.dictionaries(st.sampled_from(["k", "m"]), st.integers(0, 1), max_size=1)},
)
_EMAILS = st.sampled_from(["a@example.com", "b@example.com", "c@example.com", "d@example.com"])
_ADDRESS = st.fixed_dictionaries(
    {"Address1": st.sampled_from(["1 A St", "2 B St"])},
    optional={"Id": st.integers(1, 5), "IsPrimaryBilling": st.booleans(), "Country": st.sampled_from(["US", "GB"])},
)
_CUSTOMER = st.fixed_dictionaries(
    {"EmailAddress": _EMAILS, "CustomerNumber": st.sampled_from(["N", "+12025550123"])},
    optional={"Id": st.integers(1, 6), "FirstName": st.sampled_from(["Ann", "Bo"]),
              "Phone": st.sampled_from(["2025550143", "+442079460018"]),
              "Addresses": st.lists(_ADDRESS, max_size=2),
              "CustomFields": st.dictionaries(st.sampled_from(["k", "m"]), st.integers(0, 1), max_size=1)},
)


@_HYPOTHESIS
@given(seed=st.lists(_TRANSACTION, max_size=4), records=st.lists(_TRANSACTION, max_size=12),
       batch=st.sampled_from([1, 3, 1000]))
def test_a_transaction_batch_gives_what_one_by_one_upserts_give(seed, records, batch) -> None:
    """Transactions new and known, with and without Ids, numbers repeated within the batch, line Ids
    (some refused): the import stores, counts and queues what one-by-one upserts do."""
    _same_as_one_by_one("transactions", seed, records, batch)


@_HYPOTHESIS
@given(seed=st.lists(_CUSTOMER, max_size=4), records=st.lists(_CUSTOMER, max_size=12),
       batch=st.sampled_from([1, 3, 1000]))
def test_a_customer_batch_gives_what_one_by_one_upserts_give(seed, records, batch) -> None:
    """Customers new and known, with and without Ids, emails repeated within the batch, address Ids
    (some refused): the import stores, counts and queues what one-by-one upserts do."""
    _same_as_one_by_one("customers", seed, records, batch)


def test_a_batch_mixing_new_and_known_transactions_keeps_its_order(hub: SqliteHub, tmp_path: Path) -> None:
    """Known Transactions are updated in place; the new ones around them take the next free ids in
    file order, an explicit Id among them included, and each is queued once."""
    import_jsonl(hub, "transactions", _write(tmp_path / "seed.jsonl", [
        {"TransactionNumber": "T-1", "Total": 1}, {"TransactionNumber": "T-2", "Total": 2}]))
    path = _write(tmp_path / "t.jsonl", [
        {"TransactionNumber": "T-3", "Lines": [{"Sku": "A"}, {"Sku": "B"}]},
        {"TransactionNumber": "T-1", "Total": 10},
        {"TransactionNumber": "T-4"},
        {"Id": 9, "TransactionNumber": "T-9"},
        {"TransactionNumber": "T-5", "Lines": [{"Sku": "C"}]},
        {"TransactionNumber": "T-2", "Total": 2},
        {"TransactionNumber": "T-6"},
    ])
    report = import_jsonl(hub, "transactions", path)
    assert (5, 1, 1, []) == (report.added, report.updated, report.unchanged, report.errors)
    assert [(1, "T-1", 10), (2, "T-2", 2), (3, "T-3", None), (4, "T-4", None), (9, "T-9", None),
            (10, "T-5", None), (11, "T-6", None)] == [
        (t["Id"], t["TransactionNumber"], t["Total"]) for t in hub.iter_transactions()]
    assert [["A", "B"], ["C"]] == [[line["Sku"] for line in hub.get_transaction(i)["Lines"]] for i in (3, 10)]
    assert [("Transaction", i, "add", 2 if i == 1 else 1) for i in (1, 2, 3, 4, 9, 10, 11)] == _queued(hub)


def test_a_number_repeated_in_one_batch_updates_the_transaction_it_added(hub: SqliteHub, tmp_path: Path) -> None:
    """The second line with a TransactionNumber the batch has just added updates that Transaction
    (its lines reconciled, their ids kept): one record, one coalesced queue row."""
    path = _write(tmp_path / "t.jsonl", [
        {"TransactionNumber": "T-1", "Total": 1, "Lines": [{"Sku": "A"}, {"Sku": "B"}]},
        {"TransactionNumber": "T-2"},
        {"TransactionNumber": "T-1", "Total": 5, "Lines": [{"Sku": "Z"}]},
        {"TransactionNumber": "T-3"},
    ])
    report = import_jsonl(hub, "transactions", path)
    assert (3, 1, 0) == (report.added, report.updated, report.unchanged)
    assert [(1, "T-1", 5), (2, "T-2", None), (3, "T-3", None)] == [
        (t["Id"], t["TransactionNumber"], t["Total"]) for t in hub.iter_transactions()]
    assert [(1, "Z")] == [(line["Id"], line["Sku"]) for line in hub.get_transaction(1)["Lines"]]
    assert [("Transaction", 1, "add", 2), ("Transaction", 2, "add", 1), ("Transaction", 3, "add", 1)] == _queued(hub)


def test_an_email_repeated_in_one_batch_updates_the_customer_it_added(hub: SqliteHub, tmp_path: Path) -> None:
    """The second line with an email the batch has just added updates that Customer (a new address
    appended, the first kept): one record, one coalesced queue row."""
    path = _write(tmp_path / "c.jsonl", [
        {"EmailAddress": "a@example.com", "CustomerNumber": "A", "Addresses": [{"Address1": "1 A St"}]},
        {"EmailAddress": "b@example.com", "CustomerNumber": "B"},
        {"EmailAddress": "a@example.com", "CustomerNumber": "A2", "Addresses": [{"Address1": "2 A St"}]},
    ])
    report = import_jsonl(hub, "customers", path)
    assert (2, 1, 0) == (report.added, report.updated, report.unchanged)
    assert [(1, "A2", ["1 A St", "2 A St"]), (2, "B", [])] == [
        (c["Id"], c["CustomerNumber"], [a["Address1"] for a in c["Addresses"]]) for c in hub.iter_customers()]
    assert [("Customer", 1, "add", 2), ("Customer", 2, "add", 1)] == _queued(hub)


@pytest.mark.parametrize("bad", [
    {"Lines": [{"Sku": "X"}]},  # refused by the checks: no TransactionNumber
    {"TransactionNumber": "T-X", "Lines": [{"Id": 1, "Sku": "X"}]},  # refused by the store: line 1 is T-0's
])
def test_a_bad_line_amid_new_transactions_costs_only_itself(hub: SqliteHub, tmp_path: Path,
                                                            bad: dict[str, Any]) -> None:
    """A line refused in the middle of a batch of new Transactions is reported; the others are
    stored with their lines under consecutive, unique ids in file order, each queued once."""
    import_jsonl(hub, "transactions", _write(tmp_path / "seed.jsonl", [{"TransactionNumber": "T-0",
                                                                        "Lines": [{"Sku": "S"}]}]))
    records = [{"TransactionNumber": f"T-{i}", "Lines": [{"Sku": f"L{i}"}, {"Sku": f"M{i}"}]} for i in range(1, 7)]
    path = _write(tmp_path / "t.jsonl", [*records[:3], bad, *records[3:]])
    report = import_jsonl(hub, "transactions", path)
    assert [4] == [e.location.line for e in report.errors]
    assert (6, 0, 0) == (report.added, report.updated, report.unchanged)
    stored = list(hub.iter_transactions())
    assert [(i, f"T-{i - 1}") for i in range(1, 8)] == [(t["Id"], t["TransactionNumber"]) for t in stored]
    assert [["S"]] + [[f"L{i}", f"M{i}"] for i in range(1, 7)] == [
        [line["Sku"] for line in t["Lines"]] for t in stored]
    line_ids = [line["Id"] for t in stored for line in t["Lines"]]
    assert list(range(1, 14)) == line_ids
    assert [("Transaction", i, "add", 1) for i in range(1, 8)] == _queued(hub)


def test_new_records_still_go_in_when_the_largest_id_is_taken(hub: SqliteHub, tmp_path: Path) -> None:
    """With a record at the largest id SQLite holds, no run of ids can be reserved past it: the new
    records of the batch are inserted one by one, each under an id of its own."""
    import_jsonl(hub, "customers", _write(tmp_path / "top.jsonl", [
        {"Id": SQLITE_MAX, "EmailAddress": "top@example.com", "CustomerNumber": "T"}]))
    report = import_jsonl(hub, "customers", _write(tmp_path / "c.jsonl", [
        {"EmailAddress": f"c{i}@example.com", "CustomerNumber": f"C{i}", "Addresses": [{"Address1": f"{i} St"}]}
        for i in range(3)]))
    assert (3, []) == (report.added, report.errors)
    customers = list(hub.iter_customers())
    assert 4 == len({c["Id"] for c in customers})
    assert {"c0@example.com": ["0 St"], "c1@example.com": ["1 St"], "c2@example.com": ["2 St"]} == {
        c["EmailAddress"]: [a["Address1"] for a in c["Addresses"]] for c in customers if c["Id"] != SQLITE_MAX}
    assert 4 == len(_queued(hub))


def test_reserved_ids_start_past_the_largest(hub: SqliteHub) -> None:
    """The first reserved id is 1 in an empty table, else one past the largest id (the id SQLite
    would give the next row); only Customers and Transactions have ids reserved."""
    with hub.transaction():
        assert 1 == hub._reserve_ids("customers", 5)
        hub.upsert_checked_customer({"Id": 41, "EmailAddress": "a@example.com", "CustomerNumber": "A"})
        assert 42 == hub._reserve_ids("customers", 5)
        assert 1 == hub._reserve_ids("transactions", 1)
        with pytest.raises(ValueError, match="no ids are reserved in 'links'"):
            hub._reserve_ids("links", 1)
