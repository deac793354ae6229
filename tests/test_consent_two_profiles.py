"""A Customer whose email and phone number belong to two Klaviyo profiles: consent and lists go to
the email's profile only, by its email; the phone's profile is untouched; a warning names both;
the conflict costs two calls.  Real sandbox over loopback, real hub file, both revisions."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from test_outbound_profiles import _customer

from engine import catalog

PHONE = "+12125550101"


def _eventually(read: Callable[[], Any], want: Any, seconds: float = 10.0) -> Any:
    """``read()`` until it equals ``want`` (Klaviyo applies consent jobs later), else its last value."""
    deadline = time.monotonic() + seconds
    value = read()
    while value != want and time.monotonic() < deadline:
        time.sleep(0.05)
        value = read()
    return value


def _marketing(env: Any, pid: str, channel: str) -> str:
    return env.profile(pid)["attributes"]["subscriptions"][channel]["marketing"]["consent"]


def _split(env: Any) -> tuple[str, str]:
    by_email = env.sandbox.state.add_profile(email="person1@example.com")
    by_phone = env.sandbox.state.add_profile(phone_number=PHONE, first_name="Other")
    return by_email, by_phone


def _check_split(env: Any, by_email: str, by_phone: str, report: Any) -> None:
    assert by_email == env.hub.get_klaviyo_id("Customer", 1)
    [warning] = env.hub.errors.list()
    assert ("warning", catalog.PROFILE_LINK_WARNING, by_email) == (warning["Level"], warning["Message"],
                                                                   warning["KlaviyoId"])
    assert by_email in warning["Detail"] and by_phone in warning["Detail"] and PHONE in warning["Detail"]
    assert "SUBSCRIBED" == _eventually(lambda: _marketing(env, by_email, "email"), "SUBSCRIBED")
    email_profile = env.profile(by_email)["attributes"]
    assert email_profile["phone_number"] is None and "Ann" == email_profile["first_name"]
    assert "SUBSCRIBED" != _marketing(env, by_email, "sms")
    phone_profile = env.profile(by_phone)["attributes"]
    assert (PHONE, "Other", None) == (phone_profile["phone_number"], phone_profile["first_name"],
                                      phone_profile["email"])
    assert "SUBSCRIBED" != _marketing(env, by_phone, "sms") and "SUBSCRIBED" != _marketing(env, by_phone, "email")
    assert {by_email} == env.list_members("Sms Subscribers") == env.list_members("Preview List")
    assert 1 == sum(report.summary.to_dict()["calls"].get(op, 0) for op in ("subscribe_profiles",))


@pytest.mark.parametrize("revision", ["2023-10-15", "2026-07-15"])
def test_sms_consent_is_not_attached_to_the_emails_profile(outbound_factory, revision) -> None:
    """The subscribe job names the email's profile by its email alone; the conflict costs the first
    write's 409 and then two PATCHes (no lookup)."""
    env = outbound_factory(revision=revision)
    by_email, by_phone = _split(env)
    _customer(env.hub, 1)
    dry = env.dispatch(dry_run=True)
    [job] = [q for q in dry.results[0].requests if q.path.rstrip("/").endswith("profile-subscription-bulk-create-jobs")]
    [profile] = job.body["data"]["attributes"]["profiles"]["data"]
    assert by_email == profile["id"] and "person1@example.com" == profile["attributes"]["email"]
    assert "phone_number" not in profile["attributes"] and "sms" not in profile["attributes"]["subscriptions"]

    report = env.dispatch()
    _check_split(env, by_email, by_phone, report)
    calls = report.summary.to_dict()["calls"]
    first = "create_or_update_profile" if revision == "2026-07-15" else "create_profile"
    assert (1, 2) == (calls[first], calls["update_profile"])
    assert "get_profiles" not in calls


def test_linked_profile_whose_email_belongs_to_another_fails_and_changes_nothing(outbound_factory) -> None:
    """A link to the phone's profile while the email belongs to another: the link stands, the record
    fails with Klaviyo's 409 (no email is moved), and nothing is subscribed."""
    env = outbound_factory()
    by_email, by_phone = _split(env)
    _customer(env.hub, 1)
    env.hub.set_link("Customer", 1, by_phone)
    report = env.dispatch()
    assert by_phone == env.hub.get_klaviyo_id("Customer", 1)
    [error] = env.hub.errors.list()
    assert ("error", True) == (error["Level"], error["Message"].startswith("Error calling Klaviyo (HTTP 409)"))
    assert ("Other", None) == (env.profile(by_phone)["attributes"]["first_name"],
                               env.profile(by_phone)["attributes"]["email"])
    assert "SUBSCRIBED" not in (_marketing(env, by_email, "email"), _marketing(env, by_phone, "sms"))
    assert "subscribe_profiles" not in report.summary.to_dict()["calls"]


def test_linked_profile_keeps_the_link_and_gets_no_foreign_phone(outbound_factory) -> None:
    """A linked Customer whose new phone number belongs to another profile: the linked profile is
    updated without it (two PATCHes), no SMS consent goes with its email, a warning names both."""
    env = outbound_factory()
    by_email, by_phone = _split(env)
    _customer(env.hub, 1)
    env.hub.set_link("Customer", 1, by_email)
    report = env.dispatch()
    assert {"Update Klaviyo Profile FROM Hub": {"updated": 1}} == report.summary.to_dict()["flows"]
    _check_split(env, by_email, by_phone, report)
    assert 2 == report.summary.to_dict()["calls"]["update_profile"]
