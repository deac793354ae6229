"""Existing but unlinked profiles at 2023-10-15: one email lookup per 100 Customers of a batch, then one
PATCH each (about 1.01 calls per record instead of POST -> 409 -> PATCH), with the same matches."""

from __future__ import annotations

from test_outbound_profiles import _customer


def test_existing_unlinked_profiles_cost_one_patch_each_after_one_lookup(outbound) -> None:
    existing = {n: outbound.sandbox.state.add_profile(email=f"person{n}@example.com", first_name="Old")
                for n in range(1, 31)}
    customers = [_customer(outbound.hub, n) for n in range(1, 41)]  # 30 existing, 10 new
    report = outbound.dispatch()
    calls = report.summary.to_dict()["calls"]
    assert (1, 30, 10) == (calls["get_profiles"], calls["update_profile"], calls["create_profile"])
    profile_calls = calls["get_profiles"] + calls["update_profile"] + calls["create_profile"]
    assert profile_calls / 40 <= 1.2
    flows = report.summary.to_dict()["flows"]
    assert ({"linked": 30}, {"created": 10}) == (flows["Update Klaviyo Profile FROM Hub"],
                                                 flows["Add Klaviyo Profile FROM Hub"])
    for c in customers[:30]:
        n = int(c["CustomerNumber"].split("-")[1])
        assert existing[n] == outbound.hub.get_klaviyo_id("Customer", c["Id"])
        assert "Ann" == outbound.profile(existing[n])["attributes"]["first_name"]
    assert 40 == len(outbound.all_profiles())


def test_batch_lookup_keeps_email_before_phone(outbound) -> None:
    """Email on one profile, the phone on another: the lookup finds the email's profile, which is patched
    without the phone (the phone's profile is left alone), as without the lookup."""
    by_email = outbound.sandbox.state.add_profile(email="person1@example.com")
    by_phone = outbound.sandbox.state.add_profile(phone_number="+12125550101", first_name="Other")
    first = _customer(outbound.hub, 1)
    _customer(outbound.hub, 2)
    outbound.dispatch()
    assert by_email == outbound.hub.get_klaviyo_id("Customer", first["Id"])
    assert "Other" == outbound.profile(by_phone)["attributes"]["first_name"]
    assert "+12125550101" == outbound.profile(by_phone)["attributes"]["phone_number"]


def test_a_phone_only_match_still_goes_through_klaviyos_409(outbound) -> None:
    """No profile has the email but one has the phone: POST -> 409 -> PATCH of the phone's profile."""
    by_phone = outbound.sandbox.state.add_profile(phone_number="+12125550101")
    first = _customer(outbound.hub, 1)
    _customer(outbound.hub, 2)
    report = outbound.dispatch()
    assert by_phone == outbound.hub.get_klaviyo_id("Customer", first["Id"])
    assert "person1@example.com" == outbound.profile(by_phone)["attributes"]["email"]
    assert 1 == report.summary.to_dict()["calls"]["get_profiles"]
