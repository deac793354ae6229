"""The quick paths of a JSONL import give what the one-by-one rules give.

An import checks every line of a batch first and writes the batch without a savepoint
per line; the store refusing a line makes the batch be written again line by line.  A new
Customer's addresses and a new Transaction's lines go in one statement each.  Phone
numbers are normalised once per text and region.  Each test holds one of these to the
slower rule it stands in for, on a real SQLite hub.
"""

from __future__ import annotations

import itertools
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from engine import catalog
from engine.formula.helpers import _e164_of, e164
from engine.hub import SqliteHub, import_jsonl
from engine.hub._util import utc_now

_HYPOTHESIS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _write(path: Path, records: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _queued(hub: SqliteHub) -> list[tuple[str, int, str, int]]:
    return [(c.entity, c.hub_id, c.op, c.version) for c in hub.pending_changes(None)]


def test_a_line_the_store_refuses_mid_batch_undoes_only_itself(hub: SqliteHub, tmp_path: Path) -> None:
    """A line refused after part of it was written (its address belongs to another Customer) is
    reported with its line and record id; the lines before and after it in the same batch are
    stored once, counted once and queued once."""
    first = _write(tmp_path / "first.jsonl", [
        {"EmailAddress": "a@example.com", "CustomerNumber": "A", "Addresses": [{"Address1": "1 A St"}]},
    ])
    assert 1 == import_jsonl(hub, "customers", first).added
    path = _write(tmp_path / "c.jsonl", [
        {"EmailAddress": "b@example.com", "CustomerNumber": "B"},
        {"Id": 9, "EmailAddress": "c@example.com", "CustomerNumber": "C", "Addresses": [{"Id": 1, "City": "X"}]},
        {"EmailAddress": "a@example.com", "CustomerNumber": "A2"},
        {"Id": 10, "EmailAddress": "b@example.com", "CustomerNumber": "B2"},
        {"EmailAddress": "d@example.com", "CustomerNumber": "D"},
    ])
    report = import_jsonl(hub, "customers", path)
    assert [
        f"{path}:2: H001 Address 1 belongs to Customer 1, not 9 (record 9)",
        f"{path}:4: H002 {catalog.EMAIL_ALREADY_EXISTS} (record 2)\n  Customer 2 already has this email address",
    ] == [str(e) for e in report.errors]
    assert (2, 1, 0) == (report.added, report.updated, report.unchanged)
    assert [(1, "a@example.com", "A2"), (2, "b@example.com", "B"), (3, "d@example.com", "D")] == [
        (c["Id"], c["EmailAddress"], c["CustomerNumber"]) for c in hub.iter_customers()]
    assert hub.get_customer(9) is None
    assert [{"Address1": "1 A St", "City": None}] == [
        {"Address1": a["Address1"], "City": a["City"]} for a in hub.list_addresses(1)]
    assert [("Customer", 1, "add", 2), ("Customer", 2, "add", 1), ("Customer", 3, "add", 1)] == _queued(hub)


def test_a_transaction_refused_mid_batch_leaves_no_lines_behind(hub: SqliteHub, tmp_path: Path) -> None:
    """A Transaction whose line Id belongs to another Transaction is skipped whole: none of its
    lines and no queue row stay; the Transactions around it keep theirs."""
    first = _write(tmp_path / "first.jsonl", [{"TransactionNumber": "T-1", "Lines": [{"Sku": "A"}]}])
    import_jsonl(hub, "transactions", first)
    path = _write(tmp_path / "t.jsonl", [
        {"TransactionNumber": "T-2", "Lines": [{"Sku": "B"}, {"Sku": "C"}]},
        {"TransactionNumber": "T-3", "Lines": [{"Sku": "D"}, {"Id": 1, "Sku": "E"}]},
        {"TransactionNumber": "T-4", "Lines": [{"Sku": "F"}]},
    ])
    report = import_jsonl(hub, "transactions", path)
    assert [f"{path}:2: H001 TransactionLine 1 belongs to Transaction 1, not 3"] == [str(e) for e in report.errors]
    assert {"T-1": ["A"], "T-2": ["B", "C"], "T-4": ["F"]} == {
        t["TransactionNumber"]: [line["Sku"] for line in t["Lines"]] for t in hub.iter_transactions()}
    assert [("Transaction", 1, "add", 1), ("Transaction", 2, "add", 1), ("Transaction", 3, "add", 1)] == _queued(hub)


_TEXT = st.sampled_from(["", "1 Main St", "2 High St", "Austin"])
_ADDRESS = st.fixed_dictionaries({}, optional={
    "Address1": _TEXT, "City": _TEXT, "Country": st.sampled_from(["US", "GB", ""]),
    "IsPrimaryBilling": st.booleans(), "IsPrimaryShipping": st.booleans(),
})


def _addresses(store: SqliteHub, customer_id: int) -> list[dict[str, object]]:
    return [{k: v for k, v in a.items() if k not in ("CreatedAt", "UpdatedAt")}
            for a in store.list_addresses(customer_id)]


_RUNS = itertools.count()


@_HYPOTHESIS
@given(addresses=st.lists(_ADDRESS, max_size=6))
def test_a_new_customers_addresses_are_those_added_one_by_one(tmp_path: Path, addresses) -> None:
    """Imported with a new Customer, addresses (duplicates, several flagged primary) are stored as
    adding them one at a time stores them: an identical one is skipped, the last flagged keeps the flag."""
    run = next(_RUNS)
    path = _write(tmp_path / f"{run}.jsonl", [
        {"EmailAddress": "a@example.com", "CustomerNumber": "A", "Addresses": addresses}])
    with SqliteHub(tmp_path / f"{run}-import.db") as imported, SqliteHub(tmp_path / f"{run}-one.db") as one_by_one:
        report = import_jsonl(imported, "customers", path)
        assert ([], 1) == (report.errors, report.added)
        customer = one_by_one.add_customer({"EmailAddress": "a@example.com", "CustomerNumber": "A"})
        for address in addresses:
            one_by_one.add_address_if_new(customer["Id"], address)
        assert _addresses(one_by_one, customer["Id"]) == _addresses(imported, customer["Id"])


def test_imported_lines_and_addresses_are_what_a_reimport_finds_unchanged(hub: SqliteHub, tmp_path: Path) -> None:
    """The rows written in one statement for a new record are the ones the one-by-one rules match:
    importing the same files again changes nothing, queues nothing new and keeps every Id."""
    customers = _write(tmp_path / "c.jsonl", [
        {"EmailAddress": f"c{i}@example.com", "CustomerNumber": f"C{i}", "Phone": "+12025550123",
         "Addresses": [{"Address1": f"{i} Main St", "IsPrimaryBilling": True}, {"Address1": "PO Box 1"}]}
        for i in range(5)])
    transactions = _write(tmp_path / "t.jsonl", [
        {"TransactionNumber": f"T{i}", "Lines": [{"Sku": "A", "Qty": 1}, {"Sku": "B", "Qty": 2.5}, {"Sku": "A"}]}
        for i in range(5)])
    assert 5 == import_jsonl(hub, "customers", customers, batch=2).added
    assert 5 == import_jsonl(hub, "transactions", transactions, batch=2).added
    before = (list(hub.iter_customers()), list(hub.iter_transactions()), _queued(hub))
    again = (import_jsonl(hub, "customers", customers), import_jsonl(hub, "transactions", transactions))
    assert [(0, 0, 5, [])] * 2 == [(r.added, r.updated, r.unchanged, r.errors) for r in again]
    assert before == (list(hub.iter_customers()), list(hub.iter_transactions()), _queued(hub))
    assert [["A", "B", "A"], [1, 2.5, None]] == [
        [line[k] for line in before[1][0]["Lines"]] for k in ("Sku", "Qty")]
    assert 1 == hub.find_customer_by_phone("(202) 555-0123")["Id"]


#: The normalisation without its memory: phonenumbers' own answer, worked out on every call.
_library_e164 = _e164_of.__wrapped__


_PHONE = st.one_of(
    st.from_regex(r"\+?[0-9 ()\-.]{3,20}", fullmatch=True),
    st.sampled_from(["+12025550123", "+442079460018", "020 7946 0018", "(202) 555-0123", "+1 202 555 0123"]),
)


@settings(max_examples=300, deadline=None)
@given(phone=_PHONE, region=st.sampled_from(["US", "GB", "DE", "FR", "IN"]))
def test_a_normalised_phone_is_the_librarys_answer_every_time(phone: str, region: str) -> None:
    """e164() remembers what it worked out; a first and a repeated call both give exactly what
    phonenumbers gives for the text in that region (None where the library refuses it)."""
    expected = _library_e164(phone.strip(), region)
    assert [expected, expected] == [e164(phone, region), e164(phone, region)]


def test_the_time_stamp_is_utc_iso_with_microseconds() -> None:
    """utc_now() formats the date and time once a second; each stamp is still the current UTC time."""
    stamps = [utc_now() for _ in range(2000)]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", s) for s in stamps)
    assert stamps == sorted(stamps)
    now = datetime.now(UTC).replace(tzinfo=None)
    assert abs(datetime.strptime(stamps[-1], "%Y-%m-%dT%H:%M:%S.%fZ") - now) < timedelta(seconds=1)


@pytest.mark.parametrize("batch", [1, 2, 1000])
def test_the_batch_size_changes_nothing_but_the_commits(hub_factory, tmp_path: Path, batch: int) -> None:
    """The same file with bad lines scattered through it gives the same report and the same
    rows whatever the batch size (a batch written again line by line or not at all)."""
    path = _write(tmp_path / f"c{batch}.jsonl", [
        {"EmailAddress": "a@example.com", "CustomerNumber": "A"},
        {"EmailAddress": "b@example.com", "CustomerNumber": "B", "Addresses": [{"Address1": "1 B St"}]},
        {"Id": 7, "EmailAddress": "a@example.com", "CustomerNumber": "A7"},
        {"EmailAddress": "bad", "CustomerNumber": "X"},
        {"EmailAddress": "a@example.com", "CustomerNumber": "A2"},
        {"Id": 8, "EmailAddress": "e@example.com", "CustomerNumber": "E", "Addresses": [{"Id": 1}]},
    ])
    store = hub_factory(f"{batch}.db", outbound_triggers={"Customer"})
    report = import_jsonl(store, "customers", path, batch=batch)
    assert [3, 4, 6] == [e.location.line for e in report.errors]
    assert (2, 1, 0) == (report.added, report.updated, report.unchanged)
    assert [("a@example.com", "A2"), ("b@example.com", "B")] == [
        (c["EmailAddress"], c["CustomerNumber"]) for c in store.iter_customers()]
    assert [("Customer", 1, "add", 2), ("Customer", 2, "add", 1)] == _queued(store)


def test_queue_rows_held_to_the_end_of_a_block_are_those_written_one_by_one(hub: SqliteHub) -> None:
    """The import holds a batch's queue rows and writes them as the batch ends: the rows of a
    savepoint undone inside the block go with it, a second change coalesces as it would, and
    nothing is held when the block fails."""
    with hub.transaction(), hub.queue_at_end():
        first = hub.add_customer({"EmailAddress": "a@example.com", "CustomerNumber": "A"})
        with pytest.raises(RuntimeError), hub.transaction():
            hub.add_customer({"EmailAddress": "b@example.com", "CustomerNumber": "B"})
            raise RuntimeError("undone")
        hub.update_customer(first["Id"], {"FirstName": "Ann"})
        assert [] == _queued(hub)
    assert [("Customer", first["Id"], "add", 2)] == _queued(hub)
    with pytest.raises(RuntimeError), hub.transaction(), hub.queue_at_end():
        hub.add_customer({"EmailAddress": "c@example.com", "CustomerNumber": "C"})
        raise RuntimeError("the whole block")
    assert [("Customer", first["Id"], "add", 2)] == _queued(hub)
    assert ["a@example.com"] == [c["EmailAddress"] for c in hub.iter_customers()]
    with pytest.raises(RuntimeError, match="inside a transaction"), hub.queue_at_end():
        pass
