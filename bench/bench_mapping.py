"""Mapping throughput of each shipped collection vs a hand-written plain-Python mapping.

Run:  .venv/bin/python bench/bench_mapping.py [--records 10000] [--repeat 3] [--rss 100000]

For every shipped collection it maps N synthetic records through the engine (the collection's
own rows only, children excluded, as the hand-written reference does) and through a plain
Python function that produces the same payload, checks both payloads are equal, and prints
records/s for each and the ratio engine/plain (lower is better), then the ratio of the summed
times over the eight collections (the target is <= 4x).

Then the memory check: a formula reads a distinct 200-character path (built from the record)
in each of ``--rss`` records; the resident set size is printed after 10,000 records and after
all of them.  Every cache is bounded in bytes, so both figures should be about the same.
"""

from __future__ import annotations

import argparse
import platform
import random
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.collection import load_collections  # noqa: E402
from engine.formula import FormulaEngine  # noqa: E402
from engine.formula.helpers import bind_helpers, e164  # noqa: E402
from engine.mapper import Mapper  # noqa: E402


class Links:
    """An in-memory resolver, as the hub would answer."""

    def __init__(self, n: int) -> None:
        self.customers = {str(i): f"01PROFILE{i:017d}" for i in range(0, n, 2)}
        self.emails = {f"user{i}@example.com": f"01PROFILE{i:017d}" for i in range(n)}

    def get_external_id(self, entity: str, hub_id: Any) -> str | None:
        return self.customers.get(str(hub_id)) if entity == "Customer" else None

    def get_customer_id_by_email(self, email: str) -> str | None:
        return self.emails.get(email)


# ---------------------------------------------------------------- synthetic records
def profile(i: int, rnd: random.Random) -> dict[str, Any]:
    rec: dict[str, Any] = {"id": f"01H{i:019d}", "email": f"user{i}@example.com", "first_name": f"First{i}",
                           "last_name": f"Last{i}", "organization": f"Org {i % 97}"}
    if rnd.random() < 0.7:
        rec["phone_number"] = f"+1500555{i % 10000:04d}"
    if rnd.random() < 0.6:
        rec["location"] = {"address1": f"{i} Main St", "city": "Springfield", "country": "United States",
                           "region": "IL", "zip": f"{62700 + i % 100}"}
    if rnd.random() < 0.5:
        rec["properties"] = {"Last active": "2026-11-20T10:00:00Z"}
    if rnd.random() < 0.5:
        rec["subscriptions"] = {"email": {"marketing": {"can_receive_email_marketing": True, "consent": "SUBSCRIBED"}}}
    return rec


def customer(i: int, rnd: random.Random) -> dict[str, Any]:
    rec: dict[str, Any] = {"Id": i, "EmailAddress": f"user{i}@example.com", "CustomerNumber": f"C{i}",
                           "FirstName": f"First{i}", "LastName": f"Last{i}", "Company": f"Org {i % 97}",
                           "Phone": f"(212) 555-{i % 10000:04d}" if rnd.random() < 0.8 else None}
    rec["Addresses"] = [
        {"Id": 2 * i, "Address1": f"{i} Ship Rd", "City": "Boston", "Country": "US", "IsPrimaryShipping": True},
        {"Id": 2 * i + 1, "Address1": f"{i} Bill Ave", "City": "New York", "Region": "NY", "PostalCode": "10017",
         "Country": "US", "IsPrimaryBilling": True},
    ]
    return rec


def transaction(i: int, rnd: random.Random) -> dict[str, Any]:
    return {"Id": 50000 + i, "TransactionNumber": f"SO-{50000 + i}", "CustomerId": i,
            "EmailAddress": f"user{i}@example.com", "Total": round(rnd.uniform(5, 500), 2),
            "Lines": [{"Id": 900000 + 3 * i + k, "TransactionId": 50000 + i, "Sku": f"SKU-{k}",
                       "Description": f"Item {k}", "Qty": k + 1, "UnitPrice": 9.5, "ExtendedPrice": 9.5 * (k + 1)}
                      for k in range(3)]}


def line_with_parent(i: int, rnd: random.Random) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    tx = transaction(i, rnd)
    return tx["Lines"][i % 3], tx, {"ProfileId": f"01PROFILE{i:017d}"}


# ---------------------------------------------------------------- hand-written references
def _blank(v: Any) -> bool:
    return v is None or (isinstance(v, str) and not v.strip())


def plain_add_profile_to_hub(r: dict[str, Any], **_: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"EmailAddress": r["email"]}
    phone = r.get("phone_number")
    out["CustomerNumber"] = phone if not _blank(phone) else "N/A"
    for src, dst in (("first_name", "FirstName"), ("last_name", "LastName"), ("organization", "Company")):
        if r.get(src) is not None:
            out[dst] = r[src]
    custom = {}
    consent = ((r.get("subscriptions") or {}).get("email") or {}).get("marketing", {}).get("consent")
    if consent is not None:
        custom["Consent"] = consent
    last = (r.get("properties") or {}).get("Last active")
    if not _blank(last):
        custom["C5_Custom_Customer"] = last
    if custom:
        out["CustomFields"] = custom
    return out


def plain_update_profile_to_hub(r: dict[str, Any], existing: dict[str, Any], **_: Any) -> dict[str, Any]:
    return {k: existing[k] for k in ("EmailAddress", "CustomerNumber", "FirstName", "LastName", "Company", "Comment")
            if existing.get(k) is not None}


def plain_address_to_hub(r: dict[str, Any], **_: Any) -> dict[str, Any] | None:
    loc = r.get("location") or {}
    if _blank(loc.get("address1")) or _blank(loc.get("city")) or _blank(loc.get("country")):
        return None
    out = {}
    for src, dst in (("address1", "Address1"), ("address2", "Address2"), ("city", "City"), ("region", "Region"),
                     ("zip", "PostalCode"), ("country", "Country")):
        if loc.get(src) is not None:
            out[dst] = loc[src]
    return out


def plain_profile_from_hub(r: dict[str, Any], **_: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if r.get("EmailAddress") is not None:
        out["email"] = r["EmailAddress"]
    billing = next((a for a in r.get("Addresses") or [] if a.get("IsPrimaryBilling")), None)
    phone = e164(r.get("Phone"), (billing or {}).get("Country"))
    if phone is not None:
        out["phone_number"] = phone
    for src, dst in (("FirstName", "first_name"), ("LastName", "last_name"), ("Company", "organization")):
        if r.get(src) is not None:
            out[dst] = r[src]
    if billing:
        loc = {}
        for src, dst in (("Address1", "address1"), ("Address2", "address2"), ("City", "city"), ("Region", "region"),
                         ("PostalCode", "zip"), ("Country", "country")):
            if billing.get(src) is not None:
                loc[dst] = billing[src]
        out["location"] = loc
    out["properties"] = {"My Custom": "Example values"}
    out["LIST_Sms Subscribers"] = True
    out["UCLIST_Preview List"] = True
    out["SubscribeProfile"] = True
    return out


def plain_placed_order(r: dict[str, Any], links: Links, **_: Any) -> dict[str, Any]:
    pid = links.get_external_id("Customer", r["CustomerId"])
    if pid is None or pid == "":
        pid = links.get_customer_id_by_email(r["EmailAddress"])
    return {"ProfileId": pid, "EventProperties": {"Email": r["EmailAddress"], "Order": r["TransactionNumber"]},
            "MetricName": "Placed Order", "UniqueId": str(r["Id"]), "NumericValue": r["Total"],
            "Example event field": "Example values"}


def plain_ordered_product(r: dict[str, Any], parent: dict[str, Any], parent_mapped: dict[str, Any], **_: Any) -> dict[str, Any]:
    return {"ProfileId": parent_mapped["ProfileId"],
            "EventProperties": {"Email": parent["EmailAddress"], "Order": parent["TransactionNumber"], "Sku": r["Sku"],
                                "ProductName": r["Description"], "Quantity": r["Qty"], "ItemPrice": r["UnitPrice"],
                                "RowTotal": r["ExtendedPrice"]},
            "MetricName": "Ordered Product", "UniqueId": f"{parent['Id']}-{r['Id']}", "NumericValue": r["ExtendedPrice"]}


CASES: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {
    "Add Klaviyo Profile TO Hub": (profile, plain_add_profile_to_hub),
    "Update Klaviyo Profile TO Hub": (profile, plain_update_profile_to_hub),
    "Add Klaviyo Profile Address TO Hub": (profile, plain_address_to_hub),
    "Update Klaviyo Profile Address TO Hub": (profile, plain_address_to_hub),
    "Add Klaviyo Profile FROM Hub": (customer, plain_profile_from_hub),
    "Update Klaviyo Profile FROM Hub": (customer, plain_profile_from_hub),
    "Add Klaviyo Placed Order Event FROM Hub": (transaction, plain_placed_order),
    "Add Klaviyo Ordered Product Event FROM Hub": (line_with_parent, plain_ordered_product),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3, help="best of N timings")
    ap.add_argument("--rss", type=int, default=100_000, help="records of the memory check (0: skip)")
    args = ap.parse_args()
    n = args.records
    links = Links(n)
    report = load_collections(engine=FormulaEngine())
    assert not report.errors, report.errors
    print(f"# mapping throughput, {n:,} records per collection, formula evaluator asteval")
    print(f"# {platform.python_implementation()} {platform.python_version()} on {platform.machine()}, "
          f"{platform.processor() or platform.system()}")
    print(f"{'collection':45} {'engine rec/s':>13} {'plain rec/s':>12} {'ratio':>7}")
    worst = 0.0
    total_engine = total_plain = 0.0
    for title, (make, plain) in CASES.items():
        coll = report.collections[title]
        rnd = random.Random(42)
        mapper = Mapper(coll, functions=bind_helpers(links))
        kwargs_list: list[dict[str, Any]] = []
        for i in range(n):
            made = make(i, rnd)
            if isinstance(made, tuple):
                rec, parent, parent_mapped = made
                kwargs_list.append({"record": rec, "parent": parent, "parent_mapped": parent_mapped})
            else:
                kw: dict[str, Any] = {"record": made}
                if coll.action == "update" and coll.direction == "to_hub":
                    kw["existing"] = {"EmailAddress": made["email"], "CustomerNumber": "C1", "FirstName": "Old",
                                      "LastName": "Name", "Company": "Co", "Comment": "kept"}
                kwargs_list.append(kw)

        # both are called within this iteration only, so they read this collection's loop variables
        def run_engine() -> list[Any]:
            return [mapper.map(**kw) for kw in kwargs_list]  # noqa: B023

        def run_plain() -> list[Any]:
            return [plain(kw["record"], links=links, existing=kw.get("existing"),  # noqa: B023
                          parent=kw.get("parent"), parent_mapped=kw.get("parent_mapped")) for kw in kwargs_list]  # noqa: B023

        engine_out, plain_out = run_engine(), run_plain()
        for got, want in zip(engine_out, plain_out, strict=True):
            got_payload = got.payload if got.status == "ok" else None
            if got_payload != want:
                print(f"MISMATCH in {title}: engine {got_payload!r} != plain {want!r}")
                return 1
        t_engine = min(_timed(run_engine) for _ in range(args.repeat))
        t_plain = min(_timed(run_plain) for _ in range(args.repeat))
        ratio = t_engine / t_plain
        worst = max(worst, ratio)
        total_engine += t_engine
        total_plain += t_plain
        print(f"{title:45} {n / t_engine:13,.0f} {n / t_plain:12,.0f} {ratio:6.2f}x")
    print(f"{'sum over the eight collections':45} {8 * n / total_engine:13,.0f} {8 * n / total_plain:12,.0f} "
          f"{total_engine / total_plain:6.2f}x")
    print(f"worst ratio {worst:.2f}x, summed ratio {total_engine / total_plain:.2f}x (target <= 4x); "
          "payloads identical to the plain-Python reference")
    if args.rss:
        memory_check(args.rss)
    return 0


def _rss_mb() -> float:
    """Current resident set size in MB (Linux /proc), else the peak from getrusage."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 1e6
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def memory_check(total: int) -> None:
    """Map ``total`` records whose formula reads a distinct long path each; print RSS at 10k and at the end."""
    import tempfile

    text = """title: Long paths
direction: to_hub
hub_entity: Customer
klaviyo_resource: profile
action: add
status: enabled
rows:
  - type: formula
    destination: Comment
    formula: get(record, "properties." + first_name, None)
"""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long-paths.yaml"
        path.write_text(text, encoding="utf-8")
        rep = load_collections([path])
        assert not rep.errors, rep.errors
        mapper = Mapper(rep.collections["Long paths"])
    print(f"# memory: {total:,} records, each reading a distinct 200-character path")
    marks = {10_000, total}
    for i in range(1, total + 1):
        name = f"{i:0200d}"
        result = mapper.map({"email": f"u{i}@example.com", "first_name": name, "properties": {name: i}})
        assert result.payload == {"Comment": i}, result
        if i in marks:
            print(f"RSS after {i:>7,} records: {_rss_mb():8.1f} MB")


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    raise SystemExit(main())
