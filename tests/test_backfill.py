"""`backfill customers`: bulk profile import jobs against the real sandbox and a real hub file."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from _hub_fixtures import store_legacy_email
from _outbound_fixtures import OUTBOUND_KEY
from test_outbound_profiles import _customer

from engine.connect import open_client
from engine.flows.backfill import BackfillReport, backfill_customers
from engine.hub import SqliteHub

ROOT = Path(__file__).resolve().parent.parent
REVISION = "2026-07-15"


def _backfill(env: Any, **kw: Any) -> BackfillReport:
    async def main() -> BackfillReport:
        if kw.get("dry_run"):
            return await backfill_customers(env.settings, env.hub, None, env.collections, **kw)
        async with open_client(env.settings, env.hub, **env.client_options) as client:
            return await backfill_customers(env.settings, env.hub, client, env.collections, poll_initial=0.05,
                                            poll_max=0.2, **kw)

    return asyncio.run(main())


def _imports(env: Any) -> int:
    return sum(1 for j in env.sandbox.state.jobs.values() if j.get("type") == "profile-bulk-import-job")


def test_backfill_imports_links_lists_and_consent(outbound_factory) -> None:
    """Unlinked Customers go in one import job; each is linked, on both lists, and subscribed."""
    env = outbound_factory(revision=REVISION)
    for n in range(1, 31):
        _customer(env.hub, n)
    report = _backfill(env)
    assert {"Add Klaviyo Profile FROM Hub": {"linked": 30}} == report.summary.to_dict()["flows"]
    assert 1 == _imports(env) == report.summary.calls["bulk_import_profiles"]
    profiles = {p["attributes"]["email"]: p for p in env.all_profiles()}
    assert {f"person{n}@example.com" for n in range(1, 31)} == set(profiles)
    for n in range(1, 31):
        pid = env.hub.get_klaviyo_id("Customer", n)
        assert profiles[f"person{n}@example.com"]["id"] == pid
    members = env.list_members("Preview List")
    assert members == env.list_members("Sms Subscribers") == {p["id"] for p in profiles.values()}
    consent = env.profile(env.hub.get_klaviyo_id("Customer", 7))["attributes"]["subscriptions"]
    assert "SUBSCRIBED" == consent["email"]["marketing"]["consent"]
    assert "Ann" == profiles["person7@example.com"]["attributes"]["first_name"]
    assert env.hub.get_state("backfill:customers") is None


def test_a_large_job_is_read_back_by_email_lookups_beside_its_profiles_pages(outbound_factory) -> None:
    """A job of 1,500 profiles: its ``profiles`` pages (tier M) and email lookups (tier L) are read
    at once, from both ends, and stop once every Customer has its profile (before the last page);
    each Customer is linked to the profile holding its email."""
    env = outbound_factory(revision=REVISION, lists=())
    for n in range(1, 1501):
        env.hub.add_customer({"EmailAddress": f"many{n}@example.com", "CustomerNumber": f"M{n}"})
    env.remap_lists_away()
    report = _backfill(env)
    calls = report.summary.calls
    assert 1 == calls["bulk_import_profiles"]
    assert calls.get("get_profiles", 0) >= 1  # email lookups ran
    assert calls["get_bulk_import_job_profiles"] < 15, calls  # of its 15 pages
    assert {"Add Klaviyo Profile FROM Hub": {"linked": 1500}} == report.summary.to_dict()["flows"]
    profiles = {p["attributes"]["email"]: p["id"] for p in env.all_profiles()}
    assert 1500 == len(profiles) == env.hub.link_count("Customer")
    assert all(profiles[f"many{n}@example.com"] == env.hub.get_klaviyo_id("Customer", n) for n in range(1, 1501))


def test_a_rerun_sends_only_customers_not_yet_linked_and_all_sends_every_one(outbound_factory) -> None:
    """A second backfill has nothing to send; --all updates every linked profile by its id."""
    env = outbound_factory(revision=REVISION)
    for n in range(1, 6):
        _customer(env.hub, n)
    _backfill(env)
    again = _backfill(env)
    assert ({}, 1) == (again.summary.to_dict()["flows"], _imports(env))
    env.hub.update_customer(3, {"FirstName": "Zed"})
    every = _backfill(env, include_linked=True)
    assert {"Update Klaviyo Profile FROM Hub": {"updated": 5}} == every.summary.to_dict()["flows"]
    pid = env.hub.get_klaviyo_id("Customer", 3)
    assert "Zed" == env.profile(pid)["attributes"]["first_name"]
    assert 5 == len(env.all_profiles())


def test_each_import_error_is_logged_on_its_record(outbound_factory, tmp_path) -> None:
    """A profile Klaviyo's job refuses is logged on its Customer with Klaviyo's detail; the rest are linked."""
    env = outbound_factory(revision=REVISION)
    for n in range(1, 5):
        _customer(env.hub, n)
    store_legacy_email(env.hub, 3, "not-an-email")
    report = _backfill(env)
    assert {"linked": 3, "failed": 1} == report.summary.to_dict()["flows"]["Add Klaviyo Profile FROM Hub"]
    assert [None, None] == [env.hub.get_klaviyo_id("Customer", 3), None]
    [entry] = env.hub.errors.list(level="error")
    assert (3, "K001") == (entry["HubId"], entry["Code"])
    assert entry["Message"].startswith("Error calling Klaviyo (bulk import job ")
    assert "[source: /data/attributes/profiles/data/2" in entry["Message"]
    assert 3 == len(env.all_profiles())


def test_jobs_are_split_at_five_megabytes(outbound_factory) -> None:
    """Profiles of about 90 KB each go in two jobs, each body under Klaviyo's 5 MB."""
    env = outbound_factory(revision=REVISION)
    for n in range(1, 61):
        _customer(env.hub, n, Company=f"{n}-" + "x" * 90_000)
    report = _backfill(env)
    assert [2, 60] == [len(report.jobs), sum(j["profiles"] for j in report.jobs)]
    assert all(j["bytes"] <= 5_000_000 for j in report.jobs)
    assert 60 == env.hub.link_count("Customer") == len(env.sandbox.state.profiles)


def test_dry_run_shows_the_jobs_and_sends_nothing(outbound_factory) -> None:
    """A dry run packs the jobs and shows their first records; Klaviyo and the hub stay as they were."""
    env = outbound_factory(revision=REVISION)
    for n in range(1, 4):
        _customer(env.hub, n)
    report = _backfill(env, dry_run=True)
    [job] = report.to_dict()["jobs"]
    assert (3, ["Preview List", "Sms Subscribers"], [1, 3]) == (job["profiles"], job["lists"], job["hub_ids"])
    assert "person1@example.com" == job["first_records"][0]["profile"]["attributes"]["email"]
    assert (0, 0, 0) == (len(env.sandbox.state.profiles), _imports(env), env.hub.link_count("Customer"))
    assert env.hub.get_state("backfill:customers") is None


def _settings_file(folder: Path, url: str, revision: str) -> Path:
    path = folder / "klaviyo-sync.yaml"
    path.write_text(f"api_url: {url}\napi_key: {OUTBOUND_KEY}\nhub: hub.db\napi_revision: '{revision}'\n")
    return path


def _cli(settings: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "KLAVIYO_SYNC_CONFIG": str(settings), "KLAVIYO_API_KEY": ""}
    return subprocess.Popen([sys.executable, "-m", "engine", *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_revision_2023_10_15_stops_with_an_error_naming_api_revision(sandbox, tmp_path) -> None:
    """At 2023-10-15 (no bulk import) the command exits 2 naming api_revision; nothing is sent."""
    settings = _settings_file(tmp_path, sandbox.url, "2023-10-15")
    with SqliteHub(tmp_path / "hub.db") as hub:
        hub.add_customer({"EmailAddress": "a@example.com", "CustomerNumber": "1"})
    proc = _cli(settings, "backfill", "customers")
    out, err = proc.communicate(timeout=60)
    assert (2, "") == (proc.returncode, out)
    assert "S020 backfill needs Klaviyo's bulk profile import jobs, which start at API revision 2023-12-15; " \
           "api_revision is 2023-10-15" in err
    assert f"set api_revision to 2023-12-15 or later in {settings}" in err
    assert "Traceback" not in err and 0 == len(sandbox.state.profiles)


def _serve(tmp_path: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "engine", "sandbox", "serve", "--port", "0", "--json",
                             "--no-rate-limits", "--job-delay", "0.4", "--seed", "3"], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    return proc, json.loads(proc.stdout.readline())["url"]


def _emails(url: str) -> Counter[str]:
    found: Counter[str] = Counter()
    with httpx.Client(base_url=url, headers={"Authorization": f"Klaviyo-API-Key {OUTBOUND_KEY}",
                                             "revision": REVISION}) as http:
        params: dict[str, Any] = {"page[size]": 100}
        while True:
            body = http.get("/api/profiles", params=params).json()
            found.update(p["attributes"]["email"] for p in body["data"])
            nxt = (body.get("links") or {}).get("next")
            if not nxt:
                return found
            params["page[cursor]"] = httpx.URL(nxt).params["page[cursor]"]


def _job_stored(hub_file: Path) -> bool:
    with SqliteHub(hub_file) as hub:
        return bool(hub.get_state("backfill:customers:pending") or (hub.get_state("backfill:customers") or {}).get("jobs"))


def _event_ids(url: str) -> Counter[tuple[str, str]]:
    """(metric name, unique id) of every event in the sandbox."""
    found: Counter[tuple[str, str]] = Counter()
    with httpx.Client(base_url=url, headers={"Authorization": f"Klaviyo-API-Key {OUTBOUND_KEY}",
                                             "revision": REVISION}) as http:
        params: dict[str, Any] = {"include": "metric"}
        while True:
            body = http.get("/api/events", params=params).json()
            names = {m["id"]: m["attributes"]["name"] for m in body.get("included", [])}
            found.update((names[e["relationships"]["metric"]["data"]["id"]],
                          e["attributes"]["event_properties"]["$event_id"]) for e in body["data"])
            nxt = (body.get("links") or {}).get("next")
            if not nxt:
                return found
            params["page[cursor]"] = httpx.URL(nxt).params["page[cursor]"]


def _killed_runs(settings: Path, command: str, rng: random.Random, wait: Any = None) -> int:
    """Three runs of ``backfill <command>``, each SIGKILLed at a random moment (the last one once
    ``wait()`` says it got somewhere); returns how many were killed before they finished."""
    kills = 0
    for last in (False, False, True):
        proc = _cli(settings, "backfill", command, "--json")
        time.sleep(rng.uniform(0.2, 1.5))
        while last and wait is not None and proc.poll() is None and not wait():
            time.sleep(0.01)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.communicate(timeout=120)
    return kills


def test_killed_backfills_resume_and_send_each_customer_and_order_once(tmp_path) -> None:
    """SIGKILL at random points of `backfill customers` (20,000 Customers) and then of `backfill
    transactions` (2,000 orders), then reruns: the sandbox holds every Customer's profile once and
    every order's events once, and every Customer is linked."""
    server, url = _serve(tmp_path)
    try:
        customers, orders = 20_000, 2_000
        with SqliteHub(tmp_path / "hub.db") as hub, hub.transaction():
            for n in range(1, customers + 1):
                hub.add_customer({"EmailAddress": f"bulk{n}@example.com", "CustomerNumber": str(n)})
            for t in range(1, orders + 1):
                hub.upsert_transaction({"TransactionNumber": f"K-{t}", "CustomerId": 1 + (7 * t) % customers,
                                        "Total": 1.0 * t, "Lines": [{"Sku": f"S{t}", "Description": "Item", "Qty": 1,
                                                                     "UnitPrice": 1.0, "ExtendedPrice": 1.0}]})
        settings = _settings_file(tmp_path, url, REVISION)
        (tmp_path / "collections").mkdir()
        for src in (ROOT / "collections").glob("*-from-hub.yaml"):  # no lists in the sandbox: keep it plain
            text = src.read_text().replace("LIST_Sms Subscribers", "properties.sms").replace(
                "UCLIST_Preview List", "properties.preview")
            (tmp_path / "collections" / src.name).write_text(text)
        with settings.open("a") as fh:
            fh.write(f"collections: {tmp_path / 'collections'}\n")
        rng = random.Random(17)
        kills = _killed_runs(settings, "customers", rng, wait=lambda: _job_stored(tmp_path / "hub.db"))
        final = _cli(settings, "backfill", "customers", "--json")
        out, err = final.communicate(timeout=600)
        assert 0 == final.returncode, err
        report = json.loads(out)
        assert (0, True, 3) == (report["errors"], report["resumed"], kills), report["notes"]
        emails = _emails(url)
        assert {f"bulk{n}@example.com": 1 for n in range(1, customers + 1)} == dict(emails)
        with SqliteHub(tmp_path / "hub.db") as hub:
            assert customers == hub.link_count("Customer")
            assert hub.get_state("backfill:customers") is None

        def some_sent() -> bool:
            with SqliteHub(tmp_path / "hub.db") as hub:
                return bool(hub.get_state("backfill:transactions"))

        tx_kills = _killed_runs(settings, "transactions", rng, wait=some_sent)
        final = _cli(settings, "backfill", "transactions", "--json")
        out, err = final.communicate(timeout=600)
        assert 0 == final.returncode, err
        assert (0, True) == (json.loads(out)["errors"], tx_kills > 0)
        events = _event_ids(url)
        assert {1} == set(events.values())  # no event twice
        placed = sorted(uid for metric, uid in events if metric == "Placed Order")
        assert (orders, orders) == (len(placed), sum(1 for metric, _ in events if metric == "Ordered Product"))
        assert len(emails) == len(_emails(url))  # the orders went to the linked profiles: none was added
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(10)
        assert server.stdout is not None
        server.stdout.close()


