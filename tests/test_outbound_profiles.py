"""Hub Customers to Klaviyo profiles over loopback: the real sandbox and a real SQLite hub file."""

from __future__ import annotations

from typing import Any

from engine import catalog


def _customer(hub: Any, n: int = 1, **fields: Any) -> dict[str, Any]:
    record = {"EmailAddress": f"person{n}@example.com", "CustomerNumber": f"C-{n}", "FirstName": "Ann",
              "LastName": "Lee", "Company": "Acme", "Phone": f"(212) 555-01{n:02d}"}
    record.update(fields)
    return hub.add_customer({k: v for k, v in record.items() if v is not None})


def _consent(env: Any, pid: str, channel: str = "email") -> str:
    return env.profile(pid)["attributes"]["subscriptions"][channel]["marketing"]["consent"]


def test_new_customer_is_created_and_linked(outbound) -> None:
    """An unlinked Customer with no Klaviyo match becomes a new profile, and the link is saved."""
    c = _customer(outbound.hub)
    report = outbound.dispatch()
    found = outbound.profiles(email="person1@example.com")
    assert 1 == len(found)
    assert found[0]["id"] == outbound.hub.get_klaviyo_id("Customer", c["Id"])
    assert {"Add Klaviyo Profile FROM Hub": {"created": 1}} == report.summary.to_dict()["flows"]
    attrs = found[0]["attributes"]
    assert ("Ann", "Lee", "Acme", "+12125550101") == (attrs["first_name"], attrs["last_name"],
                                                     attrs["organization"], attrs["phone_number"])
    assert {"My Custom": "Example values"} == attrs["properties"]
    assert 0 == outbound.hub.queue_length()


def test_existing_profile_is_matched_by_email_not_duplicated(outbound) -> None:
    """A Klaviyo profile with the Customer's email is linked and updated, not duplicated."""
    pid = outbound.sandbox.state.add_profile(email="person1@example.com", first_name="Old")
    c = _customer(outbound.hub)
    report = outbound.dispatch()
    assert [pid] == [p["id"] for p in outbound.all_profiles()]
    assert pid == outbound.hub.get_klaviyo_id("Customer", c["Id"])
    assert "Ann" == outbound.profile(pid)["attributes"]["first_name"]
    assert {"Update Klaviyo Profile FROM Hub": {"linked": 1}} == report.summary.to_dict()["flows"]


def test_existing_profile_is_matched_by_phone_when_no_email_matches(outbound) -> None:
    """With no email match, the E.164 phone number matches the profile, which gets the email."""
    pid = outbound.sandbox.state.add_profile(phone_number="+12125550101")
    c = _customer(outbound.hub)
    outbound.dispatch()
    assert [pid] == [p["id"] for p in outbound.all_profiles()]
    assert pid == outbound.hub.get_klaviyo_id("Customer", c["Id"])
    assert "person1@example.com" == outbound.profile(pid)["attributes"]["email"]


def test_email_match_wins_over_phone_match_with_a_duplicate_warning(outbound) -> None:
    """When the email and the phone belong to two profiles, the email's profile is linked and a
    possible-duplicate warning is logged; the phone's profile is left alone."""
    by_email = outbound.sandbox.state.add_profile(email="person1@example.com")
    by_phone = outbound.sandbox.state.add_profile(phone_number="+12125550101", first_name="Other")
    c = _customer(outbound.hub)
    outbound.dispatch()
    assert by_email == outbound.hub.get_klaviyo_id("Customer", c["Id"])
    assert "Other" == outbound.profile(by_phone)["attributes"]["first_name"]
    assert "Ann" == outbound.profile(by_email)["attributes"]["first_name"]
    [warning] = outbound.hub.errors.list(level="warning")
    assert (catalog.PROFILE_LINK_WARNING, c["Id"]) == (warning["Message"], warning["HubId"])


def test_partial_update_keeps_klaviyo_only_and_unmapped_values(outbound) -> None:
    """An update writes only mapped fields: a Klaviyo-only property and unmapped fields survive,
    and a value missing on the Customer is left out instead of clearing Klaviyo's."""
    c = _customer(outbound.hub, Company=None)
    outbound.dispatch()
    pid = outbound.hub.get_klaviyo_id("Customer", c["Id"])
    outbound.klaviyo(lambda kl: kl.update_profile(pid, {"title": "CEO", "organization": "Set in Klaviyo",
                                                        "properties": {"KlaviyoOnly": "keep me"}}))
    outbound.hub.update_customer(c["Id"], {"FirstName": "Anna"})
    report = outbound.dispatch()
    attrs = outbound.profile(pid)["attributes"]
    assert ("Anna", "CEO", "Set in Klaviyo") == (attrs["first_name"], attrs["title"], attrs["organization"])
    assert {"My Custom": "Example values", "KlaviyoOnly": "keep me"} == attrs["properties"]
    assert {"Update Klaviyo Profile FROM Hub": {"updated": 1}} == report.summary.to_dict()["flows"]


def test_linked_update_is_a_single_patch(outbound) -> None:
    """A linked Customer costs one PATCH; lists and consent are batched across the batch."""
    for n in range(1, 6):
        _customer(outbound.hub, n)
    outbound.dispatch()
    for n in range(1, 6):
        outbound.hub.update_customer(n, {"LastName": f"Changed{n}"})
    report = outbound.dispatch()
    calls = report.summary.to_dict()["calls"]
    assert 5 == calls["update_profile"]
    assert "create_profile" not in calls and "get_profiles" not in calls
    assert 1 == calls["subscribe_profiles"] and 1 == calls["add_profiles_to_list"]


def test_unnormalisable_phone_is_omitted_and_the_profile_still_goes(outbound) -> None:
    """A phone number that cannot be made E.164 is left out; the profile is created."""
    _customer(outbound.hub, Phone="call me maybe")
    outbound.dispatch()
    [p] = outbound.profiles(email="person1@example.com")
    assert p["attributes"]["phone_number"] is None
    assert [] == outbound.hub.errors.list()


def test_primary_billing_address_is_sent(outbound) -> None:
    """The profile's location is the Customer's primary billing address, not another one."""
    _customer(outbound.hub, Addresses=[
        {"Address1": "1 Ship Way", "City": "Boston", "Country": "US", "IsPrimaryShipping": True},
        {"Address1": "89 E 42nd St", "City": "New York", "Region": "NY", "PostalCode": "10017", "Country": "US",
         "IsPrimaryBilling": True}])
    outbound.dispatch()
    [p] = outbound.profiles(email="person1@example.com")
    assert {"address1": "89 E 42nd St", "city": "New York", "region": "NY", "zip": "10017",
            "country": "US"} == p["attributes"]["location"]


def test_list_and_subscribe_flags_show_in_lists_and_consent(outbound) -> None:
    """LIST_ subscribes to that list, UCLIST_ adds to that list, SubscribeProfile true subscribes."""
    c = _customer(outbound.hub)
    outbound.dispatch()
    pid = outbound.hub.get_klaviyo_id("Customer", c["Id"])
    assert {pid} == outbound.list_members("Sms Subscribers")
    assert {pid} == outbound.list_members("Preview List")
    assert ("SUBSCRIBED", "SUBSCRIBED") == (_consent(outbound, pid), _consent(outbound, pid, "sms"))


def _edit_collections(tmp_path, replacements: dict[str, tuple[str, str]]):
    """A copy of the shipped collections with text replaced in some files."""
    import shutil

    from engine.settings import SHIPPED_COLLECTIONS

    target = tmp_path / "collections"
    shutil.copytree(SHIPPED_COLLECTIONS, target)
    for name, (old, new) in replacements.items():
        path = target / name
        text = path.read_text()
        assert old in text
        path.write_text(text.replace(old, new))
    return target


def _with_collections(env, folder):
    from engine.collection import load_collections

    report = load_collections([folder])
    assert report.errors == []
    from dataclasses import replace

    return replace(env, collections=report.collections)


def test_subscribe_profile_false_unsubscribes_and_lists_only_join(outbound, tmp_path) -> None:
    """SubscribeProfile false unsubscribes the profile; its LIST_ list is joined without consent."""
    folder = _edit_collections(tmp_path, {
        f"{a}-profile-from-hub.yaml": ("destination: SubscribeProfile\n    value: true",
                                       "destination: SubscribeProfile\n    value: false")
        for a in ("add", "update")})
    env = _with_collections(outbound, folder)
    pid = env.sandbox.state.add_profile(email="person1@example.com")
    env.klaviyo(lambda kl: kl.subscribe_profiles([{"email": "person1@example.com"}],
                                                 list_id=env.sandbox.state.add_list("Newsletter")))
    assert "SUBSCRIBED" == _consent(env, pid)
    _customer(env.hub)
    env.dispatch()
    assert "UNSUBSCRIBED" == _consent(env, pid)
    assert pid in env.list_members("Sms Subscribers")


def test_missing_list_is_a_logged_error_that_keeps_the_profile(outbound_factory) -> None:
    """A LIST_ name no Klaviyo list has is logged; the profile and the other list still go."""
    env = outbound_factory(lists=("Preview List",))
    c = _customer(env.hub)
    report = env.dispatch()
    pid = env.hub.get_klaviyo_id("Customer", c["Id"])
    assert pid is not None and {pid} == env.list_members("Preview List")
    [entry] = env.hub.errors.list()
    assert ("Add Klaviyo Profile FROM Hub", "O001", c["Id"]) == (entry["Flow"], entry["Code"], entry["HubId"])
    assert entry["Message"].startswith("Klaviyo list 'Sms Subscribers' does not exist")
    assert 1 == report.summary.errors


def test_profile_import_revision_upserts_in_one_call(outbound_factory) -> None:
    """From revision 2024-02-15 an unlinked Customer that matches by email costs one profile-import."""
    env = outbound_factory(revision="2024-02-15")
    pid = env.sandbox.state.add_profile(email="person1@example.com")
    c = _customer(env.hub)
    report = env.dispatch()
    calls = report.summary.to_dict()["calls"]
    assert 1 == calls["create_or_update_profile"] and "create_profile" not in calls
    assert pid == env.hub.get_klaviyo_id("Customer", c["Id"])
    assert [pid] == [p["id"] for p in env.all_profiles()]


NO_EMAIL = ("  - type: field\n    source: EmailAddress\n    destination: email",
            "  - type: formula\n    formula: None\n    destination: email")


def test_invalid_customer_logs_the_catalog_text(outbound, tmp_path) -> None:
    """A Customer the Add collection cannot map (no identifier) logs Profile Could Not Be Created."""
    env = _with_collections(outbound, _edit_collections(tmp_path, {"add-profile-from-hub.yaml": NO_EMAIL}))
    c = _customer(env.hub, Phone=None)
    report = env.dispatch()
    [entry] = env.hub.errors.list()
    assert (catalog.PROFILE_NOT_CREATED, "Add Klaviyo Profile FROM Hub", c["Id"]) == (
        entry["Message"], entry["Flow"], entry["HubId"])
    assert {"Add Klaviyo Profile FROM Hub": {"invalid": 1}} == report.summary.to_dict()["flows"]
    assert [] == env.all_profiles() and 0 == env.hub.queue_length()


def test_customer_without_email_is_matched_by_phone_with_a_duplicate_warning(outbound, tmp_path) -> None:
    """With no email to match on, the phone number matches and the Add flow logs the could-not-link warning."""
    folder = _edit_collections(tmp_path, {f"{a}-profile-from-hub.yaml": NO_EMAIL for a in ("add", "update")})
    env = _with_collections(outbound, folder)
    pid = env.sandbox.state.add_profile(phone_number="+12125550101")
    c = _customer(env.hub)
    env.dispatch()
    assert pid == env.hub.get_klaviyo_id("Customer", c["Id"])
    [warning] = env.hub.errors.list(level="warning")
    assert (catalog.PROFILE_LINK_WARNING, "Add Klaviyo Profile FROM Hub") == (warning["Message"], warning["Flow"])
