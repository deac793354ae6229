"""The outbound queue at work: dry runs, transient failures, faults, a killed dispatch, the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from _hub_fixtures import store_legacy_email
from _outbound_fixtures import OUTBOUND_KEY
from test_outbound_orders import _transaction
from test_outbound_profiles import _customer

ROOT = Path(__file__).resolve().parent.parent


def _exactly_once(env: Any, customers: int, transactions: int, lines: int) -> None:
    """Every Customer has one profile and one link; every order and line one event."""
    emails = Counter(p["attributes"]["email"] for p in env.all_profiles())
    assert {f"person{n}@example.com": 1 for n in range(1, customers + 1)} == dict(emails)
    for n in range(1, customers + 1):
        assert env.hub.get_klaviyo_id("Customer", n) is not None
    placed = Counter(e["attributes"]["event_properties"]["$event_id"] for e in env.events("Placed Order"))
    assert {str(t): 1 for t in range(1, transactions + 1)} == dict(placed)
    assert transactions * lines == len(env.events("Ordered Product"))
    assert 0 == env.hub.queue_length()


def _shop(env: Any, customers: int, transactions: int, lines: int = 2) -> None:
    for n in range(1, customers + 1):
        _customer(env.hub, n)
    for t in range(1, transactions + 1):
        _transaction(env.hub, (t - 1) % customers + 1, email=f"person{(t - 1) % customers + 1}@example.com",
                     lines=lines, number=f"SO-{t}")


def test_dry_run_shows_decisions_and_requests_and_changes_nothing(outbound) -> None:
    """A dry run reports each record's match and exact requests; Klaviyo, hub and queue stay as they were."""
    pid = outbound.sandbox.state.add_profile(email="person1@example.com")
    _customer(outbound.hub, 1)
    _customer(outbound.hub, 2)
    before = outbound.hub.pending_changes()
    report = outbound.dispatch(dry_run=True)
    matched, created = report.results
    # The batch's email lookup (one read for both Customers, shown on no record) found the profile:
    assert f"no link; email lookup: matched existing profile {pid} by email, partial update" == \
        matched.decision
    assert ["PATCH", "GET", "GET", "GET", "GET", "POST", "POST"] == [r.method for r in matched.requests]
    assert {"filter": 'equals(phone_number,"+12125550101")'} == matched.requests[2].params  # PATCH's phone check
    assert f"200 (profile {pid})" == matched.requests[0].answer
    assert f"/api/profiles/{pid}/" == matched.requests[0].path
    assert {"data": {"type": "profile", "id": pid, "attributes": {
        "email": "person1@example.com", "phone_number": "+12125550101", "first_name": "Ann", "last_name": "Lee",
        "organization": "Acme", "properties": {"My Custom": "Example values"}}}} == matched.requests[0].body
    assert matched.requests[1].read_only and not matched.requests[0].read_only
    assert ["POST"] == [r.method for r in created.requests if not r.read_only][:1]
    assert "created" == created.outcome and created.klaviyo_id.startswith("dry-run-new-")
    assert [pid] == [p["id"] for p in outbound.all_profiles()]
    assert set() == outbound.list_members("Preview List")
    assert before == outbound.hub.pending_changes()
    assert outbound.hub.get_klaviyo_id("Customer", 1) is None and [] == outbound.hub.errors.list()


def test_transient_failure_stays_queued_then_is_logged_after_the_last_attempt(outbound_factory) -> None:
    """A change failing for a reason that may pass is released (warning); the last attempt logs and acks it."""
    env = outbound_factory(fault_5xx=1.0)
    _customer(env.hub)
    report = env.dispatch()
    assert 1 == env.hub.queue_length()
    [warning] = env.hub.errors.list()
    assert ("warning", True) == (warning["Level"], warning["Message"].startswith("Error calling Klaviyo (HTTP 503)"))
    assert "will retry: attempt 1 of 5" in warning["Detail"]
    assert any("stay queued" in n for n in report.summary.notes)
    env.hub.release_change(env.hub.pending_changes()[0])
    env.dispatch(max_attempts=2)
    assert 0 == env.hub.queue_length()
    assert "error" == env.hub.errors.list()[0]["Level"]


def test_429_5xx_and_timeouts_lose_and_duplicate_nothing(outbound_factory) -> None:
    """Under throttling, 503s, timeouts after apply and dropped connections, everything arrives once."""
    env = outbound_factory(fault_5xx=0.15, fault_timeout=0.08, fault_drop=0.05, timeout_hold_s=0.6,
                           rate_limits=True, rate_window_scale=0.05,
                           tiers={"L": {"burst": 4, "steady": 40}, "XL": {"burst": 5, "steady": 50},
                                  "M": {"burst": 3, "steady": 30}})
    env.client_options.update(timeout=0.3, max_attempts=8)
    _shop(env, customers=12, transactions=8)
    retries = 0
    for _ in range(6):  # what the client gave up on stays queued: release it (as the lease would) and rerun
        retries += env.dispatch().summary.to_dict()["calls"].get("retries", 0)
        if not env.hub.queue_length():
            break
        for change in env.hub.pending_changes(None):
            env.hub.release_change(change)
    _exactly_once(env, customers=12, transactions=8, lines=2)
    assert retries > 0
    assert sum(env.sandbox.options.counters.values()) > 0


def _write_settings(folder: Path, url: str) -> Path:
    path = folder / "klaviyo-sync.yaml"
    path.write_text(f"api_url: {url}\napi_key: {OUTBOUND_KEY}\nhub: hub.db\n"
                    "outbound_triggers:\n  customer: true\n  transaction: true\n"
                    "throttling:\n  max_concurrency: 4\n")
    return path


def _cli(settings: Path, *args: str, quiet: bool = False) -> subprocess.Popen[str]:
    env = {**os.environ, "KLAVIYO_SYNC_CONFIG": str(settings), "KLAVIYO_API_KEY": ""}
    pipe = subprocess.DEVNULL if quiet else subprocess.PIPE
    return subprocess.Popen([sys.executable, "-m", "engine", *args], cwd=ROOT, env=env, text=True,
                            stdout=pipe, stderr=pipe)


@pytest.mark.sqlite_only("runs the CLI on the hub file")
def test_killed_dispatch_rerun_delivers_everything_exactly_once(outbound_factory, tmp_path) -> None:
    """SIGKILL in the middle of `dispatch`, then a rerun after the lease: each change delivered once."""
    env = outbound_factory(latency_ms=40)
    _shop(env, customers=30, transactions=20)
    settings = _write_settings(tmp_path, env.sandbox.url)
    proc = _cli(settings, "dispatch", "--batch", "8", "--lease", "1", quiet=True)
    deadline = time.monotonic() + 30
    while len(env.sandbox.state.events) < 6 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert 0 < env.hub.queue_length()
    time.sleep(1.1)
    rerun = _cli(settings, "dispatch", "--lease", "1", "--json")
    out, err = rerun.communicate(timeout=60)
    assert 0 == rerun.returncode, err
    assert 0 == json.loads(out)["errors"]
    _exactly_once(env, customers=30, transactions=20, lines=2)


@pytest.mark.sqlite_only("runs the CLI on the hub file")
def test_push_cli_dry_run_prints_requests_and_unknown_id_fails(outbound, tmp_path) -> None:
    """`push customer ID --dry-run` prints the decision and requests; an unknown id exits 1."""
    _customer(outbound.hub)
    settings = _write_settings(tmp_path, outbound.sandbox.url)
    out, err = _cli(settings, "push", "customer", "1", "--dry-run", "--hub", str(outbound.settings.hub_path)
                    ).communicate(timeout=30)
    assert "Customer 1: created -- no link; create: created profile dry-run-new-1" in out
    assert "POST /api/profiles/ {" in out and "(read-only, sent)" in out
    assert [] == outbound.all_profiles()
    missing = _cli(settings, "push", "transaction", "99", "--hub", str(outbound.settings.hub_path))
    _, err = missing.communicate(timeout=30)
    assert 1 == missing.returncode
    assert "H003 Transaction 99 is not in the hub" in err


def test_one_bad_record_does_not_stop_the_dispatch(outbound) -> None:
    """A Customer Klaviyo rejects is logged with Klaviyo's answer; the next Customer still goes."""
    bad = _customer(outbound.hub, 1, Phone=None)
    store_legacy_email(outbound.hub, bad["Id"], "not-an-email")  # the hub refuses it today
    good = _customer(outbound.hub, 2)
    report = outbound.dispatch()
    [entry] = outbound.hub.errors.list()
    assert (bad["Id"], "Add Klaviyo Profile FROM Hub") == (entry["HubId"], entry["Flow"])
    assert entry["Message"].startswith("Error calling Klaviyo (HTTP 400): Invalid email address")
    assert outbound.hub.get_klaviyo_id("Customer", good["Id"]) is not None
    assert {"created": 1, "failed": 1} == report.summary.to_dict()["flows"]["Add Klaviyo Profile FROM Hub"]
    assert 0 == outbound.hub.queue_length()


def test_a_long_dispatch_keeps_a_bounded_list_of_results(outbound_factory, monkeypatch) -> None:
    """Memory stays flat on a long queue: past RESULTS_KEPT the report counts results instead of
    holding them; the summary still counts every record and the JSON says how many were left out."""
    from engine.flows import outbound as outbound_mod

    monkeypatch.setattr(outbound_mod, "RESULTS_KEPT", 3)
    env = outbound_factory()
    for n in range(1, 8):
        env.hub.add_customer({"EmailAddress": f"kept{n}@example.com", "CustomerNumber": f"K{n}"})
    report = env.dispatch(batch_size=2)
    data = report.to_dict()
    assert (3, 4, 7) == (len(report.results), report.omitted, report.handled)
    assert (3, 4) == (len(data["records"]), data["records_omitted"])
    assert 7 == sum(data["flows"]["Add Klaviyo Profile FROM Hub"].values())
