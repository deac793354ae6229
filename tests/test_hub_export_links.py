"""`hub export` carries each record's Klaviyo link as ``"_links": {"klaviyo": id}``; `hub import`
restores it, so export -> import into another hub -> export gives the same records and links."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine.hub import SqliteHub, import_jsonl

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KLAVIYO_API_KEY": "", "KLAVIYO_SYNC_CONFIG": "", "KLAVIYO_SYNC_HUB": ""}
    return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=120)


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _without_times(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def strip(r: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in r.items() if k not in ("CreatedAt", "UpdatedAt")}
        for nested in ("Addresses", "Lines"):
            if nested in out:
                out[nested] = [strip(x) for x in out[nested]]
        return out
    return [strip(r) for r in records]


@pytest.mark.sqlite_only("runs the CLI on the hub file")
def test_export_carries_the_klaviyo_links_a_dispatch_saved_and_import_restores_them(outbound: Any, tmp_path: Path) -> None:
    """After a real dispatch, the exported Customer holds its profile id, the Transaction and each
    Line their event links; importing the files into a new hub restores every link."""
    outbound.hub.add_customer({"EmailAddress": "ada@example.com", "CustomerNumber": "C-1", "FirstName": "Ada"})
    outbound.hub.add_customer({"EmailAddress": "bob@example.com", "CustomerNumber": "C-2"})
    outbound.hub.upsert_transaction({"TransactionNumber": "T-1", "CustomerId": 1, "EmailAddress": "ada@example.com",
                                     "Total": 30, "Lines": [{"Sku": "A", "Qty": 1, "UnitPrice": 10},
                                                            {"Sku": "B", "Qty": 2, "UnitPrice": 10}]})
    report = outbound.dispatch()
    assert report.error is None
    outbound.hub.remove_link("Customer", 2)  # one record without a link: it exports null
    profile_id = outbound.profiles(email="ada@example.com")[0]["id"]
    tx_link = outbound.hub.get_klaviyo_id("Transaction", 1)
    line_links = [outbound.hub.get_klaviyo_id("TransactionLine", int(line["Id"]))
                  for line in outbound.hub.get_transaction(1)["Lines"]]
    assert tx_link and all(line_links)

    hub_file = str(outbound.settings.hub_path)
    customers, transactions = tmp_path / "customers.jsonl", tmp_path / "transactions.jsonl"
    assert 0 == _cli("hub", "export", "customers", str(customers), "--hub", hub_file).returncode
    assert 0 == _cli("hub", "export", "transactions", str(transactions), "--hub", hub_file).returncode
    exported_c, exported_t = _records(customers), _records(transactions)
    assert [{"klaviyo": profile_id}, {"klaviyo": None}] == [c["_links"] for c in exported_c]
    assert {"klaviyo": tx_link} == exported_t[0]["_links"]
    assert [{"klaviyo": link} for link in line_links] == [line["_links"] for line in exported_t[0]["Lines"]]

    copy = tmp_path / "copy.db"
    for kind, path in (("customers", customers), ("transactions", transactions)):
        imported = _cli("hub", "import", kind, str(path), "--hub", str(copy))
        assert (0, "") == (imported.returncode, imported.stderr), imported.stderr
    with SqliteHub(copy) as store:
        assert (profile_id, None, tx_link) == (store.get_klaviyo_id("Customer", 1), store.get_klaviyo_id("Customer", 2),
                                               store.get_klaviyo_id("Transaction", 1))
        assert line_links == [store.get_klaviyo_id("TransactionLine", int(line["Id"]))
                              for line in store.get_transaction(1)["Lines"]]
    again_c, again_t = tmp_path / "again-c.jsonl", tmp_path / "again-t.jsonl"
    _cli("hub", "export", "customers", str(again_c), "--hub", str(copy))
    _cli("hub", "export", "transactions", str(again_t), "--hub", str(copy))
    assert _without_times(exported_c) == _without_times(_records(again_c))
    assert _without_times(exported_t) == _without_times(_records(again_t))


def _write(path: Path, records: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")
    return path


def test_a_malformed_links_object_costs_its_line_with_the_file_and_line(hub: SqliteHub, tmp_path: Path) -> None:
    """`_links` must be an object with a string `klaviyo` (or null); anything else is a located line error."""
    base = {"EmailAddress": "a@example.com", "CustomerNumber": "1"}
    path = _write(tmp_path / "c.jsonl", [
        {**base, "_links": ["01H"]},
        {**base, "_links": {"klaviyo": 44552}},
        {**base, "_links": {"shopify": "x"}},
        {**base, "Id": 4, "_links": {"klaviyo": "44552"}},
    ])
    report = import_jsonl(hub, "customers", path)
    assert [
        f'{path}:1: H001 Customer._links must be an object such as {{"klaviyo": "01H8TV..."}}, got list',
        f"{path}:2: H001 Customer._links.klaviyo must be a string (a Klaviyo id) or null, got number",
        f"{path}:3: H001 Customer._links: unknown key 'shopify' (valid: klaviyo)",
    ] == [str(e) for e in report.errors]
    assert (1, "44552") == (report.added, hub.get_klaviyo_id("Customer", 4))


def test_a_null_link_keeps_the_link_the_hub_has_and_lines_link_by_position(hub: SqliteHub, tmp_path: Path) -> None:
    """Importing `"klaviyo": null` does not remove a link; a line's link goes to the line at its position."""
    hub.add_customer({"Id": 1, "EmailAddress": "a@example.com", "CustomerNumber": "1"})
    hub.set_link("Customer", 1, "01HPROFILE")
    path = _write(tmp_path / "c.jsonl", [{"Id": 1, "EmailAddress": "a@example.com", "CustomerNumber": "1",
                                          "_links": {"klaviyo": None}}])
    kept = import_jsonl(hub, "customers", path)
    assert (1, []) == (kept.unchanged, kept.errors)
    assert "01HPROFILE" == hub.get_klaviyo_id("Customer", 1)
    tx = _write(tmp_path / "t.jsonl", [{"TransactionNumber": "T-9", "Lines": [
        {"Sku": "A", "_links": {"klaviyo": None}}, {"Sku": "B", "_links": {"klaviyo": "T-9:2"}}]}])
    assert [] == import_jsonl(hub, "transactions", tx).errors
    lines = hub.get_transaction(1)["Lines"]
    assert [None, "T-9:2"] == [hub.get_klaviyo_id("TransactionLine", int(line["Id"])) for line in lines]
