"""The outbound queue and transactional writes, on a real SQLite file."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.errors import HubRecordError
from engine.hub import SqliteHub

ANN = {"EmailAddress": "ann@example.com", "CustomerNumber": "C-1"}


def _queue(store: SqliteHub) -> list[tuple[str, int, str]]:
    return [(c.entity, c.hub_id, c.op) for c in store.pending_changes(None)]


def test_changes_are_queued_for_enabled_triggers(hub: SqliteHub) -> None:
    """Adding a customer and a transaction queues one change each, oldest first."""
    hub.add_customer(ANN)
    hub.upsert_transaction({"TransactionNumber": "T-1"})
    assert [("Customer", 1, "add"), ("Transaction", 1, "add")] == _queue(hub)


@pytest.mark.parametrize(
    ("triggers", "expected"),
    [
        (set(), []),
        ({"Customer"}, [("Customer", 1, "add")]),
        ({"Transaction"}, [("Transaction", 1, "add")]),
    ],
)
def test_only_enabled_triggers_queue(
    hub_factory: Callable[..., SqliteHub], triggers: set[str], expected: list[tuple[str, int, str]]
) -> None:
    """A change is queued only when that entity's outbound trigger is enabled."""
    store = hub_factory(outbound_triggers=triggers)
    store.add_customer(ANN)
    store.upsert_transaction({"TransactionNumber": "T-1"})
    assert expected == _queue(store)


def test_unknown_trigger_is_refused(hub_factory: Callable[..., SqliteHub]) -> None:
    """An outbound trigger for an entity the hub does not queue is a configuration error."""
    with pytest.raises(ValueError, match="unknown outbound trigger\\(s\\): Profile"):
        hub_factory(outbound_triggers={"Profile"})


def test_a_write_that_changes_nothing_queues_nothing(hub: SqliteHub) -> None:
    """Updating a customer to the values it already has leaves the queue empty."""
    hub.add_customer(ANN)
    hub.ack_change(hub.pending_changes()[0])
    hub.update_customer(1, {"EmailAddress": "ann@example.com"})
    hub.upsert_transaction({"TransactionNumber": "T-1"})
    hub.ack_change(hub.pending_changes()[0])
    hub.upsert_transaction({"TransactionNumber": "T-1"})
    assert [] == _queue(hub)


def test_address_and_line_changes_queue_their_parent(hub: SqliteHub) -> None:
    """A new address queues its customer; a changed line queues its transaction."""
    hub.add_customer(ANN)
    hub.upsert_transaction({"TransactionNumber": "T-1", "Lines": [{"Sku": "A"}]})
    for change in hub.pending_changes():
        hub.ack_change(change)
    hub.add_address_if_new(1, {"Address1": "1 Main St"})
    hub.upsert_transaction({"TransactionNumber": "T-1", "Lines": [{"Sku": "A", "Qty": 2}]})
    assert [("Customer", 1, "update"), ("Transaction", 1, "update")] == _queue(hub)


def test_repeated_changes_coalesce(hub: SqliteHub) -> None:
    """Several changes to a queued record keep one row (still an add) with a growing version."""
    hub.add_customer(ANN)
    hub.update_customer(1, {"FirstName": "Ann"})
    hub.update_customer(1, {"LastName": "Lee"})
    [change] = hub.pending_changes()
    assert ("add", 3) == (change.op, change.version)


def test_acking_a_stale_change_keeps_the_newer_one(hub: SqliteHub) -> None:
    """A change made while an older one was being sent survives that send's acknowledgement."""
    hub.add_customer(ANN)
    [claimed] = hub.claim_changes()
    hub.update_customer(1, {"FirstName": "Ann"})
    assert hub.ack_change(claimed) is False
    [left] = hub.claim_changes()
    assert ("update", 2) == (left.op, left.version)
    assert hub.ack_change(left) is True
    assert [] == _queue(hub)


def test_claimed_changes_are_leased(hub: SqliteHub) -> None:
    """A claimed change is not claimed again until its lease ends or it is released."""
    hub.add_customer(ANN)
    [first] = hub.claim_changes(lease_seconds=60)
    assert [] == hub.claim_changes()
    hub.release_change(first)
    [again] = hub.claim_changes(lease_seconds=0)
    assert 0 == again.attempts
    assert [again.id] == [c.id for c in hub.claim_changes()]


def test_only_a_failed_send_counts_as_an_attempt(hub: SqliteHub) -> None:
    """Claims and plain releases leave attempts as they were; a release after a failed send adds one."""
    hub.add_customer(ANN)
    for _ in range(10):  # claimed and never acknowledged, as a killed process leaves it
        [claimed] = hub.claim_changes(lease_seconds=0)
        assert 0 == claimed.attempts
    hub.release_change(claimed)
    [claimed] = hub.claim_changes()
    hub.release_change(claimed, failed=True)
    [claimed] = hub.claim_changes()
    hub.release_change(claimed, delay=60, failed=True)
    assert [] == hub.claim_changes()
    assert [2] == [c.attempts for c in hub.pending_changes()]


def test_exception_in_a_transaction_rolls_back_records_and_queue(hub: SqliteHub) -> None:
    """An exception inside transaction() leaves no record, link or queue row behind."""
    with pytest.raises(RuntimeError), hub.transaction():
        hub.add_customer(ANN)
        hub.set_link("Customer", 1, "P1")
        raise RuntimeError("crash mid-flow")
    assert (None, None, []) == (hub.get_customer(1), hub.get_klaviyo_id("Customer", 1), _queue(hub))


def test_failure_midway_through_a_write_leaves_nothing_half_written(hub: SqliteHub) -> None:
    """A customer whose second address fails after the first rows were written is not stored at all."""
    hub.add_customer({"EmailAddress": "bob@example.com", "CustomerNumber": "C-2",
                      "Addresses": [{"Address1": "Bob's"}]})
    hub.ack_change(hub.pending_changes()[0])
    with pytest.raises(HubRecordError, match="Address 1 belongs to Customer 1, not 2"):
        hub.add_customer({**ANN, "Addresses": [{"Address1": "Ann's"}, {"Id": 1, "Address1": "x"}]})
    assert [1] == [c["Id"] for c in hub.iter_customers()]
    assert ["Bob's"] == [a["Address1"] for a in hub.list_addresses(1)]
    assert [] == _queue(hub)


def test_a_failed_change_does_not_lose_an_already_queued_one(hub: SqliteHub) -> None:
    """A rolled-back update leaves the earlier queued change exactly as it was."""
    hub.add_customer(ANN)
    before = hub.pending_changes()
    with pytest.raises(RuntimeError), hub.transaction():
        hub.update_customer(1, {"FirstName": "Ann"})
        raise RuntimeError("boom")
    assert before == hub.pending_changes()


def test_nested_transaction_undoes_only_the_inner_block(hub: SqliteHub) -> None:
    """An exception caught inside an outer transaction rolls back only the inner savepoint."""
    with hub.transaction():
        hub.add_customer(ANN)
        with pytest.raises(RuntimeError), hub.transaction():
            hub.add_customer({"EmailAddress": "b@example.com", "CustomerNumber": "C-2"})
            raise RuntimeError("inner")
    assert [1] == [c["Id"] for c in hub.iter_customers()]
    assert [("Customer", 1, "add")] == _queue(hub)


def test_enqueue_false_suppresses_the_queue(hub: SqliteHub) -> None:
    """Writes inside transaction(enqueue=False) are stored but not queued (no echo of inbound data)."""
    with hub.transaction(enqueue=False):
        hub.add_customer(ANN)
    hub.upsert_transaction({"TransactionNumber": "T-1"})
    assert [("Transaction", 1, "add")] == _queue(hub)
    assert hub.get_customer(1) is not None


def test_a_killed_process_leaves_the_store_consistent(tmp_path: Path) -> None:
    """A process killed in the middle of a transaction leaves only what was committed before it."""
    path = tmp_path / "hub.db"
    script = textwrap.dedent(f"""
        import os
        from engine.hub import SqliteHub
        hub = SqliteHub({str(path)!r}, outbound_triggers={{"Customer"}})
        hub.add_customer({{"EmailAddress": "kept@example.com", "CustomerNumber": "1"}})
        with hub.transaction():
            hub.add_customer({{"EmailAddress": "lost@example.com", "CustomerNumber": "2",
                               "Addresses": [{{"Address1": "x"}}]}})
            os._exit(9)
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parent.parent, check=False)
    assert 9 == result.returncode
    with SqliteHub(path, outbound_triggers={"Customer"}) as store:
        assert ["kept@example.com"] == [c["EmailAddress"] for c in store.iter_customers()]
        assert [("Customer", 1, "add")] == _queue(store)
        assert 0 == store.counts()["addresses"]


def test_a_flat_transaction_commits_its_nested_writes_together(hub: SqliteHub) -> None:
    """flat=True: the writes nested in it (each its own transaction() call) commit as one."""
    ann = hub.add_customer(ANN)
    change = hub.claim_changes(1)[0]
    with hub.transaction(flat=True):
        hub.set_link("Customer", ann["Id"], "01FLAT")
        hub.errors.log("Add Klaviyo Profile FROM Hub", "a note", level="warning", entity="Customer", hub_id=ann["Id"])
        assert hub.ack_change(change)
    assert "01FLAT" == hub.get_klaviyo_id("Customer", ann["Id"])
    assert [] == _queue(hub)
    assert ["a note"] == [e["Message"] for e in hub.errors.list()]


def test_an_exception_in_a_flat_transaction_undoes_every_nested_write(hub: SqliteHub) -> None:
    """No savepoints inside a flat transaction: an exception anywhere in it undoes all of it, the nested
    writes that had finished included, and the hub is usable after."""
    ann = hub.add_customer(ANN)
    change = hub.claim_changes(1)[0]
    with pytest.raises(RuntimeError, match="boom"):
        with hub.transaction(flat=True):
            hub.set_link("Customer", ann["Id"], "01FLAT")
            hub.errors.log("Add Klaviyo Profile FROM Hub", "a note", entity="Customer", hub_id=ann["Id"])
            hub.ack_change(change)
            raise RuntimeError("boom")
    assert hub.get_klaviyo_id("Customer", ann["Id"]) is None
    assert [("Customer", ann["Id"], "add")] == _queue(hub)
    assert [] == hub.errors.list()
    with hub.transaction():  # the next (savepointed) transaction works as before
        hub.set_link("Customer", ann["Id"], "01AFTER")
        with pytest.raises(HubRecordError):
            with hub.transaction():
                hub.set_link("Nope", ann["Id"], "x")
    assert "01AFTER" == hub.get_klaviyo_id("Customer", ann["Id"])
