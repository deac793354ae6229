"""The hub commands: hub import/show/export, errors, status, settings show."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from engine import catalog
from engine.cli import main
from engine.hub import SqliteHub

KEY = "pk_0123456789abcdef0123456789abcdef01"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A folder with a settings file (literal API key, customer trigger on) and a customers JSONL."""
    (tmp_path / "klaviyo-sync.yaml").write_text(
        f"api_key: {KEY}\nhub: hub.db\noutbound_triggers: {{customer: true}}\n", encoding="utf-8")
    (tmp_path / "customers.jsonl").write_text(
        '{"EmailAddress": "ann@example.com", "CustomerNumber": "1", "Addresses": [{"Address1": "1 Main"}]}\n'
        '{"CustomerNumber": "2"}\n'
        '{"EmailAddress": "bob@example.com", "CustomerNumber": "3"}\n', encoding="utf-8")
    return tmp_path


def run(workdir: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    """Invoke the CLI with the work folder's settings file."""
    base = {"KLAVIYO_SYNC_CONFIG": str(workdir / "klaviyo-sync.yaml"), "KLAVIYO_API_KEY": ""}
    return CliRunner().invoke(main, list(args), env={**base, **(env or {})}, catch_exceptions=False)


def test_import_reports_bad_lines_and_keeps_the_rest(workdir: Path) -> None:
    """`hub import customers` prints FILE:LINE for a bad line, imports the others and exits 1."""
    result = run(workdir, "hub", "import", "customers", str(workdir / "customers.jsonl"))
    assert 1 == result.exit_code
    assert f"{workdir / 'customers.jsonl'}:2: H001 {catalog.EMAIL_REQUIRED}\n" == result.stderr
    assert "Imported 2 customers (2 added, 0 updated, 0 unchanged); 1 line(s) skipped\n" == result.stdout
    with SqliteHub(workdir / "hub.db") as store:
        assert ["ann@example.com", "bob@example.com"] == [c["EmailAddress"] for c in store.iter_customers()]


def test_show_customer_as_json_includes_the_link(workdir: Path) -> None:
    """`hub show customer ID --json` prints the record with addresses and its Klaviyo id."""
    run(workdir, "hub", "import", "customers", str(workdir / "customers.jsonl"))
    with SqliteHub(workdir / "hub.db") as store:
        store.set_link("Customer", 1, "01HPROFILE")
    result = run(workdir, "hub", "show", "customer", "1", "--json")
    record = json.loads(result.stdout)
    assert (0, "ann@example.com", "1 Main", "01HPROFILE") == (
        result.exit_code, record["EmailAddress"], record["Addresses"][0]["Address1"], record["KlaviyoId"])


def test_show_of_a_missing_record_fails(workdir: Path) -> None:
    """`hub show transaction 9` on an empty hub exits 1 naming the Id."""
    result = run(workdir, "hub", "show", "transaction", "9")
    assert (1, "H003 no Transaction with Id 9 (record 9)\n") == (result.exit_code, result.stderr)


def test_export_writes_jsonl_that_imports_back(workdir: Path, tmp_path: Path) -> None:
    """`hub export transactions FILE` writes JSONL another hub imports unchanged."""
    with SqliteHub(workdir / "hub.db") as store:
        store.upsert_transaction({"TransactionNumber": "T-1", "Total": 5, "Lines": [{"Sku": "A"}]})
    out = workdir / "tx.jsonl"
    assert 0 == run(workdir, "hub", "export", "transactions", str(out)).exit_code
    result = run(workdir, "hub", "import", "transactions", str(out), "--hub", str(tmp_path / "copy.db"))
    assert "Imported 1 transactions (1 added, 0 updated, 0 unchanged)\n" == result.stdout
    with SqliteHub(tmp_path / "copy.db") as copy:
        assert ["A"] == [line["Sku"] for line in copy.get_transaction(1)["Lines"]]


def test_hub_env_var_chooses_the_file(workdir: Path, tmp_path: Path) -> None:
    """KLAVIYO_SYNC_HUB overrides the settings' hub path."""
    other = tmp_path / "elsewhere.db"
    run(workdir, "hub", "import", "customers", str(workdir / "customers.jsonl"), env={"KLAVIYO_SYNC_HUB": str(other)})
    with SqliteHub(other) as store:
        assert 2 == store.counts()["customers"]


def test_errors_lists_filters_and_resolves(workdir: Path) -> None:
    """`errors` shows unresolved entries, --flow filters, --resolve hides one, --all shows it again."""
    with SqliteHub(workdir / "hub.db") as store:
        store.errors.log("Flow A", catalog.ERROR_CALLING_KLAVIYO, hub_id=3, entity="Customer", code="K001",
                         detail=f"key {KEY} refused")
        store.errors.log("Flow B", catalog.CUSTOMER_LINK_WARNING, level="warning")
    listed = json.loads(run(workdir, "errors", "--json").stdout)
    assert [2, 1] == [e["Id"] for e in listed]
    assert "key ******** refused" == listed[1]["Detail"]
    assert [1] == [e["Id"] for e in json.loads(run(workdir, "errors", "--json", "--flow", "Flow A").stdout)]
    assert "Resolved error 1\n" == run(workdir, "errors", "--resolve", "1").stdout
    assert [2] == [e["Id"] for e in json.loads(run(workdir, "errors", "--json").stdout)]
    assert [2, 1] == [e["Id"] for e in json.loads(run(workdir, "errors", "--json", "--all").stdout)]
    text = run(workdir, "errors", "--all").stdout
    assert "#1 " in text and "ERROR Flow A [resolved] (Customer 3)" in text and KEY not in text


def test_status_shows_counts_queue_and_polls_never_the_key(workdir: Path) -> None:
    """`status --json` gives counts, queue length, last polls and recent errors, without the API key."""
    run(workdir, "hub", "import", "customers", str(workdir / "customers.jsonl"))
    with SqliteHub(workdir / "hub.db") as store:
        store.set_cursor("profiles", "2024-05-01T00:00:00Z")
        store.errors.log("Flow A", "Error calling Klaviyo")
    result = run(workdir, "status", "--json")
    data = json.loads(result.stdout)
    assert (2, 2, 1) == (data["counts"]["customers"], data["counts"]["queued_changes"],
                         data["counts"]["unresolved_errors"])
    assert "2024-05-01T00:00:00Z" == data["last_polls"]["profiles"]["value"]
    assert ["Flow A"] == [e["Flow"] for e in data["recent_errors"]]
    assert KEY not in result.output and KEY not in run(workdir, "status").output


def test_settings_show_masks_secrets(workdir: Path) -> None:
    """`settings show` prints every key with the API key masked."""
    result = run(workdir, "settings", "show")
    assert 0 == result.exit_code
    assert KEY not in result.output
    assert "api_key: ******** (file)" in result.output
    assert "api_revision: 2023-10-15" in result.output
    data = json.loads(run(workdir, "settings", "show", "--json").stdout)
    assert {"customer": True, "transaction": False} == data["outbound_triggers"]


def test_invalid_settings_exit_2_with_located_messages(workdir: Path) -> None:
    """A bad settings file stops every hub command with exit 2 and file:line:col messages."""
    path = workdir / "klaviyo-sync.yaml"
    path.write_text(f"api_key: {KEY}\ngenerate_events: maybe\n", encoding="utf-8")
    result = run(workdir, "status")
    assert 2 == result.exit_code
    assert f'{path}:2:18: S002 generate_events: must be TRUE or FALSE, got "maybe"\n' == result.stderr
    assert KEY not in result.output
