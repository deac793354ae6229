"""OAuth scopes: derived from the enabled collections (scopes from Klaviyo's specs), requested by
``auth login``, reported by ``auth status`` and ``validate``, enforced by the sandbox (403
``permission_denied``), and a missing scope failing only the records that need it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from _oauth_helpers import CLIENT_ID, CLIENT_SECRET, SCOPES, follow, oauth_settings

from engine.collection import CollectionSet, load_collections
from engine.errors import KlaviyoApiError, KlaviyoAuthError
from engine.hub import SqliteHub
from engine.klaviyo import KlaviyoClient, scopes as ks
from engine.oauth import PROVIDER, connection_status, login
from engine.sandbox._spec import SPEC_DIR
from engine.settings import OAuthSettings, Settings

ROOT = Path(__file__).resolve().parent.parent
NO_LISTS_WRITE = tuple(s for s in SCOPES if s != "lists:write")


def _shipped() -> CollectionSet:
    report = load_collections(None)
    assert [] == report.errors
    return report.collections


def _only(collections: CollectionSet, *titles: str) -> CollectionSet:
    """The shipped collections with all but ``titles`` disabled."""
    out = CollectionSet()
    for c in collections:
        out.collections[c.title] = c if c.title in titles else replace(c, status="disabled")
        out.order.append(c.title)
    return out


def _login(handle: Any, tmp_path: Path, hub: SqliteHub, **oauth: Any) -> Any:
    settings = oauth_settings(handle, tmp_path, **oauth)
    return asyncio.run(login(settings, hub, open_url=follow, timeout=10))


# -- the scopes of an endpoint come from Klaviyo's specs ------------------------------------


def test_endpoint_scopes_are_read_from_the_shipped_specs() -> None:
    """GET /api/profiles needs profiles:read at both revisions; the 2023-10-15 spec's list:write is
    Klaviyo's lists:write, and an endpoint the old spec lacks is found in the newer one."""
    old = json.loads((SPEC_DIR / "openapi-2023-10-15.json").read_text(encoding="utf-8"))
    assert ["list:write", "profiles:write"] == old["paths"]["/api/lists/{id}/relationships/profiles/"]["post"][
        "x-klaviyo-scopes"]
    assert (("profiles:read",), ("profiles:read",)) == (
        ks.scopes_for("GET", "/api/profiles", "2023-10-15"), ks.scopes_for("GET", "/api/profiles", "2026-07-15"))
    assert ("lists:write", "profiles:write") == ks.scopes_for(
        "POST", "/api/lists/{id}/relationships/profiles", "2023-10-15")
    assert ("lists:write", "profiles:write", "subscriptions:write") == ks.scopes_for_request(
        "POST", "/api/profile-subscription-bulk-create-jobs/", "2023-10-15")
    assert ("profiles:write",) == ks.scopes_for_request("PATCH", "/api/profiles/01HABC/", "2023-10-15")
    assert ("profiles:write",) == ks.scopes_for("POST", "/api/profile-import", "2023-10-15")
    assert "templates:write" == ks.canonical("template:write") and "lists:read" == ks.canonical("list:read")


# -- what a configuration needs ---------------------------------------------------------------


def test_the_shipped_collections_need_lists_and_subscriptions_with_reasons() -> None:
    """Derived from the shipped collections: the seven scopes, each naming the row that needs it."""
    for revision in ("2023-10-15", "2026-07-15"):
        needed = ks.required_scopes(_shipped(), Settings(api_revision=revision))
        assert SCOPES == tuple(needed), revision
    needed = ks.required_scopes(_shipped(), Settings())
    list_rows = [r for r in needed["lists:write"] if "LIST_Sms Subscribers" in r.text]
    assert list_rows and list_rows[0].text.startswith(
        "collection 'Add Klaviyo Profile FROM Hub' rows[12] LIST_Sms Subscribers (collections/add-profile-from-hub.yaml:92:5): ")
    assert list_rows[0].location is not None and list_rows[0].location.file.endswith("add-profile-from-hub.yaml")
    assert 92 == list_rows[0].location.line  # the row's line
    assert any("UCLIST_Preview List" in r.text for r in needed["lists:write"])
    assert any("SubscribeProfile" in r.text and "profile-subscription-bulk-create-jobs" in r.text
               for r in needed["subscriptions:write"])
    assert ["Klaviyo asks every OAuth app for accounts:read"] == [r.text for r in needed["accounts:read"]]
    assert any("Placed Order" in r.text and "POST /api/events" in r.text for r in needed["events:write"])


def test_only_enabled_collections_count() -> None:
    """The poll alone needs profiles:read; events off drop events:write; an unmapped
    SubscribeProfile still needs the unsubscribe job's scopes."""
    shipped = _shipped()
    poll = _only(shipped, "Add Klaviyo Profile TO Hub", "Update Klaviyo Profile TO Hub")
    assert ["accounts:read", "profiles:read"] == list(ks.required_scopes(poll, Settings()))
    no_events = ks.required_scopes(shipped, Settings(generate_events=False))
    assert "events:write" not in no_events and "lists:write" in no_events
    add = shipped["Add Klaviyo Profile FROM Hub"]
    bare = replace(add, rows=tuple(r for r in add.rows if r.destination == "EmailAddress" or
                                   not r.destination.startswith(("LIST_", "UCLIST_", "SubscribeProfile"))))
    needed = ks.required_scopes([bare], Settings())
    assert ["accounts:read", "lists:write", "profiles:read", "profiles:write", "subscriptions:write"] == list(needed)
    assert all("SubscribeProfile is not mapped" in r.text for r in needed["subscriptions:write"])


# -- auth login requests them -----------------------------------------------------------------


def test_login_requests_the_derived_scopes_and_extra_ones(sandbox_factory: Any, tmp_path: Path) -> None:
    """The sandbox's authorize endpoint receives the derived scopes plus oauth.scopes' extras."""
    handle = sandbox_factory(oauth_clients={CLIENT_ID: CLIENT_SECRET})
    with SqliteHub(tmp_path / "hub.db") as hub:
        status = _login(handle, tmp_path, hub, scopes=("metrics:read",))
        stored = hub.get_token(PROVIDER)
        assert [] == hub.errors.list()
    [code] = handle.server.oauth.codes.values()
    expected = sorted((*SCOPES, "metrics:read"))
    assert (expected, expected, expected) == (code.asked.split(), stored["scopes"], list(status.scopes))
    assert [] == status.missing_scopes


# -- the sandbox enforces them ----------------------------------------------------------------


@pytest.mark.parametrize("revision", ["2023-10-15", "2026-07-15"])
def test_sandbox_answers_403_permission_denied_for_a_missing_scope(sandbox_factory: Any, tmp_path: Path,
                                                                  revision: str) -> None:
    """A token without lists:write gets Klaviyo's 403 body for list membership; one with it 204;
    a private key is not scope-checked; reads the token has still work."""
    handle = sandbox_factory(oauth_clients={CLIENT_ID: CLIENT_SECRET}, oauth_grant_scopes=NO_LISTS_WRITE)
    list_id = handle.state.add_list("VIP")
    pid = handle.state.add_profile(email="a@example.com")
    with SqliteHub(tmp_path / "hub.db") as hub:
        status = _login(handle, tmp_path, hub)
        narrow = hub.get_token(PROVIDER)["access_token"]
    assert ["lists:write"] == status.missing_scopes
    handle.server.options.oauth_grant_scopes = None
    with SqliteHub(tmp_path / "hub2.db") as hub:
        _login(handle, tmp_path, hub)
        full = hub.get_token(PROVIDER)["access_token"]
    slash = "/" if revision == "2023-10-15" else ""
    url = f"{handle.url}/api/lists/{list_id}/relationships/profiles{slash}"
    body = {"data": [{"type": "profile", "id": pid}]}

    def send(auth: str, method: str = "POST", target: str = url) -> httpx.Response:
        headers = {"Authorization": auth, "revision": revision, "content-type": "application/json",
                   "accept": "application/json"}
        return httpx.request(method, target, headers=headers, json=body if method == "POST" else None, timeout=10)

    denied = send(f"Bearer {narrow}")
    assert 403 == denied.status_code
    [err] = denied.json()["errors"]
    assert isinstance(err.pop("id"), str)
    assert {"status": 403, "code": "permission_denied", "title": "You do not have permission to perform this action.",
            "detail": "The access token is missing the required scope(s): lists:write.",
            "source": {"pointer": "/data/"}, "links": {}, "meta": {}} == err
    assert {} == handle.state.lists[list_id]["members"]  # nothing applied
    assert 200 == send(f"Bearer {narrow}", "GET", f"{handle.url}/api/lists{slash}").status_code
    assert 204 == send(f"Bearer {full}").status_code
    assert 204 == send("Klaviyo-API-Key pk_test_0123456789abcdef").status_code


# -- the engine's 403 names the scope ---------------------------------------------------------


async def test_a_permission_denied_403_is_the_calls_failure_naming_the_scopes() -> None:
    """Klaviyo's 403 permission_denied is a KlaviyoApiError (not the credentials'), naming what the
    call needs from the specs; a 403 of another code stays KlaviyoAuthError."""
    answers = iter([{"code": "permission_denied", "detail": "You do not have permission to perform this action."},
                    {"code": "not_authenticated", "detail": "Incorrect authentication credentials."}])

    def handler(request: httpx.Request) -> httpx.Response:
        err = next(answers)
        return httpx.Response(403, json={"errors": [{"id": "1", "status": 403, "title": "t", **err}]})

    async with KlaviyoClient(base_url="https://a.klaviyo.com", api_key="pk_x123456789",
                             transport=httpx.MockTransport(handler), max_attempts=1) as kl:
        with pytest.raises(KlaviyoApiError) as denied:
            await kl.add_profiles_to_list("L1", ["P1"])
        with pytest.raises(KlaviyoAuthError):
            await kl.add_profiles_to_list("L1", ["P1"])
    assert not isinstance(denied.value, KlaviyoAuthError)
    assert ("Error calling Klaviyo (HTTP 403): You do not have permission to perform this action. "
            "(POST /api/lists/L1/relationships/profiles/ needs the scope(s) lists:write, profiles:write)") == \
        denied.value.message


# -- status and validate report what is missing (real processes) ------------------------------


def _config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "klaviyo-sync.yaml"
    path.write_text(f"api_url: {url}\noauth:\n  client_id: {CLIENT_ID}\n  client_secret: \"${{KLAVIYO_CLIENT_SECRET}}\"\n"
                    "  redirect_url: http://127.0.0.1:8765/callback\n", encoding="utf-8")
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KLAVIYO_CLIENT_SECRET": CLIENT_SECRET, "KLAVIYO_API_KEY": ""}
    env.pop("KLAVIYO_SYNC_CONFIG", None)
    env.pop("KLAVIYO_SYNC_HUB", None)
    return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)


def test_status_and_validate_report_a_missing_scope(sandbox_factory: Any, tmp_path: Path) -> None:
    """After a login granted without lists:write: ``auth status`` (text, JSON) names it with the rows
    that need it; ``validate --config`` warns W020 at the LIST_ row; ``--strict`` fails; no token shown."""
    handle = sandbox_factory(oauth_clients={CLIENT_ID: CLIENT_SECRET}, oauth_grant_scopes=NO_LISTS_WRITE)
    db = tmp_path / "hub.db"
    with SqliteHub(db) as hub:
        _login(handle, tmp_path, hub)
        [warning] = hub.errors.list()
    assert ("Authorization and Connection", "warning", "A013") == (warning["Flow"], warning["Level"], warning["Code"])
    assert warning["Message"].startswith("Klaviyo granted the OAuth connection without the scope(s) lists:write: ")
    config = _config(tmp_path, handle.url)
    common = ["--config", str(config), "--hub", str(db)]

    text = _run("auth", "status", *common)
    as_json = json.loads(_run("auth", "status", "--json", *common).stdout)
    assert 0 == text.returncode, text.stderr
    assert "Missing scopes: lists:write (Klaviyo answers 403 permission_denied" in text.stdout
    assert "  lists:write -- collection 'Add Klaviyo Profile FROM Hub' rows[" in text.stdout
    assert "`klaviyo-sync auth login`" in text.stdout
    assert ["lists:write"] == [m["scope"] for m in as_json["missing_scopes"]]
    assert any("LIST_Sms Subscribers" in r for r in as_json["missing_scopes"][0]["reasons"])
    assert sorted(SCOPES) == sorted(as_json["required_scopes"])

    checked = _run("validate", *common)
    strict = _run("validate", "--strict", *common)
    as_json_v = json.loads(_run("validate", "--json", *common).stdout)
    plain = _run("validate")
    assert (0, 1) == (checked.returncode, strict.returncode), checked.stderr
    lines = [ln for ln in checked.stderr.splitlines() if "W020" in ln]
    assert 1 == len(lines) and lines[0].startswith("warning: collections/add-profile-from-hub.yaml:92:5: W020 "), lines
    assert "was not granted the scope lists:write" in lines[0] and "LIST_Sms Subscribers" in lines[0]
    [w020] = [w for w in as_json_v["warnings"] if w["code"] == "W020"]
    assert (92, 5, True) == (w020["line"], w020["column"], as_json_v["ok"])
    assert "W020" not in plain.stderr  # no settings named: only the collections are checked
    issued = handle.server.oauth.issued_tokens() | {CLIENT_SECRET}
    everything = text.stdout + text.stderr + json.dumps(as_json) + checked.stderr + checked.stdout
    assert [] == [t for t in issued if t in everything]


def test_status_reports_nothing_missing_with_every_scope(sandbox_factory: Any, tmp_path: Path) -> None:
    """A connection granted every derived scope: no missing-scope lines, an empty list in JSON."""
    handle = sandbox_factory(oauth_clients={CLIENT_ID: CLIENT_SECRET})
    with SqliteHub(tmp_path / "hub.db") as hub:
        _login(handle, tmp_path, hub)
        status = connection_status(Settings(api_url=handle.url, oauth=OAuthSettings(client_id=CLIENT_ID)), hub)
    assert ([], [], "Missing scopes" in "\n".join(status.lines())) == (
        status.missing_scopes, status.to_dict()["missing_scopes"], False)


# -- a dispatch with a token lacking lists:write ----------------------------------------------


def test_dispatch_without_lists_write_logs_each_record_and_goes_on(outbound_factory: Any, tmp_path: Path) -> None:
    """Profiles are still created and linked; each record's list calls fail with the 403 naming
    lists:write, logged on that record; the run is not stopped and nothing is left queued."""
    env = outbound_factory(oauth_clients={CLIENT_ID: CLIENT_SECRET}, oauth_grant_scopes=NO_LISTS_WRITE)
    status = asyncio.run(login(oauth_settings(env.sandbox, tmp_path), env.hub, open_url=follow, timeout=10))
    assert ["lists:write"] == status.missing_scopes
    ids = [env.hub.add_customer({"EmailAddress": f"p{n}@example.com", "CustomerNumber": f"C-{n}",
                                 "FirstName": "Ann"})["Id"] for n in (1, 2)]
    env = env.with_settings(oauth=OAuthSettings(client_id=CLIENT_ID, client_secret=oauth_settings(
        env.sandbox, tmp_path).oauth.client_secret), api_key=None)
    report = env.dispatch()

    assert report.error is None
    assert all(env.hub.get_klaviyo_id("Customer", i) for i in ids)
    assert {"p1@example.com", "p2@example.com"} == {p["attributes"]["email"] for p in env.all_profiles()}
    assert 0 == env.hub.queue_length()
    denied = [e for e in env.hub.errors.list() if "HTTP 403" in e["Message"]]
    # per Customer: the subscribe job (LIST_Sms Subscribers) and the list membership (UCLIST_Preview List)
    assert sorted([("Customer", i) for i in ids] * 2) == sorted((e["Entity"], e["HubId"]) for e in denied)
    subscribe = ("Error calling Klaviyo (HTTP 403): The access token is missing the required scope(s): lists:write. "
                 "(POST /api/profile-subscription-bulk-create-jobs/ needs the scope(s) lists:write, profiles:write, "
                 "subscriptions:write) [source: /data/]")
    assert 2 == sum(e["Message"] == subscribe for e in denied), [e["Message"] for e in denied]
    assert all("missing the required scope(s): lists:write" in e["Message"] and "error" == e["Level"]
               for e in denied)
    assert not any(e["Flow"] == "Send hub changes TO Klaviyo" for e in env.hub.errors.list())  # not a run stop
