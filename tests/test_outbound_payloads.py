"""Mapped outbound payloads split into Klaviyo request pieces (pure functions)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from engine.errors import PayloadError
from engine.payloads import (
    SUBSCRIBE,
    UNSUBSCRIBE,
    event_request,
    profile_request,
    strip_nulls,
)


def test_strip_nulls_drops_none_and_emptied_dicts_at_every_level() -> None:
    """None values and dicts left empty disappear; other values stay."""
    assert {"a": 1, "loc": {"city": "X"}, "l": [None, 2]} == strip_nulls(
        {"a": 1, "b": None, "loc": {"city": "X", "zip": None}, "props": {"k": None}, "l": [None, 2]})


def test_profile_request_separates_attributes_lists_and_consent() -> None:
    """LIST_/UCLIST_/SubscribeProfile become list names and consent; the rest are attributes."""
    req = profile_request({"email": "a@example.com", "first_name": None, "properties": {"My Custom": "x"},
                           "LIST_Sms Subscribers": True, "UCLIST_Preview List": "true", "LIST_Off": False,
                           "SubscribeProfile": True})
    assert {"email": "a@example.com", "properties": {"My Custom": "x"}} == req.attributes
    assert ("Sms Subscribers",) == req.subscribe_lists
    assert ("Preview List",) == req.add_lists
    assert SUBSCRIBE == req.consent


@pytest.mark.parametrize("payload", [{"SubscribeProfile": False}, {"SubscribeProfile": "false"}, {},
                                     {"SubscribeProfile": None}])
def test_subscribe_profile_false_or_unmapped_unsubscribes(payload: dict) -> None:
    """SubscribeProfile false, or no value at all, means unsubscribe (as the seeds warn)."""
    assert UNSUBSCRIBE == profile_request({"email": "a@example.com", **payload}).consent


def test_unreadable_subscribe_flag_leaves_consent_alone_with_a_problem() -> None:
    """A SubscribeProfile value that is not a boolean changes no consent and says why."""
    req = profile_request({"email": "a@example.com", "SubscribeProfile": "maybe"})
    assert req.consent is None
    assert ["SubscribeProfile must be true or false, got 'maybe': consent left unchanged"] == list(req.problems)


def test_event_request_merges_extra_keys_into_properties() -> None:
    """Keys without a meaning of their own become event properties beside EventProperties."""
    ev = event_request({"ProfileId": "P1", "MetricName": "Placed Order", "UniqueId": "55260",
                        "EventProperties": {"Email": "a@example.com", "Order": "SO-1"},
                        "NumericValue": Decimal("149.50"), "Example event field": "Example values",
                        "ValueCurrency": "USD"})
    assert {"metric_name": "Placed Order", "profile": "P1", "unique_id": "55260", "value": 149.5, "time": None,
            "properties": {"Email": "a@example.com", "Order": "SO-1", "Example event field": "Example values",
                           "ValueCurrency": "USD"}} == ev.client_kwargs()


@pytest.mark.parametrize(("payload", "message"), [
    ({"MetricName": "M", "UniqueId": "1"}, "no value for ProfileId"),
    ({"ProfileId": "P", "MetricName": "M", "UniqueId": "1", "EventProperties": [1]},
     "EventProperties must be a dictionary, got list"),
    ({"ProfileId": "P", "MetricName": "M", "UniqueId": "1", "NumericValue": "lots"},
     "NumericValue must be a number, got 'lots'"),
])
def test_event_request_refuses_incomplete_payloads(payload: dict, message: str) -> None:
    """A payload Klaviyo cannot take raises PayloadError naming the value."""
    with pytest.raises(PayloadError) as err:
        event_request(payload)
    assert ("O008", message) == (err.value.code, err.value.message)
