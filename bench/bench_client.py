"""Throughput of the Klaviyo client against the sandbox with Klaviyo's real tier limits.

Run: ``.venv/bin/python bench/bench_client.py [--events 3000] [--profiles 1000] [--latency-ms 200]``

Creates events (POST /api/events, tier XL: 350/s burst, 3500/min steady) and
profiles (POST /api/profiles, tier L: 75/s, 700/min) concurrently, each with
``--latency-ms`` of server-side latency, then checks through the API that every
one exists exactly once.  Prints requests/s per tier next to the tier's steady
ceiling.  Note: a run shorter than a minute can exceed the steady *rate*
because Klaviyo's first minute window starts full (up to ``steady`` requests at
burst speed); the figure that matters is "0 lost, 0 duplicated, 0 throttled".
Not a test: nothing is asserted, figures are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.klaviyo import TIERS, KlaviyoClient  # noqa: E402
from engine.sandbox import SandboxOptions, SandboxServer  # noqa: E402

KEY = "pk_bench_key_0000"


async def _run(n: int, make, concurrency: int) -> float:
    sem = asyncio.Semaphore(concurrency)
    start = time.monotonic()

    async def one(i: int) -> None:
        async with sem:
            await make(i)

    await asyncio.gather(*(one(i) for i in range(n)))
    return time.monotonic() - start


def _line(label: str, n: int, secs: float, tier: str) -> str:
    t = TIERS[tier]
    rate = n / secs if secs else 0.0
    return (f"{label:<9} {n:>6} in {secs:6.1f} s = {rate:7.1f} req/s | tier {tier} steady ceiling "
            f"{t.steady_per_second:5.1f}/s ({t.steady}/min) -> {100 * rate / t.steady_per_second:6.1f} % of it")


def serve(latency_ms: float, conn: Any) -> None:
    """Child process: run the sandbox (its own core, as Klaviyo is its own machine), report its URL,
    then answer one request for what it stored and stop."""
    server = SandboxServer(SandboxOptions(latency_ms=latency_ms, rate_limits=True, seed=1))

    async def run() -> None:
        conn.send(await server.start())
        seed_pid = await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        state = server.state
        with state.lock:
            events = sum(1 for e in state.events if e["metric_id"] and e["profile_id"] == seed_pid)
            profiles = sum(1 for p in state.profiles.values()
                           if (p["attributes"].get("email") or "").startswith("bench") and p["id"] != seed_pid)
        conn.send((events, profiles, server.options.counters.get("429", 0)))
        await server.stop()

    asyncio.run(run())


async def main(args: argparse.Namespace) -> None:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=serve, args=(args.latency_ms, child), daemon=True)
    proc.start()
    url = parent.recv()
    try:
        async with KlaviyoClient(base_url=url, api_key=KEY, max_concurrency=args.concurrency,
                                 revision=args.revision) as kl:
            seed_pid, _ = await kl.create_profile({"email": "bench-seed@example.com"})
            wall = time.monotonic()
            ev_task = asyncio.create_task(_run(
                args.events, lambda i: kl.create_event("Bench Event", seed_pid, {"i": i}, unique_id=f"bench-{i}"),
                args.concurrency))
            pr_task = asyncio.create_task(_run(
                args.profiles, lambda i: kl.create_profile({"email": f"bench{i}@example.com"}), args.concurrency))
            ev_secs, pr_secs = await asyncio.gather(ev_task, pr_task)
            wall = time.monotonic() - wall
            stats = kl.stats.as_dict()
        parent.send(seed_pid)
        events, profiles, throttled = parent.recv()
    finally:
        proc.join(30)
    print(f"Klaviyo client vs sandbox (revision {args.revision}, {args.latency_ms:.0f} ms latency, "
          f"concurrency {args.concurrency}, real tier limits, sandbox in its own process)")
    print(_line("events", args.events, ev_secs, "XL"))
    print(_line("profiles", args.profiles, pr_secs, "L"))
    print(f"wall time {wall:.1f} s; requests sent {stats['total_requests']}; retries {stats['total_retries']} "
          f"{stats['retry_reasons']}; 429s from server {throttled}; "
          f"client waited for budget {stats['throttle_wait_s']:.1f} s")
    print(f"stored: events {events}/{args.events} (lost {args.events - events}), "
          f"profiles {profiles}/{args.profiles} (lost {args.profiles - profiles})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--profiles", type=int, default=1000)
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--revision", default="2023-10-15")
    asyncio.run(main(parser.parse_args()))
