"""Benchmark: poll N Klaviyo profiles (default 1,000,000) from the sandbox into a fresh hub.

    .venv/bin/python bench/bench_poll.py [--profiles N] [--latency-ms MS] [--no-rate-limits] [--no-hub-work]

The sandbox runs in a child process with Klaviyo's real tier limits (GET /api/profiles
is tier L: 75/s burst, 700/min steady) and 200 ms added to every request, seeded in
that process straight into its state (no HTTP: a million profiles take seconds) with
N profiles whose ``updated`` times are one second apart, half of them with a complete
address.  The poll runs here with the shipped collections, a hub file in a temporary
folder and the client's defaults (so the number of ranges read at once follows the
tier and the measured latency).  Printed side by side:

- the ceiling: 100 profiles per page x 700 requests/min = 70,000 profiles/min;
- one chain of pages (one request at a time, as the poll read before ranges): the
  time one page takes, latency included (on a separate account, outside the poll's
  rate budget), as profiles/min;
- the hub + mapping work alone: the time spent transferring profiles, as profiles/min;
- the poll over its full 60-second windows from its start (the profiles handled in
  each, their mean as a share of the ceiling), and end to end;
- peak memory (max RSS of this process) at 100,000 profiles, at 10 % and 50 % of N, and at N.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.collection import load_collections  # noqa: E402
from engine.flows.inbound import InboundFlow, ProfileResult  # noqa: E402
from engine.flows.summary import RunSummary  # noqa: E402
from engine.hub import SqliteHub  # noqa: E402
from engine.klaviyo import KlaviyoClient  # noqa: E402
from engine.sandbox import SandboxOptions, SandboxServer, SandboxState  # noqa: E402

CEILING = 100 * 700  # profiles per page x tier L steady requests per minute


def seed(state: SandboxState, n: int) -> None:
    """N profiles straight into the sandbox's state, in the shape the sandbox makes them.

    The consent block is one object shared by every profile (the poll only reads it and
    the sandbox copies it into each answer), which keeps a million profiles in memory.
    """
    template = state.create_profile({"email": "template@example.com"})
    del state.profiles[template["id"]]
    subscriptions = template["subscriptions"]
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=n + 60)
    second = timedelta(seconds=1)
    profiles = state.profiles
    for i in range(n):
        attrs: dict[str, Any] = {"email": f"user{i}@example.com", "first_name": f"First{i}", "last_name": f"Last{i}",
                                 "organization": "Bench Co", "properties": {"Last active": "2024-05-01"} if i % 2 else {},
                                 "location": {}}
        if i % 3:
            attrs["phone_number"] = f"+1212{5000000 + i:07d}"
        if i % 2 == 0:
            attrs["location"] = {"address1": f"{i} Main St", "city": "Springfield", "region": "IL", "zip": "62701",
                                 "country": "United States"}
        when = start + i * second
        pid = f"01BENCH{i:019d}"
        profiles[pid] = {"id": pid, "attributes": attrs, "created": when, "updated": when,
                         "subscriptions": subscriptions, "last_event_date": None}
    state.reindex()


def serve(n: int, rate_limits: bool, latency_ms: float, conn: Any) -> None:
    """Child process: seed, serve, report the URL, stop when told."""
    state = SandboxState(seed=1)
    t0 = time.perf_counter()
    seed(state, n)
    seeded = time.perf_counter() - t0
    server = SandboxServer(SandboxOptions(rate_limits=rate_limits, latency_ms=latency_ms, seed=1), state=state)

    async def run() -> None:
        url = await server.start()
        conn.send((url, seeded))
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        await server.stop()

    asyncio.run(run())


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


async def sandbox_page_seconds(url: str, pages: int = 5) -> float:
    """Seconds one page takes, latency included, one request at a time (a separate account, no
    processing).  The first page, which has the sandbox sort every profile once, is not counted."""
    async with KlaviyoClient(base_url=url, api_key="pk_bench_reference") as kl:
        t0, got = 0.0, 0
        async for _page in kl.iter_profile_pages(sort="updated", page_size=100,
                                                 filter="greater-than(updated,2000-01-01T00:00:00Z)",
                                                 additional_fields=["subscriptions"]):
            got += 1
            if got == 1:
                t0 = time.perf_counter()
            if got == pages + 1:
                break
        return (time.perf_counter() - t0) / max(got - 1, 1)


async def bench(url: str, n: int, hub_path: Path, *, hub_work: bool = True) -> dict[str, Any]:
    collections = load_collections().collections
    marks = sorted({max(1, n // 10), max(1, n // 2), n} | ({100_000} if n >= 100_000 else set()))
    memory: dict[int, float] = {}
    done = [0]
    busy = [0.0]
    per_second: list[int] = []  # profiles handled in each second since the poll started
    hub = SqliteHub(hub_path)
    try:
        async with KlaviyoClient(base_url=url, api_key="pk_bench_poll") as kl:
            flow = InboundFlow(hub, kl, collections, summary=RunSummary("bench poll"))
            transfer = flow.transfer.transfer

            def timed(resource_: Any) -> Any:
                t = time.perf_counter()
                try:
                    if not hub_work:  # --no-hub-work: what the fetching alone reaches
                        return ProfileResult(str(resource_["id"]), "skipped")
                    return transfer(resource_)
                finally:
                    busy[0] += time.perf_counter() - t

            flow.transfer.transfer = timed  # type: ignore[method-assign]

            def on_profile(_result: Any) -> None:
                done[0] += 1
                second = int(time.perf_counter() - t0)
                while len(per_second) <= second:
                    per_second.append(0)
                per_second[second] += 1
                if done[0] in marks:
                    memory[done[0]] = max_rss_mb()

            t0 = time.perf_counter()
            await flow.poll(on_profile=on_profile)
            elapsed = time.perf_counter() - t0
    finally:
        hub.close()
    windows = [sum(per_second[i:i + 60]) for i in range(0, int(elapsed) // 60 * 60, 60)]
    return {"elapsed": elapsed, "done": done[0], "busy": busy[0], "memory": memory, "summary": flow.summary,
            "error": flow.error, "windows": windows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=int, default=1_000_000, help="profiles to poll (default 1,000,000)")
    parser.add_argument("--latency-ms", type=float, default=200.0, help="added to each sandbox request (default 200)")
    parser.add_argument("--no-rate-limits", action="store_true", help="serve without Klaviyo's tier limits")
    parser.add_argument("--no-hub-work", action="store_true",
                        help="skip each profile's mapping and hub write: the fetching alone (a diagnosis)")
    args = parser.parse_args()
    n = args.profiles

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=serve, args=(n, not args.no_rate_limits, args.latency_ms, child), daemon=True)
    proc.start()
    url, seeded = parent.recv()
    print(f"sandbox: {n:,} profiles seeded in its process in {seeded:.1f}s at {url} "
          f"(rate limits {'off' if args.no_rate_limits else 'on: tier L 75/s, 700/min'}; "
          f"latency {args.latency_ms:g} ms)")
    try:
        page_s = asyncio.run(sandbox_page_seconds(url))
        with tempfile.TemporaryDirectory() as tmp:
            result = asyncio.run(bench(url, n, Path(tmp) / "hub.db", hub_work=not args.no_hub_work))
    finally:
        parent.send("stop")
        proc.join(30)

    minutes = result["elapsed"] / 60
    rate = result["done"] / minutes if minutes else 0.0
    chain_rate = 100 / page_s * 60 if page_s else 0.0
    work_rate = result["done"] / (result["busy"] / 60) if result["busy"] else 0.0
    windows = result["windows"]
    print(f"{'ceiling (100/page x 700 req/min)':<42}{CEILING:>12,.0f} profiles/min")
    print(f"{'one chain of pages (one page: %.0f ms)' % (page_s * 1000):<42}{chain_rate:>12,.0f} profiles/min  "
          f"({chain_rate / CEILING:.0%} of the ceiling)")
    if args.no_hub_work:
        print(f"{'hub + mapping work':<42}{'skipped':>12}  (--no-hub-work: the poll's fetching alone)")
    else:
        print(f"{'hub + mapping work alone':<42}{work_rate:>12,.0f} profiles/min")
    if windows:
        mean = sum(windows) / len(windows)
        print(f"{f'poll, {len(windows)} full 60-second windows':<42}{mean:>12,.0f} profiles/min  "
              f"({mean / CEILING:.1%} of the ceiling; windows {min(windows):,} to {max(windows):,})")
    else:
        print(f"{'poll, full 60-second windows':<42}{'none':>12}  (the poll took under a minute)")
    print(f"{'poll end to end':<42}{rate:>12,.0f} profiles/min  "
          f"({rate / CEILING:.1%} of the ceiling; {result['done']:,} profiles in {result['elapsed']:.1f}s)")
    for count, mb in sorted(result["memory"].items()):
        print(f"  peak memory (max RSS) after {count:>9,} profiles: {mb:7.1f} MB")
    for line in result["summary"].lines():
        print(line)
    if result["error"] is not None:
        print(f"poll ended early: {result['error']}")


if __name__ == "__main__":
    main()
