"""``backfill transactions`` against the real sandbox: historical orders sent once, through the
order flow's unique ids, so neither a second backfill nor a later dispatch duplicates an event."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine.flows._backfill_transactions import STATE_KEY, backfill_transactions
from engine.flows.outbound import open_outbound_client


def _shop(env: Any) -> None:
    for n in (1, 2):
        env.hub.add_customer({"EmailAddress": f"history{n}@example.com", "CustomerNumber": f"H{n}"})
    for t in range(1, 4):
        env.hub.upsert_transaction({"TransactionNumber": f"OLD-{t}", "CustomerId": 1 + t % 2, "Total": 10.0 * t,
                                    "EmailAddress": f"history{1 + t % 2}@example.com",
                                    "Lines": [{"Sku": f"S{t}", "Description": "Item", "Qty": 1, "UnitPrice": 10.0,
                                               "ExtendedPrice": 10.0}]})


def _backfill(env: Any, **kw: Any) -> Any:
    async def main() -> Any:
        client, transport = open_outbound_client(env.settings, env.hub, dry_run=kw.pop("dry", False),
                                                 **env.client_options)
        async with client:
            return await backfill_transactions(env.settings, env.hub, client, env.collections, dry_run=transport, **kw)

    return asyncio.run(main())


def test_orders_are_sent_once_and_a_later_dispatch_or_backfill_adds_nothing(outbound_factory) -> None:
    env = outbound_factory()
    _shop(env)
    dry = _backfill(env, dry=True)
    assert ([], None) == (env.events("Placed Order"), env.hub.get_state(STATE_KEY))  # a dry run sends nothing
    assert 3 == sum(1 for r in dry.results if r.entity == "Transaction")
    report = _backfill(env, batch_size=2)
    flows = report.summary.to_dict()["flows"]
    assert {"created": 3} == flows["Add Klaviyo Placed Order Event FROM Hub"]
    assert (3, 3) == (len(env.events("Placed Order")), len(env.events("Ordered Product")))
    assert 3 == env.hub.get_state(STATE_KEY)
    again = _backfill(env)
    assert ([], 0) == (again.results, again.summary.to_dict()["calls"].get("create_event", 0))
    env.dispatch()  # the queued Transactions: unchanged orders make no call
    assert (3, 3) == (len(env.events("Placed Order")), len(env.events("Ordered Product")))
    env.hub.upsert_transaction({"TransactionNumber": "OLD-9", "CustomerId": 1, "Total": 5.0,
                                "EmailAddress": "history1@example.com", "Lines": []})
    later = _backfill(env)
    assert ["resumed after Transaction 3 (where the last backfill stopped)"] == \
        [n for n in later.summary.notes if n.startswith("resumed")]
    assert 4 == len(env.events("Placed Order"))


@pytest.mark.sqlite_only("runs the CLI on the hub file")
def test_the_command_prints_json_and_resumes(outbound_factory, tmp_path: Path) -> None:
    env = outbound_factory()
    _shop(env)
    cfg = tmp_path / "klaviyo-sync.yaml"
    cfg.write_text(f"api_url: {env.settings.api_url}\napi_key: pk_test_0123456789abcdef\nhub: {env.settings.hub_path}\n",
                   encoding="utf-8")
    run = [sys.executable, "-m", "engine", "backfill", "transactions", "--json", "--config", str(cfg)]
    first = subprocess.run(run, capture_output=True, text=True, timeout=120, cwd=Path(__file__).parent.parent)
    assert 0 == first.returncode, first.stderr
    assert {"created": 3} == json.loads(first.stdout)["flows"]["Add Klaviyo Placed Order Event FROM Hub"]
    second = subprocess.run(run, capture_output=True, text=True, timeout=120, cwd=Path(__file__).parent.parent)
    assert ([], 3) == (json.loads(second.stdout)["records"], len(env.events("Placed Order")))


@pytest.mark.parametrize("revision", ["2023-10-15", "2024-10-15"])  # one event per call; bulk event jobs
def test_an_outage_stops_before_the_order_and_the_next_run_sends_it(outbound_factory, revision: str) -> None:
    """Klaviyo answering 503 throughout: nothing is marked sent or failed, the position stays before
    the first order, and once Klaviyo is back the next run sends every order exactly once."""
    env = outbound_factory(fault_5xx=1.0, revision=revision)
    _shop(env)
    report = _backfill(env)
    assert (0, 0) == (env.hub.get_state(STATE_KEY), len(env.hub.errors.list()))
    assert any(n.startswith("stopped before Transaction 1") for n in report.summary.notes)
    env.sandbox.options.fault_5xx = 0.0
    _backfill(env)
    assert (3, 3, 3) == (len(env.events("Placed Order")), len(env.events("Ordered Product")),
                         env.hub.get_state(STATE_KEY))


def _many_orders(env: Any, n: int, *, bad: str | None = None) -> None:
    for c in (1, 2, 3):
        env.hub.add_customer({"EmailAddress": f"bulk{c}@example.com", "CustomerNumber": f"B{c}"})
    for t in range(1, n + 1):
        env.hub.upsert_transaction({"TransactionNumber": bad if t == n // 2 and bad else f"BULK-{t}",
                                    "CustomerId": 1 + t % 3, "Total": 1.0 * t,
                                    "EmailAddress": f"bulk{1 + t % 3}@example.com",
                                    "Lines": [{"Sku": f"S{t}-{k}", "Description": "Item", "Qty": 1, "UnitPrice": 1.0,
                                               "ExtendedPrice": 1.0} for k in (1, 2)]})


def test_from_2024_05_15_the_events_go_in_bulk_jobs_with_the_same_unique_ids(outbound_factory) -> None:
    """At a revision with bulk event jobs, 40 orders of two lines (120 events) take a few job
    requests and no single event call; the events carry the unique ids the one-per-call path
    gives (a 2023-10-15 backfill of the same shop), so a later dispatch or backfill adds nothing."""
    single = outbound_factory(name="single.db")
    _many_orders(single, 40)
    _backfill(single)
    env = outbound_factory(revision="2024-10-15")
    _many_orders(env, 40)
    report = _backfill(env, batch_size=25)
    calls = report.summary.to_dict()["calls"]
    assert 0 == calls.get("create_event", 0)
    assert 2 <= calls["bulk_create_events"] <= 8, calls  # two batches: their parents, then their lines
    flows = report.summary.to_dict()["flows"]
    assert {"created": 40} == flows["Add Klaviyo Placed Order Event FROM Hub"]
    assert {"created": 80} == flows["Add Klaviyo Ordered Product Event FROM Hub"]

    def ids(e: Any, metric: str) -> list[str]:
        return sorted(ev["attributes"]["event_properties"]["$event_id"] for ev in e.events(metric))

    for metric in ("Placed Order", "Ordered Product"):
        assert ids(single, metric) == ids(env, metric)
    assert any(n.startswith("120 events sent in ") and n.endswith(" bulk event jobs") for n in report.summary.notes)
    assert ([], 0) == (_backfill(env).results, len(env.hub.errors.list()))
    env.dispatch()
    assert (40, 80) == (len(env.events("Placed Order")), len(env.events("Ordered Product")))


def test_a_job_klaviyo_refuses_is_sent_again_one_event_per_call(outbound_factory) -> None:
    """One event Klaviyo refuses fails its whole bulk job, and nothing of it is recorded: the job's
    events are sent again one per call, so only the orders of the Customer whose profile is gone
    from Klaviyo are logged, with Klaviyo's detail, and every other event is recorded once."""
    env = outbound_factory(revision="2024-10-15")
    _many_orders(env, 12)
    gone = "01JGONE0000000000000000000"
    env.hub.set_link("Customer", 2, gone)  # its profile was deleted in Klaviyo
    report = _backfill(env)
    flows = report.summary.to_dict()["flows"]
    assert {"created": 8, "failed": 4} == flows["Add Klaviyo Placed Order Event FROM Hub"]
    assert (8, 16) == (len(env.events("Placed Order")), len(env.events("Ordered Product")))
    failed = {e["HubId"]: e for e in env.hub.errors.list() if e["Entity"] == "Transaction"}
    assert {1, 4, 7, 10} == set(failed)  # the orders of Customer 2 (1 + t % 3 == 2)
    assert {f"Error calling Klaviyo (HTTP 400): A profile with id {gone} does not exist. "
            "[source: /data/attributes/profile/data/id]"} == {e["Message"] for e in failed.values()}
    assert any("jobs Klaviyo refused were sent again one event per call" in n for n in report.summary.notes)
    assert 12 == env.hub.get_state(STATE_KEY)  # refused data is final: the position moves past it
