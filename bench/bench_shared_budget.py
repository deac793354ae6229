"""Four processes sharing one account's rate budget in Redis, against Klaviyo's real tiers.

Run: ``.venv/bin/python bench/bench_shared_budget.py [--minutes 5.75] [--processes 4] [--latency-ms 200]
[--redis redis://127.0.0.1:6379/0]``

``--processes`` worker processes each open a client the way every command does (``open_client``
on a settings file holding ``api_url``, ``api_key`` and ``rate_budget``: one API key, so one
Klaviyo account and one budget in Redis), and send events (POST /api/events, tier XL: 350/s
burst, 3,500/min steady) as fast as the shared budget lets them, for ``--minutes``.  The sandbox
runs in its own process with ``--latency-ms`` of latency and Klaviyo's real tiers (its fixed
1 s and 60 s windows, 429 + Retry-After), and counts what it accepted per window
(``bench_ceiling._sandbox``).

Printed: each full 60 s window's accepted requests beside the steady ceiling, the ratio and the
429s answered in it; the mean and spread of the ratios, over all full windows and over the steady
state (the first full window holds the end of the opening burst and the wait after it, so it is
short of the ceiling by design); the busiest fixed 1 s window beside the burst ceiling; and the
workers' retries.  The first window starts with a full budget and the last is cut short: neither
is counted.  On a small shared machine, ``--nice-workers 10`` keeps the sandbox (Klaviyo's
stand-in, its own machine in life) from being starved of CPU by the workers.  Not a test: nothing is asserted; targets (issue 19): no 429,
>= 95 % of the steady ceiling over full windows.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_ceiling import _sandbox  # noqa: E402

from engine.klaviyo.ratelimit import tiers_for  # noqa: E402

KEY = "pk_bench_shared_budget_0000"
TIER = "XL"


def _worker(n: int, config: str, seconds: float, tasks: int, nice: int, conn: Any) -> None:
    """Child process: a client from the settings file, ``tasks`` senders for ``seconds``; reports its counters."""
    from engine.connect import open_client
    from engine.errors import KlaviyoSyncError
    from engine.settings import load_settings

    if nice:
        os.nice(nice)
    async def run() -> dict[str, Any]:
        settings = load_settings(config)
        failures: list[str] = []
        async with open_client(settings) as kl:
            conn.send("ready")
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)
            end = time.monotonic() + seconds

            async def sender(t: int) -> None:
                i = 0
                while time.monotonic() < end:
                    i += 1
                    try:
                        await kl.create_event("Bench Shared Budget", {"email": f"p{n}-{t}@example.com"}, {"i": i},
                                              unique_id=f"{n}-{t}-{i}")
                    except KlaviyoSyncError as exc:
                        failures.append(exc.format()[:300])

            await asyncio.gather(*(sender(t) for t in range(tasks)))
            return {**kl.stats.as_dict(), "failures": len(failures), "first_failure": failures[:1]}

    conn.send(asyncio.run(run()))


def _check_redis(url: str) -> None:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        sys.exit(f"bench_shared_budget needs Redis at the --redis URL ({type(exc).__name__}: {exc})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.75, help="how long the workers send (>= 5 full windows)")
    parser.add_argument("--processes", type=int, default=4, help="worker processes sharing the budget")
    parser.add_argument("--tasks", type=int, default=128, help="concurrent senders in each worker")
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="where the shared budget is kept")
    parser.add_argument("--revision", default="2023-10-15")
    parser.add_argument("--nice-workers", type=int, default=0,
                        help="niceness added to the workers, so the sandbox (Klaviyo's stand-in) is not starved of CPU")
    args = parser.parse_args()
    _check_redis(args.redis)
    tier = tiers_for(args.revision)[TIER]
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    sandbox = ctx.Process(target=_sandbox, args=(args.latency_ms, child), daemon=True)
    sandbox.start()
    url = parent.recv()
    account = f"bench-{uuid.uuid4().hex[:8]}"  # a fresh budget: no reservations left by an earlier run
    print(f"{args.processes} processes, one API key and one shared budget ({args.redis}, account {account}); "
          f"sandbox in its own process with {args.latency_ms:.0f} ms latency and real tiers; events (tier {TIER}: "
          f"{tier.burst}/s, {tier.steady}/min) for {args.minutes:g} min; {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "klaviyo-sync.yaml"
        config.write_text(f"api_url: {url}\napi_key: {KEY}\nhub: hub.db\napi_revision: '{args.revision}'\n"
                          f"rate_budget: {args.redis}\naccount: {account}\n", encoding="utf-8")
        pipes, workers = [], []
        for n in range(args.processes):
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(n, str(config), args.minutes * 60, args.tasks, args.nice_workers, theirs),
                               daemon=True)
            proc.start()
            pipes.append(mine)
            workers.append(proc)
        for p in pipes:
            assert "ready" == p.recv()
        start = time.monotonic()
        for p in pipes:
            p.send("go")
        stats = [p.recv() for p in pipes]
        wall = time.monotonic() - start
        for proc in workers:
            proc.join(30)
    parent.send(("report", None))
    counts, throttled, counters = parent.recv()
    parent.send(("stop", None))
    sandbox.join(30)
    _report(counts, throttled, counters, stats, tier.burst, tier.steady, wall)


def _report(counts: dict[str, int], throttled: dict[int, int], counters: dict[str, int], stats: list[dict[str, Any]],
            burst: int, steady: int, wall: float) -> None:
    minutes = sorted((int(k.split(":")[1]), n) for k, n in counts.items() if k.split(":")[0] == TIER)
    seconds = sorted((int(k.split(":")[1]), n) for k, n in counts.items() if k.split(":")[0] == f"{TIER}/1s")
    full = minutes[1:-1]
    print(f"{'window':>8} {'accepted':>9} {'ceiling':>8} {'ratio':>7} {'429s':>5}")
    for idx, n in full:
        print(f"{idx:>8} {n:>9} {steady:>8} {100 * n / steady:6.1f}% {throttled.get(idx, 0):>5}")
    if full:
        ratios = [100 * n / steady for _, n in full]
        print(f"{len(full)} full 60 s windows: mean {statistics.mean(ratios):.1f} % of the steady ceiling "
              f"(spread {min(ratios):.1f}-{max(ratios):.1f} %)")
        later = full[1:]
        if later:
            shares = [100 * n / steady for _, n in later]
            print(f"  of which steady state (after the first full window, which holds the end of the opening burst "
                  f"and the wait after it): mean {statistics.mean(shares):.1f} % (spread {min(shares):.1f}-"
                  f"{max(shares):.1f} %), {sum(throttled.get(i, 0) for i, _ in later)} x 429")
    else:
        print("no full 60 s window: run longer (--minutes)")
    busy = [n for _, n in seconds]
    if busy:
        peak = max(busy)
        at_peak = sum(1 for n in busy if n >= 0.95 * peak)
        print(f"1 s windows: peak {peak} accepted vs the burst ceiling {burst} ({100 * peak / burst:.1f} %); "
              f"{len(busy)} windows with traffic, {at_peak} within 5 % of the peak")
    requests = sum(s["total_requests"] for s in stats)
    retries = sum(s["total_retries"] for s in stats)
    failures = sum(s["failures"] for s in stats)
    waits = [s["throttle_wait_s"] for s in stats]
    print(f"workers: {requests} requests in {wall:.0f} s, {retries} retried, {failures} failed; "
          f"sandbox answered {counters.get('429', 0)} x 429 in all; budget wait summed over each process's "
          f"requests {min(waits):.0f}-{max(waits):.0f} s")
    for s in stats:
        for text in s["first_failure"]:
            print(f"a worker's first failure: {text}")
            break
    print("targets: 0 x 429; >= 95 % of the steady ceiling in every full window; the 1 s peak <= the burst ceiling")


if __name__ == "__main__":
    main()
