"""`klaviyo-sync demo`: every flow both ways on the sandbox and a fresh hub, exit 0."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from engine import catalog
from engine.cli import main
from engine.hub import SqliteHub
from engine.sandbox import SandboxState


def test_demo_runs_every_flow_and_leaves_an_inspectable_hub(tmp_path: Path) -> None:
    """The demo exits 0, runs dispatch, poll and a Manual Sync each way, and logs the catalog texts."""
    result = CliRunner().invoke(main, ["demo", "--dir", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    names = [p["name"] for p in data["phases"]]
    assert ["dispatch (hub -> Klaviyo, queued changes)", "poll (Klaviyo -> hub)",
            "sync profile 44552 (Manual Sync, Klaviyo -> hub)",
            "push customer 1 (Manual Sync, hub -> Klaviyo)"] == names
    dispatch, poll = data["phases"][0]["flows"], data["phases"][1]["flows"]
    assert dispatch["Add Klaviyo Placed Order Event FROM Hub"] == {"created": 10, "failed": 1}
    assert dispatch["Add Klaviyo Ordered Product Event FROM Hub"]["created"] == 25
    assert poll["Add Klaviyo Profile TO Hub"]["invalid"] == 1
    messages = {m["message"] for m in data["log_messages"]}
    assert {catalog.PROFILE_NOT_RESOLVED, catalog.EMAIL_REQUIRED} <= messages
    assert any("Email address already exists" in e for e in data["import_errors"])

    hub = SqliteHub(tmp_path / "klaviyo-sync.db")
    try:
        emails = [c["EmailAddress"] for c in hub.iter_customers()]
        assert len(emails) == len(set(emails))
        assert hub.get_klaviyo_id("Customer", 1) is not None
        assert hub.get_klaviyo_id("Transaction", 55001) is not None
    finally:
        hub.close()
    state = SandboxState()
    state.load(tmp_path / "sandbox-state.json")
    keys = [(e["profile_id"], e["metric_id"], e["unique_id"]) for e in state.events]
    assert 35 == data["klaviyo"]["events"] == len(keys) == len(set(keys))
    # seed 003 checklist: the event properties include the customer email and the order number
    assert all(e["properties"].get("Email") and e["properties"].get("Order") for e in state.events)
    fallback = json.loads((tmp_path / "transactions.jsonl").read_text().splitlines()[3])
    assert fallback["EmailAddress"] is None  # this one takes its Customer's email


def test_demo_twice_in_one_folder_starts_fresh(tmp_path: Path) -> None:
    """A second demo in the same folder replaces the first one's files and gives the same counts."""
    first = CliRunner().invoke(main, ["demo", "--dir", str(tmp_path), "--json"])
    second = CliRunner().invoke(main, ["demo", "--dir", str(tmp_path), "--json"])
    assert first.exit_code == second.exit_code == 0
    strip = lambda d: [(p["name"], p["flows"]) for p in json.loads(d)["phases"]]  # noqa: E731
    assert strip(first.stdout) == strip(second.stdout)


def test_demo_output_names_the_inspection_commands(tmp_path: Path) -> None:
    """The plain summary tells the user how to inspect the hub and the error log afterwards."""
    result = CliRunner().invoke(main, ["demo", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "klaviyo-sync errors --config" in result.output or " -m engine errors --config" in result.output
    assert "Error log:" in result.output
    assert "pk_" not in result.output
