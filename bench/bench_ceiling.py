"""Default settings against Klaviyo's steady ceilings, over full 60-second windows.

Run: ``.venv/bin/python bench/bench_ceiling.py [--windows 5] [--latency-ms 200]
[--phases events,new,linked,existing] [--revision 2023-10-15] [--serial] [--records N]``

Each phase is a real ``klaviyo-sync dispatch`` process with a settings file that holds
only ``api_url``, ``api_key`` and ``hub`` (every other setting at its default), sending
to a sandbox in its own process with ``--latency-ms`` of latency and Klaviyo's real
tiers.  The queue holds enough work to keep the bounding tier busy for ``--windows``
full 60-second windows plus the partial ones at either end:

- **events**: Transactions of 4 lines for linked Customers -> Placed Order + Ordered
  Product events (tier XL, 3,500/min);
- **new**: Customers Klaviyo does not hold -> batch lookup + create (tier L);
- **linked**: linked Customers changed -> one PATCH each (tier L);
- **existing**: Customers whose emails Klaviyo already holds, never linked -> one batch
  lookup per 100 + one PATCH each (tier L);
- **burst** (not in the default set): 600 Transactions at once, counted per fixed 1 s window
  against the XL burst of 350/s (the first minute's budget is full, so only the burst limit,
  the latency and the dispatching process's one core bound it).

The sandbox counts the requests it accepted per tier and fixed 60 s window (the windows
Klaviyo enforces).  Printed per phase: each full window's count as a share of the tier's
steady ceiling, their mean and spread, records per minute, and the share of requests
retried (429s answered and the dispatch's own retry count).  The first window is partial
and starts with a full budget, the last is partial: neither is counted.  The phases use
separate accounts (sandboxes), so by default they run at the same time.  Not a test:
nothing is asserted; targets (issue 16): >= 95 % of the ceiling, <= 0.5 % retried.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_dispatch import _orders  # noqa: E402

from engine.hub import SqliteHub  # noqa: E402
from engine.klaviyo.ratelimit import tiers_for  # noqa: E402

KEY = "pk_bench_ceiling_0000"
LINES = 4
#: phase -> (bounding tier, Klaviyo requests of that tier per record, roughly)
PHASES: dict[str, tuple[str, float]] = {"events": ("XL", 1 + LINES), "new": ("L", 1.0),
                                        "linked": ("L", 1.0), "existing": ("L", 1.01), "burst": ("XL", 1 + LINES)}
#: the burst phase: this many Transactions (5 events each) sent at once, counted per fixed 1 s window
BURST_RECORDS = 600


def _sandbox(latency_ms: float, conn: Any) -> None:
    """Child process: a sandbox with real tiers; seeds profiles on request, samples window counts."""
    from engine.sandbox import SandboxOptions, SandboxServer
    from engine.sandbox._server import LIMITER_KEY

    server = SandboxServer(SandboxOptions(latency_ms=latency_ms, rate_limits=True, seed=1))
    windows: dict[tuple[str, int], int] = {}
    throttled: dict[int, int] = {}

    async def sample() -> None:
        limiter = server.app[LIMITER_KEY]
        last429 = 0
        while True:
            for (_, tier, kind, idx), n in list(limiter.counts.items()):
                key = (tier if kind == "s" else f"{tier}/1s", idx)
                if n > windows.get(key, 0):
                    windows[key] = n
            now429 = server.options.counters.get("429", 0)
            if now429 > last429:
                idx = int(time.monotonic() // limiter.steady_len)
                throttled[idx] = throttled.get(idx, 0) + now429 - last429
                last429 = now429
            await asyncio.sleep(0.2)

    async def run() -> None:
        url = await server.start()
        server.state.add_list("Sms Subscribers")
        server.state.add_list("Preview List")
        sampler = asyncio.create_task(sample())
        conn.send(url)
        loop = asyncio.get_running_loop()
        while True:
            cmd, arg = await loop.run_in_executor(None, conn.recv)
            if cmd == "seed":
                conn.send([server.state.add_profile(email=e, first_name="Existing") for e in arg])
            elif cmd == "report":
                await asyncio.sleep(0.5)
                conn.send(({f"{t}:{i}": n for (t, i), n in windows.items()}, throttled,
                           dict(server.options.counters)))
            else:
                break
        sampler.cancel()
        await server.stop()

    asyncio.run(run())


def _fill_hub(path: Path, phase: str, records: int, profile_ids: list[str]) -> None:
    """The hub file with its queue ready: ``records`` records for ``phase``."""
    hub = SqliteHub(path, outbound_triggers={"Customer", "Transaction"})
    try:
        def customer(n: int, last: str = "Customer") -> dict[str, Any]:
            return {"EmailAddress": f"bench{n}@example.com", "CustomerNumber": f"B-{n}", "FirstName": "Bench",
                    "LastName": f"{last} {n}", "Phone": f"+1212555{n % 10000:04d}"}

        if phase in ("new", "existing"):
            with hub.transaction():
                for n in range(1, records + 1):
                    hub.add_customer(customer(n))
            return
        linked = records if phase == "linked" else len(profile_ids)
        with hub.transaction(enqueue=False):
            for n in range(1, linked + 1):
                rec = hub.add_customer(customer(n))
                hub.set_link("Customer", rec["Id"], profile_ids[n - 1])
        if phase == "linked":
            with hub.transaction():
                for n in range(1, records + 1):
                    hub.update_customer(n, {"LastName": f"Changed {n}"})
            return
        _orders(hub, linked, records, LINES)
    finally:
        hub.close()


def _windows_report(counts: dict[str, int], tier: str, steady: int) -> tuple[list[int], str]:
    ours = sorted((int(k.split(":")[1]), n) for k, n in counts.items() if k.split(":")[0] == tier)
    if len(ours) < 3:
        return [], "too few windows"
    full = [n for _, n in ours[1:-1]]
    return full, " ".join(f"{100 * n / steady:.1f}%" for n in full)


def _run_measured(cmd: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``cmd``; its output and the CPU seconds (user + system) of that process alone."""
    import threading

    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "KLAVIYO_SYNC_API_KEY": ""})
    chunks: dict[str, str] = {}
    readers = [threading.Thread(target=lambda n=n, f=f: chunks.__setitem__(n, f.read()))
               for n, f in (("out", proc.stdout), ("err", proc.stderr))]
    for t in readers:
        t.start()
    _, status, usage = os.wait4(proc.pid, 0)
    for t in readers:
        t.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return (subprocess.CompletedProcess(cmd, proc.returncode, chunks.get("out", ""), chunks.get("err", "")),
            usage.ru_utime + usage.ru_stime)


def run_phase(phase: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    tier, per_record = PHASES[phase]
    steady = tiers_for(args.revision)[tier].steady
    records = args.records or (BURST_RECORDS if phase == "burst" else
                               math.ceil(steady * (args.windows + 2.5) / per_record))
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_sandbox, args=(args.latency_ms, child), daemon=True)
    proc.start()
    url = parent.recv()
    folder = tmp / phase
    folder.mkdir()
    seed = {"events": 500, "burst": 500, "linked": records, "existing": records}.get(phase, 0)
    parent.send(("seed", [f"bench{n}@example.com" for n in range(1, seed + 1)]))
    ids = parent.recv()
    _fill_hub(folder / "hub.db", phase, records, ids)
    (folder / "klaviyo-sync.yaml").write_text(
        f"api_url: {url}\napi_key: {KEY}\nhub: hub.db\napi_revision: '{args.revision}'\n", encoding="utf-8")
    start = time.monotonic()
    cmd = [str(ROOT / ".venv/bin/klaviyo-sync")]
    if args.profile:
        cmd = [str(ROOT / ".venv/bin/python"), "-m", "cProfile", "-o", f"{args.profile}.{phase}", "-m", "engine"]
    out, cpu = _run_measured([*cmd, "dispatch", "--json", "--config", str(folder / "klaviyo-sync.yaml")], folder)
    wall = time.monotonic() - start
    parent.send(("report", None))
    counts, throttled, counters = parent.recv()
    parent.send(("stop", None))
    proc.join(30)
    try:
        report = json.loads(out.stdout)
    except json.JSONDecodeError:
        return {"phase": phase, "error": f"dispatch exit {out.returncode}: {out.stderr[-400:]}"}
    if phase == "burst":
        tier, steady = f"{tier}/1s", tiers_for(args.revision)["XL"].burst
    full, shares = _windows_report(counts, tier, steady)
    calls = report.get("summary", report).get("calls", {})
    total_calls = sum(v for k, v in calls.items() if k != "retries")
    problems = sorted({f"{e.get('message')}: {e.get('detail', '')}"[:200]
                       for r in report.get("records", []) for e in r.get("log", []) if e.get("level") == "error"})
    return {"cpu": cpu, "problems": problems[:3], "phase": phase, "tier": tier, "steady": steady, "records": records, "wall": wall, "full": full,
            "shares": shares, "retries": calls.get("retries", 0), "calls": total_calls,
            "429": counters.get("429", 0), "errors": report.get("summary", report).get("errors")}


def _print(r: dict[str, Any]) -> None:
    if "error" in r:
        print(f"{r['phase']:<9} FAILED: {r['error']}")
        return
    full, steady = r["full"], r["steady"]
    mean = 100 * statistics.mean(full) / steady if full else 0.0
    spread = (f"{100 * min(full) / steady:.1f}-{100 * max(full) / steady:.1f} %" if full else "-")
    unit = "s" if r["tier"].endswith("/1s") else "min"
    print(f"{r['phase']:<9} tier {r['tier']:<2} ceiling {steady}/{unit} | {len(full)} full windows: {r['shares']}")
    print(f"{'':<9} mean {mean:5.1f} % of the ceiling (spread {spread}) | {r['records']} records in "
          f"{r['wall']:.0f} s = {60 * r['records'] / r['wall']:.0f} records/min | {r['calls']} calls, "
          f"{r['retries']} retried ({100 * r['retries'] / max(r['calls'], 1):.2f} %), "
          f"{r['429']} answered 429 | errors {r['errors']} | dispatch process CPU {r['cpu']:.1f} s "
          f"= {1000 * r['cpu'] / max(r['calls'], 1):.2f} ms/call")
    if unit == "s" and full:
        print(f"{'':<9} best 1 s window {max(full)} requests/s; target >= 300/s on one core")
    for p in r["problems"]:
        print(f"{'':<9} error: {p}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=5, help="full 60 s windows to fill (at least)")
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--phases", default="events,new,linked,existing")
    parser.add_argument("--revision", default="2023-10-15")
    parser.add_argument("--records", type=int, default=0, help="records per phase (default: enough for --windows)")
    parser.add_argument("--profile", metavar="PREFIX", help="run each dispatch under cProfile into PREFIX.<phase>")
    parser.add_argument("--serial", action="store_true", help="one phase after another (default: all at once)")
    args = parser.parse_args()
    phases = [p for p in args.phases.split(",") if p]
    unknown = [p for p in phases if p not in PHASES]
    if unknown:
        parser.error(f"unknown phase(s) {', '.join(unknown)}; choose from {', '.join(PHASES)}")
    print(f"default settings, `klaviyo-sync dispatch` in its own process, sandbox in its own process with "
          f"{args.latency_ms:.0f} ms latency and real tiers, revision {args.revision}, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        if args.serial:
            results = [run_phase(p, args, Path(tmp)) for p in phases]
        else:
            from concurrent.futures import ThreadPoolExecutor
            with ThreadPoolExecutor(len(phases)) as pool:
                results = list(pool.map(lambda p: run_phase(p, args, Path(tmp)), phases))
    for r in results:
        _print(r)
    print("targets: >= 95 % of the tier's steady ceiling over full windows; <= 0.5 % of requests retried")


if __name__ == "__main__":
    main()
