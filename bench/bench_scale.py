"""Many subscriptions dispatched by 1, 2 and 4 worker processes: aggregate records per minute.

Run: ``.venv/bin/python bench/bench_scale.py [--subscriptions 100] [--customers 1000] [--lines 2]
[--workers 1,2,4] [--latency-ms 200] [--concurrency 8] [--keep-open 8]``

The deployment of docs/scale.md on one machine, all real processes over loopback:

- one sandbox process with ``--accounts-by-key`` and Klaviyo's real tiers at ``--latency-ms``: each
  subscription's API key is its own Klaviyo account;
- one PostgreSQL database (created for the run, dropped after) holding the shared hub (one schema
  per subscription) and procrastinate's job tables;
- Redis keeping the one rate budget per account that every worker shares (``rate_budget``);
- ``--subscriptions`` settings files, each with ``--customers`` Customers and as many Transactions
  of ``--lines`` lines queued in its hub;
- N ``klaviyo-sync worker`` processes, for each N of ``--workers``.

For each N it prints the records (Customers + Transactions) sent per minute, from the first
worker's start until every queue is empty, beside the sum of the accounts' ceilings (what Klaviyo's
steady tiers allow each account for this mix of records: the L tier for profiles, the events
tier for orders) and the machine's core count; then it checks through the sandbox that every
account holds each profile once and each order's events once.  The seeded database is made once
and copied (``CREATE DATABASE ... TEMPLATE``) for each N, so every N starts from the same state.
Not a test: figures are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from urllib.request import Request, urlopen

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg  # noqa: E402

from engine.hub import PostgresHub, import_jsonl  # noqa: E402
from engine.klaviyo.ratelimit import tiers_for  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def _with_db(url: str, db: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + db))


def _admin(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=True)


def _key(i: int) -> str:
    return f"pk_scale_{i:04d}_0123456789abcdef0123456789"


def _settings(folder: Path, n: int, sandbox: str, hub: str, redis: str, revision: str, run: str) -> None:
    """One settings file per subscription; the budget's account names are new for each ``run`` (a fresh
    sandbox), so no window of a previous run holds a request back."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"s{i:04d}.yaml").write_text(
            f"api_url: {sandbox}\napi_key: {_key(i)}\napi_revision: {revision}\nhub: {hub}\n"
            f"subscription: s{i:04d}\nrate_budget: {redis}\naccount: scale-{run}-{i:04d}\n"
            "outbound_triggers: {customer: true, transaction: true}\npoll_interval: 168h\n", encoding="utf-8")


def _seed(hub_url: str, n: int, customers: int, lines: int, work: Path) -> None:
    """Queue ``customers`` Customers and as many Transactions in each subscription's hub."""
    c_file, t_file = work / "customers.jsonl", work / "transactions.jsonl"
    with c_file.open("w", encoding="utf-8") as out:
        for c in range(1, customers + 1):
            out.write(json.dumps({"EmailAddress": f"c{c}@example.com", "CustomerNumber": f"C-{c}",
                                  "FirstName": "Scale", "LastName": f"Customer {c}",
                                  "Addresses": [{"Address1": f"{c} Main St", "City": "New York", "Country": "US",
                                                 "IsPrimaryBilling": True}]}) + "\n")
    with t_file.open("w", encoding="utf-8") as out:
        for t in range(1, customers + 1):
            out.write(json.dumps({"TransactionNumber": f"T-{t}", "CustomerId": t, "EmailAddress": f"c{t}@example.com",
                                  "Total": 10.0 * lines, "TransactionDate": "2024-03-01T10:00:00Z",
                                  "Lines": [{"Sku": f"SKU-{k}", "Description": "Item", "Qty": 1, "UnitPrice": 10.0,
                                             "ExtendedPrice": 10.0} for k in range(lines)]}) + "\n")
    for i in range(n):
        with PostgresHub(hub_url, subscription=f"s{i:04d}", outbound_triggers={"Customer", "Transaction"}) as hub:
            import_jsonl(hub, "customers", c_file)
            import_jsonl(hub, "transactions", t_file)


def _queued(conn: psycopg.Connection[Any], n: int) -> int:
    sql = " UNION ALL ".join(f"SELECT COUNT(*) FROM ks_s{i:04d}.outbound_queue" for i in range(n))
    return sum(int(r[0]) for r in conn.execute(sql))


def _get(url: str, key: str | None = None) -> Any:
    request = Request(url, headers={"Authorization": f"Klaviyo-API-Key {key}"} if key else {})
    with urlopen(request, timeout=30) as answer:  # noqa: S310 - the loopback sandbox
        return json.loads(answer.read())


def _start(args: list[str], log: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([PY, "-m", "engine", *args], stdout=subprocess.PIPE, stderr=log.open("w"), text=True,
                            env=env)


def _stop(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        if p.stdout:
            p.stdout.close()


def _ceiling_per_account(customers: int, lines: int, revision: str) -> float:
    """Records a minute Klaviyo's steady tiers allow one account for this mix: one profile write (L) per
    Customer, one Placed Order and ``lines`` Ordered Product events (XL, one per call) per Transaction."""
    tiers = tiers_for(revision)
    minutes = customers / tiers["L"].steady + customers * (1 + lines) / tiers["XL"].steady
    return 2 * customers / minutes


def run_one(workers: int, args: argparse.Namespace, template: str, work: Path) -> dict[str, Any]:
    db = f"ks_bench_scale_w{workers}"
    with _admin(args.postgres) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {db}")
        admin.execute(f"CREATE DATABASE {db} TEMPLATE {template}")
    hub_url = _with_db(args.postgres, db)
    run_dir = work / f"w{workers}"
    run_dir.mkdir()
    sandbox = _start(["sandbox", "serve", "--port", "0", "--accounts-by-key", "--latency-ms", str(args.latency_ms),
                      "--json"], run_dir / "sandbox.log")
    procs = [sandbox]
    try:
        assert sandbox.stdout is not None
        url = json.loads(sandbox.stdout.readline())["url"]
        subs = run_dir / "subscriptions"
        _settings(subs, args.subscriptions, url, hub_url, args.redis, args.revision, f"{os.getpid()}-w{workers}")
        watch = psycopg.connect(hub_url, autocommit=True)  # one connection, opened before the workers take theirs
        started = time.monotonic()
        for w in range(workers):
            procs.append(_start(["worker", "--subscriptions", str(subs), "--jobs", hub_url, "--concurrency",
                                 str(args.concurrency), "--keep-open", str(args.keep_open), "--name", f"w{w}",
                                 "--json"], run_dir / f"worker{w}.log"))
        total = 2 * args.customers * args.subscriptions
        left = total
        while left:
            time.sleep(2)
            left = _queued(watch, args.subscriptions)
            for w, p in enumerate(procs[1:]):
                if p.poll() is not None:
                    tail = (run_dir / f"worker{w}.log").read_text(encoding="utf-8", errors="replace")[-2000:]
                    raise SystemExit(f"worker {w} exited early ({p.returncode}); the end of its log:\n{tail}")
            if time.monotonic() - started > args.timeout:
                raise SystemExit(f"not done after {args.timeout} s: {left} changes still queued; see {run_dir}")
        seconds = time.monotonic() - started
        watch.close()
        accounts = _get(f"{url}/__sandbox__/accounts")["accounts"]
        profiles = sorted(a["profiles"] for a in accounts.values() if a["profiles"])
        orders = sorted(a["events"].get("Placed Order", 0) for a in accounts.values() if a["profiles"])
        products = sorted(a["events"].get("Ordered Product", 0) for a in accounts.values() if a["profiles"])
        throttled = sum(a.get("throttled", 0) for a in accounts.values())
        exact = (profiles == [args.customers] * args.subscriptions and orders == [args.customers] * args.subscriptions
                 and products == [args.customers * args.lines] * args.subscriptions)
        return {"workers": workers, "records": total, "seconds": seconds, "per_min": total / seconds * 60,
                "exact": exact, "throttled": throttled}
    finally:
        _stop(procs[1:])
        _stop(procs[:1])
        with _admin(args.postgres) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscriptions", type=int, default=100)
    parser.add_argument("--customers", type=int, default=1000, help="Customers (and Transactions) per subscription")
    parser.add_argument("--lines", type=int, default=2, help="lines per Transaction")
    parser.add_argument("--workers", default="1,2,4", help="worker process counts to measure, comma-separated")
    parser.add_argument("--concurrency", type=int, default=8, help="jobs at once per worker process")
    parser.add_argument("--keep-open", type=int, default=8, help="subscriptions each worker keeps open; with "
                        "--concurrency it bounds the worker's database connections (the server allows 100)")
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--revision", default="2023-10-15")
    parser.add_argument("--postgres", default=os.environ.get("KLAVIYO_SYNC_TEST_POSTGRES",
                                                             "postgresql://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds one worker count may take")
    args = parser.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    template = "ks_bench_scale_seed"
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    try:
        with _admin(args.postgres) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {template} WITH (FORCE)")
            admin.execute(f"CREATE DATABASE {template}")
        seed_started = time.monotonic()
        _seed(_with_db(args.postgres, template), args.subscriptions, args.customers, args.lines, work)
        print(f"seeded {args.subscriptions} subscriptions x {args.customers} Customers and Transactions "
              f"({args.lines} lines) in {time.monotonic() - seed_started:.0f} s", flush=True)
        ceiling = _ceiling_per_account(args.customers, args.lines, args.revision) * args.subscriptions
        rows = []
        for workers in counts:
            row = run_one(workers, args, template, work)
            rows.append(row)
            print(f"  {workers} worker(s): {row['records']} records in {row['seconds']:.0f} s", flush=True)
        cores = os.cpu_count() or 1
        print(f"\n{args.subscriptions} subscriptions x {args.customers} Customers + {args.customers} Transactions "
              f"({args.lines} lines), latency {args.latency_ms:g} ms, revision {args.revision}, {cores} cores")
        print(f"{'workers':>7} {'records/min':>12} {'sum of ceilings':>16} {'of ceiling':>10} {'per core':>9} "
              f"{'exact':>6} {'429s':>5}")
        for row in rows:
            print(f"{row['workers']:>7} {row['per_min']:>12,.0f} {ceiling:>16,.0f} {row['per_min'] / ceiling:>10.1%} "
                  f"{row['per_min'] / min(row['workers'], cores):>9,.0f} {'yes' if row['exact'] else 'NO':>6} "
                  f"{row['throttled']:>5}")
    finally:
        with _admin(args.postgres) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {template} WITH (FORCE)")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
