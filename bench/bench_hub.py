"""Import throughput of the SQLite hub: customers with addresses, transactions with lines.

Run: ``.venv/bin/python bench/bench_hub.py [--customers 100000] [--transactions 100000]
[--lines 3] [--batch 1000] [--triggers] [--repeat N] [--keep DIR]``

Writes two JSONL files in a temporary folder, imports them with the real
``import_jsonl`` (every line checked and upserted, batched in transactions,
a bad line undoing only itself; with ``--triggers`` every record also queues an outbound change),
then prints records/s and peak memory.  Beside each figure it prints a
reference measured in the same run on the same machine: the same rows
``json.loads``-ed and inserted with bare ``executemany`` into tables with no
checks, no indexes beyond the primary key and no queue.  The ratio is what the
hub's checks and guarantees cost.  ``--repeat N`` measures both N times (a fresh hub
each time) and prints the median ratio and its spread: on a shared machine one run's
ratio moves by a third.  The CPU-time ratio (this process's, both sides) is printed too:
it moves much less when other processes load the cores.  Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import resource
import sqlite3
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.hub import SqliteHub, import_jsonl  # noqa: E402


def write_customers(path: Path, n: int) -> None:
    with path.open("w", encoding="utf-8") as out:
        for i in range(1, n + 1):
            out.write(json.dumps({
                "EmailAddress": f"customer{i}@example.com", "CustomerNumber": f"C{i:07d}",
                "FirstName": "Ann", "LastName": f"Lee{i}", "Company": "Example Co",
                "Phone": f"+1202555{i % 10000:04d}", "CustomFields": {"Consent": "SUBSCRIBED"},
                "Addresses": [{"Address1": f"{i} Main St", "City": "Austin", "Region": "TX",
                               "PostalCode": "78701", "Country": "US", "IsPrimaryBilling": True}],
            }) + "\n")


def write_transactions(path: Path, n: int, lines: int) -> None:
    with path.open("w", encoding="utf-8") as out:
        for i in range(1, n + 1):
            out.write(json.dumps({
                "TransactionNumber": f"T{i:08d}", "CustomerId": i, "EmailAddress": f"customer{i}@example.com",
                "Total": 29.97, "TransactionDate": "2024-05-01T10:00:00Z", "Status": "Complete",
                "Lines": [{"Sku": f"SKU-{j}", "Description": "Widget", "Qty": 1, "UnitPrice": 9.99,
                           "ExtendedPrice": 9.99} for j in range(lines)],
            }) + "\n")


def reference(customers: Path, transactions: Path, db: Path) -> tuple[float, float]:
    """Seconds (wall clock, then this process's CPU) to load both files with bare executemany
    (the floor for any SQLite importer)."""
    start, cpu = time.perf_counter(), time.process_time()
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE c (id INTEGER PRIMARY KEY, email, number, first, last, company, phone, cf)")
    conn.execute("CREATE TABLE a (id INTEGER PRIMARY KEY, cid, a1, city, region, pc, country, billing)")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, number, cid, email, total, date, status)")
    conn.execute("CREATE TABLE l (id INTEGER PRIMARY KEY, tid, sku, descr, qty, price, ext)")
    with customers.open() as fh:
        rows, addrs = [], []
        for i, text in enumerate(fh, 1):
            r = json.loads(text)
            rows.append((i, r["EmailAddress"], r["CustomerNumber"], r["FirstName"], r["LastName"],
                         r["Company"], r["Phone"], json.dumps(r["CustomFields"])))
            a = r["Addresses"][0]
            addrs.append((i, a["Address1"], a["City"], a["Region"], a["PostalCode"], a["Country"], 1))
        conn.executemany("INSERT INTO c VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        conn.executemany("INSERT INTO a(cid, a1, city, region, pc, country, billing) VALUES (?, ?, ?, ?, ?, ?, ?)",
                         addrs)
    with transactions.open() as fh:
        rows, lines = [], []
        for i, text in enumerate(fh, 1):
            r = json.loads(text)
            rows.append((i, r["TransactionNumber"], r["CustomerId"], r["EmailAddress"], r["Total"],
                         r["TransactionDate"], r["Status"]))
            lines.extend((i, x["Sku"], x["Description"], x["Qty"], x["UnitPrice"], x["ExtendedPrice"])
                         for x in r["Lines"])
        conn.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        conn.executemany("INSERT INTO l(tid, sku, descr, qty, price, ext) VALUES (?, ?, ?, ?, ?, ?)", lines)
    conn.commit()
    conn.close()
    return time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--transactions", type=int, default=100_000)
    parser.add_argument("--lines", type=int, default=3, help="lines per transaction")
    parser.add_argument("--batch", type=int, default=1000, help="lines per SQLite transaction")
    parser.add_argument("--triggers", action="store_true", help="enable both outbound triggers (queue rows)")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="also report Python-heap peak via tracemalloc (slows the run)")
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="measure the import and the reference N times; print the median ratio and its range")
    parser.add_argument("--keep", type=Path, help="write files and databases here instead of a temp folder")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench_hub_"))
    folder.mkdir(parents=True, exist_ok=True)
    customers, transactions = folder / "customers.jsonl", folder / "transactions.jsonl"
    write_customers(customers, args.customers)
    write_transactions(transactions, args.transactions, args.lines)
    runs = [measure(args, folder, customers, transactions) for _ in range(args.repeat)]
    if args.repeat > 1:
        for what, ratios in (("wall clock", [r[0] for r in runs]), ("CPU time", [r[1] for r in runs])):
            print(f"hub / reference over {len(ratios)} runs, {what}: median {median(ratios):.1f}x "
                  f"(range {min(ratios):.1f}-{max(ratios):.1f}x; each: {', '.join(f'{r:.1f}' for r in ratios)})")
    print(f"files in {folder}")


def measure(args: argparse.Namespace, folder: Path, customers: Path, transactions: Path) -> tuple[float, float]:
    """Import both files into a fresh hub, then load them with the reference; print the figures and
    return how many times the reference's time the import took (wall clock, CPU time)."""
    for stale in folder.glob("*.db*"):
        stale.unlink()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if args.tracemalloc:
        tracemalloc.start()
    triggers = {"Customer", "Transaction"} if args.triggers else set()
    with SqliteHub(folder / "hub.db", outbound_triggers=triggers) as hub:
        cpu = time.process_time()
        start = time.perf_counter()
        c_report = import_jsonl(hub, "customers", customers, batch=args.batch)
        c_secs = time.perf_counter() - start
        start = time.perf_counter()
        t_report = import_jsonl(hub, "transactions", transactions, batch=args.batch)
        t_secs = time.perf_counter() - start
        hub_cpu = time.process_time() - cpu
        queued = hub.queue_length()
    heap_peak = tracemalloc.get_traced_memory()[1] if args.tracemalloc else None
    tracemalloc.stop()
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux

    ref_secs, ref_cpu = reference(customers, transactions, folder / "reference.db")
    total_rows = args.customers * 2 + args.transactions * (1 + args.lines)
    hub_secs = c_secs + t_secs

    print(f"hub import (batch {args.batch}, triggers {'on' if args.triggers else 'off'}), "
          f"{'python ' + sys.version.split()[0]}, sqlite {sqlite3.sqlite_version}")
    print(f"  customers    {c_report.imported:>8} (+{args.customers} addresses) "
          f"in {c_secs:7.2f}s = {c_report.imported / c_secs:>9,.0f} records/s")
    print(f"  transactions {t_report.imported:>8} (+{args.transactions * args.lines} lines) "
          f"in {t_secs:7.2f}s = {t_report.imported / t_secs:>9,.0f} records/s")
    print(f"  skipped lines: {len(c_report.errors) + len(t_report.errors)}, queued changes: {queued}")
    print(f"  all rows     {total_rows:>8} in {hub_secs:7.2f}s = {total_rows / hub_secs:>9,.0f} rows/s")
    print(f"reference (json.loads + bare executemany, no checks/indexes/queue): "
          f"{total_rows / ref_secs:,.0f} rows/s in {ref_secs:.2f}s; hub takes {hub_secs / ref_secs:.1f}x as long")
    print(f"CPU time of this process: hub {hub_cpu:.2f}s, reference {ref_cpu:.2f}s = {hub_cpu / ref_cpu:.1f}x "
          "(steadier than the wall clock when other processes share the cores)")
    print(f"peak memory: max RSS {rss_peak / 1024:.1f} MiB (at start {rss_before / 1024:.1f} MiB)"
          + (f", Python heap peak {heap_peak / 2**20:.1f} MiB" if heap_peak is not None else ""))
    return hub_secs / ref_secs, hub_cpu / ref_cpu


if __name__ == "__main__":
    main()
