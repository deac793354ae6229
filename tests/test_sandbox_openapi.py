"""Every sandbox answer on every route the engine uses, validated against Klaviyo's spec of the revision.

A real sandbox over loopback is driven through each route of
``engine.sandbox._handlers.ROUTES`` and ``engine.sandbox._jobs.ROUTES`` at 2023-10-15
(trailing slashes, ``application/json``) and 2026-07-15 (no slash, JSON:API), success
and error answers alike (400, 401, 404, 409, 429); :class:`tests._openapi_check.AnswerChecker`
validates status, content type and body with ``openapi-core``.  The tour fails when a
route in ``ROUTES`` was not validated, so a new route needs coverage here.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from engine.klaviyo import revision as rev
from engine.sandbox import _handlers, _jobs
from tests._openapi_check import AnswerChecker, inline_with_nulls, nullable_paths

KEY = "pk_test_0123456789abcdef"
ALL_ROUTES = [(m, t, cap) for m, t, _h, _tier, cap in [*_handlers.ROUTES, *_jobs.ROUTES]]
REVISIONS = ["2023-10-15", "2026-07-15"]


class Tour:
    """Sends requests in the revision's style and validates every answer."""

    def __init__(self, url: str, revision: str, checker: AnswerChecker) -> None:
        self.url, self.revision, self.checker = url, revision, checker
        self.ctype = rev.content_type(revision)
        self.http = httpx.Client(timeout=30)

    def __enter__(self) -> Tour:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def path(self, template: str, **ids: str) -> str:
        p = template.format(**ids)
        return p + "/" if rev.trailing_slash(self.revision) else p

    def call(self, method: str, template: str, expect: int, *, body: Any = None, params: dict[str, str] | None = None,
             key: str | None = KEY, url: str | None = None, bearer: str | None = None, **ids: str) -> httpx.Response:
        headers = {"revision": self.revision, "accept": self.ctype}
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        elif key:
            headers["Authorization"] = f"Klaviyo-API-Key {key}"
        content = None
        if body is not None:
            headers["content-type"] = self.ctype
            content = json.dumps(body)
        resp = self.http.request(method, (url or self.url) + self.path(template, **ids), params=params,
                                 content=content, headers=headers)
        assert resp.status_code == expect, f"{method} {template}: {resp.status_code} {resp.text[:500]}"
        self.checker.check(method, template, resp)
        return resp


def _profile(**attrs: Any) -> dict[str, Any]:
    return {"data": {"type": "profile", "attributes": attrs}}


def _event(email: str, name: str, unique_id: str, time: str = "2024-05-01T10:00:00+00:00") -> dict[str, Any]:
    return {"data": {"type": "event", "attributes": {
        "properties": {"OrderId": unique_id}, "time": time, "value": 12.5, "unique_id": unique_id,
        "metric": {"data": {"type": "metric", "attributes": {"name": name}}},
        "profile": {"data": {"type": "profile", "attributes": {"email": email}}}}}}


def _tour(t: Tour, capable: dict[str, bool], read_only_token: str) -> None:
    P, PID = "/api/profiles", "/api/profiles/{id}"
    # -- profiles
    created = t.call("POST", P, 201, body=_profile(email="ada@example.com", first_name="Ada",
                                                   location={"city": "London"}, properties={"tier": "gold"}))
    pid = created.json()["data"]["id"]
    other = t.call("POST", P, 201, body=_profile(phone_number="+15005550006", external_id="x-2")).json()["data"]["id"]
    t.call("POST", P, 409, body=_profile(email="ada@example.com"))
    t.call("POST", P, 400, body=_profile(email="not-an-email"))
    t.call("GET", P, 200)
    t.call("GET", P, 200, params={"filter": 'equals(email,"ada@example.com")',
                                  "additional-fields[profile]": "subscriptions"})
    first = t.call("GET", P, 200, params={"page[size]": "1", "sort": "-created"}).json()
    assert first["links"].get("next"), first["links"]
    t.call("GET", P, 400, params={"filter": "equals(nope,1)"})
    t.call("GET", PID, 200, id=pid)
    t.call("GET", PID, 200, id=pid, params={"additional-fields[profile]": "subscriptions"})
    t.call("GET", PID, 404, id="01H0000000000000000000000Z")
    patch = {"data": {"type": "profile", "id": pid, "attributes": {"last_name": "Lovelace", "title": None}}}
    t.call("PATCH", PID, 200, body=patch, id=pid)
    clash = {"data": {"type": "profile", "id": other, "attributes": {"email": "ada@example.com"}}}
    t.call("PATCH", PID, 409, body=clash, id=other)
    gone = {"data": {"type": "profile", "id": "01H0000000000000000000000Z", "attributes": {"first_name": "x"}}}
    t.call("PATCH", PID, 404, body=gone, id="01H0000000000000000000000Z")
    if capable["profile_import"]:
        t.call("POST", "/api/profile-import", 201, body=_profile(email="new@example.com"))
        t.call("POST", "/api/profile-import", 200, body=_profile(email="ada@example.com", first_name="A"))
        t.call("POST", "/api/profile-import", 400, body=_profile(email="bad"))
    else:
        t.call("POST", "/api/profile-import", 404, body=_profile(email="new@example.com"))
    # -- lists
    L, LID = "/api/lists", "/api/lists/{id}"
    lid = t.call("POST", L, 201, body={"data": {"type": "list", "attributes": {"name": "Newsletter"}}}).json()["data"]["id"]
    t.call("POST", L, 400, body={"data": {"type": "list", "attributes": {}}})
    t.call("GET", L, 200)
    t.call("GET", L, 200, params={"filter": 'equals(name,"Newsletter")'})
    t.call("GET", LID, 200, id=lid)
    t.call("GET", LID, 200, id=lid, params={"additional-fields[list]": "profile_count", "include": "tags"})
    t.call("GET", LID, 404, id="nolist")
    REL, LP = "/api/lists/{id}/relationships/profiles", "/api/lists/{id}/profiles"
    members = {"data": [{"type": "profile", "id": pid}, {"type": "profile", "id": other}]}
    t.call("POST", REL, 204, body=members, id=lid)
    t.call("POST", REL, 404, body=members, id="nolist")
    t.call("GET", REL, 200, id=lid)
    t.call("GET", REL, 404, id="nolist")
    t.call("GET", LP, 200, id=lid)
    t.call("GET", LP, 200, id=lid, params={"additional-fields[profile]": "subscriptions", "page[size]": "1"})
    t.call("GET", LP, 404, id="nolist")
    t.call("DELETE", REL, 204, body={"data": [{"type": "profile", "id": other}]}, id=lid)
    # -- consent jobs
    sub = {"data": {"type": "profile-subscription-bulk-create-job", "attributes": {
        "custom_source": "tour", "profiles": {"data": [{"type": "profile", "attributes": {
            "email": "ada@example.com", "subscriptions": {"email": {"marketing": {"consent": "SUBSCRIBED"}}}}}]}},
        "relationships": {"list": {"data": {"type": "list", "id": lid}}}}}
    t.call("POST", "/api/profile-subscription-bulk-create-jobs", 202, body=sub)
    t.call("POST", "/api/profile-subscription-bulk-create-jobs", 400,
           body={"data": {"type": "profile-subscription-bulk-create-job", "attributes": {}}})
    unsub_attrs: dict[str, Any] = {"email": "ada@example.com"}
    if rev.supports(t.revision, "jsonapi_content_type"):
        unsub_attrs["subscriptions"] = {"email": {"marketing": {"consent": "UNSUBSCRIBED"}}}
    unsub = {"data": {"type": "profile-subscription-bulk-delete-job", "attributes": {
        "profiles": {"data": [{"type": "profile", "attributes": unsub_attrs}]}},
        "relationships": {"list": {"data": {"type": "list", "id": lid}}}}}
    t.call("POST", "/api/profile-subscription-bulk-delete-jobs", 202, body=unsub)
    t.call("POST", "/api/profile-subscription-bulk-delete-jobs", 400,
           body={"data": {"type": "profile-subscription-bulk-delete-job", "attributes": {}}})
    # -- events and metrics
    E = "/api/events"
    t.call("POST", E, 202, body=_event("ada@example.com", "Placed Order", "o-1"))
    t.call("POST", E, 202, body=_event("grace@example.com", "Placed Order", "o-2"))
    t.call("POST", E, 400, body=_event("ada@example.com", "Placed Order", "o-3", time="yesterday"))
    t.call("GET", E, 200)
    t.call("GET", E, 200, params={"include": "metric,profile", "sort": "-datetime"})
    t.call("GET", E, 400, params={"filter": "equals(nope,1)"})
    t.call("GET", "/api/metrics", 200)
    t.call("GET", "/api/metrics", 200, params={"filter": 'equals(integration.name,"API")'})
    bulk = {"data": {"type": "event-bulk-create-job", "attributes": {"events-bulk-create": {"data": [
        {"type": "event-bulk-create", "attributes": {
            "profile": {"data": {"type": "profile", "attributes": {"email": "ada@example.com"}}},
            "events": {"data": [{"type": "event", "attributes": {
                "properties": {"n": 1}, "time": "2024-05-02T10:00:00+00:00", "unique_id": "b-1",
                "metric": {"data": {"type": "metric", "attributes": {"name": "Bulk"}}}}}]}}}]}}}}
    if capable["bulk_events"]:
        t.call("POST", "/api/event-bulk-create-jobs", 202, body=bulk)
        t.call("POST", "/api/event-bulk-create-jobs", 400,
               body={"data": {"type": "event-bulk-create-job", "attributes": {}}})
    else:
        t.call("POST", "/api/event-bulk-create-jobs", 404, body=bulk)
    # -- bulk profile import
    BJ, BJID = "/api/profile-bulk-import-jobs", "/api/profile-bulk-import-jobs/{job_id}"
    job = {"data": {"type": "profile-bulk-import-job", "attributes": {"profiles": {"data": [
        {"type": "profile", "attributes": {"email": "bulk1@example.com", "first_name": "B"}},
        {"type": "profile", "attributes": {"email": "bulk2@example.com"}}]}},
        "relationships": {"lists": {"data": [{"type": "list", "id": lid}]}}}}
    if capable["bulk_profile_import"]:
        jid = t.call("POST", BJ, 202, body=job).json()["data"]["id"]
        t.call("POST", BJ, 400, body={"data": {"type": "profile-bulk-import-job", "attributes": {}}})
        t.call("GET", BJID, 200, job_id=jid)
        t.call("GET", BJID, 200, job_id=jid, params={"include": "lists"})
        t.call("GET", BJID, 404, job_id="nojob")
        t.call("GET", BJ, 200, params={"filter": 'equals(status,"complete")', "sort": "-created_at"})
        t.call("GET", BJ, 400, params={"filter": "equals(nope,1)"})
        for sub in ("import-errors", "profiles", "relationships/profiles", "lists", "relationships/lists"):
            t.call("GET", BJ + "/{id}/" + sub, 200, id=jid)
            t.call("GET", BJ + "/{id}/" + sub, 404, id="nojob")
    else:
        t.call("POST", BJ, 404, body=job)
        t.call("GET", BJID, 404, job_id="nojob")
        t.call("GET", BJ, 404)
        for sub in ("import-errors", "profiles", "relationships/profiles", "lists", "relationships/lists"):
            t.call("GET", BJ + "/{id}/" + sub, 404, id="nojob")
    # -- authentication
    t.call("GET", P, 401, key=None)
    t.call("POST", E, 401, key="not-a-key", body=_event("ada@example.com", "Placed Order", "o-9"))
    # -- an OAuth token without the endpoint's scope: Klaviyo's 403
    t.call("GET", P, 200, bearer=read_only_token)
    denied = t.call("POST", E, 403, bearer=read_only_token, body=_event("ada@example.com", "Placed Order", "o-10"))
    assert "permission_denied" == denied.json()["errors"][0]["code"]


@pytest.mark.parametrize("revision", REVISIONS)
def test_every_route_answers_as_the_spec_says(sandbox, revision: str) -> None:
    """Each route of ROUTES, at this revision, answers success and errors exactly as Klaviyo's spec declares."""
    checker = AnswerChecker(revision, [(m, t) for m, t, _ in ALL_ROUTES])
    capable = {cap: rev.supports(revision, cap) for _m, _t, cap in ALL_ROUTES if cap}
    token = sandbox.server.oauth._issue("tour-client", "profiles:read", "tour-refresh")["access_token"]
    with Tour(sandbox.url, revision, checker) as t:
        _tour(t, capable, token)
    missing = [(m, t) for m, t, _ in ALL_ROUTES if (m, t) not in checker.checked]
    assert not missing, f"routes in ROUTES the tour does not validate at {revision}: {missing}"
    for m, t, cap in ALL_ROUTES:
        statuses = checker.checked[(m, t)]
        if cap is None or capable[cap]:
            assert any(s < 300 for s in statuses), f"{m} {t}: no success answer validated ({statuses})"
            assert any(400 <= s < 500 for s in statuses) or (m, t) in {("GET", "/api/lists"), ("GET", "/api/metrics")} \
                or t in ("/api/lists/{id}/relationships/profiles",), f"{m} {t}: no error answer validated"
            assert checker.declares(m, t), f"{m} {t} is not in the {revision} spec"


@pytest.mark.parametrize("revision", REVISIONS)
def test_throttled_answers_match_the_spec(sandbox_factory, revision: str) -> None:
    """A 429 from the rate tiers is a ClientError the spec declares, with Retry-After."""
    sb = sandbox_factory(rate_limits=True, tiers={"L": {"burst": 1, "steady": 1}})
    checker = AnswerChecker(revision, [("GET", "/api/profiles")])
    with Tour(sb.url, revision, checker) as t:
        t.call("GET", "/api/profiles", 200)
        resp = t.call("GET", "/api/profiles", 429)
    assert int(resp.headers["Retry-After"]) >= 1
    assert "throttled" == resp.json()["errors"][0]["code"]


def test_nulls_are_allowed_only_where_the_newest_spec_allows_them() -> None:
    """The 2023 check accepts null where 2026-07-15 marks the field nullable, and nowhere else."""
    from tests._openapi_check import _raw, spec_with_newest_nulls

    newest = _raw("2026-07-15")
    schema = newest["paths"]["/api/profiles/{id}"]["get"]["responses"]["200"]["content"][rev.JSONAPI]["schema"]
    allowed = nullable_paths(newest, schema)
    assert ("data", "attributes", "email") in allowed
    assert ("data", "type") not in allowed and ("data", "relationships", "lists", "data", "[]", "id") not in allowed
    doc = spec_with_newest_nulls("2023-10-15", [("GET", "/api/profiles/{id}")])
    inlined = doc["paths"]["/api/profiles/{id}/"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]

    def find(node: Any, names: tuple[str, ...]) -> list[dict[str, Any]]:
        if not names:
            return [node]
        found: list[dict[str, Any]] = []
        for sub in node.get("allOf", []):
            found += find(sub, names)
        if names[0] in node.get("properties", {}):
            found += find(node["properties"][names[0]], names[1:])
        return found

    assert all(n.get("nullable") for n in find(inlined, ("data", "attributes", "email")))
    assert not any(n.get("nullable") for n in find(inlined, ("data", "type")))
    # the 2023-10-15 file itself stays as Klaviyo published it
    assert not nullable_paths(_raw("2023-10-15"), _raw("2023-10-15")["components"]["schemas"]["ProfileResponseObjectResource"])
    assert inline_with_nulls({}, {"type": "string"}, {()}) == {"type": "string"}


def _answer(revision: str, path: str, body: dict[str, Any], status: int = 200) -> httpx.Response:
    request = httpx.Request("GET", "http://127.0.0.1:1" + path)
    return httpx.Response(status, json=body, headers={"content-type": rev.JSONAPI}, request=request)


def test_the_checker_refuses_what_the_spec_refuses() -> None:
    """The check is not a formality: a wrong type, a null the newest spec forbids and a wrong media type fail."""
    checker = AnswerChecker("2023-10-15", [("GET", "/api/profiles/{id}")])
    pid = "01H0000000000000000000000Z"
    good = {"data": {"type": "profile", "id": pid, "attributes": {"email": None, "first_name": "A"},
                     "relationships": {"lists": {"data": []}, "segments": {"data": []}},
                     "links": {"self": "http://x/api/profiles/" + pid + "/"}}}
    checker.check("GET", "/api/profiles/{id}", _answer("2023-10-15", f"/api/profiles/{pid}/", good))
    for broken in (
        {**good, "data": {**good["data"], "type": "person"}},
        {**good, "data": {**good["data"], "attributes": {"first_name": 5}}},
        {**good, "data": {**good["data"], "relationships": {"lists": {"data": None}}}},
        {"data": None},
    ):
        with pytest.raises(AssertionError, match="GET /api/profiles/{id} at 2023-10-15"):
            checker.check("GET", "/api/profiles/{id}", _answer("2023-10-15", f"/api/profiles/{pid}/", broken))
    with pytest.raises(AssertionError, match="Content-Type"):
        resp = _answer("2023-10-15", f"/api/profiles/{pid}/", good)
        resp.headers["content-type"] = "text/html"
        checker.check("GET", "/api/profiles/{id}", resp)
    events = AnswerChecker("2026-07-15", [("POST", "/api/events")])
    with pytest.raises(AssertionError, match="declares no body"):
        resp = httpx.Response(202, json={"ok": True}, headers={"content-type": rev.JSONAPI},
                              request=httpx.Request("POST", "http://127.0.0.1:1/api/events"))
        events.check("POST", "/api/events", resp)
    with pytest.raises(AssertionError, match="answered 302"):
        checker.check("GET", "/api/profiles/{id}", _answer("2023-10-15", f"/api/profiles/{pid}/", good, status=302))
