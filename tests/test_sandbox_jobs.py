"""The sandbox's asynchronous jobs behave like Klaviyo's: subscribe / unsubscribe answer 202 and apply
later, per profile and per list, within Klaviyo's batch limits; bulk profile import jobs move through
queued -> processing -> complete and can be read back (job list, import-errors, profiles, lists).

Real sandbox over loopback (raw HTTP with httpx); ``job_delay_s`` holds jobs queued and
``state.drain_jobs()`` applies them, so nothing here waits on a clock.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from engine.sandbox import SandboxHandle, SandboxOptions, SandboxServer, _jobs
from engine.sandbox._spec import _URI, spec_for

KEY = "pk_test_0123456789abcdef"
OLD, NEW = "2023-10-15", "2026-07-15"
HOLD = 3600.0  # jobs stay queued for the whole test unless drained


def _headers(revision: str) -> dict[str, str]:
    ctype = "application/json" if revision < "2024-10-15" else "application/vnd.api+json"
    return {"revision": revision, "content-type": ctype, "accept": ctype, "Authorization": f"Klaviyo-API-Key {KEY}"}


def _path(revision: str, path: str) -> str:
    return path + "/" if revision < "2024-10-15" else path


def post(sb: SandboxHandle, path: str, body: Any, revision: str = NEW, **kw: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(sb.url + _path(revision, path), content=content, headers=_headers(revision), timeout=60, **kw)


def get(sb: SandboxHandle, path: str, revision: str = NEW, **params: str) -> httpx.Response:
    return httpx.get(sb.url + _path(revision, path), params=params, headers=_headers(revision), timeout=60)


def consent_body(kind: str, profiles: list[dict[str, Any]], revision: str, list_id: str | None = None) -> dict[str, Any]:
    """A subscribe / unsubscribe body as the revision's spec wants it."""
    consent = "SUBSCRIBED" if kind == "create" else "UNSUBSCRIBED"
    entries = []
    for p in profiles:
        attrs = {k: v for k, v in p.items() if k != "id"}
        if revision >= "2025-01-15" or kind == "create":
            attrs["subscriptions"] = {ch: {"marketing": {"consent": consent}}
                                      for ch, ident in (("email", "email"), ("sms", "phone_number")) if ident in p}
        entry: dict[str, Any] = {"type": "profile", "attributes": attrs}
        if "id" in p:
            entry["id"] = p["id"]
        entries.append(entry)
    data: dict[str, Any] = {"type": f"profile-subscription-bulk-{kind}-job",
                            "attributes": {"profiles": {"data": entries}}}
    if list_id:
        data["relationships"] = {"list": {"data": {"type": "list", "id": list_id}}}
    return {"data": data}


def subscribe(sb: SandboxHandle, profiles: list[dict[str, Any]], revision: str = NEW,
              list_id: str | None = None) -> httpx.Response:
    return post(sb, "/api/profile-subscription-bulk-create-jobs", consent_body("create", profiles, revision, list_id),
                revision)


def unsubscribe(sb: SandboxHandle, profiles: list[dict[str, Any]], revision: str = NEW,
                list_id: str | None = None) -> httpx.Response:
    return post(sb, "/api/profile-subscription-bulk-delete-jobs", consent_body("delete", profiles, revision, list_id),
                revision)


def marketing(sb: SandboxHandle, pid: str, channel: str = "email", revision: str = NEW) -> dict[str, Any]:
    resp = get(sb, f"/api/profiles/{pid}", revision, **{"additional-fields[profile]": "subscriptions"})
    assert 200 == resp.status_code, resp.text
    return resp.json()["data"]["attributes"]["subscriptions"][channel]["marketing"]


def members(sb: SandboxHandle, lid: str) -> list[str]:
    return [p["id"] for p in get(sb, f"/api/lists/{lid}/profiles").json()["data"]]


def import_body(profiles: list[dict[str, Any]], list_ids: tuple[str, ...] = ()) -> dict[str, Any]:
    data: dict[str, Any] = {"type": "profile-bulk-import-job",
                            "attributes": {"profiles": {"data": [{"type": "profile", "attributes": p} for p in profiles]}}}
    if list_ids:
        data["relationships"] = {"lists": {"data": [{"type": "list", "id": i} for i in list_ids]}}
    return {"data": data}


def the_error(resp: httpx.Response) -> dict[str, Any]:
    [err] = resp.json()["errors"]
    return err


def check_answer(resp: httpx.Response, template: str, status: int = 200) -> dict[str, Any]:
    """The answer's status, and its body valid against the 2026-07-15 spec's response schema."""
    assert status == resp.status_code, resp.text
    spec = spec_for(NEW)
    method = resp.request.method.lower()
    schema = spec.paths[template][method]["responses"][str(status)]["content"]["application/vnd.api+json"]["schema"]
    validator = jsonschema.Draft7Validator({"$ref": _URI + schema["$ref"]}, registry=spec._registry)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(resp.json())]
    assert [] == errors
    return resp.json()


@pytest.fixture
def held(sandbox_factory) -> SandboxHandle:
    """A sandbox whose jobs stay queued until the test drains them."""
    return sandbox_factory(job_delay_s=HOLD)


# -- subscribe / unsubscribe ---------------------------------------------------------


@pytest.mark.parametrize("revision", [OLD, NEW])
def test_subscribe_answers_202_with_no_body_and_applies_later(held: SandboxHandle, revision: str) -> None:
    """The 202 comes before the consent changes; the job applies it when processed."""
    lid = held.state.add_list("Newsletter")
    pid = held.state.add_profile(email="a@example.com", phone_number="+14155550100")
    resp = subscribe(held, [{"email": "a@example.com", "phone_number": "+14155550100"}], revision, lid)
    assert (202, b"") == (resp.status_code, resp.content)
    assert "NEVER_SUBSCRIBED" == marketing(held, pid, revision=revision)["consent"]
    assert [] == members(held, lid)
    assert 1 == held.state.drain_jobs()
    assert ("SUBSCRIBED", "SUBSCRIBED") == (marketing(held, pid)["consent"], marketing(held, pid, "sms")["consent"])
    assert [pid] == members(held, lid)


def test_without_a_delay_the_job_is_applied_before_the_next_request(sandbox: SandboxHandle) -> None:
    """With ``job_delay_s`` 0 the processor runs right after the 202, so a read that follows sees it."""
    pid = sandbox.state.add_profile(email="b@example.com")
    assert 202 == subscribe(sandbox, [{"email": "b@example.com"}]).status_code
    assert "SUBSCRIBED" == marketing(sandbox, pid)["consent"]
    assert 0 == sandbox.state.drain_jobs()  # nothing was left to do


@pytest.mark.parametrize(("revision", "kind", "limit"), [
    (OLD, "create", 100), ("2024-07-15", "create", 1000), (NEW, "create", 1000),
    (OLD, "delete", 100), (NEW, "delete", 100),
])
def test_consent_jobs_over_klaviyos_limit_get_400(held: SandboxHandle, revision: str, kind: str, limit: int) -> None:
    """100 profiles per subscribe job before 2024-07-15 and 1,000 from it; unsubscribe stays at 100.
    One over the limit is refused with Klaviyo's error body; exactly the limit is accepted."""
    lid = held.state.add_list("L")
    path = f"/api/profile-subscription-bulk-{kind}-jobs"
    many = [{"email": f"p{i}@example.com"} for i in range(limit + 1)]
    resp = post(held, path, consent_body(kind, many, revision, lid), revision)
    assert 400 == resp.status_code
    err = the_error(resp)
    assert ("invalid", 400, "/data/attributes/profiles/data") == (err["code"], err["status"], err["source"]["pointer"])
    assert str(limit) in err["detail"]
    assert 202 == post(held, path, consent_body(kind, many[:limit], revision, lid), revision).status_code
    assert limit == held.state.drain_jobs()


def test_a_profile_that_cannot_be_processed_does_not_stop_the_others(held: SandboxHandle) -> None:
    """An unknown profile id and an invalid email are skipped; the rest of the job is applied; no HTTP error."""
    pid = held.state.add_profile(email="ok@example.com")
    resp = subscribe(held, [{"email": "gone@example.com", "id": "01NOSUCHPROFILE0000000000A"},
                            {"email": "not-an-email"}, {"email": "ok@example.com"}])
    assert 202 == resp.status_code
    held.state.drain_jobs()
    assert "SUBSCRIBED" == marketing(held, pid)["consent"]
    emails = [p["attributes"].get("email") for p in held.state.profiles.values()]
    assert ["ok@example.com"] == emails


def test_email_and_phone_on_two_profiles_is_a_202_not_a_409(held: SandboxHandle) -> None:
    """Klaviyo accepts the job and applies it to the email's profile; the phone's profile keeps its phone."""
    by_email = held.state.add_profile(email="two@example.com")
    by_phone = held.state.add_profile(phone_number="+14155550199")
    resp = subscribe(held, [{"email": "two@example.com", "phone_number": "+14155550199"}])
    assert 202 == resp.status_code
    held.state.drain_jobs()
    assert "SUBSCRIBED" == marketing(held, by_email)["consent"]
    assert "+14155550199" == held.state.profiles[by_phone]["attributes"]["phone_number"]
    assert "phone_number" not in held.state.profiles[by_email]["attributes"]


def test_subscribe_needs_the_channels_identifier_synchronously(held: SandboxHandle) -> None:
    """SMS consent without a phone number is a 400 at once, naming the field."""
    body = consent_body("create", [{"email": "c@example.com"}], NEW)
    body["data"]["attributes"]["profiles"]["data"][0]["attributes"]["subscriptions"]["sms"] = {
        "marketing": {"consent": "SUBSCRIBED"}}
    resp = post(held, "/api/profile-subscription-bulk-create-jobs", body)
    assert 400 == resp.status_code
    assert "/data/attributes/profiles/data/0/attributes/phone_number" == the_error(resp)["source"]["pointer"]
    assert 0 == held.state.drain_jobs()


@pytest.mark.parametrize(("revision", "status"), [("2023-10-15", 400), ("2023-12-15", 202), ("2024-07-15", 202)])
def test_a_subscribe_job_needs_a_list_only_before_2023_12_15(held: SandboxHandle, revision: str, status: int) -> None:
    """Revisions 2023-12-15 to 2024-07-15 are checked against the 2023-10-15 spec, which requires the
    list; Klaviyo made it optional at 2023-12-15, and so does the sandbox."""
    resp = subscribe(held, [{"email": "nolist@example.com"}], revision)
    assert status == resp.status_code, resp.text
    if status == 400:
        assert ("'relationships' is a required field.", "/data/relationships") == (
            the_error(resp)["detail"], the_error(resp)["source"]["pointer"])
    else:
        assert 1 == held.state.drain_jobs()


@pytest.mark.parametrize("revision", [OLD, NEW])
def test_unsubscribe_from_a_list_only_removes_from_that_list(held: SandboxHandle, revision: str) -> None:
    """A member unsubscribed with a list leaves that list and gets a list suppression, but keeps its
    consent and its other lists; a profile not on the list is unsubscribed globally (Klaviyo's warning)."""
    news, promo = held.state.add_list("News"), held.state.add_list("Promo")
    member = held.state.add_profile(email="m@example.com")
    outsider = held.state.add_profile(email="o@example.com")
    for lid in (news, promo):
        assert 202 == subscribe(held, [{"email": "m@example.com"}], revision, lid).status_code
    assert 202 == subscribe(held, [{"email": "o@example.com"}], revision, promo).status_code
    held.state.drain_jobs()
    resp = unsubscribe(held, [{"email": "m@example.com"}, {"email": "o@example.com"}], revision, news)
    assert (202, b"") == (resp.status_code, resp.content)
    assert [member] == members(held, news)  # not yet applied
    held.state.drain_jobs()
    m = marketing(held, member, revision=revision)
    assert ("SUBSCRIBED", True) == (m["consent"], m["can_receive_email_marketing"])
    assert [(news, "USER_SUPPRESSED")] == [(s["list_id"], s["reason"]) for s in m["list_suppressions"]]
    assert ([], [member, outsider]) == (members(held, news), sorted(members(held, promo), key=[member, outsider].index))
    o = marketing(held, outsider, revision=revision)
    assert ("UNSUBSCRIBED", False, []) == (o["consent"], o["can_receive_email_marketing"], o["list_suppressions"])
    # subscribing to the list again lifts its list suppression
    assert 202 == subscribe(held, [{"email": "m@example.com"}], revision, news).status_code
    held.state.drain_jobs()
    assert ([], [member]) == (marketing(held, member)["list_suppressions"], members(held, news))


def test_unsubscribe_without_a_list_is_global_and_creates_unknown_profiles(held: SandboxHandle) -> None:
    """No list: every channel named is unsubscribed; an unknown email gets a profile, unsubscribed."""
    pid = held.state.add_profile(email="g@example.com", phone_number="+14155550177")
    subscribe(held, [{"email": "g@example.com", "phone_number": "+14155550177"}])
    held.state.drain_jobs()
    assert 202 == unsubscribe(held, [{"email": "g@example.com", "phone_number": "+14155550177"},
                                     {"email": "new@example.com"}]).status_code
    held.state.drain_jobs()
    assert ("UNSUBSCRIBED", "UNSUBSCRIBED") == (marketing(held, pid)["consent"], marketing(held, pid, "sms")["consent"])
    [new] = [p["id"] for p in held.state.profiles.values() if p["attributes"].get("email") == "new@example.com"]
    assert "UNSUBSCRIBED" == marketing(held, new)["consent"]


# -- bulk profile import -------------------------------------------------------------


def test_bulk_import_moves_through_queued_processing_complete(held: SandboxHandle) -> None:
    """POST answers 202 with the queued job; the processor takes it through processing to complete,
    updating counts; a bad profile becomes an import-error and the others are imported."""
    lid = held.state.add_list("Imported")
    profiles = [{"email": f"i{i}@example.com", "first_name": f"N{i}"} for i in range(4)]
    profiles.insert(2, {"email": "not-an-email"})
    resp = post(held, "/api/profile-bulk-import-jobs", import_body(profiles, (lid,)))
    job = check_answer(resp, "/api/profile-bulk-import-jobs", 202)["data"]
    assert ("queued", 5, 0, 0) == tuple(job["attributes"][k] for k in ("status", "total_count", "completed_count",
                                                                          "failed_count"))
    jid = job["id"]
    assert "queued" == get(held, f"/api/profile-bulk-import-jobs/{jid}").json()["data"]["attributes"]["status"]
    assert 2 == held.state.drain_jobs(limit=2)
    attrs = check_answer(get(held, f"/api/profile-bulk-import-jobs/{jid}"),
                         "/api/profile-bulk-import-jobs/{job_id}")["data"]["attributes"]
    assert ("processing", 2, 0) == (attrs["status"], attrs["completed_count"], attrs["failed_count"])
    assert attrs["started_at"] and attrs["completed_at"] is None
    assert 3 == held.state.drain_jobs()
    attrs = get(held, f"/api/profile-bulk-import-jobs/{jid}").json()["data"]["attributes"]
    assert ("complete", 5, 4, 1) == (attrs["status"], attrs["total_count"], attrs["completed_count"],
                                     attrs["failed_count"])
    assert attrs["completed_at"]
    errors = check_answer(get(held, f"/api/profile-bulk-import-jobs/{jid}/import-errors"),
                          "/api/profile-bulk-import-jobs/{id}/import-errors")["data"]
    assert [("import-error", "invalid", "/data/attributes/profiles/data/2/attributes/email",
             {"type": "profile", "attributes": {"email": "not-an-email"}})] == [
        (e["type"], e["attributes"]["code"], e["attributes"]["source"]["pointer"], e["attributes"]["original_payload"])
        for e in errors]
    assert 4 == len(members(held, lid))


def test_bulk_import_job_relationships(held: SandboxHandle) -> None:
    """The job's profiles and lists, as resources and as relationships, paged as the spec says."""
    lid = held.state.add_list("Rel")
    existing = held.state.add_profile(email="r0@example.com")
    body = import_body([{"email": f"r{i}@example.com", "last_name": "R"} for i in range(3)], (lid,))
    jid = post(held, "/api/profile-bulk-import-jobs", body).json()["data"]["id"]
    held.state.drain_jobs()
    base = f"/api/profile-bulk-import-jobs/{jid}"
    page1 = check_answer(get(held, base + "/profiles", **{"page[size]": "2"}), "/api/profile-bulk-import-jobs/{id}/profiles")
    nxt = page1["links"]["next"]
    page2 = httpx.get(nxt, headers=_headers(NEW)).json()
    ids = [p["id"] for p in page1["data"] + page2["data"]]
    assert 3 == len(set(ids)) and existing in ids
    assert {"R"} == {p["attributes"]["last_name"] for p in page1["data"] + page2["data"]}
    rel = check_answer(get(held, base + "/relationships/profiles", **{"page[size]": "100"}),
                       "/api/profile-bulk-import-jobs/{id}/relationships/profiles")
    assert sorted(ids) == sorted(r["id"] for r in rel["data"])
    lists = check_answer(get(held, base + "/lists"), "/api/profile-bulk-import-jobs/{id}/lists")
    assert [("list", lid, "Rel")] == [(x["type"], x["id"], x["attributes"]["name"]) for x in lists["data"]]
    list_ids = check_answer(get(held, base + "/relationships/lists"), "/api/profile-bulk-import-jobs/{id}/relationships/lists")
    assert [{"type": "list", "id": lid}] == list_ids["data"]
    job = check_answer(get(held, base, include="lists"), "/api/profile-bulk-import-jobs/{job_id}")
    assert [lid] == [x["id"] for x in job["included"]]
    assert [{"type": "list", "id": lid}] == job["data"]["relationships"]["lists"]["data"]


def test_bulk_import_job_list_filters_and_sorts(held: SandboxHandle) -> None:
    """GET /api/profile-bulk-import-jobs filters on status (equals / any) and sorts on created_at."""
    ids = [post(held, "/api/profile-bulk-import-jobs", import_body([{"email": f"l{i}@example.com"}])).json()["data"]["id"]
           for i in range(3)]
    held.state.drain_jobs(limit=1)  # the oldest job completes, the others stay queued
    listed = check_answer(get(held, "/api/profile-bulk-import-jobs", sort="-created_at"), "/api/profile-bulk-import-jobs")
    assert sorted(ids) == sorted(j["id"] for j in listed["data"])
    complete = get(held, "/api/profile-bulk-import-jobs", filter='equals(status,"complete")').json()["data"]
    queued = get(held, "/api/profile-bulk-import-jobs", filter="any(status,['queued','processing'])").json()["data"]
    assert ([ids[0]], sorted(ids[1:])) == ([j["id"] for j in complete], sorted(j["id"] for j in queued))
    assert 400 == get(held, "/api/profile-bulk-import-jobs", filter='equals(total_count,1)').status_code
    assert 400 == get(held, "/api/profile-bulk-import-jobs", **{"page[size]": "101"}).status_code
    assert 2 == len(get(held, "/api/profile-bulk-import-jobs", **{"page[size]": "2"}).json()["data"])


def test_bulk_import_limits(held: SandboxHandle) -> None:
    """10,000 profiles per job and 5 MB per body with Klaviyo's texts; a body just under 5 MB and a
    10,000-profile job are accepted (aiohttp's 1 MiB cap is raised); 100 KB per profile."""
    too_many = post(held, "/api/profile-bulk-import-jobs", import_body([{"email": f"x{i}@example.com"}
                                                                         for i in range(10_001)]))
    assert 400 == too_many.status_code
    err = the_error(too_many)
    assert ("invalid", "/data/attributes/profiles/data") == (err["code"], err["source"]["pointer"])
    assert "10000" in err["detail"]
    ten_k = post(held, "/api/profile-bulk-import-jobs", import_body([{"email": f"x{i}@example.com"}
                                                                     for i in range(10_000)]))
    assert (202, 10_000) == (ten_k.status_code, ten_k.json()["data"]["attributes"]["total_count"])

    big = import_body([{"email": f"b{i}@example.com", "properties": {"blob": "x" * 97_000}} for i in range(51)])
    raw = json.dumps(big).encode()
    assert 4_900_000 < len(raw) <= _jobs.IMPORT_MAX_BYTES
    assert 202 == post(held, "/api/profile-bulk-import-jobs", raw).status_code
    big["data"]["attributes"]["profiles"]["data"].append({"type": "profile", "attributes": {
        "email": "over@example.com", "properties": {"blob": "x" * 97_000}}})
    over = post(held, "/api/profile-bulk-import-jobs", json.dumps(big).encode())
    err = the_error(over)
    assert (413, "The maximum allowed payload size is 5MB.", "/data") == (over.status_code, err["detail"],
                                                                          err["source"]["pointer"])
    assert over.headers["content-type"].startswith("application/vnd.api+json")

    fat = post(held, "/api/profile-bulk-import-jobs", import_body([{"email": "ok@example.com"}, {
        "email": "fat@example.com", "properties": {"blob": "x" * 100_001}}]))
    err = the_error(fat)
    assert (400, "/data/attributes/profiles/data/1") == (fat.status_code, err["source"]["pointer"])
    assert "100KB" in err["detail"]
    assert 2 == len(held.state.jobs)  # the 10,000-profile job and the one just under 5 MB


def test_a_chunked_body_over_5mb_gets_klaviyos_413(held: SandboxHandle) -> None:
    """Without Content-Length aiohttp stops reading at the cap; the answer is still Klaviyo's JSON 413."""
    big = json.dumps(import_body([{"email": f"c{i}@example.com", "properties": {"blob": "y" * 99_000}}
                                  for i in range(60)])).encode()

    def chunks():
        for i in range(0, len(big), 65536):
            yield big[i:i + 65536]

    resp = httpx.post(held.url + "/api/profile-bulk-import-jobs", content=chunks(), headers=_headers(NEW), timeout=60)
    assert 413 == resp.status_code
    assert "payload_too_large" == the_error(resp)["code"]


def test_bulk_import_jobs_do_not_exist_at_2023_10_15(held: SandboxHandle) -> None:
    """Klaviyo added profile-bulk-import-jobs in 2023-12-15; earlier revisions get 404 on every route."""
    assert 404 == get(held, "/api/profile-bulk-import-jobs", OLD).status_code
    assert 404 == post(held, "/api/profile-bulk-import-jobs", import_body([{"email": "a@example.com"}]), OLD).status_code
    resp = post(held, "/api/profile-bulk-import-jobs", import_body([{"email": "a@example.com"}]), "2023-12-15")
    assert 202 == resp.status_code
    assert 200 == get(held, f"/api/profile-bulk-import-jobs/{resp.json()['data']['id']}", "2023-12-15").status_code


def test_unknown_job_and_unknown_list(held: SandboxHandle) -> None:
    """An unknown job id is Klaviyo's 404 on each read; a job naming an unknown list is refused at once."""
    for suffix in ("", "/import-errors", "/profiles", "/relationships/profiles", "/lists", "/relationships/lists"):
        resp = get(held, "/api/profile-bulk-import-jobs/01NOSUCHJOB" + suffix)
        assert (404, "not_found") == (resp.status_code, the_error(resp)["code"]), suffix
    resp = post(held, "/api/profile-bulk-import-jobs", import_body([{"email": "a@example.com"}], ("nolist",)))
    assert 404 == resp.status_code
    assert 0 == held.state.drain_jobs()


def test_the_background_processor_completes_jobs_on_its_own(sandbox: SandboxHandle) -> None:
    """Without draining, a queued import is processed by the server (in chunks) until complete."""
    jid = post(sandbox, "/api/profile-bulk-import-jobs",
               import_body([{"email": f"bg{i}@example.com"} for i in range(_jobs.CHUNK + 10)])).json()["data"]["id"]
    deadline = time.monotonic() + 120
    attrs = {}
    while time.monotonic() < deadline:
        attrs = get(sandbox, f"/api/profile-bulk-import-jobs/{jid}").json()["data"]["attributes"]
        if attrs["status"] == "complete":
            break
        time.sleep(0.05)
    assert ("complete", _jobs.CHUNK + 10) == (attrs["status"], attrs["completed_count"])


def test_queued_jobs_survive_a_restart(tmp_path: Path) -> None:
    """With a state file, queued consent and import jobs are saved and processed after the restart."""
    state_file = tmp_path / "sandbox.json"
    first = SandboxServer(SandboxOptions(rate_limits=False, state_file=str(state_file), job_delay_s=HOLD)).start_in_thread()
    try:
        pid = first.state.add_profile(email="keep@example.com")
        assert 202 == subscribe(first, [{"email": "keep@example.com"}]).status_code
        jid = post(first, "/api/profile-bulk-import-jobs", import_body([{"email": "later@example.com"}])).json()["data"]["id"]
    finally:
        first.stop()
    second = SandboxServer(SandboxOptions(rate_limits=False, state_file=str(state_file))).start_in_thread()
    try:
        second.state.drain_jobs()  # (the processor may already have done it)
        assert "SUBSCRIBED" == marketing(second, pid)["consent"]
        attrs = get(second, f"/api/profile-bulk-import-jobs/{jid}").json()["data"]["attributes"]
        assert ("complete", 1) == (attrs["status"], attrs["completed_count"])
    finally:
        second.stop()


def test_job_delay_must_be_a_sane_number() -> None:
    """A negative or NaN delay is refused before anything listens."""
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="job_delay_s"):
            SandboxServer(SandboxOptions(job_delay_s=bad))


def test_a_malformed_job_body_is_a_400_even_without_the_spec_check(sandbox_factory) -> None:
    """Where no spec checks the body (``validate=False``; a bulk import at 2023-12-15, absent from the
    stored 2023-10-15 spec) a wrong shape is still Klaviyo's 400 naming where, never a 500 or a dead job."""
    sb = sandbox_factory(validate=False)
    resp = post(sb, "/api/profile-subscription-bulk-create-jobs",
                {"data": {"type": "profile-subscription-bulk-create-job", "attributes": {}}})
    assert (400, "/data/attributes/profiles/data") == (resp.status_code, the_error(resp)["source"]["pointer"])
    checked = sandbox_factory()
    body = {"data": {"type": "profile-bulk-import-job", "attributes": {"profiles": {"data": ["x"]}}}}
    resp = post(checked, "/api/profile-bulk-import-jobs", body, "2023-12-15")
    assert (400, "/data/attributes/profiles/data/0") == (resp.status_code, the_error(resp)["source"]["pointer"])
    assert 0 == sb.state.drain_jobs() + checked.state.drain_jobs()
