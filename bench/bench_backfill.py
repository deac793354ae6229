"""Benchmark: `klaviyo-sync backfill customers` of N Customers against the sandbox with real tiers.

Run: ``.venv/bin/python bench/bench_backfill.py [--customers 100000,200000] [--latency-ms 200] [--job-delay 5]``

For each size: a fresh hub file holds N Customers (email, number, names, phone for two in
three); ``klaviyo-sync sandbox serve`` runs in its own process with Klaviyo's rate tiers
(bulk import jobs, their polling and their ``profiles`` pages are tier M: 10/s, 150/min),
``--latency-ms`` added to every request and every job kept queued ``--job-delay`` seconds
before the sandbox processes it, a chunk at a time, as Klaviyo does in the background.
``klaviyo-sync backfill customers --json`` then runs in its own process at revision
2026-07-15; its wall time and peak RSS (``wait4``) are printed with the calls it made.

Reference, in the same run: the per-profile path (``dispatch``) needs one ``POST
/api/profiles`` per new profile inside the L tier's 700 a minute, so its time is projected
as N / 700 minutes.  The sizes' times give the slope per 100,000 Customers, from which 1M is
projected when it is not measured.  Not a test: figures are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.hub import SqliteHub  # noqa: E402

L_STEADY = 700  # POST /api/profiles per minute (tier L)
KEY = "pk_bench_backfill_0001"


def seed_hub(path: Path, n: int) -> float:
    t0 = time.perf_counter()
    with SqliteHub(path, outbound_triggers=set()) as hub, hub.transaction():
        for i in range(1, n + 1):
            hub.add_customer({"EmailAddress": f"bulk{i}@example.com", "CustomerNumber": f"B-{i}",
                              "FirstName": f"First{i}", "LastName": f"Last{i}",
                              "Phone": f"+1212{5000000 + i:07d}" if i % 3 else None})
    return time.perf_counter() - t0


def serve(latency_ms: float, job_delay: float) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "engine", "sandbox", "serve", "--port", "0", "--json",
                             "--latency-ms", str(latency_ms), "--job-delay", str(job_delay), "--seed", "1"],
                            cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    return proc, json.loads(proc.stdout.readline())["url"]


def run_backfill(folder: Path, url: str) -> tuple[float, float, dict[str, object], int]:
    cfg = folder / "klaviyo-sync.yaml"
    collections = folder / "collections"
    collections.mkdir(exist_ok=True)
    for src in (ROOT / "collections").glob("*-profile-from-hub.yaml"):  # the sandbox has no lists: plain rows
        text = src.read_text().replace("LIST_Sms Subscribers", "properties.sms").replace(
            "UCLIST_Preview List", "properties.preview")
        (collections / src.name).write_text(text)
    cfg.write_text(f"api_url: {url}\napi_key: {KEY}\nhub: hub.db\napi_revision: '2026-07-15'\n"
                   f"collections: {collections}\n")
    env = {**os.environ, "KLAVIYO_SYNC_CONFIG": str(cfg), "KLAVIYO_API_KEY": ""}
    out_file, err_file = folder / "out.json", folder / "err.txt"
    t0 = time.perf_counter()
    with out_file.open("w") as out, err_file.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "engine", "backfill", "customers", "--json"], cwd=ROOT,
                                env=env, stdout=out, stderr=err)
        _pid, status, usage = os.wait4(proc.pid, 0)  # the backfill process's own peak RSS
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = out_file.read_text()
    report = json.loads(text) if text.strip().startswith("{") else {"error": err_file.read_text().strip()[-500:]}
    return wall, usage.ru_maxrss / 1024, report, proc.returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", default="100000,200000", help="sizes, comma-separated (default 100000,200000)")
    ap.add_argument("--latency-ms", type=float, default=200.0, help="added to every sandbox request (default 200)")
    ap.add_argument("--job-delay", type=float, default=5.0, help="seconds each job stays queued (default 5)")
    args = ap.parse_args()
    sizes = [int(x) for x in args.customers.split(",")]
    print(f"# backfill customers: sandbox with real tiers, {args.latency_ms:g} ms latency, jobs queued "
          f"{args.job_delay:g} s; revision 2026-07-15; {os.cpu_count()} cores")
    print(f"{'customers':>10} {'seed hub':>9} {'backfill':>10} {'per 100k':>9} {'peak RSS':>9} "
          f"{'per-profile path (projected)':>30}  calls")
    measured: list[tuple[int, float]] = []
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            seeded = seed_hub(folder / "hub.db", n)
            server, url = serve(args.latency_ms, args.job_delay)
            try:
                wall, rss, report, code = run_backfill(folder, url)
            finally:
                server.terminate()
                server.wait(30)
                assert server.stdout is not None
                server.stdout.close()
        if code != 0:
            print(f"{n:>10,} backfill failed (exit {code}): {report}")
            continue
        measured.append((n, wall))
        per_profile = n / L_STEADY
        calls = report.get("calls") or {}
        flows = report.get("flows") or {}
        print(f"{n:>10,} {seeded:>8.0f}s {wall / 60:>8.1f}min {wall / 60 / n * 100_000:>7.1f}min {rss:>7.0f}MB "
              f"{per_profile:>16,.0f} min ({per_profile / 60:.1f} h)  {calls}; flows {flows}; "
              f"errors {report.get('errors')}")
    if len(measured) >= 2:
        (n1, w1), (n2, w2) = measured[0], measured[-1]
        slope = (w2 - w1) / (n2 - n1)
        projected = w2 + slope * (1_000_000 - n2)
        print(f"scaling {n1:,} -> {n2:,}: {slope * 100_000 / 60:.1f} min per 100,000 more; 1,000,000 projected "
              f"{projected / 60:.0f} min (target 40 min) against the per-profile path's "
              f"{1_000_000 / L_STEADY / 60:.1f} h")


if __name__ == "__main__":
    main()
