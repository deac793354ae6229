"""The sandbox as an HTTP server: spec validation, auth, headers, rate limits, persistence."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from engine.klaviyo import KlaviyoClient
from engine.sandbox import SandboxOptions, SandboxServer

KEY = "pk_test_0123456789abcdef"


def _post(url: str, path: str, body: object, *, revision: str = "2023-10-15",
          ctype: str = "application/json", key: str | None = KEY) -> httpx.Response:
    headers = {"revision": revision, "content-type": ctype}
    if key:
        headers["Authorization"] = f"Klaviyo-API-Key {key}"
    return httpx.post(url + path, content=json.dumps(body), headers=headers)


@pytest.mark.parametrize(
    ("revision", "path", "body", "pointer", "detail"),
    [
        ("2023-10-15", "/api/profiles/", {"data": {"type": "profile", "attributes": {"email": 5}}},
         "/data/attributes/email", "5 is not of type string."),
        ("2023-10-15", "/api/events/", {"data": {"type": "event", "attributes": {"properties": {}, "metric": {
            "data": {"type": "metric", "attributes": {"name": "X"}}}}}},
         "/data/attributes/profile", "'profile' is a required field."),
        ("2026-07-15", "/api/profiles", {"data": {"type": "person", "attributes": {"email": "a@example.com"}}},
         "/data/type", '"person" is not a valid choice. Valid choices: profile.'),
        ("2023-10-15", "/api/profile-subscription-bulk-create-jobs/", {"data": {
            "type": "profile-subscription-bulk-create-job",
            "attributes": {"profiles": {"data": [{"type": "profile", "attributes": {"email": "a@example.com"}}]}}}},
         "/data/relationships", "'relationships' is a required field."),
    ],
)
def test_spec_violations_get_400_naming_the_field(sandbox, revision, path, body, pointer, detail) -> None:
    """A body that breaks the revision's OpenAPI spec is refused with Klaviyo's 400 shape naming the field."""
    resp = _post(sandbox.url, path, body, revision=revision,
                 ctype="application/json" if revision < "2024" else "application/vnd.api+json")
    assert 400 == resp.status_code
    err = resp.json()["errors"][0]
    assert ("invalid", 400, pointer, detail) == (err["code"], err["status"], err["source"]["pointer"], err["detail"])
    assert resp.headers["content-type"].startswith("application/vnd.api+json")


async def test_requests_the_client_sends_pass_validation(sandbox, sandbox_api_key: str) -> None:
    """Every kind of body the client sends at 2026-07-15 is accepted by the spec check."""
    lid = sandbox.state.add_list("Spec")
    async with KlaviyoClient(base_url=sandbox.url, api_key=sandbox_api_key, revision="2026-07-15") as kl:
        pid, _ = await kl.create_profile({"email": "s@example.com", "location": {"city": "X", "latitude": 1.5},
                                          "properties": {"k": [1, 2]}})
        await kl.update_profile(pid, {"title": None}, unset=["k"])
        await kl.create_or_update_profile({"email": "s@example.com", "first_name": "S"})
        await kl.add_profiles_to_list(lid, [pid])
        await kl.subscribe_profiles([{"email": "s@example.com"}], list_id=lid, custom_source="test")
        await kl.unsubscribe_profiles([{"email": "s@example.com"}])
        await kl.create_event("Placed Order", {"email": "s@example.com"}, {"Items": [{"SKU": "A"}]}, value=1.0,
                              time="2025-01-01T00:00:00Z")
        await kl.bulk_import_profiles([{"email": "b@example.com"}], list_ids=[lid])
        assert 0 == kl.stats.total_retries


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({"revision": "2023-10-15"}, 401, "not_authenticated"),
        ({"revision": "2023-10-15", "Authorization": "Klaviyo-API-Key sk_not_private"}, 401, "not_authenticated"),
        ({"Authorization": f"Klaviyo-API-Key {KEY}"}, 400, "invalid"),
        ({"revision": "soon", "Authorization": f"Klaviyo-API-Key {KEY}"}, 400, "invalid"),
    ],
)
def test_auth_and_revision_header_are_required(sandbox, headers, status, code) -> None:
    """A missing/foreign key gets the authentication error; a missing or malformed revision a 400."""
    resp = httpx.get(sandbox.url + "/api/profiles/", headers=headers)
    assert (status, code) == (resp.status_code, resp.json()["errors"][0]["code"])


def test_both_path_styles_and_ratelimit_headers(sandbox_factory) -> None:
    """Paths answer with and without trailing slash, with RateLimit-* headers on normal responses."""
    handle = sandbox_factory(rate_limits=True)
    for path in ("/api/profiles/", "/api/profiles"):
        resp = httpx.get(handle.url + path, headers={"revision": "2026-07-15", "Authorization": f"Klaviyo-API-Key {KEY}"})
        assert (200, "750") == (resp.status_code, resp.headers["RateLimit-Limit"])  # L at 2026-07-15
    assert "748" == resp.headers["RateLimit-Remaining"]


def test_burst_limit_answers_429_with_retry_after(sandbox_factory) -> None:
    """Past the burst limit the sandbox answers 429 throttled with Retry-After and no RateLimit headers."""
    handle = sandbox_factory(rate_limits=True, tiers={"L": {"burst": 2, "steady": 100}})
    hdrs = {"revision": "2023-10-15", "Authorization": f"Klaviyo-API-Key {KEY}"}
    statuses = [httpx.get(handle.url + "/api/profiles/", headers=hdrs) for _ in range(3)]
    last = statuses[-1]
    if last.status_code != 429:  # the 1 s window rolled over between requests; try once more
        statuses = [httpx.get(handle.url + "/api/profiles/", headers=hdrs) for _ in range(3)]
        last = statuses[-1]
    assert (429, "throttled") == (last.status_code, last.json()["errors"][0]["code"])
    assert "1" == last.headers["Retry-After"]
    assert "RateLimit-Limit" not in last.headers


def test_page_size_and_filter_are_checked(sandbox) -> None:
    """page[size] above 100 and an unknown filter field are refused naming the parameter."""
    hdrs = {"revision": "2023-10-15", "Authorization": f"Klaviyo-API-Key {KEY}"}
    big = httpx.get(sandbox.url + "/api/profiles/", params={"page[size]": "101"}, headers=hdrs)
    bad = httpx.get(sandbox.url + "/api/profiles/", params={"filter": 'equals(shoe_size,"9")'}, headers=hdrs)
    assert (400, "page[size]") == (big.status_code, big.json()["errors"][0]["source"]["parameter"])
    assert (400, "filter") == (bad.status_code, bad.json()["errors"][0]["source"]["parameter"])


def test_wrong_content_type_is_refused(sandbox) -> None:
    """A body that is not JSON media type gets 415."""
    resp = _post(sandbox.url, "/api/profiles/", {"data": {}}, ctype="text/plain")
    assert 415 == resp.status_code


def test_state_file_persists_between_runs(tmp_path: Path) -> None:
    """With a state file, profiles created in one run are served by the next."""
    state_file = tmp_path / "sandbox.json"
    first = SandboxServer(SandboxOptions(rate_limits=False, state_file=str(state_file))).start_in_thread()
    try:
        created = _post(first.url, "/api/profiles/", {"data": {"type": "profile", "attributes": {"email": "keep@example.com"}}})
    finally:
        first.stop()
    second = SandboxServer(SandboxOptions(rate_limits=False, state_file=str(state_file))).start_in_thread()
    try:
        pid = created.json()["data"]["id"]
        got = httpx.get(f"{second.url}/api/profiles/{pid}/",
                        headers={"revision": "2023-10-15", "Authorization": f"Klaviyo-API-Key {KEY}"})
    finally:
        second.stop()
    assert (201, 200, "keep@example.com") == (created.status_code, got.status_code, got.json()["data"]["attributes"]["email"])
