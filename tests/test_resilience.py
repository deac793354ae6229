"""The resilience suite: both directions end to end against the sandbox's fault injection and
against processes killed at random points, with hostile inputs in the same runs.

Every check reads Klaviyo's side back through the API (as a user would) and the hub's side from
the real SQLite file: nothing lost (every hub change in Klaviyo, every changed profile in the
hub), nothing duplicated (no second profile, no second event), errors logged with the catalog
texts, and the rest of each run going on past every bad record.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from engine import catalog
from engine.collection import load_collections
from engine.flows._inbound_cursor import PollCursor
from engine.flows.inbound import InboundFlow
from engine.flows.outbound import dispatch, open_outbound_client
from engine.flows.summary import RunSummary
from engine.hub import SqliteHub, import_jsonl
from engine.klaviyo import KlaviyoClient
from engine.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
KEY = "pk_resilience_0000000001"
FAST = {"backoff_base": 0.01, "backoff_max": 0.05, "retry_after_cap": 0.3, "timeout": 0.4, "max_attempts": 10}


def _customers(n: int) -> list[dict[str, Any]]:
    return [{"Id": i, "EmailAddress": f"res{i}@example.com", "CustomerNumber": f"R-{i}", "FirstName": f"F{i}",
             "Phone": f"+1 212 555 {3000 + i:04d}",
             "Addresses": [{"Address1": f"{i} Main St", "City": "Boston", "Country": "US", "IsPrimaryBilling": True}]}
            for i in range(1, n + 1)]


def _transactions(n: int, customers: int) -> list[dict[str, Any]]:
    return [{"Id": 7000 + i, "TransactionNumber": f"SO-{7000 + i}", "CustomerId": 1 + i % customers,
             "EmailAddress": f"res{1 + i % customers}@example.com", "Total": 20.0,
             "Lines": [{"Id": 70000 + 10 * i + k, "Sku": f"S{k}", "Description": "x", "Qty": 1, "UnitPrice": 10.0,
                        "ExtendedPrice": 10.0} for k in range(2)]}
            for i in range(1, n + 1)]


HOSTILE_CUSTOMER_LINES = [
    '{"Id": 900, "EmailAddress": "broken@example.com", ',                 # malformed JSON
    '["not", "an", "object"]',                                            # not an object
    '{"Id": 901, "CustomerNumber": "R-901"}',                             # missing required email
    '{"Id": "nine-oh-two", "EmailAddress": "typed@example.com", "CustomerNumber": 5}',  # wrong types
]


def _write(folder: Path, customers: int, transactions: int, hostile: bool) -> tuple[Path, Path]:
    cpath, tpath = folder / "customers.jsonl", folder / "transactions.jsonl"
    lines = [json.dumps(c) for c in _customers(customers)]
    if hostile:
        lines[3:3] = HOSTILE_CUSTOMER_LINES
    cpath.write_text("\n".join(lines) + "\n")
    tpath.write_text("\n".join(json.dumps(t) for t in _transactions(transactions, customers)) + "\n")
    return cpath, tpath


def _settings_file(folder: Path, url: str) -> Path:
    path = folder / "klaviyo-sync.yaml"
    path.write_text(f"api_url: {url}\napi_key: {KEY}\nhub: hub.db\ngenerate_events: TRUE\n"
                    "outbound_triggers: {customer: true, transaction: true}\n")
    return path


def _read_klaviyo(url: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    async def main() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        async with KlaviyoClient(base_url=url, api_key=KEY, timeout=10.0) as kl:
            profiles = [p async for p in kl.iter_profiles(page_size=100)]
            events = await kl.get_events()
            return profiles, events

    return asyncio.run(main())


def _assert_exactly_once(url: str, hub: SqliteHub, customers: int, transactions: int) -> None:
    """Every hub Customer is one Klaviyo profile; every transaction one Placed Order and one
    Ordered Product per line; every Klaviyo profile with an email is one hub Customer."""
    profiles, events = _read_klaviyo(url)
    emails = [p["attributes"]["email"] for p in profiles if p["attributes"].get("email")]
    assert len(emails) == len(set(emails)), "a Klaviyo profile was duplicated"
    for i in range(1, customers + 1):
        assert f"res{i}@example.com" in emails, f"customer {i} never reached Klaviyo"
    keys = [(e["included"]["metric"]["attributes"]["name"], e["attributes"]["event_properties"].get("$event_id"))
            for e in events]
    assert len(keys) == len(set(keys)), "an event was recorded twice"
    placed = {k for m, k in keys if m == "Placed Order"}
    products = {k for m, k in keys if m == "Ordered Product"}
    assert placed == {str(7000 + i) for i in range(1, transactions + 1)}
    assert products == {f"{7000 + i}-{70000 + 10 * i + k}" for i in range(1, transactions + 1) for k in range(2)}
    hub_emails = [c["EmailAddress"] for c in hub.iter_customers()]
    assert len(hub_emails) == len(set(hub_emails))
    for p in profiles:
        if p["attributes"].get("email"):
            assert hub.get_hub_id("Customer", p["id"]) is not None, f"profile {p['id']} never reached the hub"


def test_both_directions_survive_every_fault_at_once(sandbox_factory, tmp_path: Path) -> None:
    """429 storms, 5xx, timeouts after the request was applied and dropped connections together:
    dispatch then poll deliver everything exactly once, and hostile lines are reported, not fatal."""
    sb = sandbox_factory(fault_5xx=0.12, fault_timeout=0.06, timeout_hold_s=0.8, fault_drop=0.05,
                         rate_limits=True, tiers={"L": {"burst": 6, "steady": 60}, "XL": {"burst": 8, "steady": 120},
                                                  "M": {"burst": 3, "steady": 30}},
                         rate_window_scale=0.05, seed=11)
    for i in range(8):  # profiles made in Klaviyo, to come inbound
        sb.state.add_profile(email=f"kl{i}@example.org", first_name=f"K{i}",
                             location={"address1": f"{i} Elm", "city": "Paris", "country": "France"})
    sb.state.add_profile(phone_number="+16175550000", first_name="NoEmail")
    cpath, tpath = _write(tmp_path, customers=12, transactions=6, hostile=True)
    settings = load_settings(_settings_file(tmp_path, sb.url))
    collections = load_collections([settings.collections_dir]).collections
    hub = SqliteHub(settings.hub_path, outbound_triggers={"Customer", "Transaction"})
    try:
        rep = import_jsonl(hub, "customers", cpath)
        assert (12, [4, 5, 6, 7]) == (rep.imported, sorted(e.location.line for e in rep.errors))
        assert import_jsonl(hub, "transactions", tpath).imported == 6

        async def outbound() -> dict[str, Any]:
            client, _ = open_outbound_client(settings, hub, **FAST)
            async with client:
                return (await dispatch(settings, hub, client, collections)).summary.to_dict()

        for _ in range(6):  # a change whose every attempt failed is released for a later dispatch
            asyncio.run(outbound())
            if not hub.queue_length():
                break
            for change in hub.pending_changes(None):
                hub.release_change(change)
        assert 0 == hub.queue_length()

        async def inbound() -> InboundFlow:
            async with KlaviyoClient(base_url=sb.url, api_key=KEY, **FAST) as client:
                flow = InboundFlow(hub, client, collections, summary=RunSummary("poll"))
                await flow.poll()
                return flow

        for _ in range(6):  # a poll Klaviyo cut short resumes from its cursor
            flow = asyncio.run(inbound())
            if flow.error is None and not PollCursor.load(hub).retry:
                break
        assert flow.error is None
        assert [] == PollCursor.load(hub).retry, "a profile stayed on the retry list"
        _assert_exactly_once(sb.url, hub, customers=12, transactions=6)
        messages = {e["Message"] for e in hub.errors.list(limit=1000)}
        assert catalog.EMAIL_REQUIRED in messages
        assert sum(sb.options.counters.values()) > 0, "no fault was injected: the test proved nothing"
    finally:
        hub.close()


def _cli(settings: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "KLAVIYO_SYNC_CONFIG": str(settings), "KLAVIYO_API_KEY": ""}
    return subprocess.Popen([sys.executable, "-m", "engine", *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _run_to_end(settings: Path, *args: str) -> None:
    proc = _cli(settings, *args)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err


@pytest.mark.parametrize("seed", [1, 2])
def test_processes_killed_at_random_points_lose_and_duplicate_nothing(sandbox_factory, tmp_path: Path,
                                                                      seed: int) -> None:
    """dispatch and poll SIGKILLed at random moments, then rerun: everything arrives exactly once."""
    rnd = random.Random(seed)
    sb = sandbox_factory(latency_ms=25, seed=seed)
    for i in range(40):
        sb.state.add_profile(email=f"kl{i}@example.org", first_name=f"K{i}")
    cpath, tpath = _write(tmp_path, customers=25, transactions=15, hostile=False)
    settings = _settings_file(tmp_path, sb.url)
    _run_to_end(settings, "hub", "import", "customers", str(cpath))
    _run_to_end(settings, "hub", "import", "transactions", str(tpath))
    for command in (["dispatch", "--batch", "5", "--lease", "1"], ["poll"]):
        for _ in range(3):
            proc = _cli(settings, *command)
            time.sleep(rnd.uniform(0.2, 1.2))
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=10)
        time.sleep(1.1)  # the killed dispatch's lease runs out
        _run_to_end(settings, *command)
    hub = SqliteHub(tmp_path / "hub.db")
    try:
        assert 0 == hub.queue_length()
        _assert_exactly_once(sb.url, hub, customers=25, transactions=15)
    finally:
        hub.close()


def test_a_hostile_collection_stops_the_run_before_anything_is_written(sandbox_factory, tmp_path: Path) -> None:
    """A collection with a sandbox-escape formula is refused with file:line:col; the hub and its
    queue are untouched, and a valid run afterwards delivers everything."""
    sb = sandbox_factory()
    cpath, tpath = _write(tmp_path, customers=3, transactions=1, hostile=False)
    settings = _settings_file(tmp_path, sb.url)
    bad = tmp_path / "collections"
    bad.mkdir()
    for f in (ROOT / "collections").glob("*.yaml"):
        (bad / f.name).write_text(f.read_text())
    target = bad / "add-profile-from-hub.yaml"
    shipped = target.read_text()
    phone_row = 'formula: e164(Phone, get(billing, "Country", None))'
    assert phone_row in shipped, "the shipped phone row changed: update this test's hostile edit"
    target.write_text(shipped.replace(phone_row, "formula: ().__class__.__bases__[0].__subclasses__()"))
    settings.write_text(settings.read_text() + f"collections: {bad}\n")
    _run_to_end(settings, "hub", "import", "customers", str(cpath))
    proc = _cli(settings, "dispatch")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "add-profile-from-hub.yaml:" in err and "F005" in err and "names starting with '_' are private" in err
    hub = SqliteHub(tmp_path / "hub.db")
    try:
        assert 3 == hub.queue_length()
    finally:
        hub.close()
    assert [] == _read_klaviyo(sb.url)[0]
    target.write_text((ROOT / "collections" / "add-profile-from-hub.yaml").read_text())
    _run_to_end(settings, "dispatch")
    assert 3 == len(_read_klaviyo(sb.url)[0])


def test_bad_records_do_not_stop_the_run(sandbox_factory, tmp_path: Path) -> None:
    """Records with a wrongly typed or oversized value fail alone, with a clear logged error; the
    records around them are delivered."""
    sb = sandbox_factory()
    settings_path = _settings_file(tmp_path, sb.url)
    settings = load_settings(settings_path)
    collections_dir = tmp_path / "collections"
    collections_dir.mkdir()
    for f in (ROOT / "collections").glob("*.yaml"):
        (collections_dir / f.name).write_text(f.read_text())
    # a remapped row that reads a list position most customers do not have
    target = collections_dir / "add-profile-from-hub.yaml"
    target.write_text(target.read_text().replace(
        "    source: Company\n    destination: organization\n",
        "    source: CustomFields.Tags[0]\n    destination: organization\n    expect: string\n"))
    collections = load_collections([collections_dir]).collections
    hub = SqliteHub(settings.hub_path, outbound_triggers={"Customer"})
    try:
        hub.add_customer({"EmailAddress": "ok1@example.com", "CustomerNumber": "1"})
        hub.add_customer({"EmailAddress": "typed@example.com", "CustomerNumber": "2",
                          "CustomFields": {"Tags": [42]}})                      # a number where a string goes
        hub.add_customer({"EmailAddress": "big@example.com", "CustomerNumber": "3",
                          "FirstName": "x" * 2_000_000})                          # an oversized value
        hub.add_customer({"EmailAddress": "ok2@example.com", "CustomerNumber": "4",
                          "CustomFields": {"Tags": ["VIP"]}})

        async def run() -> dict[str, Any]:
            client, _ = open_outbound_client(settings, hub, **FAST)
            async with client:
                return (await dispatch(settings, hub, client, collections)).summary.to_dict()

        summary = asyncio.run(run())
        assert 0 == hub.queue_length()
        emails = {p["attributes"]["email"]: p for p in _read_klaviyo(sb.url)[0]}
        assert {"ok1@example.com", "ok2@example.com"} <= set(emails)
        assert "typed@example.com" not in emails
        assert "VIP" == emails["ok2@example.com"]["attributes"]["organization"]
        log = hub.errors.list(limit=100)
        typed = [e for e in log if e["HubId"] == 2]
        assert typed and "organization must be string, got int 42" in (typed[0]["Detail"] or "") + typed[0]["Message"]
        big = [e for e in log if e["HubId"] == 3]
        assert "big@example.com" not in emails
        assert ["K001"] == [e["Code"] for e in big]
        assert big[0]["Message"].startswith(f"{catalog.ERROR_CALLING_KLAVIYO} (HTTP 413)")
        assert summary["flows"]["Add Klaviyo Profile FROM Hub"].get("created", 0) >= 2
    finally:
        hub.close()


def test_a_broken_collection_stops_poll_before_the_cursor_moves(sandbox_factory, tmp_path: Path) -> None:
    """poll with a collection that does not parse exits 1 naming file:line:col, and writes nothing."""
    sb = sandbox_factory()
    sb.state.add_profile(email="waiting@example.org")
    settings = _settings_file(tmp_path, sb.url)
    bad = tmp_path / "collections"
    bad.mkdir()
    for f in (ROOT / "collections").glob("*.yaml"):
        (bad / f.name).write_text(f.read_text())
    (bad / "add-profile-address-to-hub.yaml").write_text("title: [unclosed\n")
    settings.write_text(settings.read_text() + f"collections: {bad}\n")
    proc = _cli(settings, "poll")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "add-profile-address-to-hub.yaml:2:1: C001 YAML syntax error" in err
    hub = SqliteHub(tmp_path / "hub.db")
    try:
        assert (None, []) == (hub.get_cursor("profiles"), list(hub.iter_customers()))
    finally:
        hub.close()
