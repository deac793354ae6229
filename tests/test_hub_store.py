"""The SQLite hub: customers, addresses, transactions, links, migrations, file permissions."""

from __future__ import annotations

import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from engine import catalog
from engine.errors import EmailExistsError, HubNotFoundError, HubRecordError, HubVersionError
from engine.hub import HubStore, SqliteHub
from engine.hub._migrations import MIGRATIONS, migrate

ANN = {"EmailAddress": "ann@example.com", "CustomerNumber": "C-1", "FirstName": "Ann"}


def test_sqlite_hub_satisfies_the_protocol(hub: SqliteHub) -> None:
    """SqliteHub is a HubStore."""
    assert isinstance(hub, HubStore)


def test_file_is_created_owner_only(tmp_path: Path) -> None:
    """A new hub file (in a new folder) and its WAL file are created with mode 0600."""
    path = tmp_path / "sub" / "hub.db"
    with SqliteHub(path) as store:
        store.save_token("klaviyo", access_token="a", refresh_token="r", expires_at=None)
        wal = path.with_name("hub.db-wal")
        assert (0o600, 0o600) == (stat.S_IMODE(path.stat().st_mode), stat.S_IMODE(wal.stat().st_mode))


def test_add_customer_returns_the_stored_record(hub: SqliteHub) -> None:
    """add_customer assigns an Id and returns every field, with addresses and timestamps."""
    stored = hub.add_customer({**ANN, "CustomFields": {"Consent": "SUBSCRIBED"},
                               "Addresses": [{"Address1": "1 Main St", "City": "Austin"}]})
    assert 1 == stored["Id"]
    assert {"Consent": "SUBSCRIBED"} == stored["CustomFields"]
    assert "1 Main St" == stored["Addresses"][0]["Address1"]
    assert stored["CreatedAt"] == stored["UpdatedAt"]
    assert stored == hub.get_customer(1)


def test_add_customer_keeps_an_explicit_id(hub: SqliteHub) -> None:
    """A record that carries its Id is stored under that Id."""
    assert 42 == hub.add_customer({**ANN, "Id": 42})["Id"]


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"CustomerNumber": "C-1"}, catalog.EMAIL_REQUIRED),
        ({"EmailAddress": "  ", "CustomerNumber": "C-1"}, catalog.EMAIL_REQUIRED),
        ({"EmailAddress": "a@example.com"}, catalog.CUSTOMER_NUMBER_REQUIRED),
        ({**ANN, "FirstName": 5}, "Customer.FirstName must be a string, got number"),
        ({**ANN, "Shoe": "9"}, "Customer: unknown field 'Shoe' (valid: Id, EmailAddress, CustomerNumber, "
         "FirstName, LastName, Company, Comment, Phone, CustomFields, Addresses, CreatedAt, UpdatedAt)"),
        ({**ANN, "Addresses": [{"IsPrimaryBilling": "yes"}]},
         "Address Addresses[0].IsPrimaryBilling must be true or false, got string"),
    ],
)
def test_malformed_customers_are_refused(hub: SqliteHub, record: dict, message: str) -> None:
    """A customer without email or number, or with a bad field, is refused with an exact message."""
    with pytest.raises(HubRecordError) as info:
        hub.add_customer(record)
    assert message == info.value.message
    assert [] == list(hub.iter_customers())


def test_email_is_unique_and_the_error_names_the_existing_customer(hub: SqliteHub) -> None:
    """A second customer with the same email is refused with the catalog text and the existing Id."""
    first = hub.add_customer(ANN)
    with pytest.raises(EmailExistsError) as info:
        hub.add_customer({"EmailAddress": "ann@example.com", "CustomerNumber": "C-2"})
    assert catalog.EMAIL_ALREADY_EXISTS == info.value.message
    assert first["Id"] == info.value.existing_id
    assert 1 == len(list(hub.iter_customers()))


def test_email_uniqueness_is_case_sensitive(hub: SqliteHub) -> None:
    """Emails differing only in case are different customers (exact match, as the seeds say)."""
    hub.add_customer(ANN)
    other = hub.add_customer({**ANN, "EmailAddress": "ANN@example.com"})
    assert 2 == other["Id"]
    assert 1 == hub.find_customer_by_email("ann@example.com")["Id"]
    assert hub.find_customer_by_email("Ann@Example.com") is None


def test_update_cannot_take_another_customers_email(hub: SqliteHub) -> None:
    """Changing an email to one already used is refused and changes nothing."""
    hub.add_customer(ANN)
    bob = hub.add_customer({"EmailAddress": "bob@example.com", "CustomerNumber": "C-2"})
    with pytest.raises(EmailExistsError):
        hub.update_customer(bob["Id"], {"EmailAddress": "ann@example.com", "FirstName": "Bob"})
    assert "bob@example.com" == hub.get_customer(bob["Id"])["EmailAddress"]
    assert hub.get_customer(bob["Id"])["FirstName"] is None


def test_update_merges_fields_and_custom_fields(hub: SqliteHub) -> None:
    """update_customer changes only the given fields and merges CustomFields key by key."""
    hub.add_customer({**ANN, "CustomFields": {"Consent": "NEVER", "Tier": "Gold"}})
    updated = hub.update_customer(1, {"LastName": "Lee", "CustomFields": {"Consent": "SUBSCRIBED"}})
    assert ("Ann", "Lee") == (updated["FirstName"], updated["LastName"])
    assert {"Consent": "SUBSCRIBED", "Tier": "Gold"} == updated["CustomFields"]


def test_update_of_a_missing_customer_is_not_found(hub: SqliteHub) -> None:
    """Updating an unknown Id raises HubNotFoundError naming it."""
    with pytest.raises(HubNotFoundError, match="no Customer with Id 7"):
        hub.update_customer(7, {"FirstName": "X"})


def test_find_by_phone_compares_e164(hub: SqliteHub) -> None:
    """Phone lookup normalises both sides to E.164 and also matches the customer number."""
    hub.add_customer({**ANN, "Phone": "(202) 555-0101"})
    hub.add_customer({"EmailAddress": "b@example.com", "CustomerNumber": "+44 20 7946 0958"})
    assert 1 == hub.find_customer_by_phone("+1 202-555-0101")["Id"]
    assert 2 == hub.find_customer_by_phone("+442079460958")["Id"]
    assert hub.find_customer_by_phone("N/A") is None
    assert hub.find_customer_by_phone("+1 202 555 0199") is None


def test_address_is_added_only_if_new(hub: SqliteHub) -> None:
    """An address identical in every address field is not added twice; a different one is."""
    hub.add_customer(ANN)
    address = {"Address1": "1 Main St", "City": "Austin", "Region": "TX", "PostalCode": "78701",
               "Country": "US"}
    first, added = hub.add_address_if_new(1, address)
    again, added_again = hub.add_address_if_new(1, {**address, "Address2": ""})
    other, added_other = hub.add_address_if_new(1, {**address, "PostalCode": "78702"})
    assert (True, False, True) == (added, added_again, added_other)
    assert first["Id"] == again["Id"]
    assert 2 == len(hub.list_addresses(1))


def test_one_primary_billing_address_per_customer(hub: SqliteHub) -> None:
    """Marking an address primary billing clears the flag on the customer's other addresses."""
    hub.add_customer({**ANN, "Addresses": [{"Address1": "A", "IsPrimaryBilling": True}]})
    hub.add_address(1, {"Address1": "B", "IsPrimaryBilling": True})
    flags = [(a["Address1"], a["IsPrimaryBilling"]) for a in hub.list_addresses(1)]
    assert [("A", False), ("B", True)] == flags


def test_upsert_customer_matches_by_id_then_email(hub: SqliteHub) -> None:
    """upsert_customer updates by Id, else by email, else adds; an identical record is unchanged."""
    _, first = hub.upsert_customer(ANN)
    _, by_email = hub.upsert_customer({**ANN, "LastName": "Lee"})
    _, same = hub.upsert_customer({**ANN, "LastName": "Lee"})
    _, by_id = hub.upsert_customer({**ANN, "Id": 1, "EmailAddress": "ann@new.example.com"})
    assert ("added", "updated", "unchanged", "updated") == (first, by_email, same, by_id)
    assert "ann@new.example.com" == hub.get_customer(1)["EmailAddress"]


def test_transaction_with_lines_round_trips(hub: SqliteHub) -> None:
    """A transaction is stored with its lines in order, numbers keeping their JSON types."""
    tx, outcome = hub.upsert_transaction({
        "TransactionNumber": "T-1", "CustomerId": 1, "EmailAddress": "ann@example.com",
        "Total": 30, "TransactionDate": "2024-05-01T10:00:00Z", "Status": "Complete",
        "Lines": [{"Sku": "A", "Qty": 1, "UnitPrice": 10.5, "ExtendedPrice": 10.5},
                  {"Sku": "B", "Qty": 2, "UnitPrice": 9.75, "ExtendedPrice": 19.5}],
    })
    assert "added" == outcome
    assert ["A", "B"] == [line["Sku"] for line in tx["Lines"]]
    assert (30, 19.5) == (tx["Total"], tx["Lines"][1]["ExtendedPrice"])
    assert tx == hub.find_transaction_by_number("T-1")


def test_iteration_in_batches_gives_each_record_its_own_children(hub: SqliteHub) -> None:
    """iter_customers / iter_transactions read in batches smaller than the table: every record
    comes once, by Id, with exactly its own addresses / lines, in their stored order."""
    for n in range(1, 6):
        hub.add_customer({"EmailAddress": f"c{n}@example.com", "CustomerNumber": f"C-{n}",
                          "Addresses": [{"City": f"city{n}-{k}"} for k in range(n % 3)]})
        hub.upsert_transaction({"TransactionNumber": f"T-{n}",
                                "Lines": [{"Sku": f"S{n}-{k}"} for k in range(3 - n % 3)]})
    customers = [(c["Id"], [a["City"] for a in c["Addresses"]]) for c in hub.iter_customers(batch=2)]
    assert [(n, [f"city{n}-{k}" for k in range(n % 3)]) for n in range(1, 6)] == customers
    txs = [(t["TransactionNumber"], [line["Sku"] for line in t["Lines"]]) for t in hub.iter_transactions(batch=2)]
    assert [(f"T-{n}", [f"S{n}-{k}" for k in range(3 - n % 3)]) for n in range(1, 6)] == txs


def test_reimported_transaction_keeps_line_ids_and_links(hub: SqliteHub) -> None:
    """Re-upserting a transaction without line Ids reuses the existing lines, so their links survive."""
    tx, _ = hub.upsert_transaction({"TransactionNumber": "T-1", "Lines": [{"Sku": "A"}, {"Sku": "B"}]})
    line_ids = [line["Id"] for line in tx["Lines"]]
    hub.set_link("TransactionLine", line_ids[0], "evt-A")
    again, outcome = hub.upsert_transaction({"TransactionNumber": "T-1", "Lines": [{"Sku": "A", "Qty": 3}]})
    assert "updated" == outcome
    assert [line_ids[0]] == [line["Id"] for line in again["Lines"]]
    assert "evt-A" == hub.get_klaviyo_id("TransactionLine", line_ids[0])


def test_transaction_number_belongs_to_one_id(hub: SqliteHub) -> None:
    """A record whose Id differs from the Id owning its number is refused."""
    hub.upsert_transaction({"TransactionNumber": "T-1"})
    with pytest.raises(HubRecordError, match="already belongs to Transaction 1"):
        hub.upsert_transaction({"Id": 9, "TransactionNumber": "T-1"})


def test_links_work_both_ways(hub: SqliteHub) -> None:
    """A link is found from the hub Id and from the Klaviyo id, per entity."""
    hub.set_link("Customer", 1, "01HPROFILE")
    hub.set_link("Transaction", 1, "T-1")
    assert "01HPROFILE" == hub.get_klaviyo_id("Customer", 1)
    assert 1 == hub.get_hub_id("Customer", "01HPROFILE")
    assert hub.get_hub_id("Transaction", "01HPROFILE") is None
    assert hub.get_klaviyo_id("Customer", 2) is None


def test_relinking_moves_the_klaviyo_id(hub: SqliteHub) -> None:
    """A Klaviyo id linked to a second record leaves the first; a record's new link replaces its old."""
    hub.set_link("Customer", 1, "P1")
    hub.set_link("Customer", 2, "P1")
    hub.set_link("Customer", 2, "P2")
    assert (None, None, 2) == (hub.get_klaviyo_id("Customer", 1), hub.get_hub_id("Customer", "P1"),
                               hub.get_hub_id("Customer", "P2"))


def test_unknown_link_entity_is_refused(hub: SqliteHub) -> None:
    """A link for an entity the hub does not know names the valid ones."""
    with pytest.raises(HubRecordError, match="valid: Customer, Transaction, TransactionLine"):
        hub.set_link("Profile", 1, "x")


def test_cursors_and_state_persist_across_reopen(hub_factory: Callable[..., SqliteHub]) -> None:
    """Cursors, key-value state and tokens survive closing and reopening the file."""
    first = hub_factory()
    first.set_cursor("profiles", "2024-05-01T00:00:00Z")
    first.set_state("settings_seen", {"n": 1})
    first.save_token("klaviyo", access_token="a", refresh_token="r", expires_at=1.5, scopes=["profiles:read"])
    first.close()
    again = hub_factory()
    assert "2024-05-01T00:00:00Z" == again.get_cursor("profiles")
    assert {"n": 1} == again.get_state("settings_seen")
    assert {"provider": "klaviyo", "access_token": "a", "refresh_token": "r", "expires_at": 1.5,
            "scopes": ["profiles:read"]} == again.get_token("klaviyo")


def test_reopening_keeps_data_and_version(hub_factory: Callable[..., SqliteHub]) -> None:
    """Opening an existing file applies no migration twice and keeps its records."""
    first = hub_factory()
    first.add_customer(ANN)
    first.close()
    again = hub_factory()
    assert MIGRATIONS[-1][0] == again.schema_version
    assert "Ann" == again.get_customer(1)["FirstName"]


def test_a_later_migration_upgrades_without_losing_data(tmp_path: Path) -> None:
    """A migration appended by a later release runs once on an old file and keeps its rows."""
    path = tmp_path / "hub.db"
    with SqliteHub(path) as old:
        old.add_customer(ANN)
    later = [*MIGRATIONS, (MIGRATIONS[-1][0] + 1, "loyalty", "ALTER TABLE customers ADD COLUMN loyalty TEXT")]
    conn = sqlite3.connect(path, isolation_level=None)
    assert later[-1][0] == migrate(conn, str(path), later)
    assert later[-1][0] == migrate(conn, str(path), later)
    assert [("ann@example.com", None)] == conn.execute("SELECT email, loyalty FROM customers").fetchall()
    conn.close()


def test_a_file_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    """A hub file whose schema is newer than this release is not opened."""
    path = tmp_path / "hub.db"
    SqliteHub(path).close()
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO schema_migrations VALUES (999, 'future', 'now')")
    conn.commit()
    conn.close()
    with pytest.raises(HubVersionError, match="schema version 999, newer than this release knows"):
        SqliteHub(path)
