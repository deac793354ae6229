"""Hub Transactions to Placed Order / Ordered Product events: every Test Scenario of seed 003,
over loopback with the real sandbox and a real SQLite hub file."""

from __future__ import annotations

from typing import Any

import pytest
from _hub_fixtures import store_legacy_email
from test_outbound_profiles import _customer, _edit_collections, _with_collections

from engine import catalog


def _transaction(hub: Any, customer_id: int | None, email: str = "person1@example.com", lines: int = 2,
                 number: str = "SO-1") -> dict[str, Any]:
    record: dict[str, Any] = {
        "TransactionNumber": number, "EmailAddress": email, "Total": 12.5 * lines,
        "Lines": [{"Sku": f"SKU-{i}", "Description": f"Item {i}", "Qty": 1, "UnitPrice": 12.5,
                   "ExtendedPrice": 12.5} for i in range(1, lines + 1)]}
    if customer_id is not None:
        record["CustomerId"] = customer_id
    tx, _ = hub.upsert_transaction(record)
    return tx


def _link_customer(env: Any, **fields: Any) -> tuple[dict[str, Any], str]:
    c = _customer(env.hub, **fields)
    pid = env.sandbox.state.add_profile(email=c["EmailAddress"])
    env.hub.set_link("Customer", c["Id"], pid)
    return c, pid


def test_order_for_linked_customer_records_placed_order_on_that_profile(outbound) -> None:
    """A linked Customer's transaction records Placed Order with metric, value, properties and unique id."""
    c, pid = _link_customer(outbound)
    outbound.hub.ack_change(outbound.hub.pending_changes()[0])  # the Customer itself is not under test
    tx = _transaction(outbound.hub, c["Id"])
    report = outbound.dispatch()
    [ev] = outbound.events("Placed Order")
    props = dict(ev["attributes"]["event_properties"])
    assert pid == ev["included"]["profile"]["id"]
    assert (25.0, str(tx["Id"])) == (props.pop("$value"), props.pop("$event_id"))
    assert {"Email": "person1@example.com", "Order": "SO-1", "Example event field": "Example values"} == props
    assert str(tx["Id"]) == outbound.hub.get_klaviyo_id("Transaction", tx["Id"])
    assert {"create_event": 3} == report.summary.to_dict()["calls"]


def test_each_line_is_its_own_ordered_product_event(outbound) -> None:
    """A multi-line transaction records one Ordered Product event per line, with line unique ids."""
    c, _ = _link_customer(outbound)
    tx = _transaction(outbound.hub, c["Id"], lines=3)
    report = outbound.dispatch()
    lines = outbound.events("Ordered Product")
    expected = {f"{tx['Id']}-{line['Id']}" for line in tx["Lines"]}
    assert expected == {e["attributes"]["event_properties"]["$event_id"] for e in lines}
    assert {"SKU-1", "SKU-2", "SKU-3"} == {e["attributes"]["event_properties"]["Sku"] for e in lines}
    assert expected == {outbound.hub.get_klaviyo_id("TransactionLine", line["Id"]) for line in tx["Lines"]}
    assert {"created": 3} == report.summary.to_dict()["flows"]["Add Klaviyo Ordered Product Event FROM Hub"]


def test_order_for_unknown_customer_transfers_the_customer_first(outbound) -> None:
    """With no link and no email match, the Customer is created in Klaviyo first, then the order."""
    c = _customer(outbound.hub)
    outbound.hub.ack_change(outbound.hub.pending_changes()[0])
    tx = _transaction(outbound.hub, c["Id"])
    report = outbound.dispatch()
    [profile] = outbound.profiles(email="person1@example.com")
    assert profile["id"] == outbound.hub.get_klaviyo_id("Customer", c["Id"])
    [ev] = outbound.events("Placed Order")
    assert profile["id"] == ev["included"]["profile"]["id"]
    assert {"Add Klaviyo Profile FROM Hub": {"created": 1}, "Add Klaviyo Placed Order Event FROM Hub": {"created": 1},
            "Add Klaviyo Ordered Product Event FROM Hub": {"created": 2}} == report.summary.to_dict()["flows"]
    assert str(tx["Id"]) == outbound.hub.get_klaviyo_id("Transaction", tx["Id"])


def test_unlinked_customer_found_by_email_gets_the_order(outbound) -> None:
    """With no link, the profile holding the transaction's email receives the event; nothing is created."""
    pid = outbound.sandbox.state.add_profile(email="shopper@example.com")
    _transaction(outbound.hub, None, email="shopper@example.com")
    outbound.dispatch()
    [ev] = outbound.events("Placed Order")
    assert pid == ev["included"]["profile"]["id"]
    assert [pid] == [p["id"] for p in outbound.all_profiles()]


def test_resending_a_transaction_records_no_duplicate_events(outbound) -> None:
    """Sending the same transaction again (push after dispatch) records no second parent or line event."""
    c, _ = _link_customer(outbound)
    tx = _transaction(outbound.hub, c["Id"])
    outbound.dispatch()
    outbound.push("Transaction", tx["Id"])
    outbound.push("Transaction", tx["Id"])
    assert 1 == len(outbound.events("Placed Order"))
    assert 2 == len(outbound.events("Ordered Product"))


def test_generate_events_false_sends_no_event_and_says_so(outbound_factory) -> None:
    """With Generate Events FALSE no event is created, the change leaves the queue, the summary says why."""
    env = outbound_factory(generate_events=False)
    c, _ = _link_customer(env)
    _transaction(env.hub, c["Id"])
    report = env.dispatch()
    assert [] == env.events()
    assert "Generate Events is FALSE: no events were sent" in report.summary.notes
    assert {"skipped": 1} == report.summary.to_dict()["flows"]["Add Klaviyo Placed Order Event FROM Hub"]
    assert 0 == env.hub.queue_length()


def test_unresolvable_profile_is_an_error_in_the_log(outbound) -> None:
    """No Customer, no link, no email match: "Profile could not be resolved" is logged, nothing sent."""
    tx = _transaction(outbound.hub, None, email="nobody@example.com")
    report = outbound.dispatch()
    [entry] = outbound.hub.errors.list()
    assert (catalog.PROFILE_NOT_RESOLVED, "Add Klaviyo Placed Order Event FROM Hub", "Transaction", tx["Id"]) == (
        entry["Message"], entry["Flow"], entry["Entity"], entry["HubId"])
    assert [] == outbound.events() and [] == outbound.all_profiles()
    assert {"failed": 1} == report.summary.to_dict()["flows"]["Add Klaviyo Placed Order Event FROM Hub"]
    assert 0 == outbound.hub.queue_length()


def order_of_a_customer_klaviyo_refuses(env: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """An unlinked Customer with an email Klaviyo refuses (stored as a hub file from before email
    validation can hold it) and its queued Transaction; the Customer's own change is done."""
    c = _customer(env.hub, Phone=None)
    env.hub.ack_change(env.hub.pending_changes()[0])
    tx = _transaction(env.hub, c["Id"])
    store_legacy_email(env.hub, c["Id"], "not-an-email")
    store_legacy_email(env.hub, c["Id"], "not-an-email", transaction_id=tx["Id"])
    return c, tx


def test_failed_customer_prerequisite_stops_the_order(outbound) -> None:
    """When the Customer the order needs cannot be created, the catalog message is logged, no event."""
    c, tx = order_of_a_customer_klaviyo_refuses(outbound)
    outbound.dispatch()
    entries = {(e["Flow"], e["Message"].split(" (HTTP")[0]) for e in outbound.hub.errors.list()}
    assert {("Add Klaviyo Placed Order Event FROM Hub", catalog.ORDER_CUSTOMER_NOT_CREATED),
            ("Add Klaviyo Profile FROM Hub", catalog.ERROR_CALLING_KLAVIYO)} == entries
    assert [] == outbound.events()
    assert outbound.hub.get_klaviyo_id("Transaction", tx["Id"]) is None


def test_missing_required_mapping_logs_the_collection_message(outbound, tmp_path) -> None:
    """A required event mapping that resolves to nothing logs the catalog's text, the Placed Order
    article's wording of the same error in the detail."""
    folder = _edit_collections(tmp_path, {"add-placed-order-event-from-hub.yaml": (
        "formula: to_str(Id)", 'formula: get(record, "ExternalOrderId", None)')})
    env = _with_collections(outbound, folder)
    c, _ = _link_customer(env)
    _transaction(env.hub, c["Id"])
    report = env.dispatch()
    [entry] = env.hub.errors.list()
    assert (catalog.ORDER_EVENT_NOT_CREATED,
            "Add Klaviyo Placed Order Event FROM Hub", "M002") == (entry["Message"], entry["Flow"], entry["Code"])
    assert "UniqueId" in entry["Detail"]
    assert '"Could not Create Transaction: Mapping field is missing / not complete"' in entry["Detail"]
    assert [] == env.events()
    assert {"invalid": 1} == report.summary.to_dict()["flows"]["Add Klaviyo Placed Order Event FROM Hub"]


def _without_row(tmp_path, file: str, destination: str):
    """A copy of the shipped collections with the row writing ``destination`` deleted from ``file``."""
    import yaml

    folder = _edit_collections(tmp_path, {})
    path = folder / file
    data = yaml.safe_load(path.read_text())
    rows = [r for r in data["rows"] if r.get("destination") != destination]
    assert len(rows) == len(data["rows"]) - 1
    data["rows"] = rows
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return folder


@pytest.mark.parametrize("destination", ["ProfileId", "EventProperties", "MetricName", "UniqueId"])
def test_placed_order_needs_each_required_mapping(outbound, tmp_path, destination: str) -> None:
    """Seed 003: no Placed Order event unless ProfileId, EventProperties, MetricName and UniqueId all
    resolve. With the row deleted, each Transaction is logged with the catalog's text (the Placed
    Order article's in the detail), nothing is sent for it, and the rest of the run goes on."""
    env = _with_collections(outbound, _without_row(tmp_path, "add-placed-order-event-from-hub.yaml", destination))
    c, _ = _link_customer(env)
    other = _customer(env.hub, 2)
    first = _transaction(env.hub, c["Id"])
    second = _transaction(env.hub, c["Id"], number="SO-2")
    report = env.dispatch()
    entries = env.hub.errors.list()
    assert [(catalog.ORDER_EVENT_NOT_CREATED, "Add Klaviyo Placed Order Event FROM Hub", "Transaction")] * 2 == [
        (e["Message"], e["Flow"], e["Entity"]) for e in entries]
    assert {first["Id"], second["Id"]} == {e["HubId"] for e in entries}
    for e in entries:
        assert destination in e["Detail"]
        assert f'"{catalog.TRANSACTION_MAPPING_INCOMPLETE}"' in e["Detail"]
    assert [] == env.events()
    assert env.hub.get_klaviyo_id("Transaction", first["Id"]) is None
    flows = report.summary.to_dict()["flows"]
    assert {"invalid": 2} == flows["Add Klaviyo Placed Order Event FROM Hub"]
    assert "Add Klaviyo Ordered Product Event FROM Hub" not in flows
    # the rest of the run went on: the other Customer was created, the queue is empty
    assert env.hub.get_klaviyo_id("Customer", other["Id"]) is not None
    assert 0 == env.hub.queue_length()


@pytest.mark.parametrize("destination", ["ProfileId", "EventProperties", "MetricName", "UniqueId"])
def test_ordered_product_needs_each_required_mapping(outbound, tmp_path, destination: str) -> None:
    """The same rule for Ordered Product: with a required row deleted each line is logged with the
    catalog's product-event text and sends nothing; the Placed Order event is still recorded."""
    env = _with_collections(outbound, _without_row(tmp_path, "add-ordered-product-event-from-hub.yaml", destination))
    c, _ = _link_customer(env)
    tx = _transaction(env.hub, c["Id"], lines=2)
    report = env.dispatch()
    entries = env.hub.errors.list()
    assert [(catalog.PRODUCT_EVENT_NOT_CREATED, "Add Klaviyo Ordered Product Event FROM Hub", "TransactionLine")] * 2 \
        == [(e["Message"], e["Flow"], e["Entity"]) for e in entries]
    assert {line["Id"] for line in tx["Lines"]} == {e["HubId"] for e in entries}
    assert all(destination in e["Detail"] for e in entries)
    assert [] == env.events("Ordered Product")
    assert 1 == len(env.events("Placed Order"))
    assert {"invalid": 2} == report.summary.to_dict()["flows"]["Add Klaviyo Ordered Product Event FROM Hub"]


def test_event_properties_with_no_value_at_all_is_missing(outbound, tmp_path) -> None:
    """EventProperties whose every entry is empty does not resolve to a value: no event, the catalog text."""
    folder = _edit_collections(tmp_path, {"add-placed-order-event-from-hub.yaml": (
        '"Order": TransactionNumber,', '"Order": get(record, "NoSuchField", None),')})
    path = folder / "add-placed-order-event-from-hub.yaml"
    path.write_text(path.read_text().replace('coalesce(EmailAddress, get(record, "Customer.EmailAddress", None))',
                                             "None"))
    env = _with_collections(outbound, folder)
    c, _ = _link_customer(env)
    _transaction(env.hub, c["Id"])
    report = env.dispatch()
    [entry] = [e for e in env.hub.errors.list() if e["Flow"] == "Add Klaviyo Placed Order Event FROM Hub"]
    assert catalog.ORDER_EVENT_NOT_CREATED == entry["Message"]
    assert "EventProperties" in entry["Detail"]
    assert [] == env.events("Placed Order")
    assert {"invalid": 1} == report.summary.to_dict()["flows"]["Add Klaviyo Placed Order Event FROM Hub"]


def test_placed_order_takes_the_customers_email_when_the_transaction_has_none(outbound) -> None:
    """Seed 003 checklist: the event properties include the customer email. With no EmailAddress on
    the Transaction, the shipped formula takes its Customer's; the lines carry the same email."""
    c, pid = _link_customer(outbound, EmailAddress="owner@example.com")
    _transaction(outbound.hub, c["Id"], email=None, lines=1)
    outbound.dispatch()
    [ev] = outbound.events("Placed Order")
    assert "owner@example.com" == ev["attributes"]["event_properties"]["Email"]
    [line] = outbound.events("Ordered Product")
    assert "owner@example.com" == line["attributes"]["event_properties"]["Email"]
