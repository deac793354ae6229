"""The sandbox keeps each Klaviyo account apart under ``accounts_by_key`` (``serve --accounts-by-key``).

Each private key (and each OAuth client) is its own account: profiles, lists, metrics, events,
jobs and rate limits apart, as at Klaviyo.  Real sandbox over loopback (raw HTTP with httpx),
its real state file, and a real ``klaviyo-sync sandbox serve`` process.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.errors import SandboxStateFileError
from engine.sandbox import SandboxHandle, SandboxOptions, SandboxServer, key_account

ROOT = Path(__file__).resolve().parent.parent
KEY_A = "pk_account_a_secret_0001"
KEY_B = "pk_account_b_secret_0002"
KEY_C = "pk_account_c_secret_0003"
OLD, NEW = "2023-10-15", "2026-07-15"


def _auth(key: str) -> str:
    return key if key.startswith("Bearer ") else f"Klaviyo-API-Key {key}"


def call(sb: SandboxHandle | str, method: str, path: str, key: str, body: Any = None,
         revision: str = OLD, **params: str) -> httpx.Response:
    """One API request as ``key`` (or ``"Bearer <token>"``); ``path`` without the trailing slash."""
    url = sb if isinstance(sb, str) else sb.url
    ctype = "application/json" if revision < "2024-10-15" else "application/vnd.api+json"
    headers = {"revision": revision, "Authorization": _auth(key), "content-type": ctype, "accept": ctype}
    full = url + path + ("/" if revision < "2024-10-15" else "")
    content = json.dumps(body).encode() if body is not None else None
    return httpx.request(method, full, content=content, headers=headers, params=params, timeout=30)


def new_profile(sb: SandboxHandle | str, key: str, email: str) -> httpx.Response:
    return call(sb, "POST", "/api/profiles", key, {"data": {"type": "profile", "attributes": {"email": email}}})


def event(sb: SandboxHandle | str, key: str, email: str, metric: str, uid: str) -> httpx.Response:
    return call(sb, "POST", "/api/events", key, {"data": {"type": "event", "attributes": {
        "properties": {"n": uid}, "metric": {"data": {"type": "metric", "attributes": {"name": metric}}},
        "profile": {"data": {"type": "profile", "attributes": {"email": email}}}, "unique_id": uid}}})


def ids(resp: httpx.Response) -> list[str]:
    assert 200 == resp.status_code, resp.text
    return [d["id"] for d in resp.json()["data"]]


@pytest.fixture
def start() -> Any:
    """Start sandboxes (accounts by key unless told) in threads; all stopped at the end."""
    handles: list[SandboxHandle] = []

    def make(**options: Any) -> SandboxHandle:
        options.setdefault("rate_limits", False)
        options.setdefault("seed", 7)
        options.setdefault("accounts_by_key", True)
        handle = SandboxServer(SandboxOptions(**options)).start_in_thread()
        handles.append(handle)
        return handle

    yield make
    for handle in handles:
        handle.stop()


def test_two_keys_see_disjoint_profiles_through_create_get_and_filter(start: Any) -> None:
    """The same email is a new profile in each account; one account's id is a 404 for the other."""
    sb = start(api_keys=(KEY_A, KEY_B))
    a, b = new_profile(sb, KEY_A, "ada@example.com"), new_profile(sb, KEY_B, "ada@example.com")
    assert (201, 201) == (a.status_code, b.status_code)
    id_a, id_b = a.json()["data"]["id"], b.json()["data"]["id"]
    assert id_a != id_b
    assert 409 == new_profile(sb, KEY_A, "ada@example.com").status_code  # within one account: Klaviyo's 409
    assert (200, 404) == (call(sb, "GET", f"/api/profiles/{id_a}", KEY_A).status_code,
                          call(sb, "GET", f"/api/profiles/{id_a}", KEY_B).status_code)
    flt = 'equals(email,"ada@example.com")'
    assert ([id_a], [id_b]) == (ids(call(sb, "GET", "/api/profiles", KEY_A, filter=flt)),
                                ids(call(sb, "GET", "/api/profiles", KEY_B, filter=flt)))
    assert ([id_a], [id_b]) == (ids(call(sb, "GET", "/api/profiles", KEY_A)), ids(call(sb, "GET", "/api/profiles", KEY_B)))
    assert ({id_a}, {id_b}) == (set(sb.state_for(KEY_A).profiles), set(sb.state_for(KEY_B).profiles))
    assert sb.state is sb.state_for(KEY_A)  # the first listed key is the default account
    assert 401 == new_profile(sb, KEY_C, "c@example.com").status_code  # api_keys still gate


def test_events_metrics_and_lists_belong_to_the_account_that_made_them(start: Any) -> None:
    """An event, its metric and a list created with one key are absent from another key's reads."""
    sb = start()
    assert 202 == event(sb, KEY_A, "grace@example.com", "Placed Order", "1001").status_code
    made = call(sb, "POST", "/api/lists", KEY_B, {"data": {"type": "list", "attributes": {"name": "Newsletter"}}})
    assert 201 == made.status_code
    assert (1, 0) == (len(ids(call(sb, "GET", "/api/events", KEY_A))), len(ids(call(sb, "GET", "/api/events", KEY_B))))
    assert (1, 0) == (len(ids(call(sb, "GET", "/api/metrics", KEY_A))),
                      len(ids(call(sb, "GET", "/api/metrics", KEY_B))))
    by_name = 'equals(name,"Newsletter")'
    assert ([], [made.json()["data"]["id"]]) == (ids(call(sb, "GET", "/api/lists", KEY_A, filter=by_name)),
                                                 ids(call(sb, "GET", "/api/lists", KEY_B, filter=by_name)))
    lid = made.json()["data"]["id"]
    assert (404, 200) == (call(sb, "GET", f"/api/lists/{lid}", KEY_A).status_code,
                          call(sb, "GET", f"/api/lists/{lid}", KEY_B).status_code)


def _wait_complete(sb: SandboxHandle, key: str, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        resp = call(sb, "GET", f"/api/profile-bulk-import-jobs/{job_id}", key, revision=NEW)
        assert 200 == resp.status_code, resp.text
        attrs: dict[str, Any] = resp.json()["data"]["attributes"]
        if attrs["status"] == "complete":
            return attrs
        assert time.monotonic() < deadline, f"the bulk import job is still {attrs['status']}"
        time.sleep(0.05)


def test_background_jobs_apply_to_the_account_that_queued_them(start: Any) -> None:
    """The job processor applies one account's bulk import and subscribe job to that account only."""
    sb = start()
    body = {"data": {"type": "profile-bulk-import-job", "attributes": {"profiles": {"data": [
        {"type": "profile", "attributes": {"email": f"p{i}@example.com"}} for i in range(3)]}}}}
    resp = call(sb, "POST", "/api/profile-bulk-import-jobs", KEY_A, body, revision=NEW)
    assert 202 == resp.status_code, resp.text
    job_id = resp.json()["data"]["id"]
    assert 404 == call(sb, "GET", f"/api/profile-bulk-import-jobs/{job_id}", KEY_B, revision=NEW).status_code
    assert 3 == _wait_complete(sb, KEY_A, job_id)["completed_count"]
    lid = call(sb, "POST", "/api/lists", KEY_B, {"data": {"type": "list", "attributes": {"name": "B list"}}}
               ).json()["data"]["id"]
    sub = {"data": {"type": "profile-subscription-bulk-create-job", "attributes": {"profiles": {"data": [
        {"type": "profile", "attributes": {"email": "p0@example.com",
                                           "subscriptions": {"email": {"marketing": {"consent": "SUBSCRIBED"}}}}}]}},
        "relationships": {"list": {"data": {"type": "list", "id": lid}}}}}
    assert 202 == call(sb, "POST", "/api/profile-subscription-bulk-create-jobs", KEY_B, sub).status_code
    sb.state_for(KEY_B).drain_jobs()  # whatever the processor has not applied yet
    flt = 'equals(email,"p0@example.com")'
    subscribed = call(sb, "GET", "/api/profiles", KEY_B, filter=flt, **{"additional-fields[profile]": "subscriptions"})
    [b_p0] = subscribed.json()["data"]
    assert "SUBSCRIBED" == b_p0["attributes"]["subscriptions"]["email"]["marketing"]["consent"]
    [a_p0] = call(sb, "GET", "/api/profiles", KEY_A, filter=flt,
                  **{"additional-fields[profile]": "subscriptions"}).json()["data"]
    assert "NEVER_SUBSCRIBED" == a_p0["attributes"]["subscriptions"]["email"]["marketing"]["consent"]
    assert a_p0["id"] != b_p0["id"]
    assert (3, 1, 0, 1) == (len(sb.state_for(KEY_A).profiles), len(sb.state_for(KEY_B).profiles),
                            len(sb.state_for(KEY_A).lists), len(ids(call(sb, "GET", f"/api/lists/{lid}/profiles",
                                                                         KEY_B))))


def test_one_accounts_429_does_not_touch_another(start: Any) -> None:
    """An account over its steady limit gets 429 while another key's requests still pass."""
    sb = start(rate_limits=True, tiers={"L": {"burst": 50, "steady": 2}})
    statuses = [call(sb, "GET", "/api/profiles", KEY_A).status_code for _ in range(3)]
    if statuses[-1] != 429:  # the 60 s window rolled over between requests; once more
        statuses = [call(sb, "GET", "/api/profiles", KEY_A).status_code for _ in range(3)]
    assert 429 == statuses[-1]
    assert (200, "1") == (lambda r: (r.status_code, r.headers["RateLimit-Remaining"]))(
        call(sb, "GET", "/api/profiles", KEY_B))
    counts = httpx.get(sb.url + "/__sandbox__/accounts").json()["accounts"]
    assert counts[key_account(KEY_A)]["throttled"] >= 1
    assert 0 == counts[key_account(KEY_B)]["throttled"]


def test_keys_share_one_account_by_default(start: Any) -> None:
    """Without accounts_by_key every key sees the same data, as before."""
    sb = start(accounts_by_key=False)
    pid = new_profile(sb, KEY_A, "ada@example.com").json()["data"]["id"]
    assert [pid] == ids(call(sb, "GET", "/api/profiles", KEY_B))
    assert sb.state_for(KEY_B) is sb.state
    listing = httpx.get(sb.url + "/__sandbox__/accounts").json()
    assert (False, ["default"], 1) == (listing["accounts_by_key"], list(listing["accounts"]),
                                       listing["accounts"]["default"]["profiles"])


def test_an_oauth_client_is_its_own_account(start: Any) -> None:
    """Profiles made with a Bearer token live in the OAuth client's account, not in a key's."""
    sb = start()
    token = sb.server.oauth._issue("app-client", "profiles:read profiles:write", "refresh-1")["access_token"]
    bearer = f"Bearer {token}"
    assert 201 == new_profile(sb, bearer, "o@example.com").status_code
    assert ([], 1) == (ids(call(sb, "GET", "/api/profiles", KEY_A)), len(ids(call(sb, "GET", "/api/profiles", bearer))))
    mine = httpx.get(sb.url + "/__sandbox__/account", headers={"Authorization": bearer}).json()
    assert (mine["account"].startswith("oauth-"), 1) == (True, mine["profiles"])
    assert token not in json.dumps(httpx.get(sb.url + "/__sandbox__/accounts").json())


def test_introspection_counts_each_account_by_digest(start: Any) -> None:
    """/__sandbox__/accounts counts profiles, lists, events by metric and 429s per account digest;
    /__sandbox__/account gives the presented key's counts; no key appears in either."""
    sb = start()
    for n in range(2):
        assert 202 == event(sb, KEY_A, "a@example.com", "Placed Order", f"o{n}").status_code
    assert 202 == event(sb, KEY_A, "a@example.com", "Viewed Product", "v1").status_code
    new_profile(sb, KEY_B, "b1@example.com")
    new_profile(sb, KEY_B, "b2@example.com")
    call(sb, "POST", "/api/lists", KEY_B, {"data": {"type": "list", "attributes": {"name": "L"}}})
    resp = httpx.get(sb.url + "/__sandbox__/accounts")
    assert (200, True) == (resp.status_code, resp.json()["accounts_by_key"])
    accounts = resp.json()["accounts"]
    a, b = accounts[key_account(KEY_A)], accounts[key_account(KEY_B)]
    assert (1, 0, {"Placed Order": 2, "Viewed Product": 1}, 0) == (a["profiles"], a["lists"], a["events"],
                                                                    a["throttled"])
    assert (2, 1, {}) == (b["profiles"], b["lists"], b["events"])
    one = httpx.get(sb.url + "/__sandbox__/account", headers={"Authorization": _auth(KEY_B)}).json()
    assert (key_account(KEY_B), 2, 1) == (one["account"], one["profiles"], one["lists"])
    fresh = httpx.get(sb.url + "/__sandbox__/account", headers={"Authorization": _auth(KEY_C)}).json()
    assert (0, [key_account(KEY_A), key_account(KEY_B)]) == (
        fresh["profiles"], [k for k in httpx.get(sb.url + "/__sandbox__/accounts").json()["accounts"]
                            if k != "default"])  # reading counts creates no account
    refused = httpx.get(sb.url + "/__sandbox__/account", headers={"Authorization": "Klaviyo-API-Key nope"})
    assert (401, "not_authenticated") == (refused.status_code, refused.json()["errors"][0]["code"])
    text = resp.text + json.dumps(one)
    assert KEY_A not in text and KEY_B not in text


def test_the_state_file_round_trips_several_accounts_by_digest(start: Any, tmp_path: Path) -> None:
    """Stopping saves every account under its digest (no key in the file); a restart serves each its own."""
    path = tmp_path / "state.json"
    sb = start(state_file=str(path))
    made = {key: new_profile(sb, key, f"{key[-4:]}@example.com").json()["data"]["id"] for key in (KEY_A, KEY_B, KEY_C)}
    event(sb, KEY_B, "b@example.com", "Placed Order", "1")
    sb.stop()
    text = path.read_text(encoding="utf-8")
    saved = json.loads(text)
    assert {key_account(k) for k in made} <= set(saved["accounts"])
    assert not any(k in text for k in made)
    again = start(state_file=str(path))
    seen = {key: ids(call(again, "GET", "/api/profiles", key)) for key in made}
    assert ([made[KEY_A]], [made[KEY_C]], 2) == (seen[KEY_A], seen[KEY_C], len(seen[KEY_B]))
    assert made[KEY_B] in seen[KEY_B]  # and the profile the event made
    assert (1, 0) == (len(ids(call(again, "GET", "/api/events", KEY_B))),
                      len(ids(call(again, "GET", "/api/events", KEY_A))))


def test_an_old_single_account_state_file_loads_into_the_default_account(start: Any, tmp_path: Path) -> None:
    """A state file of the old shape is the first listed key's account; the other keys start empty."""
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"profiles": {"44552": {"attributes": {"email": "grace@example.com"}}},
                                "lists": {"Nws01a": {"name": "Newsletter", "members": ["44552"]}}}), encoding="utf-8")
    sb = start(state_file=str(path), api_keys=(KEY_A, KEY_B))
    assert (["44552"], []) == (ids(call(sb, "GET", "/api/profiles", KEY_A)), ids(call(sb, "GET", "/api/profiles", KEY_B)))
    sb.stop()
    assert ["44552"] == list(json.loads(path.read_text())["accounts"][key_account(KEY_A)]["profiles"])
    shared = start(state_file=str(path), accounts_by_key=False)  # a one-account file loads when shared too
    assert ["44552"] == ids(call(shared, "GET", "/api/profiles", KEY_B))


def test_a_shared_sandbox_refuses_a_file_of_several_accounts(tmp_path: Path) -> None:
    """Loading a multi-account file without accounts_by_key is a clear state-file error, the file untouched."""
    path = tmp_path / "many.json"
    one = {"profiles": {}, "lists": {}}
    body = json.dumps({"accounts": {key_account(KEY_A): one, key_account(KEY_B): one}})
    path.write_text(body, encoding="utf-8")
    with pytest.raises(SandboxStateFileError, match="holds 2 accounts; serve it with accounts by key"):
        SandboxServer(SandboxOptions(state_file=str(path))).start_in_thread()
    assert body == path.read_text(encoding="utf-8")


def test_serve_accounts_by_key_in_a_real_process(tmp_path: Path) -> None:
    """`sandbox serve --accounts-by-key` keeps two keys apart, counts them, and SIGTERM saves both by digest."""
    path = tmp_path / "state.json"
    proc = subprocess.Popen([sys.executable, "-m", "engine", "sandbox", "serve", "--port", "0", "--json",
                             "--accounts-by-key", "--state", str(path), "--no-rate-limits"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, proc.communicate(timeout=10)[1]
        url = json.loads(line)["url"]
        pid_a = new_profile(url, KEY_A, "ada@example.com").json()["data"]["id"]
        assert 201 == new_profile(url, KEY_B, "ada@example.com").status_code
        assert [pid_a] == ids(call(url, "GET", "/api/profiles", KEY_A, filter='equals(email,"ada@example.com")'))
        counts = httpx.get(url + "/__sandbox__/accounts").json()["accounts"]
        assert (1, 1) == (counts[key_account(KEY_A)]["profiles"], counts[key_account(KEY_B)]["profiles"])
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert 0 == proc.returncode, err
    assert "/__sandbox__/accounts" in err
    saved = json.loads(path.read_text(encoding="utf-8"))["accounts"]
    assert (1, 1) == (len(saved[key_account(KEY_A)]["profiles"]), len(saved[key_account(KEY_B)]["profiles"]))
    assert not any(k in out + err + path.read_text() for k in (KEY_A, KEY_B))


def test_delayed_jobs_of_several_accounts_all_complete_each_in_its_account(start: Any) -> None:
    """With job_delay_s, bulk imports queued by three accounts are all processed, each into its own account."""
    sb = start(job_delay_s=0.2)
    jobs = {}
    for n, key in enumerate((KEY_A, KEY_B, KEY_C)):
        body = {"data": {"type": "profile-bulk-import-job", "attributes": {"profiles": {"data": [
            {"type": "profile", "attributes": {"email": f"k{n}-{i}@example.com"}} for i in range(n + 1)]}}}}
        resp = call(sb, "POST", "/api/profile-bulk-import-jobs", key, body, revision=NEW)
        assert (202, "queued") == (resp.status_code, resp.json()["data"]["attributes"]["status"])
        jobs[key] = resp.json()["data"]["id"]
    done = {key: _wait_complete(sb, key, job)["completed_count"] for key, job in jobs.items()}
    assert {KEY_A: 1, KEY_B: 2, KEY_C: 3} == done
    assert [1, 2, 3] == [len(ids(call(sb, "GET", "/api/profiles", key))) for key in (KEY_A, KEY_B, KEY_C)]
