"""The sandbox's read side as Klaviyo's specs describe it: fields, additional fields, include, filters, sorts, event time.

Each test talks to a real sandbox over loopback; state is seeded directly and checked over HTTP.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

KEY = "pk_test_0123456789abcdef"
OLD, NEW = "2023-10-15", "2026-07-15"


def _get(sb: Any, path: str, revision: str = OLD, **params: str) -> httpx.Response:
    slash = "/" if revision == OLD else ""
    return httpx.get(sb.url + path + slash, params=params,
                     headers={"revision": revision, "Authorization": f"Klaviyo-API-Key {KEY}"})


def _post(sb: Any, path: str, body: Any, revision: str = OLD) -> httpx.Response:
    slash = "/" if revision == OLD else ""
    ctype = "application/json" if revision == OLD else "application/vnd.api+json"
    return httpx.post(sb.url + path + slash, content=json.dumps(body),
                      headers={"revision": revision, "content-type": ctype, "Authorization": f"Klaviyo-API-Key {KEY}"})


def _ok(resp: httpx.Response) -> Any:
    assert resp.status_code == 200, resp.text
    return resp.json()


def _error(resp: httpx.Response, status: int = 400) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    return resp.json()["errors"][0]


@pytest.mark.parametrize("revision", [OLD, NEW])
def test_list_profiles_show_joined_group_at_and_filter_and_sort_on_it(sandbox, revision: str) -> None:
    """GET /api/lists/{id}/profiles carries joined_group_at; filter and sort on it as the specs list."""
    st = sandbox.state
    lid = st.add_list("VIP")
    a, b = st.add_profile(email="a@example.com"), st.add_profile(email="b@example.com")
    st.change_members(lid, [a], add=True)
    st.lists[lid]["members"][a] = datetime(2024, 1, 1, tzinfo=UTC)  # seeded join time
    st.change_members(lid, [b], add=True)
    body = _ok(_get(sandbox, f"/api/lists/{lid}/profiles", revision))
    assert [a, b] == [p["id"] for p in body["data"]]
    assert "2024-01-01T00:00:00+00:00" == body["data"][0]["attributes"]["joined_group_at"]
    assert [{"type": "list", "id": lid}] == body["data"][0]["relationships"]["lists"]["data"]
    newest = _ok(_get(sandbox, f"/api/lists/{lid}/profiles", revision, sort="-joined_group_at"))
    assert [b, a] == [p["id"] for p in newest["data"]]
    later = _ok(_get(sandbox, f"/api/lists/{lid}/profiles", revision,
                     filter="greater-than(joined_group_at,2025-01-01T00:00:00Z)"))
    assert [b] == [p["id"] for p in later["data"]]
    ids = _ok(_get(sandbox, f"/api/lists/{lid}/relationships/profiles", revision, filter='equals(email,"A@example.com")'))
    assert [{"type": "profile", "id": a}] == ids["data"]
    err = _error(_get(sandbox, f"/api/lists/{lid}/profiles", revision, sort="email"))
    assert "sort" == err["source"]["parameter"] and "joined_group_at, -joined_group_at." in err["detail"]


@pytest.mark.parametrize("revision", [OLD, NEW])
def test_sparse_fieldsets_and_additional_fields(sandbox, revision: str) -> None:
    """fields[profile] keeps only the attributes asked for (dotted names too); additional fields appear only on request."""
    pid = sandbox.state.add_profile(email="f@example.com", first_name="F", location={"city": "Oslo", "zip": "0150"})
    one = _ok(_get(sandbox, f"/api/profiles/{pid}", revision, **{"fields[profile]": "email,location.city"}))
    assert {"email": "f@example.com", "location": {"city": "Oslo"}} == one["data"]["attributes"]
    assert pid == one["data"]["id"]
    plain = _ok(_get(sandbox, f"/api/profiles/{pid}", revision))["data"]["attributes"]
    assert "subscriptions" not in plain and "predictive_analytics" not in plain and "Oslo" == plain["location"]["city"]
    extra = _ok(_get(sandbox, "/api/profiles", revision, **{"additional-fields[profile]": "subscriptions,predictive_analytics",
                                                           "fields[profile]": "subscriptions.email.marketing.consent,predictive_analytics"}))
    attrs = extra["data"][0]["attributes"]
    assert {"email": {"marketing": {"consent": "NEVER_SUBSCRIBED"}}} == attrs["subscriptions"]
    assert None is attrs["predictive_analytics"]["predicted_clv"] and set(attrs) == {"subscriptions", "predictive_analytics"}
    err = _error(_get(sandbox, "/api/profiles", revision, **{"fields[profile]": "email,shoe_size"}))
    assert "fields[profile]" == err["source"]["parameter"]


def test_include_lists_on_a_profile_and_metric_profile_on_events(sandbox) -> None:
    """include= adds the related resources to ``included`` (and honours their own fields[...])."""
    st = sandbox.state
    lid = st.add_list("Buyers")
    pid = st.add_profile(email="i@example.com")
    st.change_members(lid, [pid], add=True)
    body = _ok(_get(sandbox, f"/api/profiles/{pid}", NEW, include="lists", **{"fields[list]": "name"}))
    assert [{"type": "list", "id": lid, "attributes": {"name": "Buyers"}}] == \
        [{k: x[k] for k in ("type", "id", "attributes")} for x in body["included"]]
    assert [] == _ok(_get(sandbox, f"/api/profiles/{pid}", NEW))["included"]
    st.record_event(st.profiles[pid], "Placed Order", {"n": 1}, None, 5, "o-1")
    events = _ok(_get(sandbox, "/api/events", NEW, include="metric,profile", **{"fields[event]": "datetime"}))
    assert ["datetime"] == list(events["data"][0]["attributes"])
    assert {("metric", events["data"][0]["relationships"]["metric"]["data"]["id"]), ("profile", pid)} == \
        {(x["type"], x["id"]) for x in events["included"]}
    assert "included" not in _ok(_get(sandbox, "/api/events", NEW))


@pytest.mark.parametrize("revision", [OLD, NEW])
def test_a_quoted_datetime_in_a_filter_is_refused_like_klaviyo(sandbox, revision: str) -> None:
    """greater-than(updated,"…") is a 400 naming the filter, not an empty page; unquoted works."""
    sandbox.state.add_profile(email="q@example.com")
    err = _error(_get(sandbox, "/api/profiles", revision, filter='greater-than(updated,"2024-01-01T00:00:00+00:00")'))
    assert "filter" == err["source"]["parameter"]
    assert err["detail"].startswith("Invalid filter: 'updated' takes a datetime, not \"2024-01-01T00:00:00+00:00\"")
    found = _ok(_get(sandbox, "/api/profiles", revision, filter="greater-than(updated,2024-01-01T00:00:00+00:00)"))
    assert ["q@example.com"] == [p["attributes"]["email"] for p in found["data"]]
    for path, flt in (("/api/events", "greater-than(datetime,'2024-01-01')"),
                      ("/api/lists", 'greater-than(created,"2024-01-01T00:00:00Z")')):
        assert "filter" == _error(_get(sandbox, path, revision, filter=flt))["source"]["parameter"]


@pytest.mark.parametrize("revision", [OLD, NEW])
def test_suppression_filters_and_sorts_the_specs_list(sandbox, revision: str) -> None:
    """subscriptions.email.marketing.(list_)suppression.* filter and sort GET /api/profiles, with Klaviyo's rules."""
    st = sandbox.state
    a, b, c = (st.add_profile(email=f"{x}@example.com") for x in "abc")
    st.set_consent(st.profiles[a], "email", "UNSUBSCRIBED", None)
    st.profiles[b]["subscriptions"]["email"]["marketing"]["suppression"] = [
        {"reason": "HARD_BOUNCE", "timestamp": "2024-03-01T00:00:00+00:00"}]
    st.profiles[c]["subscriptions"]["email"]["marketing"]["list_suppressions"] = [
        {"list_id": "L1", "reason": "USER_SUPPRESSED", "timestamp": "2024-02-01T00:00:00+00:00"}]
    base = "subscriptions.email.marketing."

    def ids(**params: str) -> list[str]:
        return [p["id"] for p in _ok(_get(sandbox, "/api/profiles", revision, **params))["data"]]

    assert [a] == ids(filter=f'equals({base}suppression.reason,"UNSUBSCRIBE")')
    assert [b] == ids(filter=f"less-than({base}suppression.timestamp,2025-01-01T00:00:00Z)")
    assert [c] == ids(filter=f'equals({base}list_suppressions.list_id,"L1"),equals({base}list_suppressions.reason,"USER_SUPPRESSED")')
    assert [] == ids(filter=f'equals({base}list_suppressions.list_id,"L2")')
    assert [c, b, a] == ids(sort=f"{base}suppression.timestamp")  # none first, then oldest
    assert [a, b, c] == ids(sort=f"-{base}suppression.timestamp")
    for bad, detail in (
        (f'equals({base}suppression.reason,"X"),equals({base}list_suppressions.list_id,"L1")', "cannot be combined"),
        (f'equals({base}list_suppressions.reason,"USER_SUPPRESSED")', "list_id filter is required"),
    ):
        assert detail in _error(_get(sandbox, "/api/profiles", revision, filter=bad))["detail"]
    assert "sort" == _error(_get(sandbox, "/api/profiles", revision, sort="first_name"))["source"]["parameter"]


def test_metrics_filter_on_integration_and_lists_sort(sandbox) -> None:
    """GET /api/metrics filters on integration.name / category; GET /api/lists sorts by the fields 2026-07-15 lists."""
    st = sandbox.state
    pid = st.add_profile(email="m@example.com")
    st.record_event(st.profiles[pid], "Viewed", {}, None, None, "v-1")
    assert ["Viewed"] == [m["attributes"]["name"] for m in
                          _ok(_get(sandbox, "/api/metrics", NEW, filter='equals(integration.name,"API")'))["data"]]
    assert [] == _ok(_get(sandbox, "/api/metrics", NEW, filter='equals(integration.category,"Shopify")'))["data"]
    st.add_list("Zeta")
    st.add_list("Alpha")
    assert ["Zeta", "Alpha"] == [x["attributes"]["name"] for x in _ok(_get(sandbox, "/api/lists", NEW, sort="-name"))["data"]]


def _event(when: str | None, email: str = "t@example.com") -> dict[str, Any]:
    attrs: dict[str, Any] = {"properties": {}, "metric": {"data": {"type": "metric", "attributes": {"name": "Order"}}},
                             "profile": {"data": {"type": "profile", "attributes": {"email": email}}}}
    if when:
        attrs["time"] = when
    return {"data": {"type": "event", "attributes": attrs}}


@pytest.mark.parametrize(("revision", "when", "status"), [
    (OLD, "1999-12-31T23:59:59Z", 400), (OLD, "2000-01-01T00:00:00Z", 202),
    (NEW, "1995-06-01T00:00:00Z", 202), (NEW, "1989-12-31T00:00:00Z", 400),
    (OLD, "+2y", 400), (NEW, "+2y", 400), (NEW, "+300d", 202),
])
def test_event_time_bounds(sandbox, revision: str, when: str, status: int) -> None:
    """POST /api/events: after the year 2000 (1990 at 2026-07-15), at most a year ahead; a refused event creates nothing."""
    if when.startswith("+"):
        days = 730 if when == "+2y" else 300
        when = (datetime.now(UTC) + timedelta(days=days)).isoformat()
    resp = _post(sandbox, "/api/events", _event(when), revision)
    assert status == resp.status_code, resp.text
    profiles = _ok(_get(sandbox, "/api/profiles", revision))["data"]
    if status == 400:
        err = resp.json()["errors"][0]
        year = 2000 if revision == OLD else 1990
        assert "/data/attributes/time" == err["source"]["pointer"]
        assert f"the time must be after the year {year} and can only be up to 1 year in the future" in err["detail"]
        assert [] == profiles and [] == _ok(_get(sandbox, "/api/events", revision))["data"]
    else:
        assert ["t@example.com"] == [p["attributes"]["email"] for p in profiles]


def test_a_bulk_event_job_with_one_bad_time_stores_nothing(sandbox) -> None:
    """POST /api/event-bulk-create-jobs is checked whole: one out-of-bounds time, no event and no profile stored."""
    def entry(email: str, when: str) -> dict[str, Any]:
        return {"type": "event-bulk-create", "attributes": {
            "profile": {"data": {"type": "profile", "attributes": {"email": email}}},
            "events": {"data": [{"type": "event", "attributes": {
                "properties": {}, "time": when, "metric": {"data": {"type": "metric", "attributes": {"name": "B"}}}}}]}}}
    body = {"data": {"type": "event-bulk-create-job", "attributes": {"events-bulk-create": {"data": [
        entry("ok@example.com", "2024-01-01T00:00:00Z"), entry("bad@example.com", "1980-01-01T00:00:00Z")]}}}}
    err = _error(_post(sandbox, "/api/event-bulk-create-jobs", body, NEW))
    assert "/data/attributes/events-bulk-create/data/1/attributes/events/data/0/attributes/time" == err["source"]["pointer"]
    assert [] == _ok(_get(sandbox, "/api/profiles", NEW))["data"]


@pytest.mark.parametrize("revision", [OLD, NEW])
def test_a_list_shows_profile_count_when_asked(sandbox, revision: str) -> None:
    """GET /api/lists/{id} adds profile_count for additional-fields[list]=profile_count; include= gives an empty included."""
    st = sandbox.state
    lid = st.add_list("Counted")
    st.change_members(lid, [st.add_profile(email="c1@example.com"), st.add_profile(email="c2@example.com")], add=True)
    plain = _ok(_get(sandbox, f"/api/lists/{lid}", revision))
    assert "profile_count" not in plain["data"]["attributes"] and "included" not in plain
    counted = _ok(_get(sandbox, f"/api/lists/{lid}", revision, include="tags",
                       **{"additional-fields[list]": "profile_count", "fields[list]": "name,profile_count"}))
    assert ({"name": "Counted", "profile_count": 2}, []) == (counted["data"]["attributes"], counted["included"])
