"""Corrected orders (seed 000 limitation 2, seed 003 UniqueId): an unchanged re-send makes no call
and reports ``unchanged``; a changed order is recorded again as version n+1 under a derived unique
id (``<Transaction Id>-v<n>``, lines ``<Transaction Id>-<Line Id>-v<n>``), so Klaviyo keeps both and
the newest is the current record; the hub keeps the history of what was sent.

Against the real sandbox over loopback and a real hub file; the one test of a line Klaviyo did not
take uses httpx.MockTransport (a unit test of the flow's bookkeeping).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from dataclasses import replace
from typing import Any

import httpx
import pytest
from test_outbound_orders import _link_customer, _transaction

from engine.flows._outbound_orders import versioned
from engine.flows.outbound import open_outbound_client, push
from engine.hub import SqliteHub

PLACED = "Add Klaviyo Placed Order Event FROM Hub"
PRODUCT = "Add Klaviyo Ordered Product Event FROM Hub"


def _event_ids(env: Any, metric: str) -> list[str]:
    return sorted(e["attributes"]["event_properties"]["$event_id"] for e in env.events(metric))


def _change(env: Any, tx: dict[str, Any], **fields: Any) -> dict[str, Any]:
    record = {k: v for k, v in tx.items() if k not in ("CreatedAt", "UpdatedAt")}
    record.update(fields)
    stored, outcome = env.hub.upsert_transaction(record)
    assert "updated" == outcome
    return stored


def test_version_one_keeps_the_transaction_id_and_is_kept_in_the_hub(outbound) -> None:
    """The first send uses the Transaction Id (as before versions were kept) and records version 1."""
    c, pid = _link_customer(outbound)
    tx = _transaction(outbound.hub, c["Id"])
    outbound.dispatch()
    assert [str(tx["Id"])] == _event_ids(outbound, "Placed Order")
    assert sorted(f"{tx['Id']}-{line['Id']}" for line in tx["Lines"]) == _event_ids(outbound, "Ordered Product")
    [v1] = outbound.hub.transaction_versions(tx["Id"])
    assert (1, str(tx["Id"]), pid, True) == (v1["Version"], v1["UniqueId"], v1["ProfileId"], v1["Complete"])
    assert len(v1["Digest"]) == 64 and v1["SentAt"]


def test_unchanged_resend_makes_no_call_and_reports_unchanged(outbound) -> None:
    """Re-sending the same order (push twice after the dispatch) calls Klaviyo not at all."""
    c, _ = _link_customer(outbound)
    tx = _transaction(outbound.hub, c["Id"])
    outbound.dispatch()
    for _ in range(2):
        report = outbound.push("Transaction", tx["Id"])
        summary = report.summary.to_dict()
        assert {} == summary["calls"]
        assert {PLACED: {"unchanged": 1}, PRODUCT: {"unchanged": 2}} == summary["flows"]
        [result] = report.results
        assert ("unchanged", str(tx["Id"])) == (result.outcome, result.klaviyo_id)
        assert "unchanged since version 1" in result.decision
    assert 1 == len(outbound.events("Placed Order")) and 2 == len(outbound.events("Ordered Product"))
    assert 1 == len(outbound.hub.transaction_versions(tx["Id"]))


def test_unchanged_order_found_by_email_makes_no_call_either(outbound) -> None:
    """An order with no Customer went to the profile found by its email; re-sent unchanged, that
    profile (kept with the version) answers the ProfileId formula, so not even the lookup is made."""
    pid = outbound.sandbox.state.add_profile(email="shopper@example.com")
    tx = _transaction(outbound.hub, None, email="shopper@example.com")
    outbound.dispatch()
    report = outbound.push("Transaction", tx["Id"])
    assert {} == report.summary.to_dict()["calls"]
    assert "unchanged" == report.results[0].outcome
    assert pid == outbound.hub.latest_transaction_version(tx["Id"])["ProfileId"]


def test_changed_order_is_recorded_again_as_version_two(outbound) -> None:
    """A corrected total: a new Placed Order event and new line events under -v2; Klaviyo keeps both
    versions, the links point at the newest, the hub has both versions with different digests."""
    c, _ = _link_customer(outbound)
    tx = _transaction(outbound.hub, c["Id"])
    outbound.dispatch()
    _change(outbound, tx, Total=30.0)
    report = outbound.dispatch()
    tid = str(tx["Id"])
    assert [tid, f"{tid}-v2"] == _event_ids(outbound, "Placed Order")
    lines = sorted(f"{tid}-{line['Id']}" for line in tx["Lines"])
    assert sorted(lines + [f"{u}-v2" for u in lines]) == _event_ids(outbound, "Ordered Product")
    newest = [e for e in outbound.events("Placed Order") if e["attributes"]["event_properties"]["$event_id"] == f"{tid}-v2"]
    assert 30.0 == newest[0]["attributes"]["event_properties"]["$value"]
    assert f"{tid}-v2" == outbound.hub.get_klaviyo_id("Transaction", tx["Id"])
    assert {f"{u}-v2" for u in lines} == {outbound.hub.get_klaviyo_id("TransactionLine", line["Id"])
                                          for line in tx["Lines"]}
    v1, v2 = outbound.hub.transaction_versions(tx["Id"])
    assert (1, 2, tid, f"{tid}-v2") == (v1["Version"], v2["Version"], v1["UniqueId"], v2["UniqueId"])
    assert v1["Digest"] != v2["Digest"] and v1["SentAt"] <= v2["SentAt"]
    summary = report.summary.to_dict()
    assert {PLACED: {"created": 1}, PRODUCT: {"created": 2}} == summary["flows"]
    assert {"create_event": 3} == summary["calls"]
    assert "version 2: the order changed since version 1" in report.results[0].decision
    # sent again unchanged: version 2 stands, nothing is sent
    again = outbound.push("Transaction", tx["Id"])
    assert ("unchanged", f"{tid}-v2", {}) == (again.results[0].outcome, again.results[0].klaviyo_id,
                                              again.summary.to_dict()["calls"])


def test_an_added_line_and_a_second_correction_make_versions_two_and_three(outbound) -> None:
    """Each change is one more version; every line of the new version is sent under its id."""
    c, _ = _link_customer(outbound)
    tx = _transaction(outbound.hub, c["Id"], lines=1)
    outbound.dispatch()
    lines = [{k: v for k, v in line.items() if k != "TransactionId"} for line in tx["Lines"]]
    added = _change(outbound, tx, Lines=lines + [{"Sku": "SKU-9", "Description": "Extra", "Qty": 2,
                                                  "UnitPrice": 1.0, "ExtendedPrice": 2.0}], Total=14.5)
    outbound.dispatch()
    _change(outbound, added, Total=15.0)
    outbound.dispatch()
    tid = str(tx["Id"])
    assert [tid, f"{tid}-v2", f"{tid}-v3"] == _event_ids(outbound, "Placed Order")
    first, extra = (line["Id"] for line in added["Lines"])
    assert sorted([f"{tid}-{first}", f"{tid}-{first}-v2", f"{tid}-{extra}-v2", f"{tid}-{first}-v3",
                   f"{tid}-{extra}-v3"]) == _event_ids(outbound, "Ordered Product")
    assert [1, 2, 3] == [v["Version"] for v in outbound.hub.transaction_versions(tx["Id"])]


def test_a_change_the_events_do_not_carry_is_unchanged(outbound) -> None:
    """Only what the events say counts: a Transaction field no mapping reads changes nothing."""
    c, _ = _link_customer(outbound)
    tx = _transaction(outbound.hub, c["Id"])
    outbound.dispatch()
    _change(outbound, tx, Status="Shipped")
    report = outbound.dispatch()
    assert {PLACED: {"unchanged": 1}, PRODUCT: {"unchanged": 2}} == report.summary.to_dict()["flows"]
    assert 1 == len(outbound.events("Placed Order"))


def test_dry_run_of_a_changed_order_shows_version_two_and_writes_nothing(outbound) -> None:
    """A dry run says what would be sent (the -v2 ids) and keeps no version."""
    c, _ = _link_customer(outbound)
    tx = _transaction(outbound.hub, c["Id"])
    outbound.dispatch()
    _change(outbound, tx, Total=99.0)
    report = outbound.dispatch(dry_run=True)
    [result] = report.results
    assert ("created", f"{tx['Id']}-v2") == (result.outcome, result.klaviyo_id)
    assert 1 == len(outbound.hub.transaction_versions(tx["Id"]))
    assert 1 == len(outbound.events("Placed Order"))


def _as_previous_release(path) -> None:
    """Turn a hub file back into what the previous release wrote: schema 1 (no versions table, no case index)."""
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE transaction_versions")
    conn.execute("DROP INDEX customers_email_nocase")  # migration 3
    conn.execute("DELETE FROM schema_migrations WHERE version >= 2")
    conn.commit()
    conn.close()


def _reopen(env: Any) -> Any:
    env.hub.close()
    hub = SqliteHub(env.settings.hub_path, outbound_triggers={"Customer", "Transaction"})
    return replace(env, hub=hub)


@pytest.mark.sqlite_only("a file of an older release")
def test_orders_sent_by_the_previous_release_are_not_duplicated(outbound) -> None:
    """Upgrading a hub whose orders were sent before versions were kept: the migration takes each
    Transaction link as version 1; re-sent unchanged, nothing is sent (no duplicate first event),
    and the digest is learnt; changed afterwards, the order becomes version 2."""
    c, _ = _link_customer(outbound)
    tx = _transaction(outbound.hub, c["Id"])
    outbound.dispatch()
    _as_previous_release(outbound.settings.hub_path)
    env = _reopen(outbound)
    try:
        [v1] = env.hub.transaction_versions(tx["Id"])
        assert (1, str(tx["Id"]), None) == (v1["Version"], v1["UniqueId"], v1["Digest"])
        report = env.push("Transaction", tx["Id"])
        assert ("unchanged", {}) == (report.results[0].outcome, report.summary.to_dict()["calls"])
        assert env.hub.latest_transaction_version(tx["Id"])["Digest"] is not None
        _change(env, tx, Total=1.0)
        env.dispatch()
        assert [str(tx["Id"]), f"{tx['Id']}-v2"] == _event_ids(env, "Placed Order")
    finally:
        env.hub.close()


@pytest.mark.sqlite_only("a file of an older release")
def test_an_order_changed_before_the_upgrade_is_sent_as_version_two(outbound) -> None:
    """A correction made after the previous release sent the order (so Klaviyo kept the old event)
    is recorded as version 2 by the first dispatch after the upgrade."""
    c, _ = _link_customer(outbound)
    tx = _transaction(outbound.hub, c["Id"])
    outbound.dispatch()
    _change(outbound, tx, Total=7.0)
    _as_previous_release(outbound.settings.hub_path)
    env = _reopen(outbound)
    try:
        report = env.dispatch()
        assert "created" == report.results[0].outcome
        assert [str(tx["Id"]), f"{tx['Id']}-v2"] == _event_ids(env, "Placed Order")
        assert [None, 2] == [v["Digest"] and v["Version"] for v in env.hub.transaction_versions(tx["Id"])]
    finally:
        env.hub.close()


def test_versioned_ids() -> None:
    """Version 1 is the mapped id; later versions append -v<n>."""
    assert ("55260", "55260-v2", "55260-901-v3") == (versioned("55260", 1), versioned("55260", 2),
                                                     versioned("55260-901", 3))


def test_a_line_klaviyo_did_not_take_is_sent_again_under_the_same_ids(outbound) -> None:
    """When a line event is refused, the version stays incomplete: the re-send of the same order
    uses the same ids again (Klaviyo keeps the parent once) instead of reporting unchanged or
    making a version 2.  httpx.MockTransport stands in for Klaviyo here."""
    c, pid = _link_customer(outbound)
    tx = _transaction(outbound.hub, c["Id"], lines=2)
    refused = f"{tx['Id']}-{tx['Lines'][1]['Id']}"
    posted: list[str] = []

    def klaviyo(request: httpx.Request) -> httpx.Response:
        assert request.url.path.rstrip("/") == "/api/events"
        uid = json.loads(request.content)["data"]["attributes"]["unique_id"]
        posted.append(uid)
        if uid == refused and posted.count(uid) == 1:
            return httpx.Response(400, json={"errors": [{"id": "x", "status": 400, "code": "invalid",
                                                         "title": "Invalid input.", "detail": "refused once",
                                                         "source": {"pointer": "/data"}}]})
        return httpx.Response(202)

    def send() -> Any:
        async def main() -> Any:
            client, _ = open_outbound_client(outbound.settings, outbound.hub, transport=httpx.MockTransport(klaviyo),
                                             **outbound.client_options)
            async with client:
                return await push(outbound.settings, outbound.hub, client, outbound.collections, "Transaction",
                                  tx["Id"])
        return asyncio.run(main())

    first = send()
    assert {"created": 1, "failed": 1} == first.summary.to_dict()["flows"][PRODUCT]
    [v1] = outbound.hub.transaction_versions(tx["Id"])
    assert (1, False) == (v1["Version"], v1["Complete"])
    second = send()
    assert {"created": 2} == second.summary.to_dict()["flows"][PRODUCT]
    assert sorted(posted[3:]) == sorted(posted[:3]) and str(tx["Id"]) in posted[3:]
    [v1] = outbound.hub.transaction_versions(tx["Id"])
    assert (1, True) == (v1["Version"], v1["Complete"])
    assert "unchanged" == send().results[0].outcome
    assert 6 == len(posted)
