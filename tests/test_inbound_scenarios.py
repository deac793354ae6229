"""The Test Scenarios of seed 001 (Klaviyo Profile TO Hub), over the real sandbox and a real SQLite hub."""

from __future__ import annotations

import pytest

from engine import catalog
from engine.errors import InboundError, ProfileNotFoundError

ADD = "Add Klaviyo Profile TO Hub"
UPDATE = "Update Klaviyo Profile TO Hub"
ADD_ADDRESS = "Add Klaviyo Profile Address TO Hub"
UPDATE_ADDRESS = "Update Klaviyo Profile Address TO Hub"
FULL_ADDRESS = {"address1": "1 Main St", "address2": "Suite 5", "city": "Springfield", "region": "IL",
                "zip": "62701", "country": "United States"}


def _one(env):
    customers = env.customers()
    assert len(customers) == 1, customers
    return customers[0]


async def test_create_profile_adds_customer_with_external_id(inbound):
    """A new profile becomes a Customer with the mapped values and the profile id as its external id."""
    pid = inbound.sandbox.state.add_profile(email="ada@example.com", phone_number="+15005550006",
                                            first_name="Ada", last_name="Lovelace", organization="Engines Ltd",
                                            properties={"Last active": "2024-05-01"})
    flow = await inbound.poll()
    customer = _one(inbound)
    assert {"EmailAddress": "ada@example.com", "CustomerNumber": "+15005550006", "FirstName": "Ada",
            "LastName": "Lovelace", "Company": "Engines Ltd"} == {k: customer[k] for k in (
                "EmailAddress", "CustomerNumber", "FirstName", "LastName", "Company")}
    assert {"Consent": "NEVER_SUBSCRIBED", "C5_Custom_Customer": "2024-05-01"} == customer["CustomFields"]
    assert pid == inbound.hub.get_klaviyo_id("Customer", customer["Id"])
    assert {"created": 1} == flow.summary.to_dict()["flows"][ADD]
    assert [] == inbound.errors()


async def test_inbound_writes_queue_nothing_for_klaviyo(inbound):
    """What came from Klaviyo is not queued back to it, although the Customer trigger is on."""
    inbound.sandbox.state.add_profile(email="q@example.com", location=FULL_ADDRESS)
    await inbound.poll()
    assert 1 == len(inbound.customers())
    assert [] == inbound.hub.pending_changes()


async def test_update_as_delivered_preserves_customer_fields(inbound):
    """A changed profile goes through the Update collection, which as delivered keeps the hub values."""
    state = inbound.sandbox.state
    pid = state.add_profile(email="bo@example.com", first_name="Bo", organization="Old Co")
    await inbound.poll()
    async with inbound.client() as kl:
        await kl.update_profile(pid, {"first_name": "Robert", "organization": "New Co"})
    flow = await inbound.poll()
    customer = _one(inbound)
    assert ("Bo", "Old Co") == (customer["FirstName"], customer["Company"])
    assert {"updated": 1} == flow.summary.to_dict()["flows"][UPDATE]


async def test_update_after_remapping_a_row_propagates(inbound):
    """Remapping the Update collection's FirstName row to the Klaviyo source makes the change flow."""
    inbound.remap("update-profile-to-hub.yaml", 'formula: get(existing, "FirstName", None)', "formula: first_name")
    pid = inbound.sandbox.state.add_profile(email="cy@example.com", first_name="Cy", organization="Keep Co")
    await inbound.poll()
    async with inbound.client() as kl:
        await kl.update_profile(pid, {"first_name": "Cyrus", "organization": "Changed Co"})
    await inbound.poll()
    customer = _one(inbound)
    assert ("Cyrus", "Keep Co") == (customer["FirstName"], customer["Company"])


async def test_profile_without_email_is_refused_and_nothing_written(inbound):
    """A profile with no email logs "An email address is required" with flow and profile id; no Customer."""
    pid = inbound.sandbox.state.add_profile(phone_number="+15005550007", first_name="NoMail")
    flow = await inbound.poll()
    assert [] == inbound.customers()
    [entry] = inbound.errors()
    assert (ADD, catalog.EMAIL_REQUIRED, "error", pid) == (entry["Flow"], entry["Message"], entry["Level"],
                                                            entry["KlaviyoId"])
    assert "add-profile-to-hub.yaml:" in entry["Detail"] and "EmailAddress" in entry["Detail"]
    assert {"invalid": 1} == flow.summary.to_dict()["flows"][ADD]


async def test_removed_customer_number_fallback_is_refused(inbound):
    """With the "N/A" fallback removed, a profile without phone logs "A customer number is required"."""
    inbound.remap("add-profile-to-hub.yaml",
                  'formula: phone_number if not is_blank(phone_number) else "N/A"', "formula: phone_number")
    inbound.sandbox.state.add_profile(email="nonum@example.com")
    await inbound.poll()
    assert [] == inbound.customers()
    assert [catalog.CUSTOMER_NUMBER_REQUIRED] == [e["Message"] for e in inbound.errors()]


@pytest.mark.parametrize("profile_id", ["01H8TVABCDEF1234567890", "44552"])
async def test_manual_sync_by_either_id_form(inbound, profile_id):
    """Manual Sync takes a ULID or an older numeric id and links the Customer to that profile."""
    inbound.sandbox.state.add_profile(profile_id=profile_id, email=f"id{profile_id}@example.com")
    _, result = await inbound.sync(profile_id)
    customer = _one(inbound)
    assert ("created", customer["Id"]) == (result.outcome, result.customer_id)
    assert profile_id == inbound.hub.get_klaviyo_id("Customer", customer["Id"])
    _, again = await inbound.sync(profile_id)
    assert ("updated", "link", 1) == (again.outcome, again.matched_by, len(inbound.customers()))


async def test_manual_sync_of_unknown_id_is_a_clear_logged_error(inbound):
    """An id Klaviyo does not know raises ProfileNotFoundError (I003) and is logged."""
    with pytest.raises(ProfileNotFoundError) as info:
        await inbound.sync("01H8TVNOSUCHPROFILE000")
    assert "Klaviyo has no profile with id 01H8TVNOSUCHPROFILE000" == info.value.message
    assert [("I003", "01H8TVNOSUCHPROFILE000")] == [(e["Code"], e["KlaviyoId"]) for e in inbound.errors()]


async def test_manual_sync_refuses_text_that_is_not_an_id(inbound):
    """Text that cannot be a profile id (I002) is refused before any request and logged."""
    with pytest.raises(InboundError) as info:
        await inbound.sync("../lists/abc")
    assert "I002" == info.value.code
    assert ["I002"] == [e["Code"] for e in inbound.errors()]


async def test_email_match_links_existing_customer_instead_of_duplicating(inbound):
    """A profile whose email is a hub Customer's links that Customer (Update collection keeps its values)."""
    existing = inbound.hub.add_customer({"EmailAddress": "dee@example.com", "CustomerNumber": "C-1",
                                         "FirstName": "Dee"})
    pid = inbound.sandbox.state.add_profile(email="dee@example.com", first_name="Deirdre", phone_number="+15005550008")
    flow = await inbound.poll()
    customer = _one(inbound)
    assert (existing["Id"], "C-1", "Dee") == (customer["Id"], customer["CustomerNumber"], customer["FirstName"])
    assert pid == inbound.hub.get_klaviyo_id("Customer", existing["Id"])
    assert {"linked": 1} == flow.summary.to_dict()["flows"][UPDATE]
    assert [] == inbound.errors()


async def test_profile_without_phone_gets_customer_number_na(inbound):
    """No phone number: the Add collection's fallback sets CustomerNumber to "N/A"."""
    inbound.sandbox.state.add_profile(email="nophone@example.com")
    await inbound.poll()
    assert "N/A" == _one(inbound)["CustomerNumber"]


async def test_complete_address_transfers_once(inbound):
    """A complete address becomes the Customer's address; polling the profile again does not add it twice."""
    state = inbound.sandbox.state
    pid = state.add_profile(email="addr@example.com", location=FULL_ADDRESS)
    await inbound.poll()
    async with inbound.client() as kl:
        await kl.update_profile(pid, {"first_name": "Changed"})
    flow = await inbound.poll()
    [address] = _one(inbound)["Addresses"]
    assert {"Address1": "1 Main St", "Address2": "Suite 5", "City": "Springfield", "Region": "IL",
            "PostalCode": "62701", "Country": "United States"} == {k: address[k] for k in (
                "Address1", "Address2", "City", "Region", "PostalCode", "Country")}
    assert {"skipped": 1} == flow.summary.to_dict()["flows"][UPDATE_ADDRESS]


async def test_incomplete_address_does_not_transfer(inbound):
    """An address without a country is filtered: the Customer is added without an address."""
    inbound.sandbox.state.add_profile(email="part@example.com", location={"address1": "2 Side St", "city": "Town"})
    flow = await inbound.poll()
    assert [] == _one(inbound)["Addresses"]
    assert {"skipped": 1} == flow.summary.to_dict()["flows"][ADD_ADDRESS]
    assert [] == inbound.errors()


async def test_identical_address_already_on_customer_is_not_added(inbound):
    """An address identical to one the Customer already has is not added again."""
    inbound.hub.add_customer({"EmailAddress": "same@example.com", "CustomerNumber": "C-2", "Addresses": [{
        "Address1": "1 Main St", "Address2": "Suite 5", "City": "Springfield", "Region": "IL",
        "PostalCode": "62701", "Country": "United States"}]})
    inbound.sandbox.state.add_profile(email="same@example.com", location=FULL_ADDRESS)
    await inbound.poll()
    assert 1 == len(_one(inbound)["Addresses"])


async def test_changed_klaviyo_address_updates_the_customers_klaviyo_address(inbound):
    """Klaviyo holds one address: a changed one replaces the address it gave, not a second address."""
    pid = inbound.sandbox.state.add_profile(email="move@example.com", location=FULL_ADDRESS)
    await inbound.poll()
    async with inbound.client() as kl:
        await kl.update_profile(pid, {"location": {"address1": "9 New Rd", "address2": None, "city": "Shelbyville",
                                                   "region": None, "zip": None, "country": "United States"}})
    flow = await inbound.poll()
    [address] = _one(inbound)["Addresses"]
    assert ("9 New Rd", None, "Shelbyville", None) == (address["Address1"], address["Address2"], address["City"],
                                                        address["Region"])
    assert {"updated": 1} == flow.summary.to_dict()["flows"][UPDATE_ADDRESS]


async def test_unreadable_address_value_is_logged_and_customer_kept(inbound):
    """A mapped address value that is not on the profile logs the catalog text; the Customer is still written."""
    inbound.remap("add-profile-address-to-hub.yaml", "source: location.address2\n    destination: Address2\n"
                  "    importance: optional",
                  "source: location.lines[1]\n    destination: Address2\n    importance: optional\n    on_missing: error")
    pid = inbound.sandbox.state.add_profile(email="badaddr@example.com", location=FULL_ADDRESS)
    flow = await inbound.poll()
    customer = _one(inbound)
    assert [] == customer["Addresses"]
    [entry] = inbound.errors()
    assert (ADD_ADDRESS, catalog.ADDRESS_VALUE_UNREADABLE, pid, customer["Id"]) == (
        entry["Flow"], entry["Message"], entry["KlaviyoId"], entry["HubId"])
    assert "add-profile-address-to-hub.yaml:" in entry["Detail"]
    assert {"created": 1} == flow.summary.to_dict()["flows"][ADD]


async def test_two_profiles_with_one_email_make_one_customer(inbound):
    """Two Klaviyo profiles sharing an email resolve to the same Customer."""
    state = inbound.sandbox.state
    state.add_profile(email="twin@example.com", first_name="First")
    second = state.add_profile(phone_number="+15005550009", first_name="Second")
    with state.lock:  # Klaviyo can hold this; the sandbox refuses it through the API
        state.profiles[second]["attributes"]["email"] = "twin@example.com"
        state.reindex()
    await inbound.poll()
    customer = _one(inbound)
    assert ("twin@example.com", "First") == (customer["EmailAddress"], customer["FirstName"])


async def test_phone_match_links_with_duplicate_warning(inbound):
    """A profile matched by phone only is linked, with the seeds' possible-duplicate warning."""
    existing = inbound.hub.add_customer({"EmailAddress": "old@example.com", "CustomerNumber": "+15005550010"})
    pid = inbound.sandbox.state.add_profile(email="new@example.com", phone_number="+15005550010")
    await inbound.poll()
    assert existing["Id"] == _one(inbound)["Id"]
    [entry] = inbound.errors()
    assert ("warning", catalog.CUSTOMER_LINK_WARNING, UPDATE, pid) == (
        entry["Level"], entry["Message"], entry["Flow"], entry["KlaviyoId"])


async def test_case_variant_email_warns_and_adds(inbound):
    """No exact email match but one in other letter case: a new Customer, with the duplicate warning."""
    inbound.hub.add_customer({"EmailAddress": "eve@example.com", "CustomerNumber": "C-3"})
    state = inbound.sandbox.state
    pid = state.add_profile(email="eve.other@example.com")
    with state.lock:  # the sandbox lowercases emails; give the profile a mixed-case one directly
        state.profiles[pid]["attributes"]["email"] = "Eve@Example.com"
        state.reindex()
    await inbound.poll()
    assert ["Eve@Example.com", "eve@example.com"] == sorted(c["EmailAddress"] for c in inbound.customers())
    assert [("warning", catalog.CUSTOMER_LINK_WARNING)] == [(e["Level"], e["Message"]) for e in inbound.errors()]


async def test_email_already_exists_on_update_links_that_customer(inbound):
    """"Email address already exists" from the hub is the expected link: the profile moves to that Customer."""
    inbound.remap("update-profile-to-hub.yaml", 'formula: get(existing, "EmailAddress", None)', "formula: email")
    other = inbound.hub.add_customer({"EmailAddress": "taken@example.com", "CustomerNumber": "C-4"})
    pid = inbound.sandbox.state.add_profile(email="mine@example.com")
    await inbound.poll()
    async with inbound.client() as kl:
        await kl.update_profile(pid, {"email": "taken@example.com"})
    flow = await inbound.poll()
    assert other["Id"] == inbound.hub.get_hub_id("Customer", pid)
    assert 2 == len(inbound.customers())
    assert {"linked": 1} == flow.summary.to_dict()["flows"][UPDATE]
    assert [] == inbound.errors()


async def test_disabled_add_collection_does_not_run(inbound):
    """With the Add collection disabled, a new profile is skipped and nothing is written."""
    inbound.remap("add-profile-to-hub.yaml", "status: enabled", "status: disabled")
    inbound.sandbox.state.add_profile(email="off@example.com")
    flow = await inbound.poll()
    assert [] == inbound.customers()
    assert {"skipped": 1} == flow.summary.to_dict()["flows"][ADD]
